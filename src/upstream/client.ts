import { PassThrough, type Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { Agent, type Dispatcher } from './undici.js';
import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import type { UpstreamSettings } from '../config/settings.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { RegistryError, UpstreamOffline, UpstreamRateLimited, UpstreamUnavailable } from '../registry/errors.js';
import { MEDIA_TYPES, coversDefaultAccept, isMediaType } from '../registry/mediaTypes.js';
import { mergeReferrers, readReferrersIndex, type ReferrerDescriptor } from '../registry/referrers.js';
import { NO_UPSTREAM_EVENTS, type UpstreamEvents, type UpstreamRequestKind } from '../registry/telemetry.js';
import type { UpstreamAuthorizer } from './auth/authorizer.js';
import { UpstreamAuthError } from './auth/authError.js';
import { abortable, Deadline, sleep } from './deadline.js';
import { answersLikeRegistry, connectionErrorWords, ConnectionFailure, registryProbeVerdict, UpstreamDiagnostics } from './diagnosis.js';
import { EgressPolicy, EgressRefused } from './egress.js';
import { UpstreamHealth, type FailureKind } from './health.js';
import { nextPageLink } from './link.js';
import { RateLimitTracker } from './rateLimit.js';

type Method = 'GET' | 'HEAD';
type Headers = Record<string, string | string[] | undefined>;

export interface UpstreamResponse {
  readonly statusCode: number;
  readonly headers: Headers;
  readonly body: Readable & { dump(opts?: { limit: number }): Promise<void> };
}

/** What an upstream said about a manifest without sending it. */
export interface ManifestHead {
  readonly digest: Digest | undefined;
  readonly mediaType: string | undefined;
  readonly size: number | undefined;
}

export interface FetchedManifest {
  readonly body: Buffer;
  readonly mediaType: string | undefined;
  readonly digestHeader: Digest | undefined;
}

export interface BlobResponse {
  readonly size: number | undefined;
  readonly body: Readable;
}

/** Limits of one request on the request path. */
export interface RequestOptions {
  /**
   * Give up after this long on the mirror's clock (a tag revalidation's
   * `revalidateTimeout`); an expired deadline is a timeout, which marks the
   * upstream down.
   */
  readonly deadlineMs?: number;
  /** Stops the request (its caller went away); not the upstream's failure. */
  readonly signal?: AbortSignal;
}

export interface UpstreamClientOptions {
  readonly authorizer: UpstreamAuthorizer;
  readonly logger: Logger;
  /** Back-off windows, the negative cache and Retry-After dates are read against it. */
  readonly clock: Clock;
  /** Told of every answer, failure and body byte count (metrics, upstream health). */
  readonly events?: UpstreamEvents;
}

const METADATA_CONNECTIONS = 64;
/** What one tag-list page may be at most, when the caller sets no smaller budget. */
const MAX_TAG_PAGE_BYTES = 16 * 1024 * 1024;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Connection-level failures after which nothing reached anyone: safe to retry an idempotent request. */
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);
const RETRY_DELAYS_MS = [100, 400];
/** undici's own timeouts: no answer in time, which marks the upstream down at once. */
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT']);
/** Referrers-list pages followed at most. */
const MAX_REFERRER_PAGES = 20;

