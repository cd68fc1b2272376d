import { utimes } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Records when content was last used without a disk write per request: a use
 * only adds the path to a set; `flush` (on a timer, and at shutdown) sets the
 * modification time of each used file once. The file system itself is the
 * persisted state, so there is nothing to rebuild after a crash; at worst the
 * uses of the last interval are forgotten.
 */
export class UsageRecorder {
  private pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly root: string, private readonly intervalMs: number, private readonly now: () => number = Date.now) {}

  start(): void {
    if (this.timer || this.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
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
    const time = new Date(this.now());
    for (const path of paths) await utimes(join(this.root, path), time, time).catch(() => undefined);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
