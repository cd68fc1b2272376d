/**
 * The pull tests of test/proxy/pull.test.ts against an S3-backed pullthrough:
 * real skopeo, a real docker-registry upstream, a real S3 store (Swift's s3api).
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import type { S3StorageDriver } from '../../src/storage/s3/driver.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { s3StorageConfig, s3Store, type S3Store } from '../fixtures/s3.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { inspectRaw, manifestDigestOf, pullWithSkopeo } from '../fixtures/skopeo.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');

let upstream: RunningRegistry;
let proxy: RunningProxy;
let images: SeededImage[];
let store: S3Store;
let bucket: string;

before(async () => {
  if (skip) return;
  store = await s3Store();
  bucket = await store.createBucket();
  upstream = await startRegistry();
  images = await seedImages(upstream.host, { layerSize: 300 * 1024, layers: 2 });
  proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url }], storage: s3StorageConfig(store, bucket, { prefix: 'pt' }) });
});

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
});

function driver(): S3StorageDriver {
  return proxy.mirror.driver as S3StorageDriver;
}

/** The S3 requests `action` makes, by command. */
async function s3Requests(action: () => Promise<void>): Promise<Record<string, number>> {
  const before = new Map(driver().requests);
  await action();
  const made: Record<string, number> = {};
  for (const [command, n] of driver().requests) if (n > (before.get(command) ?? 0)) made[command] = n - (before.get(command) ?? 0);
  return made;
}

function blobGets(entries: { method: string; path: string }[]): string[] {
  return entries.filter((e) => e.method === 'GET' && e.path.includes('/blobs/')).map((e) => e.path);
}

test('skopeo copy --all through an S3-backed pullthrough gives the upstream digests, for all four kinds', { skip }, async () => {
  assert.deepEqual(images.map((i) => i.kind).sort(), ['docker-image', 'docker-list', 'oci-image', 'oci-index']);
  for (const image of images) {
    const out = await tempDir('s3-pull');
    const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, out);
    assert.equal(pulled.manifestDigest, image.digest, `${image.kind}: manifest digest`);
    const served = await inspectRaw(`${proxy.host}/${image.repository}:${image.tag}`);
    assert.equal(manifestDigestOf(served), image.digest, `${image.kind}: manifest bytes served bit-exact`);
    assert.ok(served.equals(image.manifest), `${image.kind}: same bytes as the upstream serves`);
  }
});

test('a second pull is served from S3: no upstream blob GET, no manifest GET', { skip }, async () => {
  await upstream.clearRequests();
  for (const image of images) {
    const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, await tempDir('s3-pull-warm'));
    assert.equal(pulled.manifestDigest, image.digest);
  }
  const seen = await upstream.settledRequests();
  assert.deepEqual(blobGets(seen), [], 'no blob fetched twice');
  assert.deepEqual(seen.filter((e) => e.method === 'GET' && e.path.includes('/manifests/')), []);
});

test('the bucket holds the documented layout under the prefix, no uploads, no incomplete multipart upload', { skip }, async () => {
  const keys = await store.keys(bucket);
  const allowed = [
    /^pt\/blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{64}\/data$/,
    /^pt\/repositories\/registry\.test\/[a-z0-9/._-]+\/_layers\/sha256\/[0-9a-f]{64}$/,
    /^pt\/repositories\/registry\.test\/[a-z0-9/._-]+\/_manifests\/revisions\/sha256\/[0-9a-f]{64}$/,
    /^pt\/repositories\/registry\.test\/[a-z0-9/._-]+\/_manifests\/tags\/[A-Za-z0-9_.-]+$/,
    /^pt\/_pullthrough\/usage\.json$/,
  ];
  for (const key of keys) assert.ok(allowed.some((r) => r.test(key)), `unexpected key ${key}`);
  for (const image of images) {
    for (const digest of image.blobDigests) {
      const hex = digest.split(':')[1]!;
      assert.ok(keys.includes(`pt/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`), digest);
      assert.ok(keys.includes(`pt/repositories/registry.test/${image.repository}/_layers/sha256/${hex}`), `${digest} linked`);
    }
    assert.ok(keys.includes(`pt/repositories/registry.test/${image.repository}/_manifests/tags/${image.tag}`));
  }
  assert.deepEqual(await store.multipartUploads(bucket), []);
  assert.deepEqual(await readdir(join(proxy.root, '_uploads')), [], 'no local spool left');
});

test('a cached blob GET is one GetObject; a Range is one ranged GetObject', { skip }, async () => {
  const image = images.find((i) => i.kind === 'oci-image')!;
  const digest = image.blobDigests.at(-1)!;
  const url = `${proxy.url}/v2/${image.repository}/blobs/${digest}`;
  let whole = Buffer.alloc(0);
  assert.deepEqual(await s3Requests(async () => {
    const res = await request(url);
    assert.equal(res.statusCode, 200);
    whole = Buffer.from(await res.body.arrayBuffer());
  }), { GetObject: 1 });
  assert.equal(`sha256:${createHash('sha256').update(whole).digest('hex')}`, digest);
  assert.deepEqual(await s3Requests(async () => {
    const res = await request(url, { headers: { range: 'bytes=1000-1999' } });
    assert.equal(res.statusCode, 206);
    assert.ok(Buffer.from(await res.body.arrayBuffer()).equals(whole.subarray(1000, 2000)));
  }), { GetObject: 1 });
  assert.deepEqual(await s3Requests(async () => {
    const res = await request(url, { method: 'HEAD' });
    assert.equal(res.statusCode, 200);
    await res.body.dump();
  }), {}, 'a HEAD of a cached blob costs no S3 request');
});

test('catalog lists what is cached in S3; tags/list answers per repository', { skip }, async () => {
  const res = await request(`${proxy.url}/v2/_catalog`);
  const body = await res.body.json() as { repositories: string[] };
  for (const image of images) assert.ok(body.repositories.includes(`registry.test/${image.repository}`), image.repository);
  const tags = await request(`${proxy.url}/v2/${images[0]!.repository}/tags/list`);
  assert.deepEqual(await tags.body.json(), { name: images[0]!.repository, tags: [images[0]!.tag] });
});

test('a restart on the same bucket with an empty local directory serves from S3 with no upstream blob GET', { skip }, async () => {
  await proxy.stop();
  proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url }], storage: s3StorageConfig(store, bucket, { prefix: 'pt' }) });
  await upstream.clearRequests();
  const image = images.find((i) => i.kind === 'oci-index')!;
  const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, await tempDir('s3-pull-restart'));
  assert.equal(pulled.manifestDigest, image.digest);
  assert.deepEqual(blobGets(await upstream.settledRequests()), []);
});