export function header(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function headerValues(headers: Headers, name: string): string[] {
  const value = headers[name];
  return value === undefined ? [] : Array.isArray(value) ? value : [value];
}

function contentLength(headers: Headers): number | undefined {
  const value = header(headers, 'content-length');
  if (value === undefined || !/^[0-9]+$/.test(value)) return undefined;
  return Number(value);
}

/** The Content-Type without parameters; undefined when absent or not a media type at all. */
function mediaTypeOf(headers: Headers): string | undefined {
  const value = header(headers, 'content-type')?.split(';')[0]?.trim().toLowerCase();
  return value && isMediaType(value) ? value : undefined;
}

function digestHeader(headers: Headers): Digest | undefined {
  const value = header(headers, 'docker-content-digest');
  if (!value) return undefined;
  try {
    return parseDigest(value.trim()).digest;
  } catch {
    return undefined;
  }
}

/** The path after `/v2/<repository>/` of the next page a `Link: <…>; rel="next"` names, if it stays in the repository. */
function nextPage(headers: Headers, repository: string): string | undefined {
  const next = nextPageLink(header(headers, 'link'));
  const prefix = `/v2/${repository}/`;
  return next?.startsWith(prefix) ? next.slice(prefix.length) : undefined;
}

function retryAfterSeconds(headers: Headers, nowMs: number): number | undefined {
  const value = header(headers, 'retry-after');
  if (!value) return undefined;
  if (/^[0-9]+$/.test(value)) return Number(value);
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, Math.ceil((date - nowMs) / 1000)) : undefined;
}

function errorCode(err: unknown): string | undefined {
  const e = err as { code?: string; cause?: { code?: string } };
  return e.code ?? e.cause?.code;
}

