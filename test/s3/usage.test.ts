/**
 * Last-use times and the size on S3 storage (issue #17, point 6): objects
 * cannot be touched, so uses live in Redis or in the bucket's usage record,
 * and eviction by size takes the least recently *used* image, not the least
 * recently written; the size total is kept beside them, so a start-up lists
 * nothing to learn it. Each test runs with Redis and again without.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import { request } from '../../src/upstream/undici.js';
import type { S3StorageDriver } from '../../src/storage/s3/driver.js';
import { USAGE_RECORD_PATH, blobDataPath, manifestRevisionPath } from '../../src/storage/layout.js';
import type { Digest } from '../../src/registry/digest.js';
import { FakeClock } from '../fixtures/clock.js';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { findRedis, randomPrefix } from '../fixtures/redis.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { blobBytes as bucketBlobBytes, s3StorageConfig, s3Store, type S3Store } from '../fixtures/s3.js';
import { pushImage } from '../fixtures/seed.js';
import { toolSkip, until } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');
const MiB = 2 ** 20;
const blobBytes = (bucket: string): Promise<number> => bucketBlobBytes(store, bucket);
const MINUTE = 60_000;
const UPSTREAM = 'registry.test';
const redisFound = await findRedis();

let upstream: RunningRegistry;
let store: S3Store;
const images = new Map<string, BuiltImage>();

before(async () => {
  store = await s3Store();
  if (skip) return;
  upstream = await startRegistry();
  for (const repository of ['usage/a', 'usage/b']) {
    const image = makeImage({ layerSizes: [MiB] });
    await pushImage(upstream.host, repository, 'v1', image);
    images.set(repository, image);
  }
});

after(async () => {
  await upstream?.stop();
});

/** A client's pull: the manifest by tag, then the config and every layer. */
async function pull(proxy: RunningProxy, repository: string): Promise<void> {
  const image = images.get(repository)!;
  const manifest = await request(`${proxy.url}/v2/${repository}/manifests/v1`, { headers: { accept: image.mediaType } });
  assert.equal(manifest.statusCode, 200);
  await manifest.body.dump();
  for (const blob of [image.config, ...image.layers]) {
    const response = await request(`${proxy.url}/v2/${repository}/blobs/${blob.digest}`);
    assert.equal(response.statusCode, 200);
    assert.equal(Buffer.from(await response.body.arrayBuffer()).length, blob.size);
  }
  await until('the fills are committed', () => proxy.mirror.blobs.activeFills === 0);
}

function revisionPath(repository: string): string {
  return manifestRevisionPath({ upstream: UPSTREAM, name: repository } as never, images.get(repository)!.digest as Digest);
}

function layerPath(repository: string): string {
  return blobDataPath(images.get(repository)!.layers[0]!.digest as Digest);
}

/** Where the variant keeps last uses, read from the outside: the Redis hash, or the bucket's usage record. */
async function recordedUses(bucket: string, redisPrefix: string | undefined): Promise<Record<string, number>> {
  if (redisPrefix) {
    const client = new Redis(redisFound.url!, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await client.connect();
      const fields = await client.hgetall(`${redisPrefix}usage:s3://${bucket}/:times`);
      return Object.fromEntries(Object.entries(fields).map(([path, ms]) => [path, Number(ms)]));
    } finally {
      client.disconnect();
    }
  }
  const object = await store.client.send(new GetObjectCommand({ Bucket: bucket, Key: USAGE_RECORD_PATH }));
  return (JSON.parse(Buffer.from(await object.Body!.transformToByteArray()).toString('utf8')) as { used: Record<string, number> }).used;
}

/** Requests below `blobs/` or `repositories/`: a walk over the cached content. */
function walkListings(proxy: RunningProxy): string[] {
  return [...(proxy.mirror.driver as S3StorageDriver).listings.keys()].filter((p) => p.startsWith('blobs') || p.startsWith('repositories'));
}

