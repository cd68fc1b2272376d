import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { parseDigest } from '../../src/registry/digest.js';
import { BlobFill } from '../../src/proxy/fill.js';
import { isRecycling } from '../../src/registry/chunkPool.js';
import { FilesystemDriver } from '../../src/storage/filesystem.js';
import { blobDataPath } from '../../src/storage/layout.js';
import { systemClock } from '../../src/registry/clock.js';
import type { Upload } from '../../src/storage/driver.js';

async function fillOf(bytes: Buffer): Promise<{ fill: BlobFill; driver: FilesystemDriver }> {
  const driver = new FilesystemDriver(await mkdtemp(join(tmpdir(), 'pt-fill-')));
  await driver.init();
  const digest = parseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`);
  const fill = new BlobFill({
    digest,
    expectedSize: bytes.length,
    body: Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]),
    upload: await driver.createUpload(),
    commit: (u) => u.commit(blobDataPath(digest.digest)),
    openCommitted: async (range) => (await driver.openReader(blobDataPath(digest.digest), () => range))!.stream,
    detachedTimeoutMs: 0,
    maxSize: Number.MAX_SAFE_INTEGER,
    clock: systemClock,
  });
  return { fill, driver };
}

test('a reader that joins a committed fill after its first reader left still reads every byte', async () => {
  const bytes = randomBytes(300_000);
  const { fill } = await fillOf(bytes);
  const first = await buffer(fill.reader());
  await fill.done;
  assert.ok(first.equals(bytes));
  // The first reader is gone and the fill is committed: a late request joins it, and reads the committed blob.
  const late = await buffer(fill.reader());
  assert.ok(late.equals(bytes));
  const range = await buffer(fill.reader({ start: 10, end: 19 }));
  assert.ok(range.equals(bytes.subarray(10, 20)));
});

test('a fill whose bytes do not match its digest errors its readers, who never get the last byte', async () => {
  const bytes = randomBytes(100_000);
  const driver = new FilesystemDriver(await mkdtemp(join(tmpdir(), 'pt-fill-')));
  await driver.init();
  const wrong = parseDigest(`sha256:${'0'.repeat(64)}`);
  const fill = new BlobFill({
    digest: wrong, expectedSize: bytes.length, body: Readable.from([bytes]),
    upload: await driver.createUpload(), commit: (u) => u.commit(blobDataPath(wrong.digest)),
    openCommitted: async (range) => (await driver.openReader(blobDataPath(wrong.digest), () => range))!.stream,
    detachedTimeoutMs: 0, maxSize: Number.MAX_SAFE_INTEGER, clock: systemClock,
  });
  let received = 0;
  const reader = fill.reader();
  reader.on('data', (c: Buffer) => { received += c.length; });
  await assert.rejects(new Promise((resolve, reject) => { reader.on('end', resolve); reader.on('error', reject); }));
  assert.ok(received < bytes.length, `got ${received} of ${bytes.length}`);
  await assert.rejects(fill.done);
  assert.equal(await driver.stat(blobDataPath(wrong.digest)), undefined);
});

test('a range inside a fill of wrong bytes never completes, however early it ends; a whole GET never gets the last byte', async () => {
  const bytes = randomBytes(200_000);
  const driver = new FilesystemDriver(await mkdtemp(join(tmpdir(), 'pt-fill-')));
  await driver.init();
  const wrong = parseDigest(`sha256:${'1'.repeat(64)}`);
  let letGo!: () => void;
  const gate = new Promise<void>((resolve) => { letGo = resolve; });
  const fill = new BlobFill({
    digest: wrong, expectedSize: bytes.length,
    body: Readable.from((async function* body() {
      yield bytes.subarray(0, 100_000);
      await gate;
      yield bytes.subarray(100_000);
    })(), { objectMode: false }),
    upload: await driver.createUpload(), commit: (u) => u.commit(blobDataPath(wrong.digest)),
    openCommitted: async (range) => (await driver.openReader(blobDataPath(wrong.digest), () => range))!.stream,
    detachedTimeoutMs: 0, maxSize: Number.MAX_SAFE_INTEGER, clock: systemClock,
  });
  let got = 0;
  const ranged = fill.reader({ start: 0, end: 9_999 });
  ranged.on('data', (c: Buffer) => { got += c.length; });
  const ended = new Promise((resolve, reject) => { ranged.on('end', resolve); ranged.on('error', reject); });
  for (let i = 0; i < 500 && got < 9_999; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(fill.written >= 100_000);
  assert.equal(got, 9_999, 'the range\'s bytes are written, its last one waits for the verification');
  letGo();
  await assert.rejects(ended);
  assert.equal(got, 9_999);
  await assert.rejects(fill.done);
});

test('maxSize cuts a fill that never ends: it fails, the upload is discarded', async () => {
  const driver = new FilesystemDriver(await mkdtemp(join(tmpdir(), 'pt-fill-')));
  await driver.init();
  const digest = parseDigest(`sha256:${'2'.repeat(64)}`);
  const upload = await driver.createUpload();
  const fill = new BlobFill({
    digest, expectedSize: undefined,
    body: Readable.from((function* endless() { for (;;) yield Buffer.alloc(64 * 1024); })(), { objectMode: false }),
    upload, commit: (u) => u.commit(blobDataPath(digest.digest)),
    openCommitted: async (range) => (await driver.openReader(blobDataPath(digest.digest), () => range))!.stream,
    detachedTimeoutMs: 0, maxSize: 1024 * 1024, clock: systemClock,
  });
  await assert.rejects(fill.done, /maxBlobSize/);
  assert.ok(fill.written <= 1024 * 1024);
  assert.deepEqual(await readdir(join(driver.root, '_uploads')), []);
});

test('a caught-up reader takes the chunks a fill has just written from memory: of a 3 MB blob it reads back from the upload only what came after its last wait', async () => {
  const bytes = randomBytes(3_000_000);
  const driver = new FilesystemDriver(await mkdtemp(join(tmpdir(), 'pt-fill-')));
  await driver.init();
  const digest = parseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`);
  const upload = await driver.createUpload();
  let readBack = 0;
  const counted = Object.assign(Object.create(upload) as typeof upload, {
    read: async (buffer: Buffer, position: number) => {
      const n = await upload.read(buffer, position);
      readBack += n;
      return n;
    },
  });
  // 64 KiB chunks, as a socket delivers them; the reader is there from the first byte.
  const chunks = Array.from({ length: Math.ceil(bytes.length / 65536) }, (_, i) => bytes.subarray(i * 65536, (i + 1) * 65536));
  const fill = new BlobFill({
    digest, expectedSize: bytes.length, body: Readable.from(chunks), upload: counted,
    commit: (u) => u.commit(blobDataPath(digest.digest)),
    openCommitted: async (range) => (await driver.openReader(blobDataPath(digest.digest), () => range))!.stream,
    detachedTimeoutMs: 0, maxSize: Number.MAX_SAFE_INTEGER, clock: systemClock,
  });
  const got = await buffer(fill.reader());
  await fill.done;
  assert.ok(got.equals(bytes), 'every byte, in order');
  // Only the held-back last byte (never served before the digest is verified) comes from the file.
  assert.ok(readBack <= 65536, `read back ${readBack} bytes from the upload`);
});

