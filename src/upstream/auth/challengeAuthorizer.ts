/**
 * The authorizer for one upstream that learns how to authenticate from the
 * upstream's own 401s: Docker-style Bearer tokens, or Basic.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { getGlobalDispatcher, type Dispatcher } from '../undici.js';
import { systemClock, type Clock } from '../../registry/clock.js';
import { UpstreamAuthError } from './authError.js';
import type { UpstreamAuthorizer, UpstreamCredentials } from './authorizer.js';
import { parseChallenges, type Challenge } from './challenge.js';
import { isTrustedRealm } from './realmTrust.js';
import { TokenCache, tokenCacheKey } from './tokenCache.js';
import { fetchToken } from './tokenFetch.js';
import { NO_UPSTREAM_EVENTS, type UpstreamEvents } from '../../registry/telemetry.js';

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
  /** What token expiry and the token-exchange timeout are measured on; default the system clock. */
  readonly clock?: Clock;
  /** A whole token exchange must finish within this (on `clock`). Default 10 s. */
  readonly tokenTimeoutMs?: number;
  /** A token service's answer longer than this is refused. Default 1 MiB. */
  readonly maxTokenResponseBytes?: number;
  /** Shares tokens across authorizers (give it the same clock); by default each authorizer has its own, on `clock`. Keys include the upstream name. */
  readonly tokenCache?: TokenCache;
  /** Told of every token exchange and how it went (metrics). */
  readonly events?: Pick<UpstreamEvents, 'tokenFetched'>;
}

/** What the upstream asked for last. */
type Known =
  | { readonly kind: 'bearer'; readonly realm: URL; readonly service: string | undefined; readonly trusted: boolean }
  | { readonly kind: 'basic' };

/** A challenge we can act on, picked from those the upstream offered. */
type Usable =
  | { readonly kind: 'bearer'; readonly realm: URL; readonly service: string | undefined; readonly error: string | undefined }
  | { readonly kind: 'basic' };

const noopLogger: AuthLogger = { warn: () => undefined, debug: () => undefined };

/**
 * An `UpstreamAuthorizer` for one upstream, shared by all its requests.
 *
 * - Until the upstream first asks for authentication (a 401 to `GET /v2/`
 *   or to a request), requests go anonymous.
 * - After a Bearer challenge, `authorize` returns `Bearer <token>` for the
 *   scope `repository:<name>:pull`, from a token cache (its own, or one
 *   shared through `tokenCache`) keyed by (upstream, credentials identity,
 *   realm, service, scope); concurrent requests for one scope share one
 *   token fetch, and tokens are refreshed shortly before they expire.
 * - Credentials go to a token service only when `isTrustedRealm` approves
 *   its realm; otherwise tokens are requested anonymously and a warning is
 *   logged once per realm.
 * - A 401 to a request that carried a token compares tokens, not clocks:
 *   the refused token is dropped if it is still the one cached for its
 *   scope (so concurrent refusals cause one fetch), and the retry carries
 *   whatever is current then, never the refused token.
 * - After a Basic challenge, `authorize` returns Basic credentials, or
 *   nothing when none are configured.
 * - `authorize` throws `UpstreamAuthError` when no token can be had.
 *   `challenged` never throws and never does I/O.
 * - Credentials and tokens never appear in logs or error messages.
 */
export class ChallengeAuthorizer implements UpstreamAuthorizer {
  private known: Known | undefined;
  /** `GET /v2/` was answered: even without a challenge, the upstream has told us what it wants. */
  private pinged = false;
  private readonly tokens: TokenCache;
  private readonly clock: Clock;
  private readonly logger: AuthLogger;
  private readonly dispatcher: Dispatcher;
  private readonly tokenTimeoutMs: number;
  private readonly maxTokenResponseBytes: number | undefined;
  private readonly basicHeader: string | undefined;
  /** Realms already warned about, so an untrusted realm is logged once, not once per request. Bounded: the upstream chooses realms. */
  private readonly warnedRealms = new LRUCache<string, true>({ max: 100 });

