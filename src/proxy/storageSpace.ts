import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import { StorageUnavailable } from '../registry/errors.js';

export interface StorageSpaceOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  /** Told when a write failed for want of space (eviction may free some). */
  readonly onFull?: () => void;
  /** While full, new fills are refused for this long before one is let through to try again. */
  readonly retryMs?: number;
}

const DEFAULT_RETRY_MS = 5000;

/**
 * Whether the storage takes fills, as the fills found it. A fill whose
 * write fails (ENOSPC, EIO...) marks it failing: the log says so once, an
 * eviction run is asked for, and new fills are refused with 503 and
 * `Retry-After` at once, before anything is asked of the upstream. Once per
 * `retryMs` one fill is let through: when it commits (or eviction freed
 * space), fills are taken again, and the log says that once too. Cached
 * content is served throughout: only writes are refused.
 */
export class StorageSpace {
  private failure: StorageUnavailable | undefined;
  private nextTryAt = 0;
  private readonly retryMs: number;

  constructor(private readonly options: StorageSpaceOptions) {
    this.retryMs = options.retryMs ?? DEFAULT_RETRY_MS;
  }

  /** True while fills are refused. */
  get failing(): boolean {
    return this.failure !== undefined;
  }

  /** Throws the 503 for a new fill while the storage is failing, except for one fill per retry window. */
  admit(): void {
    if (!this.failure) return;
    const now = this.options.clock.now();
    if (now >= this.nextTryAt) {
      // This one tries; the others wait for its outcome or the next window.
      this.nextTryAt = now + this.retryMs;
      return;
    }
    throw new StorageUnavailable(`${this.failure.message}; new fills are refused until it has space again`, this.failure.reason,
      Math.max(1, Math.ceil((this.nextTryAt - now) / 1000)));
  }

  /** A fill's local write failed. */
  failed(err: StorageUnavailable): void {
    this.nextTryAt = this.options.clock.now() + this.retryMs;
    if (!this.failure) {
      this.options.logger.error({ reason: err.reason, err: err.message }, 'storage cannot take fills: refusing new fills until it can; cached content is still served');
    }
    this.failure = err;
    if (err.reason === 'ENOSPC' || err.reason === 'EDQUOT') this.options.onFull?.();
  }

  /** A fill committed, or eviction freed space: fills are taken again. */
  recovered(): void {
    if (!this.failure) return;
    this.failure = undefined;
    this.options.logger.info('storage takes fills again');
  }
}
