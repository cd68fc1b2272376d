import type { Logger } from 'pino';
import type { Clock, Timer } from '../registry/clock.js';
import type { Digest } from '../registry/digest.js';
import { NO_EVICTION_EVENTS, type EvictionEvents } from '../registry/telemetry.js';
import type { StorageDriver } from './driver.js';
import { collectGarbage, measureBlobBytes, type EvictionHooks, type EvictionPolicy, type EvictionReport, type KeptReason } from './eviction.js';
import type { SizeLedger, UsageRecorder } from './usage.js';

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
  /**
   * The persisted size total (S3): start-up takes the size from it instead
   * of walking the storage; commits add to it and every run sets it.
   */
  readonly ledger?: SizeLedger;
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
 *
 * With a `ledger` (S3, where a walk is a ListObjectsV2 per 1000 keys and a
 * HeadObject per blob) start-up reads the size from it and walks nothing:
 * the first run comes with the interval, or at once when the recorded size
 * is past the high watermark. Only storage without a ledger yet (from
 * before it) gets the walk above, which then writes it; without a cap or an
 * idle limit, one more walk a day corrects what the ledger missed.
 */
/** How often a ledger is measured again where no run measures it (no size cap, no idle limit). */
const REMEASURE_MS = 24 * 60 * 60 * 1000;

export class Evictor {
  private estimate: number | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private timer: Timer | undefined;
  /** Blobs in use that the last run would have removed: released, they start the next run, which removes them. */
  private heldInUse: ReadonlySet<Digest> = new Set();
  /** The last run could not get under the low watermark (logged when it starts). */
  private stuck = false;
  /** The last run could not read the last-use times (logged when it starts and when it ends). */
  private timesUnknown = false;
  private readonly policy: EvictionPolicy;
  /** The start-up's decision (ledger or walk), until it is made. */
  private beginning: Promise<void> | undefined;

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
    if (this.enabled) this.timer = this.options.clock.setInterval(() => this.trigger(), this.options.intervalMs);
    // Nothing evicts, so no run ever measures: a ledger is walked again once a day, so that what it missed (a
    // crash's last flush, content removed behind our back) is not reported forever.
    else if (this.options.ledger) this.timer = this.options.clock.setInterval(() => void this.measure(), REMEASURE_MS);
    this.beginning = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.begin());
  }

  /** The size from the ledger, else a walk: a run when evicting, a measurement when not. */
  private async begin(): Promise<void> {
    const recorded = await this.options.ledger?.read().catch(() => undefined);
    if (recorded !== undefined) {
      // A commit meanwhile went to the ledger too.
      this.estimate ??= recorded;
      this.checkCap();
    } else if (this.enabled) this.trigger();
    else void this.measure();
  }

  /** A fill committed `bytes`: evict now if that crosses the high watermark. */
  added(bytes: number): void {
    this.adjust(bytes);
    this.checkCap();
  }

  /** A blob of `bytes` was removed outside a run (a re-verification found it damaged). */
  removed(bytes: number): void {
    this.adjust(-bytes);
  }

  /** Moves the estimate and the ledger by `bytes` (negative: removed). */
  private adjust(bytes: number): void {
    if (this.estimate !== undefined) this.estimate += bytes;
    const { ledger } = this.options;
    if (ledger) {
      void ledger.add(bytes).then((total) => {
        // Redis's total counts every replica's commits, this process's estimate only its own.
        if (total !== undefined) this.estimate = total;
      }, (err: unknown) => this.options.logger.warn({ err }, 'could not add to the recorded cache size'));
    }
  }

  private checkCap(): void {
    if (this.estimate !== undefined && this.policy.maxBytes !== undefined && this.estimate > this.policy.maxBytes * this.policy.highWatermark) this.trigger();
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
    const report = await this.collectNow(dryRun, false);
    if (!dryRun) await this.record(report.totalBytes - report.freedBytes);
    return report;
  }

  /** Resolves when no run is in progress, nor the start-up's read of the ledger that may begin one (tests, shutdown). */
  async idle(): Promise<void> {
    await this.beginning;
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
      await this.record(this.estimate);
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
      if (report.lastUseUnknown !== this.timesUnknown) {
        this.timesUnknown = report.lastUseUnknown;
        if (report.lastUseUnknown) {
          logger.warn('eviction cannot read the last-use times (Redis away or slower than redis.commandTimeout): '
            + 'no image is removed by maxIdle or the size cap until it can; unreferenced blobs past the grace still go');
        } else logger.info('eviction reads the last-use times again');
      }
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
      await this.record(measured);
    } catch (err) {
      this.options.logger.warn({ err }, 'could not measure the cache size');
    }
  }

  /** Writes a measured size to the ledger; the next start-up reads it instead of walking. */
  private async record(bytes: number): Promise<void> {
    try {
      await this.options.ledger?.set(bytes);
    } catch (err) {
      this.options.logger.warn({ err }, 'could not record the cache size');
    }
  }

  private async collectNow(dryRun: boolean, inUseIsKnown: boolean): Promise<EvictionReport> {
    const { driver, usage, hooks, clock } = this.options;
    await usage.flush();
    await this.policy.prepare?.();
    const heldInUse = inUseIsKnown ? this.heldInUse : undefined;
    const useTimes = usage.times;
    return collectGarbage(driver, this.policy, {
      dryRun, hooks, now: clock.now(), inUseIsKnown, ...(heldInUse ? { heldInUse } : {}), ...(useTimes ? { useTimes } : {}),
    });
  }
}
