import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { RedisConnection } from '../../cache/redis.js';
import type { Clock, Timer } from '../../registry/clock.js';
import type { Digest } from '../../registry/digest.js';
import { RegistryError, UpstreamUnavailable, type ErrorCode } from '../../registry/errors.js';
import { isUploadFor } from '../../storage/layout.js';

/**
 * Fill leases in Redis: which replica fetches a cold blob for all of them,
 * and where the others find the bytes while it does (README "Replicas").
 *
 *   <prefix>lease:<digest>  the owner's id; SET NX PX leaseTtl, renewed every
 *                           leaseTtl/3 while the fill runs, deleted by its owner
 *                           only (compare-and-delete script)
 *   <prefix>fill:<digest>   JSON about the owner's fill, under the same TTL:
 *                           {"owner","upload","size"} while it runs: `upload`
 *                           is the upload's name (`uploadPath` in
 *                           storage/layout.ts), `size` the upstream's
 *                           Content-Length or null;
 *                           {"owner","failed":{"code","message"}} for a few
 *                           seconds after the upstream gave a verdict (404,
 *                           digest mismatch, 429), so that followers answer
 *                           what its clients got; a fill merely cut off
 *                           (connection lost, shutdown) releases the lease
 *                           without one, and a follower takes over
 *
 * Every write is conditional on the lease still being the caller's, so a
 * replica that lost its lease (paused past the TTL) can never overwrite what
 * its successor published. Nothing here is needed for correctness: without
 * Redis a blob may be fetched twice, never served wrong.
 *
 * What a fill key says is a hint: anyone who can write to Redis can write
 * it. A follower follows only an upload whose name says it was made for this
 * very digest (`isUploadFor`), hashes what it reads and announces no size
 * it has not checked; a failure's code is one a fill can fail with, and its
 * message is ours, never the text found in Redis.
 */

/** What a fill's key says. */
export type FillInfo =
  | { readonly owner: string; readonly upload: string; readonly size: number | undefined }
  | { readonly owner: string; readonly failed: RegistryError };

/** A lease and its fill as read together. */
export interface LeaseState {
  /** The current owner's id, or undefined when nobody holds the lease. */
  readonly owner: string | undefined;
  readonly fill: FillInfo | undefined;
}

/** `owned`: ours now; `taken`: another replica's; `unavailable`: Redis did not answer. */
export type AcquireResult = 'owned' | 'taken' | 'unavailable';

/** How long a failure stays readable for the followers of the failed fill. */
const FAILURE_TTL_MS = 5000;

/** Renewals are at least this far apart, however short the lease. */
const MIN_RENEWAL_INTERVAL_MS = 50;

// KEYS[1] lease, KEYS[2] fill; ARGV[1] owner, ARGV[2] ttl ms.
const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0`;

// KEYS[1] lease, KEYS[2] fill; ARGV[1] owner, ARGV[2] fill JSON, ARGV[3] ttl ms.
const PUBLISH = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`;

// KEYS[1] lease, KEYS[2] fill; ARGV[1] owner.
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1], KEYS[2])
end
return 0`;

// KEYS[1] lease, KEYS[2] fill; ARGV[1] owner, ARGV[2] failure JSON, ARGV[3] ttl ms.
const FAIL = `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0`;

/** A process's id as a lease owner: readable in redis-cli, unique across restarts. */
export function newOwnerId(): string {
  return `${hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
}

/** The key prefixes of one kind of lease (after the connection's key prefix). */
export interface LeaseKeyspace {
  /** `lease:` for blob fills. */
  readonly lease: string;
  /** `fill:` for blob fills. */
  readonly fill: string;
}

/** Blob fills: `lease:<digest>`, `fill:<digest>`. */
export const BLOB_FILL_KEYS: LeaseKeyspace = { lease: 'lease:', fill: 'fill:' };

export interface FillLeasesOptions {
  /** The process's connection; its settings give the lease's TTL. */
  readonly redis: RedisConnection;
  /** What the leases are for; blob fills by default. */
  readonly keyspace?: LeaseKeyspace;
  /** Schedules the renewals of held leases. */
  readonly clock: Clock;
  /** This replica's id as a lease owner; `newOwnerId()` by default. */
  readonly owner?: string;
}

/**
 * The lease operations of one replica. All of them answer rather than throw
 * when Redis is unavailable: `acquire` says `unavailable`, `look` answers
 * undefined, and the writes do nothing. A lease is named by an id: a blob's
 * digest, or (in the manifest keyspace) `<upstream>/<repository>@<digest>`.
 */
export class FillLeases {
  readonly ttlMs: number;
  readonly owner: string;
  private readonly redis: RedisConnection;
  private readonly clock: Clock;
  private readonly keyspace: LeaseKeyspace;

  constructor(options: FillLeasesOptions) {
    this.redis = options.redis;
    this.keyspace = options.keyspace ?? BLOB_FILL_KEYS;
    this.clock = options.clock;
    this.owner = options.owner ?? newOwnerId();
    this.ttlMs = options.redis.settings.leaseTtlMs;
  }

  /** `SET <prefix>lease:<id> <owner> NX PX <ttl>` (`lease:` is the keyspace's). */
  async acquire(id: string): Promise<AcquireResult> {
    const reply = await this.redis.run((c) => c.set(this.leaseKey(id), this.owner, 'PX', this.ttlMs, 'NX'), 'unavailable' as const);
    if (reply === 'unavailable') return reply;
    return reply === 'OK' ? 'owned' : 'taken';
  }

