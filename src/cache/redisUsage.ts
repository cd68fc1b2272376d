import type { SizeLedger, UseTimes } from '../storage/usage.js';
import type { RedisConnection } from './redis.js';

/** HSET / HDEL at most this many fields per command, so that one flush never makes a huge request. */
const FIELDS_PER_COMMAND = 1000;
/**
 * HSCAN reads the hash about this many fields per command: HGETALL of a
 * 50k-entry hash takes ~140 ms, past a 150 ms command timeout with little
 * load, and stalls the connection that descriptor lookups, leases and
 * in-use marks share; a page of 1000 takes a few ms.
 */
const FIELDS_PER_PAGE = 1000;

/** Adds to the total only when there is one: a counter INCRBY created from nothing would pass for a measured size. */
/** HDELs each field (ARGV[2..]) whose time is before ARGV[1]: a use recorded since the caller read the hash stays. */
const FORGET_IF_OLDER = "local n = 0 for i = 2, #ARGV do local v = tonumber(redis.call('HGET', KEYS[1], ARGV[i])) "
  + "if v and v < tonumber(ARGV[1]) then n = n + redis.call('HDEL', KEYS[1], ARGV[i]) end end return n";

const ADD_IF_KNOWN = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end return false";

/**
 * The Redis key of a usage fact of one storage: `<prefix>usage:<storage>:<name>`,
 * `<storage>` naming the bucket and key prefix (`s3://bucket/prefix/`), so
 * that instances on storage of their own (peers) never mix their totals.
 */
function usageKey(redis: RedisConnection, storage: string, name: string): string {
  return redis.key(`usage:${storage}:${name}`);
}

/**
 * Last-use times of S3 storage in Redis, shared by every replica on it: one
 * hash `<prefix>usage:<storage>:times`, storage path → last use (ms). A flush is one
 * pipelined HSET (per 1000 paths); an eviction run reads the hash in pages
 * (HSCAN) and HDELs what it removed and what no longer exists (the latter
 * only if not recorded again since its read: one small script per 1000). The hash has
 * no TTL: each run's forgets keep it to what is cached. Redis away: the
 * flush's uses are lost, and a run learns that the times are unknown (any
 * page that fails: a partial hash would pass for older uses) and removes no
 * image by age or size, never an error.
 */
export class RedisUseTimes implements UseTimes {
  private readonly key: string;

  /** `storage` names the bucket and prefix (`S3StorageDriver.description`). */
  constructor(private readonly redis: RedisConnection, storage: string) {
    this.key = usageKey(redis, storage, 'times');
  }

  async record(paths: ReadonlySet<string>, timeMs: number): Promise<void> {
    if (paths.size === 0) return;
    const all = [...paths];
    await this.redis.run((c) => {
      const pipeline = c.pipeline();
      for (let i = 0; i < all.length; i += FIELDS_PER_COMMAND) {
        pipeline.hset(this.key, ...all.slice(i, i + FIELDS_PER_COMMAND).flatMap((p) => [p, String(timeMs)]));
      }
      return pipeline.exec();
    }, undefined);
  }

  async lastUsed(): Promise<ReadonlyMap<string, number> | undefined> {
    const times = new Map<string, number>();
    let cursor = '0';
    do {
      const page = await this.redis.run((c) => c.hscan(this.key, cursor, 'COUNT', FIELDS_PER_PAGE), undefined);
      if (!page) return undefined;
      const [next, fields] = page;
      // HSCAN may return a field twice across pages: the map keeps one.
      for (let i = 0; i + 1 < fields.length; i += 2) {
        const time = Number(fields[i + 1]);
        if (Number.isFinite(time)) times.set(fields[i]!, time);
      }
      cursor = next;
    } while (cursor !== '0');
    return times;
  }

  async forget(paths: readonly string[], recordedBefore?: number): Promise<void> {
    if (paths.length === 0) return;
    await this.redis.run((c) => {
      const pipeline = c.pipeline();
      for (let i = 0; i < paths.length; i += FIELDS_PER_COMMAND) {
        const batch = paths.slice(i, i + FIELDS_PER_COMMAND);
        if (recordedBefore === undefined) pipeline.hdel(this.key, ...batch);
        else pipeline.eval(FORGET_IF_OLDER, 1, this.key, String(recordedBefore), ...batch);
      }
      return pipeline.exec();
    }, undefined);
  }
}

/**
 * The size total of S3 storage in Redis: a counter `<prefix>usage:<storage>:bytes`
 * that every replica's commits INCRBY (so each replica's estimate is the
 * shared total), and that each eviction run sets to what it measured. A
 * counter that does not exist (a new Redis, storage from before the ledger)
 * stays absent until a walk sets it. Redis away: unknown, and the evictor
 * walks as before.
 */
export class RedisSizeLedger implements SizeLedger {
  private readonly key: string;

  /** `storage` as for `RedisUseTimes`. */
  constructor(private readonly redis: RedisConnection, storage: string) {
    this.key = usageKey(redis, storage, 'bytes');
  }

  async read(): Promise<number | undefined> {
    const value = await this.redis.run((c) => c.get(this.key), null);
    return counted(value);
  }

  async add(bytes: number): Promise<number | undefined> {
    const total = await this.redis.run((c) => c.eval(ADD_IF_KNOWN, 1, this.key, String(bytes)), null);
    return counted(total);
  }

  async set(bytes: number): Promise<void> {
    await this.redis.run((c) => c.set(this.key, String(bytes)), undefined);
  }
}

function counted(value: unknown): number | undefined {
  if (value === null || value === undefined) return undefined;
  const n = Number(value);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}