  constructor(private readonly options: ChallengeAuthorizerOptions) {
    this.clock = options.clock ?? systemClock;
    this.tokens = options.tokenCache ?? new TokenCache({ clock: this.clock });
    this.logger = options.logger ?? noopLogger;
    this.dispatcher = options.dispatcher ?? getGlobalDispatcher();
    this.tokenTimeoutMs = options.tokenTimeoutMs ?? 10_000;
    this.maxTokenResponseBytes = options.maxTokenResponseBytes;
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
    const events = this.options.events ?? NO_UPSTREAM_EVENTS;
    const token = await this.tokens.get(key, () => fetchToken({
      upstreamName: this.options.upstreamName,
      realm: known.realm,
      service: known.service,
      scope,
      credentials: known.trusted ? this.options.credentials : undefined,
    }, {
      dispatcher: this.dispatcher, clock: this.clock, timeoutMs: this.tokenTimeoutMs,
      ...(this.maxTokenResponseBytes !== undefined ? { maxBodyBytes: this.maxTokenResponseBytes } : {}),
    }).then(
      (fetched) => { events.tokenFetched(true); return fetched; },
      (err: unknown) => {
        events.tokenFetched(false);
        // The client is told only that the token service failed; how it failed is for the operator.
        if (err instanceof UpstreamAuthError && err.reason) this.logger.warn({ upstream: this.options.upstreamName, reason: err.reason }, 'token service failed');
        throw err;
      },
    ), signal);
    return `Bearer ${token}`;
  }

  /** See `UpstreamAuthorizer.learned`. */
  get learned(): boolean {
    return this.known !== undefined || this.pinged;
  }

  /** See `UpstreamAuthorizer.learn`. */
  learn(wwwAuthenticate: readonly string[]): void {
    this.pinged = true;
    if (this.known !== undefined) return;
    const usable = pickChallenge(parseChallenges(wwwAuthenticate));
    if (usable?.kind === 'bearer') this.learnBearer(usable);
    else if (usable?.kind === 'basic') this.learnBasic();
  }

  /** See `UpstreamAuthorizer.challenged`. Synchronous work only; the token fetch happens in the next `authorize`. */
  async challenged(repository: string, wwwAuthenticate: readonly string[], sent: string | undefined): Promise<boolean> {
    const usable = pickChallenge(parseChallenges(wwwAuthenticate));
    if (usable === undefined) {
      this.logger.debug({ upstream: this.options.upstreamName, repository }, 'upstream 401 without a usable challenge');
      return false;
    }
    return usable.kind === 'basic' ? this.onBasic(sent) : this.onBearer(repository, usable, sent);
  }

  private onBearer(repository: string, challenge: Usable & { kind: 'bearer' }, sent: string | undefined): boolean {
    const previous = this.known;
    const sameRealm = previous?.kind === 'bearer'
      && previous.realm.href === challenge.realm.href && previous.service === challenge.service;
    if (!sameRealm) {
      // First Bearer challenge, or the upstream moved its token service: the
      // request carried no token from this realm, so one may help.
      this.learnBearer(challenge);
      return true;
    }
    const token = bearerToken(sent);
    // Sent before the challenge was known (anonymous, or Basic): the retry carries a token.
    if (token === undefined) return true;
    // A valid token that grants nothing for this name: denied, or no such repository.
    if (challenge.error === 'insufficient_scope') return false;
    // invalid_token, or a bare challenge to a token: that token is refused. Drop it if it is
    // still the current one; if a newer one is cached (another request refreshed it), the
    // retry carries that; if a fetch is under way, the retry waits for it.
    this.tokens.invalidate(this.tokenKey(previous, pullScope(repository)), token);
    return true;
  }

  private onBasic(sent: string | undefined): boolean {
    if (this.known?.kind !== 'basic') {
      this.learnBasic();
      return this.basicHeader !== undefined;
    }
    // The credentials themselves were refused: sending them again will not help.
    return this.basicHeader !== undefined && sent !== this.basicHeader;
  }

  private learnBasic(): void {
    this.known = { kind: 'basic' };
    this.logger.debug({ upstream: this.options.upstreamName, scheme: 'basic' }, 'upstream asks for Basic authentication');
  }

  private learnBearer(challenge: Usable & { kind: 'bearer' }): void {
    const credentials = this.options.credentials;
    const trusted = credentials !== undefined
      && isTrustedRealm(this.options.upstreamUrl, challenge.realm, this.options.trustedRealms ?? []);
    this.known = { kind: 'bearer', realm: challenge.realm, service: challenge.service, trusted };
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

/** The token of a `Bearer <token>` Authorization value; undefined for none or another scheme. */
function bearerToken(authorization: string | undefined): string | undefined {
  const match = authorization === undefined ? null : /^Bearer (\S+)$/.exec(authorization);
  return match?.[1];
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
