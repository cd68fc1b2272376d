/**
 * Last-use times of S3 storage in a real Redis (cache/redisUsage.ts): the
 * hash is read in HSCAN pages, never one HGETALL that could outlast the
 * command timeout and stall the shared connection; and when Redis cannot
 * answer (away, or paused past the timeout) the times are unknown, not
 * none, so that eviction does not take every write time for a last use.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { RedisConnection } from '../../src/cache/redis.js';
import { RedisUseTimes } from '../../src/cache/redisUsage.js';
import { RedisReaders } from '../../src/proxy/replicas/readers.js';
import type { Digest } from '../../src/registry/digest.js';
import { FakeClock } from '../fixtures/clock.js';
import { until } from '../fixtures/tools.js';
import type { RedisSettings } from '../../src/config/load.js';
import { findRedis, monitorCommands, randomPrefix, startPrivateRedis, type PrivateRedis } from '../fixtures/redis.js';

const redis = await findRedis();
const STORAGE = 's3://bucket/prefix/';
const privates: PrivateRedis[] = [];

after(async () => {
  for (const p of privates) await p.stop();
});

function settings(url: string, prefix: string): RedisSettings {
  return { url, keyPrefix: prefix, commandTimeoutMs: 150, keyTtlMs: 60_000, leaseTtlMs: 2000 };
}

async function connect(url: string, prefix: string): Promise<RedisConnection> {
  const connection = new RedisConnection(settings(url, prefix), pino({ level: 'silent' }));
  if (connection.client.status !== 'ready') await once(connection.client, 'ready');
  return connection;
}

test('lastUsed reads the hash in HSCAN pages of about 1000, every entry once, no HGETALL', { skip: redis.skip }, async () => {
  const prefix = randomPrefix();
  const connection = await connect(redis.url!, prefix);
  const monitor = await monitorCommands(redis.url!, prefix);
  try {
    const times = new RedisUseTimes(connection, STORAGE);
    const paths = Array.from({ length: 2500 }, (_, i) => `blobs/sha256/aa/${String(i).padStart(64, '0')}/data`);
    await times.record(new Set(paths), 1234);
    assert.deepEqual(await times.lastUsed(), new Map(paths.map((p) => [p, 1234])));
    const seen = await monitor.settle();
    const commands = seen.map((c) => c[0]!.toLowerCase());
    assert.equal(commands.filter((c) => c === 'hgetall').length, 0);
    assert.ok(commands.filter((c) => c === 'hscan').length >= 3, `2500 entries in pages of 1000: ${commands.join(' ')}`);
    const hscans = seen.filter((c) => c[0]!.toLowerCase() === 'hscan');
    for (const c of hscans) assert.deepEqual(c.slice(3).map((a) => a.toLowerCase()), ['count', '1000']);
    assert.deepEqual(await new RedisUseTimes(connection, 's3://other/').lastUsed(), new Map(), 'none recorded: known, empty');
  } finally {
    await monitor.close();
    const cleanup = new Redis(redis.url!);
    const keys = await cleanup.keys(`${prefix}*`);
    if (keys.length > 0) await cleanup.del(...keys);
    cleanup.disconnect();
    await connection.close();
  }
});

test('forget with recordedBefore drops only entries older than that; without it, every named entry', { skip: redis.skip }, async () => {
  const prefix = randomPrefix();
  const connection = await connect(redis.url!, prefix);
  try {
    const times = new RedisUseTimes(connection, STORAGE);
    await times.record(new Set(['old', 'gone']), 1000);
    await times.record(new Set(['new']), 5000);
    await times.forget(['old', 'new', 'never'], 3000);
    assert.deepEqual(await times.lastUsed(), new Map([['gone', 1000], ['new', 5000]]), 'a use recorded at 5000 is newer than the read at 3000');
    await times.forget(['new', 'gone']);
    assert.deepEqual(await times.lastUsed(), new Map());
  } finally {
    await connection.close();
  }
});

test('Redis paused past the command timeout, or away: the times are unknown (undefined), not an empty map', { skip: redis.skip }, async () => {
  const own = await startPrivateRedis();
  privates.push(own);
  const connection = await connect(own.url, randomPrefix());
  const admin = new Redis(own.url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  try {
    const times = new RedisUseTimes(connection, STORAGE);
    await times.record(new Set(['blobs/sha256/aa/x/data']), 1000);
    assert.equal((await times.lastUsed())?.size, 1);

    await admin.client('PAUSE', 2000, 'ALL');
    assert.equal(await times.lastUsed(), undefined, 'a command past the timeout');
    await admin.client('UNPAUSE');
    assert.equal((await times.lastUsed())?.size, 1, 'answered again');

    await own.stop();
    assert.equal(await times.lastUsed(), undefined, 'Redis away');
  } finally {
    admin.disconnect();
    await connection.close();
  }
});

test('a blob counts as read elsewhere when another replica marked it, and also when Redis cannot say: eviction never removes on "unknown"', { skip: redis.skip }, async () => {
  const own = await startPrivateRedis();
  privates.push(own);
  const prefix = randomPrefix();
  const here = await connect(own.url, prefix);
  const there = await connect(own.url, prefix);
  const admin = new Redis(own.url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  const clock = new FakeClock();
  const mine = new RedisReaders({ redis: here, self: 'here', clock, ttlMs: 10_000 });
  const theirs = new RedisReaders({ redis: there, self: 'there', clock, ttlMs: 10_000 });
  const digest = `sha256:${'ab'.repeat(32)}` as Digest;
  try {
    assert.equal(await mine.inUseElsewhere(digest), false, 'nobody reads it');
    mine.begin(digest);
    await until('marked', async () => (await admin.smembers(`${prefix}inuse:${digest}`)).includes('here'));
    assert.equal(await mine.inUseElsewhere(digest), false, 'only this replica reads it');
    theirs.begin(digest);
    await until('marked there', async () => (await admin.smembers(`${prefix}inuse:${digest}`)).includes('there'));
    assert.equal(await mine.inUseElsewhere(digest), true, 'another replica reads it');
    theirs.end(digest);
    await until('released there', async () => !(await admin.smembers(`${prefix}inuse:${digest}`)).includes('there'));
    assert.equal(await mine.inUseElsewhere(digest), false);

    await admin.client('PAUSE', 2000, 'ALL');
    assert.equal(await mine.inUseElsewhere(digest), true, 'a command past the timeout: unknown, so kept');
    await admin.client('UNPAUSE');
    assert.equal(await mine.inUseElsewhere(digest), false, 'answered again');
    await own.stop();
    assert.equal(await mine.inUseElsewhere(digest), true, 'Redis away: unknown, so kept');
  } finally {
    mine.stop();
    theirs.stop();
    admin.disconnect();
    await here.close();
    await there.close();
  }
});
