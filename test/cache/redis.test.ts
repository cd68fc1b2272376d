import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { request } from '../../src/upstream/undici.js';
import { CachedBlobStatter } from '../../src/cache/cachedStatter.js';
import { MemoryBlobDescriptorService } from '../../src/cache/memory.js';
import { RedisConnection } from '../../src/cache/redis.js';
import { RedisBlobDescriptorService } from '../../src/cache/redisDescriptors.js';
import { ConfigError, resolveConfig, type RedisSettings } from '../../src/config/load.js';
import { createLogger } from '../../src/config/logger.js';
import type { Descriptor } from '../../src/registry/descriptor.js';
import { digestOf, type Digest } from '../../src/registry/digest.js';
import type { RepositoryName } from '../../src/registry/names.js';
import { GLOBAL_SCOPE, repositoryScope, type BlobStatter, type Scope } from '../../src/registry/services.js';
import { findRedis, monitorCommands, randomPrefix, redisKeys, startPrivateRedis, startRedisProxy, type RedisProxy } from '../fixtures/redis.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const redis = await findRedis();
const redisSkip = redis.skip;
const pullSkip = redisSkip || toolSkip('docker-registry', 'skopeo', 'redis-server');
const UPSTREAM = 'registry.test';

function settings(url: string, prefix: string, overrides: Partial<RedisSettings> = {}): RedisSettings {
  return { url, keyPrefix: prefix, commandTimeoutMs: 150, keyTtlMs: 60_000, leaseTtlMs: 2000, ...overrides };
}

function capturingLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  let raw = '';
  const sink = new Writable({ write(chunk: Buffer, _e, cb) { raw += chunk.toString(); cb(); } });
  return { logger: createLogger('info', sink), lines: () => raw.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** A connection that has connected: commands sent before that may fail fast, by design. */
async function connected(connection: RedisConnection): Promise<RedisConnection> {
  if (connection.client.status !== 'ready') await once(connection.client, 'ready');
  return connection;
}

/** Fills leave the map after their commit has set the descriptors and links. */
async function fillsSettled(proxy: RedisProxy): Promise<void> {
  while (proxy.mirror.blobs.activeFills > 0) await sleep(10);
}

/** A storage stand-in that knows one descriptor and counts how often it is asked. */
class CountingStatter implements BlobStatter {
  calls = 0;
  constructor(private readonly known: Descriptor) {}
  async stat(_scope: Scope, digest: Digest): Promise<Descriptor | undefined> {
    this.calls++;
    return digest === this.known.digest ? this.known : undefined;
  }
}

const repo = { upstream: 'docker.io', name: 'library/alpine' as RepositoryName };

test('the redis block: optional, with documented defaults, durations checked', () => {
  const base = { listen: { port: 5000 }, storage: { root: '/tmp/x' }, upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }] };
  assert.equal(resolveConfig(base, 'test').redis, undefined);
  assert.deepEqual(resolveConfig({ ...base, redis: { url: 'redis://redis:6379' } }, 'test').redis, {
    url: 'redis://redis:6379', keyPrefix: 'pullthrough:', commandTimeoutMs: 150, keyTtlMs: 24 * 3600_000, leaseTtlMs: 10_000,
  });
  assert.throws(() => resolveConfig({ ...base, redis: { url: 'http://redis' } }, 'test'), ConfigError);
  assert.throws(() => resolveConfig({ ...base, redis: { url: 'redis://r', leaseTtl: '100ms' } }, 'test'), /leaseTtl/);
  assert.throws(() => resolveConfig({ ...base, redis: { url: 'redis://r', colour: 'red' } }, 'test'), /colour: unknown key/);
});

