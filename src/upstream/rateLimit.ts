import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';

/** The latest rate-limit state an upstream reported (Docker Hub's `ratelimit-*` headers). */
export interface RateLimitState {
  readonly limit: number;
  readonly remaining: number;
  /** The window the numbers apply to, in seconds (`;w=`), when given. */
  readonly windowSeconds: number | undefined;
  readonly observedAt: number;
}

/** `"100;w=21600"` → 100 and 21600. Undefined for anything else. */
export function parseRateLimitHeader(value: string | undefined): { count: number; windowSeconds: number | undefined } | undefined {
  if (!value) return undefined;
  const match = /^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?/.exec(value);
  if (!match) return undefined;
  return { count: Number(match[1]), windowSeconds: match[2] === undefined ? undefined : Number(match[2]) };
}

/** Below this share of the limit, every new reading is logged as a warning. */
const LOW_SHARE = 0.1;

/**
 * Remembers the rate limit one upstream (with one set of credentials)
 * reports on manifest responses, warns when little remains, and stops
 * manifest requests until a 429's Retry-After has passed.
 */
export class RateLimitTracker {
  private state: RateLimitState | undefined;
  private blockedUntil = 0;
  private warnedAtRemaining: number | undefined;

  private readonly upstream: string;
  private readonly logger: Logger;
  private readonly clock: Clock;

  constructor(options: { readonly upstream: string; readonly logger: Logger; readonly clock: Clock }) {
    this.upstream = options.upstream;
    this.logger = options.logger;
    this.clock = options.clock;
  }

  /** The latest reading. */
  get latest(): RateLimitState | undefined {
    return this.state;
  }

  /** Reads the headers of a manifest response. */
  observe(headers: { limit: string | undefined; remaining: string | undefined }): void {
    const limit = parseRateLimitHeader(headers.limit);
    const remaining = parseRateLimitHeader(headers.remaining);
    if (!limit || !remaining) return;
    this.state = { limit: limit.count, remaining: remaining.count, windowSeconds: remaining.windowSeconds ?? limit.windowSeconds, observedAt: this.clock.now() };
    if (remaining.count <= limit.count * LOW_SHARE && remaining.count !== this.warnedAtRemaining) {
      this.warnedAtRemaining = remaining.count;
      this.logger.warn({ upstream: this.upstream, limit: limit.count, remaining: remaining.count, windowSeconds: this.state.windowSeconds },
        'upstream pull rate limit nearly used up');
    }
  }

  /** A 429: no manifest request until `retryAfterSeconds` (60 s when the upstream gave none) have passed. */
  limited(retryAfterSeconds: number | undefined): void {
    this.blockedUntil = Math.max(this.blockedUntil, this.clock.now() + (retryAfterSeconds ?? 60) * 1000);
    this.logger.warn({ upstream: this.upstream, retryAfterSeconds }, 'upstream is rate-limiting: backing off manifest requests');
  }

  /** Seconds left of the back-off, or 0 when requests may go. */
  backoffSeconds(): number {
    const left = this.blockedUntil - this.clock.now();
    return left > 0 ? Math.ceil(left / 1000) : 0;
  }
}
