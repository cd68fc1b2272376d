import { PassThrough, type Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { Agent, type Dispatcher } from 'undici';
import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import type { UpstreamSettings } from '../config/settings.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { RegistryError, UpstreamOffline, UpstreamRateLimited, UpstreamUnavailable } from '../registry/errors.js';
import { MAX_MANIFEST_BYTES } from '../registry/mediaTypes.js';
import type { UpstreamAuthorizer } from './auth/authorizer.js';
import { abortable, Deadline, sleep } from './deadline.js';
import { UpstreamHealth, type FailureKind } from './health.js';
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
}

const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Connection-level failures after which nothing reached anyone: safe to retry an idempotent request. */
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);
const RETRY_DELAYS_MS = [100, 400];
/** undici's own timeouts: no answer in time, which marks the upstream down at once. */
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT']);

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

function mediaTypeOf(headers: Headers): string | undefined {
  const value = header(headers, 'content-type')?.split(';')[0]?.trim().toLowerCase();
  return value || undefined;
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

/**
 * One configured upstream registry. Speaks only to that upstream's origin
 * and to the hosts it redirects us to; `Authorization` goes only to the
 * upstream's own origin. Every failure becomes a typed error:
 * `UpstreamUnavailable` (network, timeout, 5xx), `UpstreamRateLimited` (429),
 * `RegistryError` DENIED (401/403 after authenticating). A 404 is `undefined`.
 */
export class UpstreamClient {
  private readonly dispatcher: Dispatcher;
  private readonly origin: string;
  /** Rate-limit readings and the 429 back-off, for this upstream and its one set of credentials. */
  readonly rateLimit: RateLimitTracker;
  /** Manifest paths the upstream recently answered 404 for: asked again only after `notFoundTtl`. */
  private readonly notFound: LRUCache<string, true>;
  /** Up or down: while down, requests fail at once and one probe per window asks `GET /v2/`. */
  readonly health: UpstreamHealth;
  /** The one `GET /v2/` that teaches the authorizer the upstream's challenge before any request needs it. */
  private authDiscovery: Promise<void> | undefined;

  constructor(readonly settings: UpstreamSettings, private readonly options: UpstreamClientOptions) {
    this.origin = settings.url.origin;
    this.rateLimit = new RateLimitTracker({ upstream: settings.name, logger: options.logger, clock: options.clock });
    this.notFound = new LRUCache({
      max: 10_000, ttl: Math.max(1, settings.notFoundTtlMs), ttlAutopurge: false, perf: { now: () => options.clock.now() },
    });
    this.health = new UpstreamHealth({
      upstream: settings.name, settings: settings.health, clock: options.clock, logger: options.logger, probe: () => this.probe(),
    });
    this.dispatcher = new Agent({
      connect: { timeout: settings.timeouts.connectMs },
      headersTimeout: settings.timeouts.headersMs,
      bodyTimeout: settings.timeouts.bodyIdleMs,
      keepAliveTimeout: 30_000,
      connections: 64,
    });
  }

  get name(): string {
    return this.settings.name;
  }

  async close(): Promise<void> {
    this.health.close();
    await this.dispatcher.close();
  }

  /** HEAD a manifest by tag or digest; undefined when the upstream has no such manifest. */
  async headManifest(repository: string, reference: string, accept: readonly string[], options?: RequestOptions): Promise<ManifestHead | undefined> {
    const res = await this.send('HEAD', repository, `manifests/${reference}`, { accept: accept.join(', ') }, 'manifest', options);
    if (res === undefined) return undefined;
    await res.body.dump();
    if (res.statusCode === 405) return { digest: undefined, mediaType: undefined, size: undefined };
    return { digest: digestHeader(res.headers), mediaType: mediaTypeOf(res.headers), size: contentLength(res.headers) };
  }

  /** GET a manifest; the body is read whole, up to the manifest size limit. */
  async getManifest(repository: string, reference: string, accept: readonly string[], options?: RequestOptions): Promise<FetchedManifest | undefined> {
    const res = await this.send('GET', repository, `manifests/${reference}`, { accept: accept.join(', ') }, 'manifest', options);
    if (res === undefined) return undefined;
    const body = await readLimited(res.body, MAX_MANIFEST_BYTES, this.name);
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

  /** One page of the upstream's tag list, with the path of the next page when there is one. */
  async listTags(repository: string, pathAndQuery?: string): Promise<{ tags: string[]; next: string | undefined } | undefined> {
    const res = await this.send('GET', repository, pathAndQuery ?? 'tags/list?n=1000', { accept: 'application/json' }, 'tags');
    if (res === undefined) return undefined;
    const body = await readLimited(res.body, 16 * 1024 * 1024, this.name);
    let tags: string[] = [];
    try {
      const parsed = JSON.parse(body.toString('utf8')) as { tags?: unknown };
      if (Array.isArray(parsed.tags)) tags = parsed.tags.filter((t): t is string => typeof t === 'string');
    } catch {
      throw new UpstreamUnavailable(`upstream ${this.name} sent an unreadable tag list`);
    }
    const link = header(res.headers, 'link');
    const next = link ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link)?.[1] : undefined;
    const prefix = `/v2/${repository}/`;
    return { tags, next: next?.startsWith(prefix) ? next.slice(prefix.length) : undefined };
  }

  /**
   * Sends a request for `/v2/<repository>/<rest>` with authentication,
   * redirects and retries; maps the status to a typed error.
   */
  private async send(
    method: Method, repository: string, rest: string, headers: Record<string, string>,
    kind: 'manifest' | 'blob' | 'tags', options: RequestOptions = {},
  ): Promise<UpstreamResponse | undefined> {
    if (this.settings.offline) throw new UpstreamOffline(this.name);
    const path = `/v2/${repository}/${rest}`;
    const remembers404 = kind === 'manifest' && this.settings.notFoundTtlMs > 0;
    if (remembers404 && this.notFound.has(path)) return undefined;
    // Known to be down: fail at once (callers serve what is cached); one probe per window looks for recovery.
    this.health.check();
    const backoff = kind === 'manifest' ? this.rateLimit.backoffSeconds() : 0;
    if (backoff > 0) {
      // Asking again during a back-off would only prolong it: answer at once, callers serve what is cached.
      throw new UpstreamRateLimited(`upstream ${this.name} is rate-limiting pulls; retrying after the back-off`, backoff);
    }
    const res = await this.observed(method, options, (signal) => this.sendAuthenticated(method, path, repository, headers, signal));
    if (kind === 'manifest') {
      this.rateLimit.observe({ limit: header(res.headers, 'ratelimit-limit'), remaining: header(res.headers, 'ratelimit-remaining') });
      if (res.statusCode === 429) this.rateLimit.limited(retryAfterSeconds(res.headers, this.options.clock.now()));
    }
    // A 405 to a HEAD means "ask with GET": the caller decides.
    if ((res.statusCode >= 200 && res.statusCode < 300) || (res.statusCode === 405 && method === 'HEAD')) return res;
    await res.body.dump().catch(() => undefined);
    if (res.statusCode === 404) {
      if (remembers404) this.notFound.set(path, true);
      return undefined;
    }
    throw this.statusError(res, repository);
  }

  private statusError(res: UpstreamResponse, repository: string): Error {
    const status = res.statusCode;
    if (status === 429) {
      return new UpstreamRateLimited(`upstream ${this.name} is rate-limiting pulls`, retryAfterSeconds(res.headers, this.options.clock.now()));
    }
    if (status === 401 || status === 403) {
      return new RegistryError('DENIED', `upstream ${this.name} denied access to ${repository}`, { upstream: this.name, status });
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
    method: Method, options: RequestOptions, attempt: (signal: AbortSignal | undefined) => Promise<UpstreamResponse>,
  ): Promise<UpstreamResponse> {
    const deadline = new Deadline(this.options.clock, options.deadlineMs, options.signal);
    try {
      const res = await this.withRetries(method, deadline, () => attempt(deadline.signal));
      if (res.statusCode >= 500) this.health.failed(`upstream ${this.name} answered ${res.statusCode}`, 'error');
      else this.health.answered();
      return res;
    } finally {
      deadline.cancel();
    }
  }

  private async withRetries(method: Method, deadline: Deadline, attempt: () => Promise<UpstreamResponse>): Promise<UpstreamResponse> {
    for (let i = 0; ; i++) {
      try {
        return await attempt();
      } catch (err) {
        if (deadline.expired) throw this.unanswered(`did not answer within ${deadline.ms} ms`, 'timeout');
        // The caller went away, or a verdict of ours (token service, redirects): not the upstream's failure.
        if (err instanceof RegistryError || deadline.signal?.aborted) throw err;
        const code = errorCode(err);
        if (RETRYABLE_CODES.has(code ?? '') && i < RETRY_DELAYS_MS.length) {
          this.options.logger.debug({ upstream: this.name, method, code, attempt: i + 1 }, 'retrying upstream request');
          // Cut short by the deadline: the next attempt fails at once and says so.
          await sleep(this.options.clock, RETRY_DELAYS_MS[i]!, deadline.signal).catch(() => undefined);
          continue;
        }
        throw this.unanswered(`is unreachable (${code ?? (err as Error).message})`, TIMEOUT_CODES.has(code ?? '') ? 'timeout' : 'error');
      }
    }
  }

  /** The error for a request that got no answer, counted against the upstream's health. */
  private unanswered(what: string, kind: FailureKind): UpstreamUnavailable {
    const err = new UpstreamUnavailable(`upstream ${this.name} ${what}`, { upstream: this.name });
    this.health.failed(err.message, kind);
    return err;
  }

  /**
   * `GET /v2/` without credentials: whether the upstream answers, and the
   * challenge it sends when it wants authentication. The health probe, and
   * how the authorizer learns the challenge before the first real request.
   */
  private async ping(signal?: AbortSignal): Promise<{ status: number; challenges: string[] }> {
    const res = await this.dispatcher.request({
      origin: this.origin, path: '/v2/', method: 'GET', headers: { 'user-agent': 'pullthrough' }, signal,
    }) as UpstreamResponse;
    await res.body.dump().catch(() => undefined);
    return { status: res.statusCode, challenges: res.statusCode === 401 ? headerValues(res.headers, 'www-authenticate') : [] };
  }

  /** Hands an answer to `GET /v2/` to the authorizer while it has not learned yet; true when the upstream answered (below 500). */
  private heard(answer: { status: number; challenges: string[] }): boolean {
    if (answer.status >= 500) return false;
    if (!this.options.authorizer.learned) this.options.authorizer.learn(answer.challenges);
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
   * instead of each taking a 401. An upstream that answers 5xx teaches
   * nothing: the request goes as it would have.
   */
  private async learnAuthentication(signal: AbortSignal | undefined): Promise<void> {
    if (this.options.authorizer.learned) return;
    this.authDiscovery ??= this.ping()
      .then((answer) => { this.heard(answer); })
      .finally(() => { this.authDiscovery = undefined; });
    await abortable(this.authDiscovery, signal);
  }

  private async sendAuthenticated(
    method: Method, path: string, repository: string, headers: Record<string, string>, signal?: AbortSignal,
  ): Promise<UpstreamResponse> {
    const authorizer = this.options.authorizer;
    await this.learnAuthentication(signal);
    const sent = await authorizer.authorize(repository, signal);
    const res = await this.followRedirects(method, path, headers, sent, signal);
    if (res.statusCode !== 401) return res;
    const challenges = headerValues(res.headers, 'www-authenticate');
    await res.body.dump().catch(() => undefined);
    const refused = { ...res, body: emptyBody() };
    if (!(await authorizer.challenged(repository, challenges, sent, signal))) return refused;
    const retry = await authorizer.authorize(repository, signal);
    // What was just refused is never sent again.
    if (retry === sent) return refused;
    return this.followRedirects(method, path, headers, retry, signal);
  }

  /** Follows at most MAX_REDIRECTS redirects; credentials never leave the upstream's origin. */
  private async followRedirects(
    method: Method, path: string, headers: Record<string, string>, authorization: string | undefined, signal?: AbortSignal,
  ): Promise<UpstreamResponse> {
    let url = new URL(path, this.origin);
    for (let hop = 0; ; hop++) {
      const sameOrigin = url.origin === this.origin;
      const requestHeaders: Record<string, string> = { ...headers, 'user-agent': 'pullthrough' };
      if (authorization && sameOrigin) requestHeaders['authorization'] = authorization;
      const res = await this.dispatcher.request({
        origin: url.origin, path: url.pathname + url.search, method, headers: requestHeaders, signal,
      }) as UpstreamResponse;
      const location = header(res.headers, 'location');
      if (!REDIRECT_STATUSES.has(res.statusCode) || !location) return res;
      await res.body.dump().catch(() => undefined);
      if (hop >= MAX_REDIRECTS) {
        throw new UpstreamUnavailable(`upstream ${this.name} redirected more than ${MAX_REDIRECTS} times`);
      }
      url = new URL(location, url);
      if (url.protocol !== 'https:' && url.protocol !== 'http:') {
        throw new UpstreamUnavailable(`upstream ${this.name} redirected to an unsupported URL`);
      }
    }
  }
}

/** Stands in for a body already drained, so callers can treat every response alike. */
function emptyBody(): UpstreamResponse['body'] {
  const body = Object.assign(new PassThrough(), { dump: async () => undefined });
  body.end();
  return body;
}

/** Reads a body whole, refusing more than `limit` bytes. */
async function readLimited(body: Readable, limit: number, upstream: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > limit) {
        body.destroy();
        throw new RegistryError('UPSTREAM_INVALID', `upstream ${upstream} sent more than ${limit} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof RegistryError) throw err;
    throw new UpstreamUnavailable(`upstream ${upstream} broke off a response (${errorCode(err) ?? (err as Error).message})`);
  }
  return Buffer.concat(chunks, total);
}
