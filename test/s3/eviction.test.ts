/** Eviction with `maxSize` on S3 storage: under the cap after the pulls, least recently used first (usage.test.ts: used, not written), in batched deletes. */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import type { S3StorageDriver } from '../../src/storage/s3/driver.js';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { blobBytes as bucketBlobBytes, s3StorageConfig, s3Store, type S3Store } from '../fixtures/s3.js';
import { pushImage } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { tempDir, toolSkip, until } from '../fixtures/tools.js';
import { request } from '../../src/upstream/undici.js';
import { startFakeUpstream } from '../fixtures/fakeUpstream.js';
import { findRedis, randomPrefix, redisKeys } from '../fixtures/redis.js';
import type { Digest } from '../../src/registry/digest.js';

const skip = toolSkip('docker-registry', 'skopeo');
const MiB = 2 ** 20;
const redisFound = await findRedis();
const redisSkip = redisFound.skip;
const redisUrl = redisFound.url;

let upstream: RunningRegistry;
let store: S3Store;
let proxy: RunningProxy;
let bucket: string;
const images = new Map<string, BuiltImage>();

before(async () => {
  store = await s3Store();
  if (skip) return;
  upstream = await startRegistry();
  for (const repository of ['evict/one', 'evict/two', 'evict/three', 'evict/four']) {
    const image = makeImage({ layerSizes: [MiB] });
    await pushImage(upstream.host, repository, 'v1', image);
    images.set(repository, image);
  }
  bucket = await store.createBucket();
  proxy = await startProxy({
    upstreams: [{ name: 'registry.test', url: upstream.url }],
    storage: { ...s3StorageConfig(store, bucket), maxSize: Math.floor(2.5 * MiB), evictionGrace: '0s' },
  });
});

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
});

function blobBytes(): Promise<number> {
  return bucketBlobBytes(store, bucket);
}

test('maxSize on S3: the bucket is under the cap after the pulls; the oldest images went, the latest stayed', { skip }, async () => {
  for (const repository of images.keys()) {
    const image = images.get(repository)!;
    const pulled = await pullWithSkopeo(`${proxy.host}/${repository}:v1`, await tempDir('s3-evict-pull'));
    assert.equal(pulled.manifestDigest, image.digest);
    await proxy.mirror.evictor.idle();
  }
  proxy.mirror.evictor.trigger();
  await proxy.mirror.evictor.idle();
  const total = await blobBytes();
  assert.ok(total <= 2.5 * MiB, `blob bytes in the bucket ${total} <= cap`);
  const keys = await store.keys(bucket);
  const layerKey = (repository: string): string => {
    const hex = images.get(repository)!.layers[0]!.digest.split(':')[1]!;
    return `blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
  };
  assert.ok(keys.includes(layerKey('evict/four')), 'the latest image stays');
  assert.ok(!keys.includes(layerKey('evict/one')), 'the oldest went');
  assert.ok(!keys.some((k) => k.startsWith('repositories/registry.test/evict/one/_manifests/tags/')), 'with its tag record');
  assert.ok(((proxy.mirror.driver as S3StorageDriver).requests.get('DeleteObjects') ?? 0) > 0, 'removed with batched DeleteObjects');
  const again = await pullWithSkopeo(`${proxy.host}/evict/one:v1`, await tempDir('s3-evict-again'));
  assert.equal(again.manifestDigest, images.get('evict/one')!.digest, 'an evicted image pulls again');
});

test('two replicas on one bucket and Redis: eviction on one keeps a blob the other is reading, and removes it once released', { skip: redisSkip, timeout: 120_000 }, async () => {
  const shared = await store.createBucket();
  const fake = await startFakeUpstream();
  // The in-use mark lives a lease TTL without a refresh: 10 s, so a loaded machine's late refresh cannot drop it (the
  // release below is the reader's own SREM, not the TTL). A mark whose command times out waits for the next refresh:
  // on a loaded machine 150 ms is not enough, and this test is about marks, not Redis timeouts.
  const redis = { url: redisUrl!, keyPrefix: randomPrefix(), leaseTtl: '10s', commandTimeout: '5s' };
  const upstreams = [{ name: 'fake.test', url: fake.url }];
  const reader = await startProxy({ upstreams, redis, storage: s3StorageConfig(store, shared) });
  const evicting = await startProxy({ upstreams, redis, storage: { ...s3StorageConfig(store, shared), maxSize: MiB, evictionGrace: '0s' } });
  try {
    const read = makeImage({ layerSizes: [24 * MiB] });
    const other = makeImage({ layerSizes: [2 * MiB] });
    fake.addImage('inuse/read', 'v1', read);
    fake.addImage('inuse/other', 'v1', other);
    for (const [repository, image] of [['inuse/read', read], ['inuse/other', other]] as const) {
      await (await request(`${reader.url}/v2/${repository}/manifests/v1`, { headers: { accept: image.mediaType } })).body.dump();
      for (const blob of [image.config, ...image.layers]) await (await request(`${reader.url}/v2/${repository}/blobs/${blob.digest}`)).body.arrayBuffer();
    }
    await until('the fills are committed', () => reader.mirror.blobs.activeFills === 0);
    const layer = read.layers[0]!.digest;
    const key = (digest: string): string => `blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`;
    // A run the evicting replica began on its own (its start-up walk sees the bucket over the cap) decides
    // before the read below is marked: let it end first, so the run under test is the one triggered here.
    await evicting.mirror.evictor.idle();
    // The reads above marked the layer too: their release must be through, or the mark seen below could be theirs.
    await until('the earlier reads\' mark is gone', async () => !(await redisKeys(redisUrl!, redis.keyPrefix)).has(`inuse:${layer}`));
    // A client on the reading replica takes one chunk and then holds the stream open.
    const slow = await request(`${reader.url}/v2/inuse/read/blobs/${layer}`, { highWaterMark: 1024 } as never);
    const chunks = slow.body[Symbol.asyncIterator]();
    await chunks.next();
    await until('the read is marked in Redis', async () => (await redisKeys(redisUrl!, redis.keyPrefix)).has(`inuse:${layer}`));
    evicting.mirror.evictor.trigger();
    await evicting.mirror.evictor.idle();
    const kept = await store.keys(shared);
    assert.ok(kept.includes(key(layer)), 'the blob being read on the other replica survives');
    assert.ok(!kept.includes(key(other.layers[0]!.digest)), 'what nobody reads went');
    await slow.body.destroy();
    await until('the read is over', () => !reader.mirror.localBlobs.isReading(layer as Digest));
    await until('the mark is gone', async () => !(await redisKeys(redisUrl!, redis.keyPrefix)).has(`inuse:${layer}`));
    evicting.mirror.evictor.trigger();
    await evicting.mirror.evictor.idle();
    assert.ok(!(await store.keys(shared)).includes(key(layer)), 'released, it goes');
  } finally {
    await reader.stop();
    await evicting.stop();
    await fake.stop();
  }
});