test('RedisBlobDescriptorService: the documented keys and JSON values, global scope only; clear removes them', { skip: redisSkip }, async () => {
  const prefix = randomPrefix();
  const connection = await connected(new RedisConnection(settings(redis.url!, prefix), capturingLogger().logger));
  try {
    const service = new RedisBlobDescriptorService(connection);
    const digest = digestOf(Buffer.from('layer'));
    const descriptor = { digest, size: 5, mediaType: 'application/octet-stream' };
    await service.setDescriptor(GLOBAL_SCOPE, digest, descriptor);
    await service.setDescriptor(repositoryScope(repo), digest, descriptor);
    const keys = await redisKeys(redis.url!, prefix);
    // Access to a repository is never read from Redis (anyone who can write to it could grant it): no repo: key.
    assert.deepEqual([...keys.keys()].sort(), [`blob:${digest}`]);
    for (const value of keys.values()) assert.deepEqual(JSON.parse(value), { size: 5, mediaType: 'application/octet-stream' });
    assert.deepEqual(await service.stat(GLOBAL_SCOPE, digest), descriptor);
    await connection.client.set(`${prefix}repo:docker.io/library/alpine@${digest}`, JSON.stringify({ size: 5, mediaType: 'x/y' }));
    assert.equal(await service.stat(repositoryScope(repo), digest), undefined, 'a repo: key, forged or left by an older version, grants nothing');
    const ttl = await connection.client.pttl(`${prefix}blob:${digest}`);
    assert.ok(ttl > 50_000 && ttl <= 60_000, `keys expire after keyTtl (pttl ${ttl})`);
    await service.clear(GLOBAL_SCOPE, digest);
    assert.equal(await service.stat(GLOBAL_SCOPE, digest), undefined);
    assert.deepEqual([...(await redisKeys(redis.url!, prefix)).keys()], [`repo:docker.io/library/alpine@${digest}`]);
  } finally {
    await connection.close();
  }
});

test('memory → Redis → storage: a repeated stat is answered from memory with zero Redis commands', { skip: redisSkip }, async () => {
  const prefix = randomPrefix();
  const connection = await connected(new RedisConnection(settings(redis.url!, prefix), capturingLogger().logger));
  const monitor = await monitorCommands(redis.url!, prefix);
  try {
    const digest = digestOf(Buffer.from('config'));
    const storage = new CountingStatter({ digest, size: 6, mediaType: 'application/octet-stream' });
    const redisTier = new RedisBlobDescriptorService(connection);
    const statter = new CachedBlobStatter(new MemoryBlobDescriptorService(100), new CachedBlobStatter(redisTier, storage));

    assert.equal((await statter.stat(GLOBAL_SCOPE, digest))?.size, 6);
    const first = await monitor.settle();
    assert.deepEqual(first.map((c) => c[0]!.toLowerCase()), ['get', 'set'], 'a cold stat: Redis miss, storage, then Redis learns it');
    assert.equal(storage.calls, 1);

    monitor.clear();
    for (let i = 0; i < 5; i++) assert.equal((await statter.stat(GLOBAL_SCOPE, digest))?.size, 6);
    assert.deepEqual(await monitor.settle(), [], 'repeated stats make no Redis round trip');
    assert.equal(storage.calls, 1);

    // Another process (a fresh memory tier) finds it in Redis, without storage.
    const other = new CachedBlobStatter(new MemoryBlobDescriptorService(100), new CachedBlobStatter(redisTier, storage));
    monitor.clear();
    assert.equal((await other.stat(GLOBAL_SCOPE, digest))?.size, 6);
    assert.deepEqual((await monitor.settle()).map((c) => c[0]!.toLowerCase()), ['get']);
    assert.equal(storage.calls, 1, 'the Redis hit spared the storage stat');
  } finally {
    await monitor.close();
    await connection.close();
  }
});

