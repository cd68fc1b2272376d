/**
 * The authorizer for one upstream that learns how to authenticate from the
 * upstream's own 401s: Docker-style Bearer tokens, or Basic.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { getGlobalDispatcher, type Dispatcher } from 'undici';
import { systemClock, type Clock } from '../../registry/clock.js';
import { UpstreamAuthError } from './authError.js';
import type { UpstreamAuthorizer, UpstreamCredentials } from './authorizer.js';
import { parseChallenges, type Challenge } from './challenge.js';
import { isTrustedRealm } from './realmTrust.js';
import { TokenCache, tokenCacheKey } from './tokenCache.js';
import { fetchToken } from './tokenFetch.js';

/** The log methods the authorizer uses; a pino `Logger` has them. */
export type AuthLogger = Pick<Logger, 'warn' | 'debug'>;

export interface ChallengeAuthorizerOptions {
  /** The upstream's configured name, for keys, logs and messages. */
  readonly upstreamName: string;
  /** Where the upstream lives; realms are judged against its host. */
  readonly upstreamUrl: URL;
  readonly credentials?: UpstreamCredentials | undefined;
  /** Realms trusted with the credentials besides the upstream's own host and registrable domain (see `matchesConfiguredRealm`). */
  readonly trustedRealms?: readonly string[];
  /** For token requests; default undici's global dispatcher. */
  readonly dispatcher?: Dispatcher;
  readonly logger?: AuthLogger;
  /** What the race window, token expiry and the token-exchange timeout are measured on; default the system clock. */
  readonly clock?: Clock;
  /** A whole token exchange must finish within this (on `clock`). Default 10 s. */
  readonly tokenTimeoutMs?: number;
  /** Shares tokens across authorizers (give it the same clock); by default each authorizer has its own, on `clock`. Keys include the upstream name. */
  readonly tokenCache?: TokenCache;
  /**
   * A 401 arriving this soon after another 401 already changed what we send
   * (replaced a token, switched to Basic) is taken to come from a request
   * sent before that change: it is retried with the new authorization
   * instead of changing it again. Bounds token refreshes to one per window
   * per scope even when an upstream rejects every token. Default 10 s.
   */
  readonly raceWindowMs?: number;
}

/** What the upstream asked for last. */
type Known =
  | { readonly kind: 'bearer'; readonly realm: URL; readonly service: string | undefined; readonly trusted: boolean; readonly learnedAt: number }
  | { readonly kind: 'basic'; readonly learnedAt: number };

/** A challenge we can act on, picked from those the upstream offered. */
type Usable =
  | { readonly kind: 'bearer'; readonly realm: URL; readonly service: string | undefined; readonly error: string | undefined }
  | { readonly kind: 'basic' };

const noopLogger: AuthLogger = { warn: () => undefined, debug: () => undefined };

/**
 * An `UpstreamAuthorizer` for one upstream, shared by all its requests.
 *
 * - Until the upstream first answers 401, requests go anonymous.
 * - After a Bearer challenge, `authorize` returns `Bearer <token>` for the
 *   scope `repository:<name>:pull`, from a token cache (its own, or one
 *   shared through `tokenCache`) keyed by (upstream, credentials identity,
 *   realm, service, scope); concurrent requests for one scope share one
 *   token fetch, and tokens are refreshed shortly before they expire.
 * - Credentials go to a token service only when `isTrustedRealm` approves
 *   its realm; otherwise tokens are requested anonymously and a warning is
 *   logged once per realm.
 * - After a Basic challenge, `authorize` returns Basic credentials, or
 *   nothing when none are configured.
 * - `authorize` throws `UpstreamAuthError` when no token can be had.
 *   `challenged` never throws and never does I/O.
 * - Credentials and tokens never appear in logs or error messages.
 */
export class ChallengeAuthorizer implements UpstreamAuthorizer {
  private known: Known | undefined;
  private readonly tokens: TokenCache;
  private readonly clock: Clock;
  private readonly logger: AuthLogger;
  private readonly dispatcher: Dispatcher;
  private readonly raceWindowMs: number;
  private readonly tokenTimeoutMs: number;
  private readonly basicHeader: string | undefined;
  /** Realms already warned about, so an untrusted realm is logged once, not once per request. Bounded: the upstream chooses realms. */
  private readonly warnedRealms = new LRUCache<string, true>({ max: 100 });
  /** When each scope's token was last thrown away in answer to a 401. */
  private readonly invalidatedAt = new LRUCache<string, number>({ max: 1000 });

  constructor(private readonly options: ChallengeAuthorizerOptions) {
    this.clock = options.clock ?? systemClock;
    this.tokens = options.tokenCache ?? new TokenCache({ clock: this.clock });
    this.logger = options.logger ?? noopLogger;
    this.dispatcher = options.dispatcher ?? getGlobalDispatcher();
    this.raceWindowMs = options.raceWindowMs ?? 10_000;
    this.tokenTimeoutMs = options.tokenTimeoutMs ?? 10_000;
    const c = options.credentials;
    this.basicHeader = c ? `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}` : undefined;
  }

  /** See `UpstreamAuthorizer.authorize`; rejects with `UpstreamAuthError` when a needed token cannot be had. */
  async authorize(repository: string, signal?: AbortSignal): Promise<string | undefined> {
    const known = this.known;
    if (known === undefined) return undefined;
    if (known.kind === 'basic') return this.basicHeader;
    const scope = pullScope(repository);
    const key = this.tokenKey(known, scope);
    const token = await this.tokens.get(key, () => fetchToken({
      upstreamName: this.options.upstreamName,
      realm: known.realm,
      service: known.service,
      scope,
      credentials: known.trusted ? this.options.credentials : undefined,
    }, { dispatcher: this.dispatcher, clock: this.clock, timeoutMs: this.tokenTimeoutMs }).catch((err: unknown) => {
      // The client is told only that the token service failed; how it failed is for the operator.
      if (err instanceof UpstreamAuthError && err.reason) this.logger.warn({ upstream: this.options.upstreamName, reason: err.reason }, 'token service failed');
      throw err;
    }), signal);
    return `Bearer ${token}`;
  }

