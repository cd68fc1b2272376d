import type { Readable } from 'node:stream';

/**
 * True when two streams carry exactly the same bytes. Reads both in step
 * and stops at the first byte that differs (or when one ends first), so a
 * liar costs only as much as it takes to be caught. Both streams are
 * destroyed when it returns.
 */
export async function sameBytes(a: Readable, b: Readable): Promise<boolean> {
  const left = a[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const right = b[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let x: Buffer = Buffer.alloc(0);
  let y: Buffer = Buffer.alloc(0);
  try {
    for (;;) {
      if (x.length === 0) {
        const next = await left.next();
        if (next.done) return y.length === 0 && (await nextNonEmpty(right)) === undefined;
        x = next.value;
        continue;
      }
      if (y.length === 0) {
        const next = await right.next();
        if (next.done) return false;
        y = next.value;
        continue;
      }
      const n = Math.min(x.length, y.length);
      if (!x.subarray(0, n).equals(y.subarray(0, n))) return false;
      x = x.subarray(n);
      y = y.subarray(n);
    }
  } finally {
    a.destroy();
    b.destroy();
  }
}

async function nextNonEmpty(it: AsyncIterator<Buffer>): Promise<Buffer | undefined> {
  for (;;) {
    const next = await it.next();
    if (next.done) return undefined;
    if (next.value.length > 0) return next.value;
  }
}
