import { LRUCache } from 'lru-cache';
import type { Clock } from '../../registry/clock.js';

export interface FailureThrottleOptions {
  readonly clock: Clock;
  /** Failures from one address answered at once; each one after waits longer. Default 5. */
  readonly freeFailures?: number;
  /** The wait after the first failure over `freeFailures`, doubled for each further one. Default 250 ms. */
  readonly firstDelayMs?: number;
  /** The longest wait. Default 10 s. */
  readonly maxDelayMs?: number;
  /** An address's failures are forgotten after this long without one. Default 15 minutes. */
  readonly forgetAfterMs?: number;
}

interface Failures {
  count: number;
  lastAt: number;
}

/**
 * Slows down password guessing: after `freeFailures` failed attempts from
 * one client address, each further attempt from it waits before its password
 * is even checked, 250 ms, then 500 ms, 1 s, ... up to 10 s. A success from
 * the address, or 15 minutes without a failure, forgets them. Addresses are
 * kept in a bounded LRU, so a flood of addresses cannot grow memory.
 */
export class FailureThrottle {
  private readonly byAddress = new LRUCache<string, Failures>({ max: 10_000 });
  private readonly freeFailures: number;
  private readonly firstDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly forgetAfterMs: number;

  constructor(private readonly options: FailureThrottleOptions) {
    this.freeFailures = options.freeFailures ?? 5;
    this.firstDelayMs = options.firstDelayMs ?? 250;
    this.maxDelayMs = options.maxDelayMs ?? 10_000;
    this.forgetAfterMs = options.forgetAfterMs ?? 15 * 60_000;
  }

  /** How long the next attempt from `address` waits before it is checked. */
  delayMs(address: string): number {
    const failures = this.current(address);
    if (!failures || failures.count < this.freeFailures) return 0;
    return Math.min(this.maxDelayMs, this.firstDelayMs * 2 ** (failures.count - this.freeFailures));
  }

  /** Waits out the delay of `address`, if any. */
  async wait(address: string): Promise<void> {
    const ms = this.delayMs(address);
    if (ms > 0) await this.options.clock.sleep(ms);
  }

  failed(address: string): void {
    const failures = this.current(address);
    this.byAddress.set(address, { count: (failures?.count ?? 0) + 1, lastAt: this.options.clock.now() });
  }

  succeeded(address: string): void {
    if (this.byAddress.has(address)) this.byAddress.delete(address);
  }

  private current(address: string): Failures | undefined {
    const failures = this.byAddress.get(address);
    if (failures && this.options.clock.now() - failures.lastAt > this.forgetAfterMs) {
      this.byAddress.delete(address);
      return undefined;
    }
    return failures;
  }
}