for (const variant of ['without Redis', 'with Redis'] as const) {
  const withRedis = variant === 'with Redis';
  const variantSkip = skip || (withRedis && redisFound.skip);

  test(`S3 ${variant}: eviction by size takes the image used least recently, not the one written first; the use survives a restart`, { skip: variantSkip, timeout: 120_000 }, async () => {
    const bucket = await store.createBucket();
    // Use times come from the mirror's clock; it starts at the real time, as S3's LastModified (write times) do.
    const clock = new FakeClock(Date.now());
    const redisPrefix = withRedis ? randomPrefix() : undefined;
    const options = (storage: Record<string, unknown>): Parameters<typeof startProxy>[0] => ({
      upstreams: [{ name: UPSTREAM, url: upstream.url }],
      clock,
      ...(redisPrefix ? { redis: { url: redisFound.url!, keyPrefix: redisPrefix } } : {}),
      storage: { ...s3StorageConfig(store, bucket), evictionGrace: '0s', evictionInterval: '1h', ...storage },
    });

    // No size cap yet: A is pulled, then B (written later), then A is read again.
    const first = await startProxy(options({}));
    let readAt: number;
    try {
      await until('the size is known', () => first.mirror.evictor.usedBytes !== undefined);
      // Each use is flushed when it happens, so its recorded time is the clock's then.
      await pull(first, 'usage/a');
      await first.mirror.usage.flush();
      await clock.advance(MINUTE);
      await pull(first, 'usage/b');
      await first.mirror.usage.flush();
      await clock.advance(MINUTE);
      const manifest = await request(`${first.url}/v2/usage/a/manifests/${images.get('usage/a')!.digest}`, { headers: { accept: images.get('usage/a')!.mediaType } });
      assert.equal(manifest.statusCode, 200);
      await manifest.body.dump();
      const layer = await request(`${first.url}/v2/usage/a/blobs/${images.get('usage/a')!.layers[0]!.digest}`);
      await layer.body.arrayBuffer();
      readAt = clock.now();
      await first.mirror.usage.flush();
      await clock.advance(MINUTE);
    } finally {
      await first.stop();
    }
    const written = async (repository: string): Promise<number> => (await store.client.send(new HeadObjectCommand({
      Bucket: bucket, Key: revisionPath(repository),
    }))).LastModified!.getTime();
    // S3's LastModified has whole seconds: on a tie the listing order (a before b) puts A first too.
    assert.ok(await written('usage/b') >= await written('usage/a'), 'B was written after A');
    const uses = await recordedUses(bucket, redisPrefix);
    assert.equal(uses[revisionPath('usage/a')], readAt, 'the read of A is recorded, past the stop');
    // A pull that fills a manifest writes it (LastModified is the use); a served one records a use.
    assert.ok((uses[revisionPath('usage/b')] ?? 0) < readAt, 'B was not used since');

    // A restart with a cap that one image fits under: the run it begins at once (the recorded size is over the cap).
    const capped = await startProxy(options({ maxSize: Math.floor(1.5 * MiB) }));
    try {
      await until('the size is known', () => capped.mirror.evictor.usedBytes !== undefined);
      await capped.mirror.evictor.idle();
      const keys = await store.keys(bucket);
      assert.ok(keys.includes(layerPath('usage/a')), 'A, read last, stays');
      assert.ok(keys.includes(revisionPath('usage/a')), 'with its manifest');
      assert.ok(!keys.includes(layerPath('usage/b')), 'B, written last but used before A, went');
      assert.ok(!keys.includes(revisionPath('usage/b')), 'with its manifest');
      assert.equal(capped.mirror.evictor.usedBytes, await blobBytes(bucket), 'the size after the run is the bucket\'s');
      const left = await recordedUses(bucket, redisPrefix);
      assert.equal(left[revisionPath('usage/b')], undefined, 'what went is dropped from the last-use times');
      assert.equal(left[layerPath('usage/b')], undefined);
      assert.equal(left[revisionPath('usage/a')], readAt, 'what stayed keeps its time');
    } finally {
      await capped.stop();
    }
  });

  test(`S3 ${variant}: start-up learns the size from the ledger without listing the bucket`, { skip: variantSkip, timeout: 120_000 }, async () => {
    const bucket = await store.createBucket();
    const redisPrefix = withRedis ? randomPrefix() : undefined;
    const options = (storage: Record<string, unknown>): Parameters<typeof startProxy>[0] => ({
      upstreams: [{ name: UPSTREAM, url: upstream.url }],
      ...(redisPrefix ? { redis: { url: redisFound.url!, keyPrefix: redisPrefix } } : {}),
      storage: { ...s3StorageConfig(store, bucket), ...storage },
    });
    // A new bucket has no ledger yet: that start-up walks it once (empty), and writes the ledger.
    const first = await startProxy(options({}));
    try {
      await until('the size is known', () => first.mirror.evictor.usedBytes !== undefined);
      assert.equal(first.mirror.evictor.usedBytes, 0);
      assert.ok(walkListings(first).length > 0, 'without a ledger the start-up walks');
      for (const repository of images.keys()) await pull(first, repository);
    } finally {
      await first.stop();
    }
    const bytes = await blobBytes(bucket);
    assert.ok(bytes > 2 * MiB);

    for (const storage of [{}, { maxSize: '1GiB' }]) {
      const again = await startProxy(options(storage));
      try {
        await until('the size is known', () => again.mirror.evictor.usedBytes !== undefined);
        assert.equal(again.mirror.evictor.usedBytes, bytes, 'the size is the bucket\'s, blobs and manifests');
        const status = await (await request(`${again.adminUrl}/status.json`)).body.json() as { storage: { usedBytes: number } };
        assert.equal(status.storage.usedBytes, bytes, 'the status page says so');
        const metrics = await (await request(`${again.adminUrl}/metrics`)).body.text();
        assert.match(metrics, new RegExp(`^pullthrough_storage_used_bytes ${bytes}$`, 'm'), 'the metric says so');
        assert.deepEqual(walkListings(again), [], `no listing of the cached content at start-up (${JSON.stringify(storage)})`);
      } finally {
        await again.stop();
      }
    }
  });
}
