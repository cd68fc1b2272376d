import test, { before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { S3StorageDriver } from '../../src/storage/s3/driver.js';
import { blobDataPath, blobDir } from '../../src/storage/layout.js';
import { parseDigest, type Digest } from '../../src/registry/digest.js';
import { s3Store, type S3Store } from '../fixtures/s3.js';
import { tempDir, until } from '../fixtures/tools.js';

let store: S3Store;
const MiB = 2 ** 20;

before(async () => {
  store = await s3Store();
});

async function driver(prefix = ''): Promise<{ driver: S3StorageDriver; bucket: string; spool: string; requests: string[] }> {
  const bucket = await store.createBucket();
  const spool = await tempDir('s3-spool');
  const requests: string[] = [];
  const d = new S3StorageDriver({
    bucket, prefix, spoolRoot: spool, partSizeBytes: 5 * MiB, abandonedUploadAgeMs: 3_600_000,
    client: { region: store.region, endpoint: store.endpoint, forcePathStyle: true, credentials: { accessKeyId: store.accessKeyId, secretAccessKey: store.secretAccessKey } },
    onRequest: (command) => requests.push(command),
  });
  await d.init();
  requests.length = 0;
  return { driver: d, bucket, spool, requests };
}

function digestOf(bytes: Buffer): Digest {
  return parseDigest(`sha256:${createHash('sha256').update(bytes).digest('hex')}`).digest;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

test('records: put, get, stat, list and delete are one key each, under the prefix', async () => {
  const { driver: d, bucket, requests } = await driver('mirrors/a');
  await d.putContent('repositories/up/app/_manifests/tags/v1', '{"x":1}');
  await d.putContent('repositories/up/app/_layers/sha256/aa', 'sha256:aa');
  assert.deepEqual(await store.keys(bucket), ['mirrors/a/repositories/up/app/_layers/sha256/aa', 'mirrors/a/repositories/up/app/_manifests/tags/v1']);
  assert.equal((await d.getContent('repositories/up/app/_manifests/tags/v1'))?.toString(), '{"x":1}');
  assert.equal(await d.getContent('repositories/up/app/_manifests/tags/v2'), undefined);
  assert.equal((await d.stat('repositories/up/app/_layers/sha256/aa'))?.size, 9);
  assert.equal(await d.stat('repositories/up/none'), undefined);
  assert.deepEqual((await d.list('repositories/up/app')).sort(), ['_layers', '_manifests']);
  assert.deepEqual(await d.list('repositories/none'), []);
  requests.length = 0;
  await d.delete('repositories/up/app');
  assert.deepEqual(await store.keys(bucket), []);
  assert.deepEqual(requests, ['ListObjectsV2', 'DeleteObjects'], 'a delete is one listing and one batched DeleteObjects');
});

test('a small upload is one PutObject at the commit, nothing before', async () => {
  const { driver: d, bucket, requests, spool } = await driver();
  const bytes = randomBytes(100_000);
  const path = blobDataPath(digestOf(bytes));
  const upload = await d.createUpload(digestOf(bytes));
  await upload.write([bytes.subarray(0, 50_000), bytes.subarray(50_000)], 0);
  const back = Buffer.alloc(10);
  assert.equal(await upload.read(back, 500), 10);
  assert.ok(back.equals(bytes.subarray(500, 510)), 'readers in this process read the local spool');
  assert.deepEqual(await store.keys(bucket), [], 'nothing in the bucket before the commit');
  assert.deepEqual(requests, []);
  await upload.commit(path);
  await upload.close();
  assert.deepEqual(requests, ['PutObject']);
  assert.deepEqual(await store.keys(bucket), [path]);
  assert.deepEqual(await readdir(join(spool, '_uploads')), [], 'the spool is gone');
  requests.length = 0;
  const opened = (await d.openReader(path, (size) => ({ start: 10, end: Math.min(19, size - 1) })))!;
  assert.equal(opened.size, bytes.length, 'the size comes from the object');
  const range = await readAll(opened.stream);
  assert.ok(range.equals(bytes.subarray(10, 20)));
  assert.deepEqual(requests, ['GetObject'], 'a range is one ranged GetObject');
});

test('a large upload goes up in parts while it is written, and appears only when committed', async () => {
  const { driver: d, bucket, requests } = await driver();
  const bytes = randomBytes(12 * MiB + 123);
  const path = blobDataPath(digestOf(bytes));
  const upload = await d.createUpload(digestOf(bytes));
  for (let at = 0; at < bytes.length; at += MiB) await upload.write([bytes.subarray(at, Math.min(bytes.length, at + MiB))], at);
  await until('the parts go up while the bytes arrive', async () => requests.includes('UploadPart'));
  assert.deepEqual(await store.keys(bucket), [], 'not visible before the commit');
  assert.deepEqual(await store.multipartUploads(bucket), [path], 'the multipart upload is under the final key');
  await upload.commit(path);
  await upload.close();
  assert.deepEqual(requests.filter((r) => r !== 'ListObjectsV2' && r !== 'ListMultipartUploads'),
    ['CreateMultipartUpload', 'UploadPart', 'UploadPart', 'UploadPart', 'CompleteMultipartUpload']);
  assert.deepEqual(await store.keys(bucket), [path]);
  assert.deepEqual(await store.multipartUploads(bucket), []);
  assert.ok((await d.getContent(path))!.equals(bytes));
});

test('a discarded upload leaves no object and no incomplete multipart upload', async () => {
  const { driver: d, bucket } = await driver();
  const bytes = randomBytes(11 * MiB);
  const upload = await d.createUpload(digestOf(bytes));
  await upload.write([bytes], 0);
  await upload.discard();
  await upload.close();
  assert.deepEqual(await store.keys(bucket), []);
  assert.deepEqual(await store.multipartUploads(bucket), []);
});

test('an upload committed elsewhere than its destination, or after close, still lands whole', async () => {
  const { driver: d } = await driver();
  const bytes = randomBytes(6 * MiB);
  const other = blobDataPath(digestOf(Buffer.from('other')));
  const upload = await d.createUpload(digestOf(bytes));
  await upload.write([bytes], 0);
  await upload.close();
  await upload.commit(other);
  assert.ok((await d.getContent(other))!.equals(bytes));
  const staged = await d.createUpload();
  await staged.write([Buffer.from('hello')], 0);
  await staged.close();
  await staged.commit('pins.json');
  assert.equal((await d.getContent('pins.json'))!.toString(), 'hello');
});

test('start-up sweep: incomplete multipart uploads and spool files of a dead process go; with replicas only old ones', async () => {
  const { driver: d, bucket, spool, requests } = await driver();
  const path = blobDir(digestOf(Buffer.from('x'))) + '/data';
  const upload = await d.createUpload(digestOf(Buffer.from('x')));
  await upload.write([randomBytes(6 * MiB)], 0);
  // The first part goes up, then the process "dies": the upload is never committed or discarded.
  await until('the first part is up', async () => requests.includes('UploadPart'));
  await until('the multipart upload is listed', async () => (await store.multipartUploads(bucket)).length === 1);
  await upload.close();
  assert.equal(await d.sweepUploads(1000 * 3600, Date.now()), 0, 'a replica\'s young upload is kept');
  assert.deepEqual(await store.multipartUploads(bucket), [path]);
  assert.equal(await d.sweepUploads(0, Date.now()), 2, 'alone: the spool file and the multipart upload');
  assert.deepEqual(await store.multipartUploads(bucket), []);
  assert.deepEqual(await readdir(join(spool, '_uploads')), []);
});