/** The egress policy's refusal, however undici wrapped it. */
function egressRefusal(err: unknown): EgressRefused | undefined {
  // A ConnectionFailure (the URL it was for) around undici's error around ours: a few causes deep at most.
  let at: unknown = err;
  for (let depth = 0; depth < 4 && at !== undefined && at !== null; depth++) {
    if (at instanceof EgressRefused) return at;
    at = (at as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * One configured upstream registry. Speaks only to that upstream's origin
 * and, for blobs, to the hosts it redirects us to, within the egress policy
 * (`egress.ts`: no private addresses unless configured); `Authorization`
 * goes only to the upstream's own origin, and only its own 401s teach the
 * authorizer. Manifests, tag lists and everything else come from the
 * origin itself: their redirects are not followed. Every failure becomes a typed error:
 * `UpstreamUnavailable` (network, timeout, 5xx), `UpstreamRateLimited` (429),
 * `RegistryError` DENIED (401/403 after authenticating). A 404 is `undefined`.
 */
export class UpstreamClient {
  /** Manifests, HEADs and tag lists. */
  private readonly dispatcher: Dispatcher;
  /** Blob bodies, and the redirects they follow. */
  private readonly blobDispatcher: Dispatcher;
  private readonly origin: string;
  /** Rate-limit readings and the 429 back-off, for this upstream and its one set of credentials. */
  readonly rateLimit: RateLimitTracker;
  /** Manifest paths the upstream recently answered 404 for: asked again only after `notFoundTtl`. */
  private readonly notFound: LRUCache<string, true>;
  /** Up or down: while down, requests fail at once and one probe per window asks `GET /v2/`. */
  readonly health: UpstreamHealth;
  /** The one `GET /v2/` that teaches the authorizer the upstream's challenge before any request needs it. */
  private authDiscovery: Promise<void> | undefined;
  /** Warnings once per cause, and the check that a suspicious answer came from a registry at all. */
  private readonly diagnostics: UpstreamDiagnostics;
  /** Where requests and their outcomes are counted (metrics, the status page). */
  private readonly events: UpstreamEvents;

  constructor(readonly settings: UpstreamSettings, private readonly options: UpstreamClientOptions) {
    this.origin = settings.url.origin;
    this.events = options.events ?? NO_UPSTREAM_EVENTS;
    this.rateLimit = new RateLimitTracker({ upstream: settings.name, logger: options.logger, clock: options.clock });
    this.diagnostics = new UpstreamDiagnostics({ upstream: settings.name, logger: options.logger, clock: options.clock });
    this.notFound = new LRUCache({
      max: 10_000, ttl: Math.max(1, settings.notFoundTtlMs), ttlAutopurge: false, perf: { now: () => options.clock.now() },
    });
    this.health = new UpstreamHealth({
      upstream: settings.name, settings: settings.health, clock: options.clock, logger: options.logger, probe: () => this.probe(),
    });
    const egress = EgressPolicy.forUpstream(settings);
    const agent = (connections: number): Agent => new Agent({
      connect: egress.connector({ timeout: settings.timeouts.connectMs }),
      headersTimeout: settings.timeouts.headersMs,
      bodyTimeout: settings.timeouts.bodyIdleMs,
      keepAliveTimeout: 30_000,
      connections,
    });
    this.dispatcher = agent(METADATA_CONNECTIONS);
    // Blob bodies have a pool of their own, one connection per fill slot (`maxConcurrentFills`): however many
    // fills run (and a client can start many, then leave), manifests, HEADs and tag lists keep theirs.
    this.blobDispatcher = agent(settings.fills.concurrent);
  }

  get name(): string {
    return this.settings.name;
  }

  async close(): Promise<void> {
    this.health.close();
    await Promise.all([this.dispatcher.close(), this.blobDispatcher.close()]);
  }

  /** HEAD a manifest by tag or digest; undefined when the upstream has no such manifest. */
  async headManifest(repository: string, reference: string, accept: readonly string[], options?: RequestOptions): Promise<ManifestHead | undefined> {
    const res = await this.send('HEAD', repository, `manifests/${reference}`, { accept: accept.join(', ') }, manifestKind(accept), options);
    if (res === undefined) return undefined;
    await res.body.dump();
    if (res.statusCode === 405) return { digest: undefined, mediaType: undefined, size: undefined };
    return { digest: digestHeader(res.headers), mediaType: mediaTypeOf(res.headers), size: contentLength(res.headers) };
  }

  /** GET a manifest; the body is read whole, up to the manifest size limit. */
  async getManifest(repository: string, reference: string, accept: readonly string[], options?: RequestOptions): Promise<FetchedManifest | undefined> {
    const res = await this.send('GET', repository, `manifests/${reference}`, { accept: accept.join(', ') }, manifestKind(accept), options);
    if (res === undefined) return undefined;
    const body = await readLimited(res, this.settings.limits.manifestBytes, this.name, 'maxManifestSize');
    this.events.fetched('manifest', body.length);
    return { body, mediaType: mediaTypeOf(res.headers), digestHeader: digestHeader(res.headers) };
  }

  /** HEAD a blob: confirms that `repository` has it, and its size. */
  async headBlob(repository: string, digest: Digest): Promise<{ size: number | undefined } | undefined> {
    const res = await this.send('HEAD', repository, `blobs/${digest}`, {}, 'blob');
    if (res === undefined) return undefined;
    await res.body.dump();
    if (res.statusCode === 405) throw new UpstreamUnavailable(`upstream ${this.name} cannot answer HEAD for blobs`);
    return { size: contentLength(res.headers) };
  }

  /** GET a blob as a stream; the caller consumes or destroys the body. */
  async getBlob(repository: string, digest: Digest, signal?: AbortSignal): Promise<BlobResponse | undefined> {
    const res = await this.send('GET', repository, `blobs/${digest}`, {}, 'blob', signal ? { signal } : undefined);
    if (res === undefined) return undefined;
    return { size: contentLength(res.headers), body: res.body };
  }

  /**
   * One page of the upstream's tag list, with the path of the next page when
   * there is one. A page longer than `maxBytes` is not read on: it answers
   * `oversized` with no tags, and the caller decides what a capped list is.
   */
  async listTags(repository: string, pathAndQuery?: string, maxBytes = MAX_TAG_PAGE_BYTES): Promise<TagPage | undefined> {
    const res = await this.send('GET', repository, pathAndQuery ?? 'tags/list?n=1000', { accept: 'application/json' }, 'tags');
    if (res === undefined) return undefined;
    const body = await readLimited(res, Math.min(maxBytes, MAX_TAG_PAGE_BYTES), this.name, 'the tag-list page limit').catch((err: unknown) => {
      if (err instanceof ResponseTooLarge) return undefined;
      throw err;
    });
    if (body === undefined) return { tags: [], next: undefined, bytes: maxBytes, oversized: true };
    this.events.fetched('tags', body.length);
    let tags: unknown[] = [];
    try {
      const parsed = JSON.parse(body.toString('utf8')) as { tags?: unknown };
      if (Array.isArray(parsed.tags)) tags = parsed.tags;
    } catch {
      throw new UpstreamUnavailable(`upstream ${this.name} sent an unreadable tag list`);
    }
    return {
      tags: tags.filter((t): t is string => typeof t === 'string'),
      next: nextPage(res.headers, repository),
      bytes: body.length,
      oversized: false,
    };
  }

  /**
   * The upstream's referrers API for `subject`, every page of it; undefined
   * when it answers 404 (no referrers API: the caller reads the referrers
   * tag). Asked like a manifest: it counts toward rate limits on registries
   * that count, and a 404 is remembered for `notFoundTtl`.
   */
  async getReferrers(repository: string, subject: Digest): Promise<ReferrerDescriptor[] | undefined> {
    const pages: ReferrerDescriptor[][] = [];
    let rest: string | undefined = `referrers/${subject}`;
    // The whole list, every page, is held to the size of one manifest: it is served as one index.
    let budget = this.settings.limits.manifestBytes;
    for (let i = 0; rest !== undefined && i < MAX_REFERRER_PAGES; i++) {
      const res = await this.send('GET', repository, rest, { accept: MEDIA_TYPES.ociIndex }, 'manifest');
      if (res === undefined) {
        if (i === 0) return undefined;
        throw new UpstreamUnavailable(`upstream ${this.name} lost a page of the referrers of ${subject}`);
      }
      const body = await readLimited(res, budget, this.name, 'maxManifestSize');
      this.events.fetched('manifest', body.length);
      budget -= body.length;
      const listed = readReferrersIndex(body);
      if (!listed) throw new UpstreamUnavailable(`upstream ${this.name} sent an unreadable referrers list`);
      pages.push(listed);
      rest = nextPage(res.headers, repository);
    }
    return mergeReferrers(...pages);
  }

  /**
   * Sends a request for `/v2/<repository>/<rest>` with authentication,
   * redirects and retries; maps the status to a typed error.
   */
  private async send(
    method: Method, repository: string, rest: string, headers: Record<string, string>,
    requestKind: RequestKind, options: RequestOptions = {},
  ): Promise<UpstreamResponse | undefined> {
    if (this.settings.offline) throw new UpstreamOffline(this.name);
    const path = `/v2/${repository}/${rest}`;
    const kind = requestKind === 'manifest (narrow Accept)' ? 'manifest' : requestKind;
    // Only a 404 to the full Accept list means "no such manifest": a narrower one may only mean "not in those types".
    const remembers404 = requestKind === 'manifest' && this.settings.notFoundTtlMs > 0;
    if (remembers404 && this.notFound.has(path)) return undefined;
    // Known to be down: fail at once (callers serve what is cached); one probe per window looks for recovery.
    this.health.check();
    const backoff = kind === 'manifest' ? this.rateLimit.backoffSeconds() : 0;
    if (backoff > 0) {
      // Asking again during a back-off would only prolong it: answer at once, callers serve what is cached.
      throw new UpstreamRateLimited(`upstream ${this.name} is rate-limiting pulls; retrying after the back-off`, backoff);
    }
    const res = await this.observed(method, kind, options, (signal) => this.sendAuthenticated(method, path, repository, headers, kind === 'blob', signal));
    if (kind === 'manifest') {
      this.rateLimit.observe({ limit: header(res.headers, 'ratelimit-limit'), remaining: header(res.headers, 'ratelimit-remaining') });
      if (res.statusCode === 429) this.rateLimit.limited(retryAfterSeconds(res.headers, this.options.clock.now()));
    }
    // A 405 to a HEAD means "ask with GET": the caller decides.
    if ((res.statusCode >= 200 && res.statusCode < 300) || (res.statusCode === 405 && method === 'HEAD')) {
      this.events.responded(method, kind, res.statusCode, undefined);
      if (kind === 'manifest' && mediaTypeOf(res.headers) === 'text/html') {
        // No registry sends a manifest as a web page.
        await res.body.dump().catch(() => undefined);
        await this.checkIsRegistry(res, path);
        throw new UpstreamUnavailable(`upstream ${this.name} sent a web page (text/html) for ${new URL(path, this.origin).href}, not a manifest`,
          { upstream: this.name });
      }
      this.diagnostics.answeredWell();
      return res;
    }
    let message: string | undefined;
    if (res.statusCode === 404) await res.body.dump().catch(() => undefined);
    else message = await errorMessageOf(res.body, this.settings.limits.errorBodyBytes);
    this.events.responded(method, kind, res.statusCode, message);
    if (res.statusCode >= 500) this.health.failed(`upstream ${this.name} answered ${res.statusCode}${message ? `: ${message}` : ''}`, 'error');
    if (res.statusCode === 404) {
      await this.checkIsRegistry(res, path);
      if (remembers404) this.notFound.set(path, true);
      return undefined;
    }
    throw this.statusError(res, repository);
  }

  /**
   * An answer without a registry's marks (a web server's 404 page) makes one
   * `GET /v2/` (at most once a minute): when that does not answer like a
   * registry either, the configured URL is wrong, and saying "manifest
   * unknown" would hide it. Throws `UpstreamUnavailable` naming the URL.
   */
  private async checkIsRegistry(res: UpstreamResponse, path: string): Promise<void> {
    if (res.statusCode !== 200 && answersLikeRegistry(res.headers)) return;
    const probeUrl = new URL('/v2/', this.origin).href;
    const verdict = await this.diagnostics.registryVerdict(async () => {
      const answer = await this.ping();
      return registryProbeVerdict(answer.status, answer.headers);
    });
    if (verdict.registry) return;
    const message = `upstream ${this.name} at ${this.origin} does not answer like a registry: GET ${probeUrl} gave ${verdict.answer} `
      + `(a registry answers 200 or 401), and ${new URL(path, this.origin).href} gave ${res.statusCode}; check its url`;
    this.diagnostics.warnOnce('not-a-registry', { url: probeUrl, status: verdict.answer }, message);
    throw new UpstreamUnavailable(message, { upstream: this.name });
  }

  private statusError(res: UpstreamResponse, repository: string): Error {
    const status = res.statusCode;
    if (status === 429) {
      return new UpstreamRateLimited(`upstream ${this.name} is rate-limiting pulls`, retryAfterSeconds(res.headers, this.options.clock.now()));
    }
    if (status === 401 || status === 403) {
      return new RegistryError('DENIED', `upstream ${this.name} denied access to ${repository}`, { upstream: this.name, status });
    }
    if (REDIRECT_STATUSES.has(status)) {
      return new UpstreamUnavailable(`upstream ${this.name} answered ${status}: only blobs may be redirected`, { upstream: this.name, status });
    }
    return new UpstreamUnavailable(`upstream ${this.name} answered ${status}`, { upstream: this.name, status });
  }

  /**
   * Sends with retries (idempotent requests after connection-level failures)
   * within the request's deadline, and tells the upstream's health how it
   * went: an answer below 500 is a sign of life; no answer, a timeout or a
   * 5xx is a failure.
   */
  private async observed(
    method: Method, kind: UpstreamRequestKind, options: RequestOptions, attempt: (signal: AbortSignal | undefined) => Promise<UpstreamResponse>,
  ): Promise<UpstreamResponse> {
    const deadline = new Deadline(this.options.clock, options.deadlineMs, options.signal);
    try {
      const res = await this.withRetries(method, kind, deadline, () => attempt(deadline.signal));
      // A 5xx is counted as a failure where its message is read (send).
      if (res.statusCode < 500) this.health.answered();
      return res;
    } finally {
      deadline.cancel();
    }
  }

  private async withRetries(
    method: Method, kind: UpstreamRequestKind, deadline: Deadline, attempt: () => Promise<UpstreamResponse>,
  ): Promise<UpstreamResponse> {
    for (let i = 0; ; i++) {
      try {
        return await attempt();
      } catch (err) {
        if (deadline.expired) {
          this.events.unreachable(method, kind, 'timeout');
          throw this.unanswered(`upstream ${this.name} did not answer within ${deadline.ms} ms`, 'timeout');
        }
        // The caller went away, or a verdict of ours (token service, redirects): not the upstream's failure.
        if (err instanceof RegistryError || deadline.signal?.aborted) throw err;
        const refused = egressRefusal(err);
        if (refused) {
          // Our refusal, not the upstream being unreachable: its health stays as it is.
          this.options.logger.warn({ upstream: this.name, host: refused.host, address: refused.address }, 'refused to connect to a non-public address an upstream chose');
          throw new UpstreamUnavailable(`upstream ${this.name}: ${refused.message}`, { upstream: this.name });
        }
        const code = errorCode(err);
        if (RETRYABLE_CODES.has(code ?? '') && i < RETRY_DELAYS_MS.length) {
          this.options.logger.debug({ upstream: this.name, method, code, attempt: i + 1 }, 'retrying upstream request');
          // Cut short by the deadline: the next attempt fails at once and says so.
          await sleep(this.options.clock, RETRY_DELAYS_MS[i]!, deadline.signal).catch(() => undefined);
          continue;
        }
        this.events.unreachable(method, kind, code ?? (err as Error).message);
        throw this.unreachable(err, code);
      }
    }
  }

  /** The error for a request that got no answer, counted against the upstream's health. */
  private unanswered(message: string, kind: FailureKind): UpstreamUnavailable {
    this.health.failed(message, kind);
    return new UpstreamUnavailable(message, { upstream: this.name });
  }

  /**
   * `upstream docker.io is unreachable at https://…/v2/…: it does not answer in TLS; … (ERR_SSL_WRONG_VERSION_NUMBER)`,
   * warned once per cause and counted against the upstream's health (undici's timeouts mark it down at once).
   */
  private unreachable(err: unknown, code: string | undefined): UpstreamUnavailable {
    const url = err instanceof ConnectionFailure ? err.url : this.origin;
    const words = connectionErrorWords(code, url);
    const message = `upstream ${this.name} is unreachable at ${url}: ${words} (${code ?? (err as Error).message})`;
    this.diagnostics.warnOnce(code ?? 'unreachable', { url, code }, message);
    return this.unanswered(message, TIMEOUT_CODES.has(code ?? '') ? 'timeout' : 'error');
  }

  /**
   * `GET /v2/` without credentials: whether the upstream answers, and the
   * challenge it sends when it wants authentication. The health probe, and
   * how the authorizer learns the challenge before the first real request.
   */
  private async ping(signal?: AbortSignal): Promise<{ status: number; headers: Headers; challenges: string[] }> {
    const res = await this.dispatcher.request({
      origin: this.origin, path: '/v2/', method: 'GET', headers: { 'user-agent': 'pullthrough' }, signal,
    }) as UpstreamResponse;
    await res.body.dump().catch(() => undefined);
    return { status: res.statusCode, headers: res.headers, challenges: res.statusCode === 401 ? headerValues(res.headers, 'www-authenticate') : [] };
  }

  /**
   * Hands an answer to `GET /v2/` to the authorizer while it has not learned
   * yet, and to the diagnostics as their check that the upstream is a
   * registry (one `GET /v2/` serves both); true when the upstream answered
   * (below 500).
   */
  private heard(answer: { status: number; headers: Headers; challenges: string[] }): boolean {
    if (answer.status >= 500) return false;
    if (!this.options.authorizer.learned) this.options.authorizer.learn(answer.challenges);
    void this.diagnostics.registryVerdict(async () => registryProbeVerdict(answer.status, answer.headers));
    return true;
  }

  /** The health probe: one `GET /v2/`, bounded by the revalidation deadline; true when the upstream answered below 500. */
  private async probe(): Promise<boolean> {
    const deadline = new Deadline(this.options.clock, this.settings.revalidateTimeoutMs);
    try {
      return this.heard(await this.ping(deadline.signal));
    } catch {
      return false;
    } finally {
      deadline.cancel();
    }
  }

  /**
   * Before the first request, one `GET /v2/` (shared by every request that
   * comes meanwhile) tells the authorizer how the upstream authenticates, so
   * that concurrent first requests of new repositories carry their tokens
   * instead of each taking a 401. An upstream that answers 5xx, or cannot be
   * reached, teaches nothing: the request goes as it would have (and its own
   * failure names its own URL).
   */
  private async learnAuthentication(signal: AbortSignal | undefined): Promise<void> {
    if (this.options.authorizer.learned) return;
    this.authDiscovery ??= this.ping()
      .then((answer) => { this.heard(answer); }, () => undefined)
      .finally(() => { this.authDiscovery = undefined; });
    await abortable(this.authDiscovery, signal);
  }

  /**
   * A 401 to the request that carried our authorization: a Basic 401 means
   * the configured password was refused; a Basic challenge when no
   * credentials are configured means some are needed. Either is the
   * operator's to fix, and is said so (and warned once). A refused token
   * stays the caller's DENIED.
   */
  private unauthorized(sent: string | undefined, challenges: readonly string[], path: string): UpstreamAuthError | undefined {
    const url = new URL(path, this.origin).href;
    if (sent?.startsWith('Basic ')) {
      const message = `upstream ${this.name} rejected the configured credentials (401 to Basic authentication at ${url})`;
      this.diagnostics.warnOnce('credentials-rejected', { url, status: 401 }, message);
      return new UpstreamAuthError('unauthorized', message, { upstream: this.name, status: 401 });
    }
    if (sent === undefined && this.settings.credentials === undefined && challenges.some((c) => /^\s*basic\b/i.test(c))) {
      const message = `upstream ${this.name} wants Basic credentials (401 at ${url}), and none are configured for it: set its credentials`;
      this.diagnostics.warnOnce('credentials-missing', { url, status: 401 }, message);
      return new UpstreamAuthError('denied', message, { upstream: this.name, status: 401 });
    }
    return undefined;
  }

  private async sendAuthenticated(
    method: Method, path: string, repository: string, headers: Record<string, string>, isBlob: boolean, signal?: AbortSignal,
  ): Promise<UpstreamResponse> {
    const authorizer = this.options.authorizer;
    await this.learnAuthentication(signal);
    const sent = await authorizer.authorize(repository, signal);
    const { res, origin } = await this.followRedirects(method, path, headers, sent, isBlob, signal);
    if (res.statusCode !== 401) return res;
    // A 401 from a redirect target (a CDN, an object store) is not the upstream's to make: it never moves the realm.
    if (origin !== this.origin) return res;
    const challenges = headerValues(res.headers, 'www-authenticate');
    await res.body.dump().catch(() => undefined);
    const mayRetry = await authorizer.challenged(repository, challenges, sent, signal);
    const retriedWith = mayRetry ? await authorizer.authorize(repository, signal) : sent;
    // What was just refused is never sent again.
    if (retriedWith === sent) {
      const refused = this.unauthorized(sent, challenges, path);
      if (refused) throw refused;
      return { ...res, body: emptyBody() };
    }
    const { res: retried } = await this.followRedirects(method, path, headers, retriedWith, isBlob, signal);
    if (retried.statusCode !== 401) return retried;
    const refusedAgain = this.unauthorized(retriedWith, headerValues(retried.headers, 'www-authenticate'), path);
    if (!refusedAgain) return retried;
    await retried.body.dump().catch(() => undefined);
    throw refusedAgain;
  }

  /**
   * Sends the request; for a blob, follows at most `maxRedirects` redirects
   * (on the blob pool), anything else is answered by the origin itself.
   * Credentials never leave the upstream's origin. Resolves with the origin
   * that gave the final answer.
   */
  private async followRedirects(
    method: Method, path: string, headers: Record<string, string>, authorization: string | undefined, isBlob: boolean, signal?: AbortSignal,
  ): Promise<{ res: UpstreamResponse; origin: string }> {
    let url = new URL(path, this.origin);
    // Blob bodies get their own pool; a blob HEAD is as light as a manifest HEAD.
    const dispatcher = isBlob && method === 'GET' ? this.blobDispatcher : this.dispatcher;
    for (let hop = 0; ; hop++) {
      const sameOrigin = url.origin === this.origin;
      const requestHeaders: Record<string, string> = { ...headers, 'user-agent': 'pullthrough' };
      if (authorization && sameOrigin) requestHeaders['authorization'] = authorization;
      let res: UpstreamResponse;
      try {
        res = await dispatcher.request({
          origin: url.origin, path: url.pathname + url.search, method, headers: requestHeaders, signal,
        }) as UpstreamResponse;
      } catch (err) {
        throw new ConnectionFailure(url.href, err);
      }
      const location = header(res.headers, 'location');
      if (!isBlob || !REDIRECT_STATUSES.has(res.statusCode) || !location) return { res, origin: url.origin };
      await res.body.dump().catch(() => undefined);
      if (hop >= this.settings.limits.redirects) {
        throw new UpstreamUnavailable(`upstream ${this.name} redirected more than ${this.settings.limits.redirects} times (maxRedirects)`);
      }
      url = new URL(location, url);
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        throw new UpstreamUnavailable(`upstream ${this.name} redirected to an unsupported URL`);
      }
    }
  }
}

/** What a request is for: it decides redirects, pools, rate-limit accounting and the 404 memory. */
type RequestKind = 'manifest' | 'manifest (narrow Accept)' | 'blob' | 'tags';

function manifestKind(accept: readonly string[]): RequestKind {
  return coversDefaultAccept(accept) ? 'manifest' : 'manifest (narrow Accept)';
}

/** One page of an upstream tag list. */
export interface TagPage {
  readonly tags: string[];
  /** The path of the next page below `/v2/<repository>/`, when the upstream gave one. */
  readonly next: string | undefined;
  /** Bytes of the page's body. */
  readonly bytes: number;
  /** The page was longer than the caller's budget and was not read. */
  readonly oversized: boolean;
}

/** A body longer than the caller's limit. */
class ResponseTooLarge extends RegistryError {}

/** Stands in for a body already drained, so callers can treat every response alike. */
function emptyBody(): UpstreamResponse['body'] {
  const body = Object.assign(new PassThrough(), { dump: async () => undefined });
  body.end();
  return body;
}

/**
 * The message of an upstream's error body (`{"errors":[{"message"}]}`, the
 * registry error form), read from its first few KiB; undefined when it sent
 * none or something else. The rest of the body is discarded.
 */
async function errorMessageOf(body: UpstreamResponse['body'], limit: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      total += chunk.length;
      if (total >= limit) {
        body.destroy();
        break;
      }
    }
    const parsed = JSON.parse(Buffer.concat(chunks).subarray(0, limit).toString('utf8')) as { errors?: { message?: unknown }[] };
    const message = parsed.errors?.[0]?.message;
    return typeof message === 'string' && message.length > 0 ? message.slice(0, 500) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads a body whole, refusing more than `limit` bytes: at once when its
 * Content-Length says so (not one byte is read), else when the bytes pass
 * the limit; at most `limit` bytes are ever held.
 */
async function readLimited(res: UpstreamResponse, limit: number, upstream: string, limitName: string): Promise<Buffer> {
  const { body } = res;
  const tooLarge = (): RegistryError =>
    new ResponseTooLarge('UPSTREAM_INVALID', `upstream ${upstream} sent a response larger than ${limit} bytes (${limitName})`);
  const announced = contentLength(res.headers);
  if (announced !== undefined && announced > limit) {
    body.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > limit) {
        body.destroy();
        throw tooLarge();
      }
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof RegistryError) throw err;
    throw new UpstreamUnavailable(`upstream ${upstream} broke off a response (${errorCode(err) ?? (err as Error).message})`);
  }
  return Buffer.concat(chunks, total);
}
