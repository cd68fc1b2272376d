import type { Logger } from 'pino';
import type { Clock, Timer } from '../registry/clock.js';
import type { StorageDriver } from './driver.js';

/**
 * Last-use times kept beside the storage, for a driver whose files cannot be
 * touched (S3: an object's LastModified is its write time). Eviction takes a
 * file's last use as the later of its modification time and the time here.
 * Implementations: Redis (cache/redisUsage.ts) when configured, else one
 * record object in the storage itself (usageRecord.ts).
 */
export interface UseTimes {
  /**
   * Called once per flush with the paths used since the last one (maybe
   * none: an implementation may write other pending state then too).
   */
  record(paths: ReadonlySet<string>, timeMs: number): Promise<void>;
  /**
   * Every recorded last use, by storage path: one read per eviction run.
   * Undefined when the times cannot be known now (Redis away or slower than
   * its command timeout): not the same as none recorded, since a run that
   * took it for none would see every image as last used when written.
   */
  lastUsed(): Promise<ReadonlyMap<string, number> | undefined>;
  /**
   * Drops the entries of removed content (and of blobs whose use no longer
   * matters); with `recordedBefore`, only entries older than that, so that a
   * use recorded since the caller read the times survives.
   */
  forget(paths: readonly string[], recordedBefore?: number): Promise<void>;
}

/**
 * The bytes of all blobs, persisted so that a start-up learns the size
 * without walking the storage. A commit adds to it; an eviction run, which
 * measures exactly, sets it.
 */
export interface SizeLedger {
  /** The recorded total; undefined when none was ever written (storage from before the ledger) or it cannot be read. */
  read(): Promise<number | undefined>;
  /** A commit of `bytes`. Resolves with the new total where the ledger is shared and knows it (Redis), else undefined. */
  add(bytes: number): Promise<number | undefined>;
  /** The total as a walk measured it. */
  set(bytes: number): Promise<void>;
}

export interface UsageRecorderOptions {
  readonly driver: StorageDriver;
  /** How often pending uses are written; 0: only on `flush` and `stop`. */
  readonly intervalMs: number;
  readonly clock: Clock;
  /** Where uses go when the driver's files cannot be touched (S3); without it, `driver.touch`. */
  readonly times?: UseTimes;
  /** Told of a flush that failed on the timer or at `stop` (the store is away): those uses are lost, nothing else. */
  readonly logger?: Logger;
}

/**
 * Records when content was last used without a storage write per request: a
 * use only adds the path to a set; `flush` (on a timer, and at shutdown)
 * writes each used path once. On the filesystem that is `driver.touch` (the
 * file's mtime is the persisted state, so there is nothing to rebuild after a
 * crash); on S3 it is one `UseTimes.record` per flush (one pipelined Redis
 * HSET, or one read-modify-write of the usage record object). At worst the
 * uses of the last interval are forgotten.
 */
export class UsageRecorder {
  private pending = new Set<string>();
  private timer: Timer | undefined;

  constructor(private readonly options: UsageRecorderOptions) {}

  /** Where eviction reads the last uses that file times do not show; undefined where `touch` keeps them. */
  get times(): UseTimes | undefined {
    return this.options.times;
  }

  start(): void {
    if (this.timer || this.options.intervalMs <= 0) return;
    this.timer = this.options.clock.setInterval(() => void this.flush().catch((err: unknown) => this.failed(err)), this.options.intervalMs);
  }

  /** Notes a use of a storage path (relative to the root). */
  used(path: string): void {
    this.pending.add(path);
  }

  /** Writes the pending uses; files that vanished meanwhile are skipped. */
  async flush(): Promise<void> {
    const { times, driver, clock } = this.options;
    if (this.pending.size === 0 && !times) return;
    const paths = this.pending;
    this.pending = new Set();
    if (times) await times.record(paths, clock.now());
    else await driver.touch(paths, clock.now());
  }

  /** Writes what is pending; never fails (a shutdown while the store is away loses the last uses, no more). */
  async stop(): Promise<void> {
    this.timer?.cancel();
    this.timer = undefined;
    await this.flush().catch((err: unknown) => this.failed(err));
  }

  private failed(err: unknown): void {
    this.options.logger?.warn({ err }, 'could not record last-use times');
  }
}
