import type { Logger } from 'pino';
import type { Clock, Timer } from '../registry/clock.js';
import type { StorageDriver } from './driver.js';
import { collectGarbage, type EvictionHooks, type EvictionPolicy, type EvictionReport } from './eviction.js';
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
}

/**
 * Keeps the cache under its size cap in the background: a run every
 * `intervalMs`, and one soon after new bytes push the estimate past the high
 * watermark. Never runs at start-up in the foreground: the first run, which
 * also learns the current size, happens after start.
 */
export class Evictor {
  private estimate: number | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private timer: Timer | undefined;
  private readonly policy: EvictionPolicy;

  constructor(private readonly options: EvictorOptions) {
    this.policy = options.policy;
  }

  get enabled(): boolean {
    return this.policy.maxBytes !== undefined || this.policy.maxIdleMs !== undefined;
  }

  start(): void {
    if (!this.enabled) return;
    this.timer = this.options.clock.setInterval(() => this.trigger(), this.options.intervalMs);
    setImmediate(() => this.trigger());
  }

  /** A fill committed `bytes`: evict now if that crosses the high watermark. */
  added(bytes: number): void {
    if (this.estimate === undefined || this.policy.maxBytes === undefined) return;
    this.estimate += bytes;
    if (this.estimate > this.policy.maxBytes * this.policy.highWatermark) this.trigger();
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

  /** One run now, on demand (`pullthrough gc`): reports what goes, and with `dryRun` removes nothing. */
  async collect(dryRun: boolean): Promise<EvictionReport> {
    await this.idle();
    return this.collectNow(dryRun);
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
    try {
      const report = await this.collectNow(false);
      this.estimate = report.totalBytes - report.freedBytes;
      if (report.removedBlobs > 0 || report.removedImages.length > 0) {
        this.options.logger.info({ freedBytes: report.freedBytes, removedImages: report.removedImages, removedBlobs: report.removedBlobs, bytes: this.estimate }, 'evicted');
      }
    } catch (err) {
      this.options.logger.error({ err }, 'eviction run failed');
    }
  }

  private async collectNow(dryRun: boolean): Promise<EvictionReport> {
    const { driver, usage, hooks, clock } = this.options;
    await usage.flush();
    await this.policy.prepare?.();
    return collectGarbage(driver, this.policy, { dryRun, hooks, now: clock.now() });
  }
}