test('a hung Redis: each call gives up on its own and answers a miss, the outage is logged once', { skip: redisSkip || toolSkip('redis-server') }, async () => {
  const server = await startPrivateRedis();
  const { logger, lines } = capturingLogger();
  const connection = await connected(new RedisConnection(settings(server.url, randomPrefix(), { commandTimeoutMs: 100 }), logger));
  try {
    const service = new RedisBlobDescriptorService(connection);
    const digest = digestOf(Buffer.from('x'));
    await service.setDescriptor(GLOBAL_SCOPE, digest, { digest, size: 1, mediaType: 'a/b' });
    process.kill(server.pid, 'SIGSTOP');
    // Redis stays stopped until after these: each answer (a miss, though Redis holds the
    // descriptor) can only come from the command timeout, never from Redis.
    for (let i = 0; i < 5; i++) assert.equal(await service.stat(GLOBAL_SCOPE, digest), undefined);
    assert.equal(lines().filter((l) => l['level'] === 40).length, 1, 'one warning for the outage');
    process.kill(server.pid, 'SIGCONT');
    assert.equal((await service.stat(GLOBAL_SCOPE, digest))?.size, 1, 'answers again once Redis does');
    assert.equal(lines().filter((l) => l['msg'] === 'Redis available again').length, 1);
  } finally {
    process.kill(server.pid, 'SIGCONT');
    await connection.close();
    await server.stop();
  }
});

describePulls();