/**
 * A fill of `bytes` in 64 KiB chunks, as a socket delivers them, whose body
 * pauses before chunk `pauseAt` until `letGo`; `wrap` may stand in for the upload.
 */
async function gatedFill(bytes: Buffer, pauseAt: number, wrap: (upload: Upload) => Upload = (u) => u): Promise<{ fill: BlobFill; letGo: () => void }> {
  const driver = new FilesystemDriver(await mkdtemp(join(tmpdir(), 'pt-fill-')));
  await driver.init();
  const digest = parseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`);
  let letGo!: () => void;
  const gate = new Promise<void>((resolve) => { letGo = resolve; });
  const chunks = Array.from({ length: Math.ceil(bytes.length / 65536) }, (_, i) => bytes.subarray(i * 65536, (i + 1) * 65536));
  const fill = new BlobFill({
    digest, expectedSize: bytes.length,
    body: Readable.from((async function* body() {
      for (const [i, chunk] of chunks.entries()) {
        if (i === pauseAt) await gate;
        yield chunk;
      }
    })(), { objectMode: false }),
    upload: wrap(await driver.createUpload()),
    commit: (u) => u.commit(blobDataPath(digest.digest)),
    openCommitted: async (range) => (await driver.openReader(blobDataPath(digest.digest), () => range))!.stream,
    detachedTimeoutMs: 0, maxSize: Number.MAX_SAFE_INTEGER, clock: systemClock,
  });
  return { fill, letGo };
}

test('a fill writes its upload in batches of 1 MiB, and readers have each chunk as soon as it is hashed, before it is written', async () => {
  const bytes = randomBytes(3_000_000);
  const writes: number[] = [];
  // The first 192 KiB, then a pause.
  const { fill, letGo } = await gatedFill(bytes, 3, (upload) => Object.assign(Object.create(upload) as Upload, {
    write: async (chunks: readonly Buffer[], position: number) => {
      writes.push(chunks.reduce((n, c) => n + c.length, 0));
      await upload.write(chunks, position);
    },
  }));
  const reader = fill.reader();
  const received: Buffer[] = [];
  reader.on('data', (c: Buffer) => received.push(c));
  const ended = new Promise((resolve, reject) => { reader.on('end', resolve); reader.on('error', reject); });
  while (received.reduce((n, c) => n + c.length, 0) < 3 * 65536 - 1) await new Promise((r) => setImmediate(r));
  assert.deepEqual(writes, [], 'the reader had 192 KiB (all but the held-back last byte) before anything was written');
  letGo();
  await ended;
  await fill.done;
  assert.ok(Buffer.concat(received).equals(bytes), 'every byte, in order');
  assert.equal(writes.reduce((n, w) => n + w, 0), bytes.length);
  assert.ok(writes.slice(0, -1).every((w) => w >= 1024 * 1024), `writes of ${writes.join(', ')} bytes`);
  assert.ok(writes.length <= 3, `${writes.length} writes`);
});

test('a reader that fell behind a fill reads the upload into the buffers its consumer handed back', async () => {
  const bytes = randomBytes(8 * 1024 * 1024 + 5000);
  const { fill, letGo } = await gatedFill(bytes, Math.ceil(bytes.length / 65536) - 1);
  const reader = fill.reader();
  assert.ok(isRecycling(reader));
  // Everything but the last chunk is in before the reader reads: most of it only in the upload.
  while (fill.written < bytes.length - 5000) await new Promise((r) => setImmediate(r));
  letGo();
  const seen = new Set<ArrayBufferLike>();
  let wholeReads = 0;
  const got: Buffer[] = [];
  for await (const chunk of reader as AsyncIterable<Buffer>) {
    got.push(Buffer.from(chunk)); // a copy: the chunk itself goes back
    if (chunk.length === 1024 * 1024) {
      wholeReads += 1;
      seen.add(chunk.buffer);
    }
    reader.recycle(chunk);
  }
  await fill.done;
  assert.ok(Buffer.concat(got).equals(bytes), 'every byte, in order');
  // One held by the loop, one read ahead, one being read.
  assert.ok(wholeReads >= 5 && seen.size <= 3, `${wholeReads} whole-MiB reads from the upload into ${seen.size} buffers`);
});
