import type { Clock, Timer } from '../registry/clock.js';
import type { StorageDriver } from './driver.js';

export interface UsageRecorderOptions {
  readonly driver: StorageDriver;
  /** How often pending uses are written; 0: only on `flush` and `stop`. */
  readonly intervalMs: number;
  readonly clock: Clock;
}

/**
 * Records when content was last used without a disk write per request: a use
 * only adds the path to a set; `flush` (on a timer, and at shutdown) marks
 * each used file once through the driver (`touch`). The storage itself is
 * the persisted state, so there is nothing to rebuild after a crash; at worst
 * the uses of the last interval are forgotten.
 */
export class UsageRecorder {
  private pending = new Set<string>();
  private timer: Timer | undefined;

  constructor(private readonly options: UsageRecorderOptions) {}

  start(): void {
    if (this.timer || this.options.intervalMs <= 0) return;
    this.timer = this.options.clock.setInterval(() => void this.flush(), this.options.intervalMs);
  }

  /** Notes a use of a storage path (relative to the root). */
  used(path: string): void {
    this.pending.add(path);
  }

  /** Writes the pending uses; files that vanished meanwhile are skipped. */
  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const paths = this.pending;
    this.pending = new Set();
    await this.options.driver.touch(paths, this.options.clock.now());
  }

  async stop(): Promise<void> {
    this.timer?.cancel();
    this.timer = undefined;
    await this.flush();
  }
}
