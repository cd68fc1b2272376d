import type { Logger } from 'pino';
import type { StorageDriver } from './driver.js';
import { collectGarbage, type EvictionHooks, type EvictionPolicy, type EvictionReport } from './eviction.js';
import type { UsageRecorder } from './usage.js';

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
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly driver: StorageDriver,
    private readonly policy: EvictionPolicy,
    private readonly usage: UsageRecorder,
    private readonly hooks: EvictionHooks,
    private readonly logger: Logger,
    private readonly intervalMs: number,
  ) {}

  get enabled(): boolean {
    return this.policy.maxBytes !== undefined || this.policy.maxIdleMs !== undefined;
  }

  start(): void {
    if (!this.enabled) return;
    this.timer = setInterval(() => this.trigger(), this.intervalMs);
    this.timer.unref();
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
    await this.usage.flush();
    return collectGarbage(this.driver, this.policy, { dryRun, hooks: this.hooks });
  }

  /** Resolves when no run is in progress (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.idle();
  }

  private async run(): Promise<void> {
    try {
      await this.usage.flush();
      const report: EvictionReport = await collectGarbage(this.driver, this.policy, { dryRun: false, hooks: this.hooks });
      this.estimate = report.totalBytes - report.freedBytes;
      if (report.removedBlobs > 0 || report.removedImages.length > 0) {
        this.logger.info({ freedBytes: report.freedBytes, removedImages: report.removedImages, removedBlobs: report.removedBlobs, bytes: this.estimate }, 'evicted');
      }
    } catch (err) {
      this.logger.error({ err }, 'eviction run failed');
    }
  }
}
