/**
 * Bearer tokens kept for the whole process, one per key, with one fetch at
 * a time per key. The caller builds keys (see `tokenCacheKey`); the cache
 * never sees credentials, only the tokens they bought.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { systemClock, type Clock } from '../../registry/clock.js';
import { abortable } from '../deadline.js';

/** What a fetcher hands the cache: the token and when it stops being valid (ms, on the cache's clock). */
export interface FetchedToken {
  readonly token: string;
  /** Absolute expiry. A token already expired is handed to the waiters of its fetch but not kept. */
  readonly expiresAt: number;
  /** When the issuer says it issued the token; defaults to the moment it is stored. Sets the lifetime used for the refresh margin. */
  readonly issuedAt?: number;
}

/** A token the cache holds. */
export interface CachedToken {
  readonly token: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** From here on `get` fetches a new token instead of returning this one. */
  readonly refreshAt: number;
}

export interface TokenCacheOptions {
  /** Most keys kept; the least recently used go first. Default 1000. */
  readonly max?: number;
  /** Expiry and refresh are judged on this; default the system clock. Tests pass a fake one. */
  readonly clock?: Clock;
  /** Part of a token's lifetime, at its end, during which it counts as due for refresh. Default 0.1. */
  readonly refreshFraction?: number;
  /** The refresh margin is at least this (capped at half the lifetime, so short tokens stay usable). Default 5000. */
  readonly minRefreshMarginMs?: number;
}

/**
 * Tokens by key, bounded in size, safe for concurrent use.
 *
 * - `get` answers from the cache while a token is not yet due for refresh;
 *   otherwise it calls the fetcher. Concurrent `get`s of one key share a
 *   single fetch: they all get its token, or all get its error. A failed
 *   fetch leaves nothing behind, so the next `get` tries again.
 * - `invalidate(key, token)` drops the token only if it is still the one
 *   cached: when many requests fail with the same stale token, the first
 *   invalidation counts and the rest do not throw away its replacement.
 */
export class TokenCache {
  private readonly entries: LRUCache<string, CachedToken>;
  private readonly inFlight = new Map<string, Promise<string>>();
  private readonly clock: Clock;
  private readonly refreshFraction: number;
  private readonly minRefreshMarginMs: number;

  constructor(options: TokenCacheOptions = {}) {
    this.entries = new LRUCache({ max: options.max ?? 1000 });
    this.clock = options.clock ?? systemClock;
    this.refreshFraction = options.refreshFraction ?? 0.1;
    this.minRefreshMarginMs = options.minRefreshMarginMs ?? 5000;
  }

  /**
   * The token for `key`, fetching it when there is none or it is due for
   * refresh. `signal` stops this caller's wait (rejecting with its reason)
   * but never the shared fetch, which other callers may still be waiting on.
   */
  async get(key: string, fetcher: () => Promise<FetchedToken>, signal?: AbortSignal): Promise<string> {
    signal?.throwIfAborted();
    const cached = this.peek(key);
    if (cached && this.clock.now() < cached.refreshAt) return cached.token;
    const flight = this.inFlight.get(key) ?? this.startFetch(key, fetcher);
    return signal ? abortable(flight, signal) : flight;
  }

  /** The entry held for `key`, even if due for refresh; undefined once expired. Does not fetch. */
  peek(key: string): CachedToken | undefined {
    const entry = this.entries.get(key);
    if (entry && this.clock.now() >= entry.expiresAt) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  /** Drops `token` for `key` if it is still the one cached; true when it was dropped. A fetch under way is left alone. */
  invalidate(key: string, token: string): boolean {
    if (this.entries.peek(key)?.token !== token) return false;
    return this.entries.delete(key);
  }

  /** Whether a fetch for `key` is under way. */
  fetching(key: string): boolean {
    return this.inFlight.has(key);
  }

  /** Number of tokens held (expired ones may still count until looked up). */
  get size(): number {
    return this.entries.size;
  }

  private startFetch(key: string, fetcher: () => Promise<FetchedToken>): Promise<string> {
    // The fetcher starts on a later tick, so the flight is registered before
    // it can settle (even when the fetcher throws synchronously).
    const flight: Promise<string> = Promise.resolve()
      .then(fetcher)
      .then((fetched) => {
        this.store(key, fetched);
        return fetched.token;
      })
      .finally(() => {
        if (this.inFlight.get(key) === flight) this.inFlight.delete(key);
      });
    // Waiters see the error through their own await; this only keeps a fetch
    // whose every waiter gave up from becoming an unhandled rejection.
    flight.catch(() => undefined);
    this.inFlight.set(key, flight);
    return flight;
  }

  private store(key: string, fetched: FetchedToken): void {
    const storedAt = this.clock.now();
    const issuedAt = Math.min(fetched.issuedAt ?? storedAt, storedAt);
    const lifetime = fetched.expiresAt - issuedAt;
    if (fetched.expiresAt <= storedAt || lifetime <= 0) return;
    const margin = Math.max(lifetime * this.refreshFraction, Math.min(this.minRefreshMarginMs, lifetime / 2));
    this.entries.set(key, { token: fetched.token, issuedAt, expiresAt: fetched.expiresAt, refreshAt: fetched.expiresAt - margin });
  }
}

/**
 * A cache key that identifies the credentials without containing them: the
 * username plus a keyed hash of username and password, so changed
 * credentials get new tokens. `undefined` identity means an anonymous token. Parts are
 * joined with a newline, which none of them can contain unescaped (URL
 * parts are encoded, names follow the registry grammar).
 */
export function tokenCacheKey(parts: {
  upstream: string;
  credentials: { username: string; password: string } | undefined;
  realm: string;
  service: string | undefined;
  scope: string;
}): string {
  const identity = parts.credentials
    ? `user:${encodeURIComponent(parts.credentials.username)}:${credentialsFingerprint(parts.credentials)}`
    : 'anonymous';
  return [parts.upstream, identity, parts.realm, parts.service ?? '', parts.scope].join('\n');
}

/**
 * Keyed with a secret that lives only in this process, so a key that ends
 * up somewhere it should not (a heap dump, a debug line) does not let anyone
 * test password guesses against it offline.
 */
const FINGERPRINT_KEY = randomBytes(32);

function credentialsFingerprint(credentials: { username: string; password: string }): string {
  return createHmac('sha256', FINGERPRINT_KEY).update(`${credentials.username}\0${credentials.password}`).digest('base64url').slice(0, 22);
}