function describePulls(): void {
  let upstream: RunningRegistry;
  let images: SeededImage[];

  before(async () => {
    if (pullSkip) return;
    upstream = await startRegistry();
    images = await seedImages(upstream.host, { kinds: ['oci-image'], layers: 2, layerSize: 64 * 1024, repositoryPrefix: 'keys' });
    images.push(...await seedImages(upstream.host, { kinds: ['docker-image'], layerSize: 64 * 1024, repositoryPrefix: 'outage-a' }));
    images.push(...await seedImages(upstream.host, { kinds: ['docker-image'], layerSize: 64 * 1024, repositoryPrefix: 'outage-b' }));
    images.push(...await seedImages(upstream.host, { kinds: ['docker-image'], layerSize: 64 * 1024, repositoryPrefix: 'outage-c' }));
    images.push(...await seedImages(upstream.host, { kinds: ['oci-image'], layerSize: 64 * 1024, repositoryPrefix: 'shared-tag' }));
  });

  after(async () => {
    await upstream?.stop();
  });

  const upstreams = (): { name: string; url: string }[] => [{ name: UPSTREAM, url: upstream.url }];

  async function pull(proxy: RedisProxy, image: SeededImage): Promise<void> {
    const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, await tempDir('pull'));
    assert.equal(pulled.manifestDigest, image.digest);
    await fillsSettled(proxy);
  }

  function expectedKeys(image: SeededImage): Map<string, unknown> {
    const manifest = JSON.parse(image.manifest.toString()) as { config: { digest: string; size: number }; layers: { digest: string; size: number }[] };
    const keys = new Map<string, unknown>();
    for (const blob of [manifest.config, ...manifest.layers]) {
      keys.set(`blob:${blob.digest}`, { size: blob.size, mediaType: 'application/octet-stream' });
    }
    return keys;
  }

  function assertHasKeys(keys: Map<string, string>, image: SeededImage): void {
    for (const [key, value] of expectedKeys(image)) {
      assert.ok(keys.has(key), `${key} is in Redis`);
      assert.deepEqual(JSON.parse(keys.get(key)!), value, key);
    }
    const tag = keys.get(`tag:${UPSTREAM}/${image.repository}:${image.tag}`);
    assert.ok(tag, 'the tag record is in Redis');
    const record = JSON.parse(tag) as Record<string, unknown>;
    assert.equal(record['digest'], image.digest);
    assert.equal(record['mediaType'], image.mediaType);
    assert.equal(record['size'], image.manifest.length);
    assert.ok(Math.abs(Date.parse(String(record['fetchedAt'])) - Date.now()) < 60_000, 'fetchedAt is an ISO time of the fetch');
  }

  test('after a skopeo pull through pullthrough, Redis holds the documented keys with the documented values', { skip: pullSkip }, async () => {
    const prefix = randomPrefix();
    const proxy = await startRedisProxy({ upstreams: upstreams(), redis: { url: redis.url!, keyPrefix: prefix } });
    try {
      await pull(proxy, images[0]!);
      const keys = await redisKeys(redis.url!, prefix);
      assertHasKeys(keys, images[0]!);
      const others = [...keys.keys()].filter((k) => !k.startsWith('blob:') && !k.startsWith('tag:'));
      assert.deepEqual(others, [], 'leases and fill keys are gone once the fills are done');
    } finally {
      await proxy.stop();
    }
  });

  test('Redis stopped mid-test: pulls keep succeeding, one warning; started again: it is used again', { skip: pullSkip }, async () => {
    const server = await startPrivateRedis();
    const prefix = randomPrefix();
    const proxy = await startRedisProxy({ upstreams: upstreams(), redis: { url: server.url, keyPrefix: prefix, commandTimeout: '100ms' } });
    try {
      const [a, b, c] = images.filter((i) => i.repository.startsWith('outage-'));
      await pull(proxy, a!);
      assertHasKeys(await redisKeys(server.url, prefix), a!);

      // Counted from here: on a loaded machine a command of the pull above may already have timed out once.
      const logged = proxy.logs().length;
      await server.stop();
      await pull(proxy, b!);
      const blob = (JSON.parse(b!.manifest.toString()) as { layers: { digest: string }[] }).layers[0]!.digest;
      const again = await request(`${proxy.url}/v2/${b!.repository}/blobs/${blob}`);
      assert.equal(again.statusCode, 200);
      assert.equal(digestOf(Buffer.from(await again.body.arrayBuffer())), blob);
      const warnings = proxy.logs().slice(logged).filter((l) => l['msg'] === 'Redis unavailable: serving from memory and storage until it is back');
      assert.equal(warnings.length, 1, 'the outage is logged once, not per request');

      await server.start();
      const deadline = Date.now() + 10_000;
      while (!proxy.logs().some((l) => l['msg'] === 'Redis available again')) {
        assert.ok(Date.now() < deadline, 'ioredis reconnects by itself');
        await sleep(50);
      }
      await pull(proxy, c!);
      const keys = await redisKeys(server.url, prefix);
      assertHasKeys(keys, c!);
      assert.ok(![...keys.keys()].some((k) => k.includes(b!.repository)), 'what happened during the outage was not written');
    } finally {
      await proxy.stop();
      await server.stop();
    }
  });

  test('tag freshness is shared: a tag one replica resolved is fresh for another, which does not ask upstream', { skip: pullSkip }, async () => {
    const prefix = randomPrefix();
    const image = images.find((i) => i.repository.startsWith('shared-tag'))!;
    const options = { upstreams: upstreams(), upstreamDefaults: { tagMaxAge: '1m' }, redis: { url: redis.url!, keyPrefix: prefix } };
    const one = await startRedisProxy(options);
    const two = await startRedisProxy(options);
    try {
      const accept = { accept: image.mediaType };
      const tagPath = `/v2/${image.repository}/manifests/${image.tag}`;
      await upstream.clearRequests();
      const first = await request(`${one.url}${tagPath}`, { headers: accept });
      assert.equal(first.headers['docker-content-digest'], image.digest);
      await first.body.dump();
      assert.equal((await upstream.settledRequests()).filter((e) => e.path === tagPath).length, 1, 'the first replica asks upstream');
      await upstream.clearRequests();
      const second = await request(`${two.url}${tagPath}`, { headers: accept });
      assert.equal(second.statusCode, 200);
      assert.equal(second.headers['docker-content-digest'], image.digest);
      await second.body.dump();
      assert.deepEqual((await upstream.settledRequests()).filter((e) => e.path === tagPath), [], 'the second replica trusts the shared record');
    } finally {
      await one.stop();
      await two.stop();
    }
  });
}