  /** Extends our lease (and its fill key) by a TTL; false when it is no longer ours, undefined when Redis did not answer. */
  async renew(id: string): Promise<boolean | undefined> {
    const reply = await this.script(RENEW, id, [this.owner, String(this.ttlMs)]);
    return reply === undefined ? undefined : reply === 1;
  }

  /**
   * Keeps a lease we acquired for as long as its fill runs: renewed every
   * third of its life, so that one renewal may be lost without the lease
   * lapsing.
   * `onLost` is called (once) when a renewal finds the lease taken by another
   * replica, which happens when this process was paused past the TTL.
   * Cancel the timer when the fill is over, before `release` or `fail`.
   */
  hold(id: string, onLost: () => void): Timer {
    let lost = false;
    return this.clock.setInterval(() => {
      void this.renew(id).then((ours) => {
        if (ours !== false || lost) return;
        lost = true;
        onLost();
      });
    }, Math.max(MIN_RENEWAL_INTERVAL_MS, Math.floor(this.ttlMs / 3)));
  }

  /** Tells followers where our fill's bytes are. */
  async publish(id: string, upload: string, size: number | undefined): Promise<void> {
    const info = JSON.stringify({ owner: this.owner, upload, size: size ?? null });
    await this.script(PUBLISH, id, [this.owner, info, String(this.ttlMs)]);
  }

  /** Gives the lease up after a commit: deletes lease and fill key, if the lease is still ours. */
  async release(id: string): Promise<void> {
    await this.script(RELEASE, id, [this.owner]);
  }

  /** Gives the lease up after a failure, leaving the error for the followers to answer with. */
  async fail(id: string, err: unknown): Promise<void> {
    const failure = err instanceof RegistryError
      ? { code: err.code, message: err.message }
      : { code: 'UNAVAILABLE', message: `the replica fetching this blob failed: ${(err as Error).message}` };
    const info = JSON.stringify({ owner: this.owner, failed: failure });
    await this.script(FAIL, id, [this.owner, info, String(FAILURE_TTL_MS)]);
  }

  /** The lease and the fill key, read in one round trip; undefined when Redis did not answer. */
  async look(id: string): Promise<LeaseState | undefined> {
    const reply = await this.redis.run((c) => c.mget(this.leaseKey(id), this.fillKey(id)), undefined);
    if (reply === undefined) return undefined;
    const [owner, fill] = reply;
    return { owner: owner ?? undefined, fill: fill ? parseFillInfo(fill, id) : undefined };
  }

  leaseKey(id: string): string {
    return this.redis.key(`${this.keyspace.lease}${id}`);
  }

  fillKey(id: string): string {
    return this.redis.key(`${this.keyspace.fill}${id}`);
  }

  private async script(lua: string, id: string, args: string[]): Promise<number | undefined> {
    const reply = await this.redis.run((c) => c.eval(lua, 2, this.leaseKey(id), this.fillKey(id), ...args), undefined);
    return typeof reply === 'number' ? reply : undefined;
  }
}

/**
 * The verdicts a fill can end with, and what its followers' clients are
 * told: the message is ours (Redis text never reaches a client), the code
 * one of these (anything else reads as UNAVAILABLE).
 */
const FILL_VERDICTS: Readonly<Partial<Record<ErrorCode, string>>> = {
  BLOB_UNKNOWN: 'blob unknown to registry',
  MANIFEST_UNKNOWN: 'manifest unknown to the upstream',
  NAME_UNKNOWN: 'repository unknown to the upstream',
  DENIED: 'the upstream denied access to this blob',
  TOOMANYREQUESTS: 'the upstream is rate-limiting pulls',
  UPSTREAM_INVALID: 'the upstream sent content that does not match its digest, or too much of it',
  UNAVAILABLE: 'the replica fetching this blob failed',
};

/**
 * Reads the fill key of lease `id` (a blob's digest); anything malformed, or
 * an upload that is not one `newUploadName` made for this digest, is no
 * information. A manifest lease's id is no digest, so no upload matches it.
 */
export function parseFillInfo(value: string, id: string): FillInfo | undefined {
  try {
    const parsed = JSON.parse(value) as { owner?: unknown; upload?: unknown; size?: unknown; failed?: { code?: unknown } };
    if (typeof parsed.owner !== 'string') return undefined;
    if (parsed.failed) {
      const named = parsed.failed.code;
      const code: ErrorCode = typeof named === 'string' && Object.hasOwn(FILL_VERDICTS, named) ? named as ErrorCode : 'UNAVAILABLE';
      const message = FILL_VERDICTS[code]!;
      const failed = code === 'UNAVAILABLE' ? new UpstreamUnavailable(message) : new RegistryError(code, message);
      return { owner: parsed.owner, failed };
    }
    // The name becomes a path under the uploads directory, and is followed for this digest only.
    if (typeof parsed.upload !== 'string' || !isUploadFor(parsed.upload, id as Digest)) return undefined;
    const size = typeof parsed.size === 'number' && Number.isSafeInteger(parsed.size) && parsed.size >= 0 ? parsed.size : undefined;
    return { owner: parsed.owner, upload: parsed.upload, size };
  } catch {
    return undefined;
  }
}
