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
import { FilesystemDriver } from '../../src/storage/filesystem.js';
import { blobDataPath } from '../../src/storage/layout.js';
import { systemClock } from '../../src/registry/clock.js';

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
