import { Readable } from 'node:stream';
import { ChunkPool, type RecyclingReadable } from '../registry/chunkPool.js';

/** Bytes a reader takes from a growing file per read. */
export const READ_CHUNK = 1024 * 1024;

/**
 * A blob being written somewhere readers can follow: this process's fill
 * (`BlobFill`), or another replica's fill (`ReplicaFollower`).
 */
export interface GrowingSource {
  /** True until the bytes are verified and committed, or the fill failed. */
  readonly isRunning: boolean;
  /** The size, once known. */
  readonly size: number | undefined;
  /** Set when the fill failed: readers error with it instead of ending. */
  readonly failed: Error | undefined;
  /** How far a reader may read now; never the last byte before the blob is verified. */
  readableLimit(): number;
  /** Resolves at the next write, commit or failure. */
  waitForChange(): Promise<void>;
  /**
   * Positional read. `generation` changes when the bytes behind positions may
   * change (a replica taking over a dead owner's fill); a read across such a
   * change is read again.
   */
  readAt(buffer: Buffer, position: number): Promise<{ bytesRead: number; generation?: number }>;
  currentGeneration?(): number;
  /**
   * Bytes from `position` (at most `maxBytes`) still in memory because they
   * were written a moment ago: a view, not a copy. Undefined when they are
   * only in the file; a reader that has fallen behind reads it instead.
   */
  recentAt?(position: number, maxBytes: number): Buffer | undefined;
  /** A reader holds the source (and its file) open between attach and detach. */
  attach(): void;
  detach(): void;
}

/**
 * Reads a growing source from `start` to `end` (inclusive, or to the end),
 * following it as it grows. Ends only after every promised byte went out;
 * errors when the source fails.
 *
 * Nothing it hands out is complete before the blob is verified: the whole
 * blob's last byte waits for that (the source's `readableLimit`), and so
 * does the last byte of a range, however early in the blob the range ends.
 * A range of bytes that turn out wrong is cut, never a complete 206.
 */
export class GrowingReader extends Readable implements RecyclingReadable {
  private position: number;
  private pumping = false;
  /** Whole READ_CHUNK reads of a reader that fell behind go into buffers its consumer handed back. */
  private readonly pool = new ChunkPool(READ_CHUNK);

  constructor(private readonly source: GrowingSource, start: number, private readonly end: number | undefined) {
    super({ highWaterMark: READ_CHUNK });
    this.position = start;
    source.attach();
  }

  override _read(): void {
    void this.pump();
  }

  /** Chunks from the source's memory (`recentAt`) are not this reader's: the pool ignores them. */
  recycle(chunk: Buffer): void {
    this.pool.recycle(chunk);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.source.detach();
    callback(err);
  }

  /** Where this reader stops: its range's end, else the size once the source is done. */
  private stop(): number | undefined {
    if (this.end !== undefined) return this.end + 1;
    return this.source.isRunning ? undefined : this.source.size;
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        if (this.destroyed) return;
        const end = this.stop();
        if (end !== undefined && this.position >= end) {
          this.push(null);
          return;
        }
        if (this.source.failed) {
          this.destroy(this.source.failed);
          return;
        }
        const generation = this.source.currentGeneration?.();
        // A range's end is held back too, until the source is verified (or failed, which the loop sees).
        const rangeLimit = end === undefined ? Infinity : this.source.isRunning ? end - 1 : end;
        const limit = Math.min(this.source.readableLimit(), rangeLimit);
        if (this.position >= limit) {
          await this.source.waitForChange();
          continue;
        }
        let chunk = this.source.recentAt?.(this.position, Math.min(READ_CHUNK, limit - this.position));
        if (chunk === undefined) {
          const want = Math.min(READ_CHUNK, limit - this.position);
          // A short read gets a buffer of its size: a 1 MiB one from the pool would be mostly empty.
          const pooled = want === READ_CHUNK;
          const buffer = pooled ? this.pool.take() : Buffer.allocUnsafe(want);
          const read = await this.source.readAt(buffer, this.position);
          if (this.destroyed) return;
          if (read.generation !== generation || read.bytesRead === 0) {
            if (pooled) this.pool.putBack(buffer);
            if (read.bytesRead === 0 && read.generation === generation) await this.source.waitForChange();
            continue;
          }
          chunk = read.bytesRead === buffer.length ? buffer : buffer.subarray(0, read.bytesRead);
          if (pooled) this.pool.lend(chunk);
        }
        this.position += chunk.length;
        const more = this.push(chunk);
        // The end goes out with the last bytes, so a response finishes as soon as the client has them all.
        const last = this.stop();
        if (last !== undefined && this.position >= last) {
          this.push(null);
          return;
        }
        if (!more) return;
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.pumping = false;
    }
  }
}

/**
 * A stream whose source is opened only when it is first read: what a
 * `reader()` returns once the bytes are in storage (it must answer a stream
 * at once, and opening the file is asynchronous). Errors of `open` (the blob
 * evicted meanwhile) become errors of the stream.
 */
export function openedOnRead(open: () => Promise<Readable>): Readable {
  return Readable.from((async function* opened() {
    yield* await open();
  })(), { objectMode: false });
}

/**
 * "Something changed" for readers waiting on a growing source: `wait()`
 * resolves at the next `notify()`. Cheaper than an EventEmitter per reader,
 * and a waiter can never miss a notification that came after it asked.
 */
export class ChangeSignal {
  private wake: (() => void) | undefined;
  private changed = this.next();

  wait(): Promise<void> {
    return this.changed;
  }

  notify(): void {
    const wake = this.wake;
    this.changed = this.next();
    wake?.();
  }

  private next(): Promise<void> {
    return new Promise((resolve) => { this.wake = resolve; });
  }
}