  /** See `UpstreamAuthorizer.challenged`. Synchronous work only; the token fetch happens in the next `authorize`. */
  async challenged(repository: string, wwwAuthenticate: readonly string[]): Promise<boolean> {
    const usable = pickChallenge(parseChallenges(wwwAuthenticate));
    if (usable === undefined) {
      this.logger.debug({ upstream: this.options.upstreamName, repository }, 'upstream 401 without a usable challenge');
      return false;
    }
    return usable.kind === 'basic' ? this.onBasic() : this.onBearer(repository, usable);
  }

  private onBearer(repository: string, challenge: Usable & { kind: 'bearer' }): boolean {
    const previous = this.known;
    const sameRealm = previous?.kind === 'bearer'
      && previous.realm.href === challenge.realm.href && previous.service === challenge.service;
    if (!sameRealm) {
      // First Bearer challenge, or the upstream moved its token service: the
      // request carried no token from this realm, so one may help.
      this.learnBearer(challenge);
      return true;
    }
    if (challenge.error === 'insufficient_scope') {
      // The token was valid but grants nothing for this name: denied, or no
      // such repository. Only a request that raced the first challenge (and
      // went anonymous) deserves a retry.
      return this.isRecent(previous.learnedAt);
    }
    // invalid_token, or a bare challenge although we sent a token.
    this.invalidateUsedToken(previous, pullScope(repository));
    return true;
  }

  private onBasic(): boolean {
    const previous = this.known;
    if (previous?.kind !== 'basic') {
      this.known = { kind: 'basic', learnedAt: this.clock.now() };
      this.logger.debug({ upstream: this.options.upstreamName, scheme: 'basic' }, 'upstream asks for Basic authentication');
      return this.basicHeader !== undefined;
    }
    // We already sent Basic (unless this request raced the first challenge):
    // the credentials were refused, and sending them again will not help.
    return this.basicHeader !== undefined && this.isRecent(previous.learnedAt);
  }

  private learnBearer(challenge: Usable & { kind: 'bearer' }): void {
    const credentials = this.options.credentials;
    const trusted = credentials !== undefined
      && isTrustedRealm(this.options.upstreamUrl, challenge.realm, this.options.trustedRealms ?? []);
    this.known = { kind: 'bearer', realm: challenge.realm, service: challenge.service, trusted, learnedAt: this.clock.now() };
    const realm = `${challenge.realm.origin}${challenge.realm.pathname}`;
    this.logger.debug({ upstream: this.options.upstreamName, scheme: 'bearer', realm, service: challenge.service }, 'upstream asks for bearer tokens');
    if (credentials !== undefined && !trusted && !this.warnedRealms.has(realm)) {
      this.warnedRealms.set(realm, true);
      this.logger.warn(
        { upstream: this.options.upstreamName, realm },
        'token realm is outside the upstream\'s domain and not in trustedRealms: requesting tokens without credentials',
      );
    }
  }

  /**
   * Drops the token cached for the scope, which the failed request
   * presumably carried, unless that token arrived after a change made
   * moments ago (the challenge learned, or a token dropped for another
   * 401): then this 401 is a straggler from a request sent before the
   * change, anonymous or with the old token, and the new token stays.
   */
  private invalidateUsedToken(known: Known & { kind: 'bearer' }, scope: string): void {
    const key = this.tokenKey(known, scope);
    const current = this.tokens.peek(key);
    // Nothing cached: a fetch is under way, or the token expired; either way the retry gets a fresh one.
    if (current === undefined) return;
    const lastChange = Math.max(known.learnedAt, this.invalidatedAt.get(key) ?? -Infinity);
    if (current.storedAt >= lastChange && this.isRecent(lastChange)) return;
    this.tokens.invalidate(key, current.token);
    this.invalidatedAt.set(key, this.clock.now());
  }

  private isRecent(time: number): boolean {
    return this.clock.now() - time < this.raceWindowMs;
  }

  private tokenKey(known: Known & { kind: 'bearer' }, scope: string): string {
    return tokenCacheKey({
      upstream: this.options.upstreamName,
      credentials: known.trusted ? this.options.credentials : undefined,
      realm: known.realm.href,
      service: known.service,
      scope,
    });
  }
}

function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

/**
 * The challenge to follow: the first Bearer with a usable http(s) realm,
 * else Basic, else none. Bearer wins because a registry offering both
 * expects token clients, and tokens keep the password off most requests.
 */
function pickChallenge(challenges: readonly Challenge[]): Usable | undefined {
  for (const challenge of challenges) {
    if (challenge.scheme !== 'bearer') continue;
    const realm = parseRealm(challenge.params['realm']);
    if (realm === undefined) continue;
    return { kind: 'bearer', realm, service: challenge.params['service'], error: challenge.params['error'] };
  }
  return challenges.some((c) => c.scheme === 'basic') ? { kind: 'basic' } : undefined;
}

function parseRealm(value: string | undefined): URL | undefined {
  if (value === undefined || value === '') return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return undefined;
  // Credentials embedded in a realm URL are not ours to send.
  url.username = '';
  url.password = '';
  url.hash = '';
  return url;
}
