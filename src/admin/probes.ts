import { randomBytes } from 'node:crypto';
import type { Clock } from '../registry/clock.js';
import type { StorageDriver } from '../storage/driver.js';
import { newUploadName, readinessProbePath } from '../storage/layout.js';

/** One dependency's verdict: `ok`, or what is wrong with it. */
export type CheckResult = { readonly ok: true } | { readonly ok: false; readonly error: string };

/** The answer of `/readyz`. */
export interface Readiness {
  readonly ready: boolean;
  /** `storage` always; `redis` when it is configured. */
  readonly checks: Readonly<Record<string, CheckResult>>;
}

export interface ReadinessProbeOptions {
  readonly driver: StorageDriver;
  /** Present when Redis is configured: its connection's state. */
  readonly redis?: { readonly connected: boolean };
  readonly clock: Clock;
  /** How long one storage probe's verdict is reused. */
  readonly storageCacheMs?: number;
}

const DEFAULT_STORAGE_CACHE_MS = 1500;

/**
 * Is this process fit to serve: storage readable and writable, and Redis
 * connected when it is configured. Upstreams are not asked: an upstream
 * being down never makes a mirror unready, it serves what it has.
 *
 * The storage check writes a small file through the driver, reads it back
 * and removes it. Its verdict is reused for a second or two, so a probe
 * storm costs at most one write per window, and concurrent probes share one.
 */
export class ReadinessProbe {
  private readonly probePath = readinessProbePath(newUploadName());
  private storage: { readonly result: CheckResult; readonly at: number } | undefined;
  private running: Promise<CheckResult> | undefined;

  constructor(private readonly options: ReadinessProbeOptions) {}

  async check(): Promise<Readiness> {
    const checks: Record<string, CheckResult> = { storage: await this.storageCheck() };
    const { redis } = this.options;
    if (redis) checks['redis'] = redis.connected ? { ok: true } : { ok: false, error: 'not connected' };
    return { ready: Object.values(checks).every((c) => c.ok), checks };
  }

  private async storageCheck(): Promise<CheckResult> {
    const now = this.options.clock.now();
    const cacheMs = this.options.storageCacheMs ?? DEFAULT_STORAGE_CACHE_MS;
    if (this.storage && now - this.storage.at < cacheMs) return this.storage.result;
    this.running ??= this.probeStorage().then((result) => {
      this.storage = { result, at: this.options.clock.now() };
      this.running = undefined;
      return result;
    });
    return this.running;
  }

  private async probeStorage(): Promise<CheckResult> {
    const { driver } = this.options;
    const content = randomBytes(16);
    try {
      await driver.putContent(this.probePath, content);
      const read = await driver.getContent(this.probePath);
      if (!read?.equals(content)) return { ok: false, error: 'a file written to storage did not read back' };
      await driver.delete(this.probePath);
      return { ok: true };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // An errno code says it all for a disk; an object store's error says which store and what failed.
      const why = e.code && /^E[A-Z]+$/.test(e.code) ? e.code : e.message;
      return { ok: false, error: `cannot write and read back a file (${why})` };
    }
  }
}
