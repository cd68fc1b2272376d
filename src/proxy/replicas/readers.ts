import type { RedisConnection } from '../../cache/redis.js';
import type { Clock, Timer } from '../../registry/clock.js';
import type { Digest } from '../../registry/digest.js';
import type { SharedReaders } from '../../storage/blobs.js';

export interface RedisReadersOptions {
  readonly redis: RedisConnection;
  /** This process's id in the set (the lease owner id). */
  readonly self: string;
  readonly clock: Clock;
  /** How long a mark lives without a refresh: a replica that died stops holding its blobs after this. */
  readonly ttlMs: number;
}

/**
 * The blobs being read on any replica: a Redis set `<prefix>inuse:<digest>`
 * of the ids of the replicas reading it, with a TTL that every reader
 * refreshes while it reads. Eviction on one replica asks before it removes a
 * blob (`inUseElsewhere`), so that a blob another replica is streaming is
 * kept, as its own readers' are. Redis away (or slower than its command
 * timeout): a blob counts as read elsewhere, so a run removes none that
 * another replica might be streaming; the next run that can ask removes it.
 */
export class RedisReaders implements SharedReaders {
  private readonly reading = new Map<Digest, number>();
  private timer: Timer | undefined;

  constructor(private readonly options: RedisReadersOptions) {}

  begin(digest: Digest): void {
    const n = this.reading.get(digest) ?? 0;
    this.reading.set(digest, n + 1);
    if (n === 0) void this.mark(digest);
    this.timer ??= this.options.clock.setInterval(() => void this.refresh(), Math.max(100, Math.floor(this.options.ttlMs / 3)));
  }

  end(digest: Digest): void {
    const n = (this.reading.get(digest) ?? 1) - 1;
    if (n > 0) {
      this.reading.set(digest, n);
      return;
    }
    this.reading.delete(digest);
    void this.options.redis.run((c) => c.srem(this.key(digest), this.options.self), undefined);
    if (this.reading.size === 0) {
      this.timer?.cancel();
      this.timer = undefined;
    }
  }

  /** True when a replica other than this one marked the blob as being read and its mark is alive, or when Redis cannot say. */
  async inUseElsewhere(digest: Digest): Promise<boolean> {
    const members = await this.options.redis.run((c) => c.smembers(this.key(digest)), undefined);
    // Unknown is not "nobody": a removal cannot be undone, keeping costs one more run.
    if (members === undefined) return true;
    return members.some((m) => m !== this.options.self);
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  private key(digest: Digest): string {
    return this.options.redis.key(`inuse:${digest}`);
  }

  private async mark(digest: Digest): Promise<void> {
    const key = this.key(digest);
    await this.options.redis.run((c) => c.multi().sadd(key, this.options.self).pexpire(key, this.options.ttlMs).exec(), undefined);
  }

  private async refresh(): Promise<void> {
    for (const digest of this.reading.keys()) await this.mark(digest);
  }
}
