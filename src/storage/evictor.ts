import type { Logger } from 'pino';
import type { Clock, Timer } from '../registry/clock.js';
import type { Digest } from '../registry/digest.js';
import { NO_EVICTION_EVENTS, type EvictionEvents } from '../registry/telemetry.js';
import type { StorageDriver } from './driver.js';
import { collectGarbage, measureBlobBytes, type EvictionHooks, type EvictionPolicy, type EvictionReport, type KeptReason } from './eviction.js';
import type { UsageRecorder } from './usage.js';

export interface EvictorOptions {
  readonly driver: StorageDriver;
  readonly policy: EvictionPolicy;
  /** Flushed before each run, so last-use times are current. */
  readonly usage: UsageRecorder;
  readonly hooks: EvictionHooks;
  readonly logger: Logger;
  /** How often a run happens in the background. */
  readonly intervalMs: number;
  readonly clock: Clock;
  /** Told of every run (metrics). */
  readonly events?: EvictionEvents;
}

/**
 * Keeps the cache under its size cap in the background: a run every
 * `intervalMs`, one as soon as a commit pushes the estimate past the high
 * watermark, and one as soon as a blob that the last run kept only because
 * it was being read or filled is released. Never runs at start-up in the
 * foreground: the first run, which also learns the current size, happens
 * after start. Without a size cap or an idle limit nothing is evicted, and
 * one background walk over the blobs after start learns the size for the
 * operator's side.
 */
export class Evictor {
  private estimate: number | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private timer: Timer | undefined;
  /** Blobs in use that the last run would have removed: released, they start the next run, which removes them. */
  private heldInUse: ReadonlySet<Digest> = new Set();
  /** The last run could not get under the low watermark (logged when it starts). */
  private stuck = false;
  private readonly policy: EvictionPolicy;

  constructor(private readonly options: EvictorOptions) {
    this.policy = options.policy;
  }

  get enabled(): boolean {
    return this.policy.maxBytes !== undefined || this.policy.maxIdleMs !== undefined;
  }

  /** Bytes of all cached blobs, as last measured plus what was committed since; undefined until the first walk. */
  get usedBytes(): number | undefined {
    return this.estimate;
  }

  get maxBytes(): number | undefined {
    return this.policy.maxBytes;
  }

  start(): void {
    if (!this.enabled) {
      setImmediate(() => void this.measure());
      return;
    }
    this.timer = this.options.clock.setInterval(() => this.trigger(), this.options.intervalMs);
    setImmediate(() => this.trigger());
  }

  /** A fill committed `bytes`: evict now if that crosses the high watermark. */
  added(bytes: number): void {
    if (this.estimate === undefined) return;
    this.estimate += bytes;
    if (this.policy.maxBytes !== undefined && this.estimate > this.policy.maxBytes * this.policy.highWatermark) this.trigger();
  }

  /** A blob is no longer read or filled here: if the last run kept it only for that, run again (it is exempt no longer). */
  released(digest: Digest): void {
    if (this.heldInUse.has(digest)) this.trigger();
  }

  /** Starts a run unless one is running (then another follows it). */
  trigger(): void {
    if (!this.enabled) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.run().finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.trigger();
      }
    });
  }

  /**
   * One run now, on demand, as `pullthrough gc` makes it beside a server it
   * cannot see: content used within the grace counts as in use. Reports what
   * goes, and with `dryRun` removes nothing.
   */
  async collect(dryRun: boolean): Promise<EvictionReport> {
    await this.idle();
    return this.collectNow(dryRun, false);
  }

  /** Resolves when no run is in progress (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    this.timer?.cancel();
    this.timer = undefined;
    await this.idle();
  }

  private async run(): Promise<void> {
    const began = this.options.clock.now();
    try {
      const report = await this.collectNow(false, true);
      this.estimate = report.totalBytes - report.freedBytes;
      this.heldInUse = new Set(report.heldInUse);
      const wasStuck = this.stuck;
      this.stuck = report.kept.length > 0;
      const { logger } = this.options;
      const removed = report.removedBlobs > 0 || report.removedImages.length > 0;
      // One line per run; a run that removed nothing is news only when debugging.
      logger[removed ? 'info' : 'debug']({
        freedBytes: report.freedBytes, removedImages: report.removedImages.map((i) => i.id), removedBlobs: report.removedBlobs,
        bytes: this.estimate, maxBytes: this.policy.maxBytes, ms: this.options.clock.now() - began,
      }, removed ? 'evicted' : 'eviction run: nothing to remove');
      (this.options.events ?? NO_EVICTION_EVENTS).evicted({ freedBytes: report.freedBytes, removedBlobs: report.removedBlobs, usedBytes: this.estimate });
      if (this.stuck) {
        const kept: Partial<Record<KeptReason, number>> = {};
        for (const k of report.kept) kept[k.reason] = (kept[k.reason] ?? 0) + k.bytes;
        // Once when it starts, not on every run while it lasts.
        logger[wasStuck ? 'debug' : 'info']({ bytes: this.estimate, targetBytes: report.targetBytes, keptBytes: kept },
          'eviction stopped above the low watermark: the rest is pinned, in use or just written; it goes on when a blob in use is released');
      }
    } catch (err) {
      this.options.logger.error({ err }, 'eviction run failed');
    }
  }

  /** Learns the size without evicting anything (no size cap, no idle limit). */
  private async measure(): Promise<void> {
    try {
      const measured = await measureBlobBytes(this.options.driver);
      // Commits during the walk were added to nothing: the walk saw most of them already.
      this.estimate = measured;
    } catch (err) {
      this.options.logger.warn({ err }, 'could not measure the cache size');
    }
  }

  private async collectNow(dryRun: boolean, inUseIsKnown: boolean): Promise<EvictionReport> {
    const { driver, usage, hooks, clock } = this.options;
    await usage.flush();
    await this.policy.prepare?.();
    const heldInUse = inUseIsKnown ? this.heldInUse : undefined;
    return collectGarbage(driver, this.policy, { dryRun, hooks, now: clock.now(), inUseIsKnown, ...(heldInUse ? { heldInUse } : {}) });
  }
}
