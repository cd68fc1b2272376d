import { LRUCache } from 'lru-cache';
import type { RedisConnection } from '../../cache/redis.js';
import type { Clock, Timer } from '../../registry/clock.js';
import type { Digest } from '../../registry/digest.js';

declare const registered: unique symbol;

/**
 * A peer as Redis knows it: its id (the lease owner id of its process) and
 * the origin of its internal endpoint, read from its own registration. Only
 * `PeerDirectory` makes these, so the peer client can only ever be handed an
 * address a peer registered itself, never one taken from a client request.
 */
export interface RegisteredPeer {
  readonly id: string;
  /** `http://10.0.0.7:5000`: an origin, no path. */
  readonly origin: string;
  readonly [registered]: true;
}

export interface PeerDirectoryOptions {
  readonly redis: RedisConnection;
  /** This process's id: the owner id of its leases. */
  readonly self: string;
  /** This process's `peers.advertise`. */
  readonly advertise: string;
  readonly clock: Clock;
}

/** How long a registration lives without a renewal; renewed every third of it. */
const REGISTRATION_TTL_MS = 30_000;

/**
 * Who is there and who holds what, in Redis (README "Redis keys"):
 *
 *   <prefix>peer:<id>     the origin of that process's internal endpoint (expires unless renewed)
 *   <prefix>has:<digest>  a set of the ids of the processes holding the blob committed
 *
 * A `has` set lives for `redis.keyTtl` after its last write; a process adds
 * itself on commit and again when the blob is used (at most once a minute
 * per blob), and takes itself out on eviction. A process that died without
 * cleaning up stays in sets until they expire, but its registration expires
 * within 30 s, and an id without a registration is never dialled.
 *
 * Like everything on Redis, it answers rather than throws: Redis being away
 * means no peers, and the upstream is asked.
 */
export class PeerDirectory {
  private readonly redis: RedisConnection;
  readonly self: string;
  private readonly advertise: string;
  private heartbeat: Timer | undefined;
  /** When each digest's record was last written by us, so a hot blob costs one write a minute, not one per read. */
  private readonly refreshed: LRUCache<Digest, number>;

  constructor(private readonly options: PeerDirectoryOptions) {
    this.redis = options.redis;
    this.self = options.self;
    this.advertise = options.advertise;
    this.refreshed = new LRUCache({ max: 100_000, ttl: 60_000, ttlAutopurge: false, perf: { now: () => options.clock.now() } });
  }

  /** Registers this process, and keeps the registration alive until `stop`. */
  async start(): Promise<void> {
    await this.register();
    this.heartbeat = this.options.clock.setInterval(() => void this.register(), REGISTRATION_TTL_MS / 3);
  }

  /** Takes this process out: peers stop dialling it at once. */
  async stop(): Promise<void> {
    this.heartbeat?.cancel();
    await this.redis.run((c) => c.del(this.peerKey(this.self)), null);
  }

  /** The registered peer with this id (a lease owner), or undefined when it has no live registration. */
  async peer(id: string): Promise<RegisteredPeer | undefined> {
    if (id === this.self) return undefined;
    const origin = await this.redis.run((c) => c.get(this.peerKey(id)), null);
    return origin === null ? undefined : registeredPeer(id, origin);
  }

  /** The registered peers (not this process) that hold `digest` committed, in random order. */
  async holders(digest: Digest): Promise<RegisteredPeer[]> {
    const ids = (await this.redis.run((c) => c.smembers(this.hasKey(digest)), [] as string[])).filter((id) => id !== this.self);
    if (ids.length === 0) return [];
    const origins = await this.redis.run((c) => c.mget(...ids.map((id) => this.peerKey(id))), [] as (string | null)[]);
    const peers = ids.flatMap((id, i) => {
      const origin = origins[i];
      const peer = origin ? registeredPeer(id, origin) : undefined;
      return peer ? [peer] : [];
    });
    return shuffled(peers);
  }

  /** This process holds `digest` committed: on commit (forced), and on use (at most once a minute). */
  async announce(digest: Digest, force = false): Promise<void> {
    if (!force && this.refreshed.has(digest)) return;
    this.refreshed.set(digest, this.options.clock.now());
    const key = this.hasKey(digest);
    await this.redis.run((c) => c.multi().sadd(key, this.self).pexpire(key, this.redis.settings.keyTtlMs).exec(), null);
  }

  /** This process no longer holds `digest` (evicted). */
  async withdraw(digest: Digest): Promise<void> {
    this.refreshed.delete(digest);
    await this.redis.run((c) => c.srem(this.hasKey(digest), this.self), null);
  }

  private async register(): Promise<void> {
    await this.redis.run((c) => c.set(this.peerKey(this.self), this.advertise, 'PX', REGISTRATION_TTL_MS), null);
  }

  private peerKey(id: string): string {
    return this.redis.key(`peer:${id}`);
  }

  private hasKey(digest: Digest): string {
    return this.redis.key(`has:${digest}`);
  }
}

/** A registration read back: only an http(s) origin is an address to dial. */
function registeredPeer(id: string, origin: string): RegisteredPeer | undefined {
  try {
    const url = new URL(origin);
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.origin !== origin) return undefined;
    return { id, origin } as RegisteredPeer;
  } catch {
    return undefined;
  }
}

function shuffled<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}
