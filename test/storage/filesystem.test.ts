import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { isRecycling, type RecyclingReadable } from '../../src/registry/chunkPool.js';
import { FilesystemDriver } from '../../src/storage/filesystem.js';
import { sweepUploads } from '../../src/storage/uploads.js';

async function driver(): Promise<FilesystemDriver> {
  const d = new FilesystemDriver(await mkdtemp(join(tmpdir(), 'pt-fs-')));
  await d.init();
  return d;
}

test('putContent is atomic: concurrent writers leave one whole version, no temp files', async () => {
  const d = await driver();
  const versions = Array.from({ length: 20 }, (_, i) => String(i).repeat(100_000));
  await Promise.all(versions.map((v) => d.putContent('a/b/record', v)));
  const content = (await d.getContent('a/b/record'))!.toString();
  assert.ok(versions.includes(content), 'the record is exactly one of the versions written');
  assert.deepEqual(await readdir(join(d.root, '_uploads')), []);
});

test('an upload is invisible under its final name until committed, and discard leaves nothing', async () => {
  const d = await driver();
  const upload = await d.createUpload();
  await upload.write([Buffer.from('half of a blob')], 0);
  assert.equal(await d.stat('blobs/x/data'), undefined);
  await upload.discard();
  await upload.close();
  assert.deepEqual(await readdir(join(d.root, '_uploads')), []);
  assert.equal(await d.stat('blobs/x/data'), undefined);

  const done = await d.createUpload();
  await done.write([Buffer.from('whole blob')], 0);
  await done.commit('blobs/x/data');
  await done.close();
  assert.equal(await readFile(join(d.root, 'blobs/x/data'), 'utf8'), 'whole blob');
});

test('a commit recreates a directory that was removed after it was first made', async () => {
  const d = await driver();
  await d.putContent('repositories/u/r/_layers/sha256/aa', 'one');
  await d.delete('repositories/u/r');
  await d.putContent('repositories/u/r/_layers/sha256/aa', 'two');
  assert.equal((await d.getContent('repositories/u/r/_layers/sha256/aa'))?.toString(), 'two');
});

test('the sweep removes temp files of dead fills, and only those older than asked', async () => {
  const d = await driver();
  const dead = await d.createUpload();
  await dead.write([Buffer.from('left behind by a killed process')], 0);
  await dead.close();
  assert.equal(await sweepUploads(d, 60_000, Date.now()), 0, 'a fresh temp file may belong to a live fill');
  assert.equal(await sweepUploads(d, 0, Date.now()), 1);
  assert.deepEqual(await readdir(join(d.root, '_uploads')), []);
});

test('readers: whole or a byte range; a missing file is undefined, not an error', async () => {
  const d = await driver();
  await d.putContent('f', '0123456789');
  assert.equal(await text((await d.openReader('f'))!.stream), '0123456789');
  const ranged = (await d.openReader('f', (size) => ({ start: 2, end: size - 6 })))!;
  assert.equal(await text(ranged.stream), '234');
  assert.equal(ranged.size, 10, 'the size is the open file\'s');
  assert.equal(await d.openReader('missing'), undefined);
  assert.equal(await d.getContent('missing/deeper'), undefined);
  assert.deepEqual(await d.list('missing'), []);
  assert.equal((await stat(join(d.root, 'f'))).size, 10);
});

test('files are written 0640 and directories 0750 by default; storage.umask changes that', async () => {
  const d = await driver();
  await d.putContent('repositories/u/a/_manifests/tags/v1', 'record');
  assert.equal((await stat(join(d.root, 'repositories/u/a/_manifests/tags/v1'))).mode & 0o777, 0o640);
  assert.equal((await stat(join(d.root, 'repositories/u/a'))).mode & 0o777, 0o750);
  assert.equal((await stat(join(d.root, '_uploads'))).mode & 0o777, 0o750);
  const strict = new FilesystemDriver(await mkdtemp(join(tmpdir(), 'pt-fs-')), { umask: 0o077 });
  await strict.init();
  await strict.putContent('x/y', 'z');
  assert.equal((await stat(join(strict.root, 'x/y'))).mode & 0o777, 0o600);
  assert.equal((await stat(join(strict.root, 'x'))).mode & 0o777, 0o700);
});

test('symbolic links under the root are not followed: a planted link reads as missing, and listings leave links out', async () => {
  const d = await driver();
  const outside = await mkdtemp(join(tmpdir(), 'pt-outside-'));
  await writeFile(join(outside, 'shadow'), 'root:secret');
  await mkdir(join(d.root, 'blobs/sha256/ab/abc'), { recursive: true });
  await symlink(join(outside, 'shadow'), join(d.root, 'blobs/sha256/ab/abc/data'));
  await symlink(outside, join(d.root, 'blobs/sha256/ab/loop'));
  assert.equal(await d.stat('blobs/sha256/ab/abc/data'), undefined);
  assert.equal(await d.openReader('blobs/sha256/ab/abc/data'), undefined);
  assert.equal(await d.openFile('blobs/sha256/ab/abc/data'), undefined);
  assert.equal(await d.getContent('blobs/sha256/ab/abc/data'), undefined);
  assert.deepEqual(await d.list('blobs/sha256/ab'), ['abc'], 'the directory link is not listed, so no walk enters it');
  assert.deepEqual(await d.list('blobs/sha256/ab/abc'), []);
});

test('a reader lends its chunks: a chunk handed back is read into again, one never handed back never is', async () => {
  const d = await driver();
  const bytes = Buffer.from(Array.from({ length: 5 * 1024 * 1024 + 7 }, (_, i) => (i * 31) % 251));
  await d.putContent('blobs/big/data', bytes);

  // Handed back at once: every read goes into the same buffer, and the bytes stay right (each is checked before it goes back).
  const recycled = (await d.openReader('blobs/big/data'))!.stream as RecyclingReadable;
  assert.ok(isRecycling(recycled));
  const seen = new Set<ArrayBufferLike>();
  let at = 0;
  for await (const chunk of recycled as AsyncIterable<Buffer>) {
    assert.ok(chunk.equals(bytes.subarray(at, at + chunk.length)), `bytes at ${at}`);
    at += chunk.length;
    seen.add(chunk.buffer);
    recycled.recycle(chunk);
    recycled.recycle(chunk); // twice: ignored, or two reads would share one buffer
  }
  assert.equal(at, bytes.length);
  assert.ok(seen.size <= 2, `6 reads into ${seen.size} buffers`);

  // Never handed back (or something else handed back): each chunk is a buffer of its own, still intact at the end.
  const kept = (await d.openReader('blobs/big/data'))!.stream as RecyclingReadable;
  const chunks: Buffer[] = [];
  for await (const chunk of kept as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    kept.recycle(Buffer.alloc(chunk.length));
  }
  assert.equal(new Set(chunks.map((c) => c.buffer)).size, chunks.length);
  assert.ok(Buffer.concat(chunks).equals(bytes));
});
