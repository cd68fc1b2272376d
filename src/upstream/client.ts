import { PassThrough, type Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { Agent, type Dispatcher } from 'undici';
import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import type { UpstreamSettings } from '../config/settings.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { RegistryError, UpstreamOffline, UpstreamRateLimited, UpstreamUnavailable } from '../registry/errors.js';
import { MAX_MANIFEST_BYTES, coversDefaultAccept, isMediaType } from '../registry/mediaTypes.js';
import type { UpstreamAuthorizer } from './auth/authorizer.js';
import { EgressPolicy, EgressRefused } from './egress.js';
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

export interface UpstreamClientOptions {
  readonly authorizer: UpstreamAuthorizer;
  readonly logger: Logger;
  /** Back-off windows, the negative cache and Retry-After dates are read against it. */
  readonly clock: Clock;
}

const MAX_REDIRECTS = 5;
/**
 * Connections per origin for blob bodies, a pool of their own: however many
 * fills run (and a client can start many, then leave), manifests, HEADs and
 * tag lists keep the metadata pool to themselves.
 */
export const BLOB_CONNECTIONS = 32;
const METADATA_CONNECTIONS = 64;
/** What one tag-list page may be at most, when the caller sets no smaller budget. */
const MAX_TAG_PAGE_BYTES = 16 * 1024 * 1024;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Connection-level failures after which nothing reached anyone: safe to retry an idempotent request. */
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);
const RETRY_DELAYS_MS = [100, 400];

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
  if (err instanceof EgressRefused) return err;
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof EgressRefused ? cause : undefined;
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

  constructor(readonly settings: UpstreamSettings, private readonly options: UpstreamClientOptions) {
    this.origin = settings.url.origin;
    this.rateLimit = new RateLimitTracker({ upstream: settings.name, logger: options.logger, clock: options.clock });
    this.notFound = new LRUCache({
      max: 10_000, ttl: Math.max(1, settings.notFoundTtlMs), ttlAutopurge: false, perf: { now: () => options.clock.now() },
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
    this.blobDispatcher = agent(BLOB_CONNECTIONS);
  }

  get name(): string {
    return this.settings.name;
  }

  async close(): Promise<void> {
    await Promise.all([this.dispatcher.close(), this.blobDispatcher.close()]);
  }

  /** HEAD a manifest by tag or digest; undefined when the upstream has no such manifest. */
  async headManifest(repository: string, reference: string, accept: readonly string[]): Promise<ManifestHead | undefined> {
    const res = await this.send('HEAD', repository, `manifests/${reference}`, { accept: accept.join(', ') }, manifestKind(accept));
    if (res === undefined) return undefined;
    await res.body.dump();
    if (res.statusCode === 405) return { digest: undefined, mediaType: undefined, size: undefined };
    return { digest: digestHeader(res.headers), mediaType: mediaTypeOf(res.headers), size: contentLength(res.headers) };
  }

  /** GET a manifest; the body is read whole, up to the manifest size limit. */
  async getManifest(repository: string, reference: string, accept: readonly string[]): Promise<FetchedManifest | undefined> {
    const res = await this.send('GET', repository, `manifests/${reference}`, { accept: accept.join(', ') }, manifestKind(accept));
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
    const res = await this.send('GET', repository, `blobs/${digest}`, {}, 'blob', signal);
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
    const body = await readLimited(res.body, Math.min(maxBytes, MAX_TAG_PAGE_BYTES), this.name).catch((err: unknown) => {
      if (err instanceof ResponseTooLarge) return undefined;
      throw err;
    });
    if (body === undefined) return { tags: [], next: undefined, bytes: maxBytes, oversized: true };
    let tags: unknown[] = [];
    try {
      const parsed = JSON.parse(body.toString('utf8')) as { tags?: unknown };
      if (Array.isArray(parsed.tags)) tags = parsed.tags;
    } catch {
      throw new UpstreamUnavailable(`upstream ${this.name} sent an unreadable tag list`);
    }
    const next = nextPageLink(header(res.headers, 'link'));
    const prefix = `/v2/${repository}/`;
    return {
      tags: tags.filter((t): t is string => typeof t === 'string'),
      next: next?.startsWith(prefix) ? next.slice(prefix.length) : undefined,
      bytes: body.length,
      oversized: false,
    };
  }

  /**
   * Sends a request for `/v2/<repository>/<rest>` with authentication,
   * redirects and retries; maps the status to a typed error.
   */
  private async send(
    method: Method, repository: string, rest: string, headers: Record<string, string>,
    requestKind: RequestKind, signal?: AbortSignal,
  ): Promise<UpstreamResponse | undefined> {
    if (this.settings.offline) throw new UpstreamOffline(this.name);
    const path = `/v2/${repository}/${rest}`;
    const kind = requestKind === 'manifest (narrow Accept)' ? 'manifest' : requestKind;
    // Only a 404 to the full Accept list means "no such manifest": a narrower one may only mean "not in those types".
    const remembers404 = requestKind === 'manifest' && this.settings.notFoundTtlMs > 0;
    if (remembers404 && this.notFound.has(path)) return undefined;
    const backoff = kind === 'manifest' ? this.rateLimit.backoffSeconds() : 0;
    if (backoff > 0) {
      // Asking again during a back-off would only prolong it: answer at once, callers serve what is cached.
      throw new UpstreamRateLimited(`upstream ${this.name} is rate-limiting pulls; retrying after the back-off`, backoff);
    }
    const res = await this.withRetries(method, () => this.sendAuthenticated(method, path, repository, headers, kind === 'blob', signal));
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
    if (REDIRECT_STATUSES.has(status)) {
      return new UpstreamUnavailable(`upstream ${this.name} answered ${status}: only blobs may be redirected`, { upstream: this.name, status });
    }
    return new UpstreamUnavailable(`upstream ${this.name} answered ${status}`, { upstream: this.name, status });
  }

  private async withRetries(method: Method, attempt: () => Promise<UpstreamResponse>): Promise<UpstreamResponse> {
    for (let i = 0; ; i++) {
      try {
        return await attempt();
      } catch (err) {
        if (err instanceof RegistryError) throw err;
        const refused = egressRefusal(err);
        if (refused) {
          this.options.logger.warn({ upstream: this.name, host: refused.host, address: refused.address }, 'refused to connect to a non-public address an upstream chose');
          throw new UpstreamUnavailable(`upstream ${this.name}: ${refused.message}`, { upstream: this.name });
        }
        const code = errorCode(err);
        if (RETRYABLE_CODES.has(code ?? '') && i < RETRY_DELAYS_MS.length) {
          this.options.logger.debug({ upstream: this.name, method, code, attempt: i + 1 }, 'retrying upstream request');
          await this.options.clock.sleep(RETRY_DELAYS_MS[i]!);
          continue;
        }
        throw new UpstreamUnavailable(`upstream ${this.name} is unreachable (${code ?? (err as Error).message})`, { upstream: this.name });
      }
    }
  }

  private async sendAuthenticated(
    method: Method, path: string, repository: string, headers: Record<string, string>, isBlob: boolean, signal?: AbortSignal,
  ): Promise<UpstreamResponse> {
    const authorizer = this.options.authorizer;
    const { res, origin } = await this.followRedirects(method, path, headers, await authorizer.authorize(repository, signal), isBlob, signal);
    if (res.statusCode !== 401) return res;
    // A 401 from a redirect target (a CDN, an object store) is not the upstream's to make: it never moves the realm.
    if (origin !== this.origin) return res;
    const challenges = headerValues(res.headers, 'www-authenticate');
    await res.body.dump().catch(() => undefined);
    if (!(await authorizer.challenged(repository, challenges, signal))) return { ...res, body: emptyBody() };
    return (await this.followRedirects(method, path, headers, await authorizer.authorize(repository, signal), isBlob, signal)).res;
  }

  /**
   * Sends the request; for a blob, follows at most MAX_REDIRECTS redirects
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
      const res = await dispatcher.request({
        origin: url.origin, path: url.pathname + url.search, method, headers: requestHeaders, signal,
      }) as UpstreamResponse;
      const location = header(res.headers, 'location');
      if (!isBlob || !REDIRECT_STATUSES.has(res.statusCode) || !location) return { res, origin: url.origin };
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

/** Reads a body whole, refusing more than `limit` bytes. */
async function readLimited(body: Readable, limit: number, upstream: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > limit) {
        body.destroy();
        throw new ResponseTooLarge('UPSTREAM_INVALID', `upstream ${upstream} sent more than ${limit} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof RegistryError) throw err;
    throw new UpstreamUnavailable(`upstream ${upstream} broke off a response (${errorCode(err) ?? (err as Error).message})`);
  }
  return Buffer.concat(chunks, total);
}
