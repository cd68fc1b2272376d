/**
 * One request to a Docker token service (the "realm" of a Bearer
 * challenge), per https://distribution.github.io/distribution/spec/auth/token/.
 */
import type { Dispatcher } from '../undici.js';
import type { Clock } from '../../registry/clock.js';
import type { UpstreamCredentials } from './authorizer.js';
import { UpstreamAuthError } from './authError.js';
import type { FetchedToken } from './tokenCache.js';

/** What to ask the token service for. */
export interface TokenRequest {
  /** For messages only. */
  readonly upstreamName: string;
  readonly realm: URL;
  readonly service: string | undefined;
  /** E.g. `repository:library/alpine:pull`. */
  readonly scope: string;
  /** Sent (Basic, plus `account=<username>`) only when given: the caller decides whether the realm deserves them. */
  readonly credentials: UpstreamCredentials | undefined;
}

export interface TokenFetchOptions {
  readonly dispatcher: Dispatcher;
  /** The returned expiry is on this clock, and the timeout runs on it. */
  readonly clock: Clock;
  /** The whole exchange, redirects included, must finish within this. */
  readonly timeoutMs: number;
  /** A longer answer is refused (`maxTokenResponseSize`); 1 MiB by default. */
  readonly maxBodyBytes?: number;
}

/** The spec's default when a token service does not say how long a token lives. */
export const DEFAULT_EXPIRES_IN_SECONDS = 60;
const MAX_REDIRECTS = 3;
const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

type Response = Dispatcher.ResponseData;

/**
 * Fetches a token: `GET <realm>?service=..&scope=..[&account=..]`, keeping
 * the realm's own query parameters. Follows up to three redirects, but
 * sends `Authorization` only to the realm's own origin. Accepts `token` or
 * `access_token`; `expires_in` defaults to 60 s and counts from `issued_at`
 * when that is plausible on our clock (not in the future, not so old that
 * the token would already be expired: either means the clocks disagree, and
 * then the lifetime counts from now).
 *
 * Throws `UpstreamAuthError` only, whose message never carries credentials
 * or the token; a failing token service gets one generic message, and what
 * failed is the error's `reason` (for the log).
 *
 * Where it may connect is the dispatcher's business: the production one
 * (`authorizerFor`) enforces the upstream's egress policy on the realm and
 * on every redirect.
 */
export async function fetchToken(request: TokenRequest, options: TokenFetchOptions): Promise<FetchedToken> {
  const where = describeRealm(request);
  const timeout = new AbortController();
  const timer = options.clock.setTimeout(() => timeout.abort(new ExchangeError('timed out')), options.timeoutMs);
  const { signal } = timeout;
  let res: Response;
  let body: Buffer;
  try {
    res = await requestWithRedirects(tokenUrl(request), authorizationFor(request.credentials), options.dispatcher, signal);
    body = await readLimited(res.body, options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES);
  } catch (err) {
    if (err instanceof UpstreamAuthError) throw err;
    const reason = signal.aborted ? `timed out after ${options.timeoutMs} ms` : `could not be reached (${errorCode(err)})`;
    throw UpstreamAuthError.unavailable(request.upstreamName, `${where} ${reason}`);
  } finally {
    timer.cancel();
  }
  if (res.statusCode !== 200) throw statusError(request, where, res.statusCode);
  return parseTokenResponse(body, options.clock.now(), where, request.upstreamName);
}

/** The realm with service, scope and (only with credentials) account set; other query parameters kept. */
export function tokenUrl(request: TokenRequest): URL {
  const url = new URL(request.realm.href);
  url.username = '';
  url.password = '';
  url.hash = '';
  if (request.service !== undefined) url.searchParams.set('service', request.service);
  url.searchParams.set('scope', request.scope);
  if (request.credentials) url.searchParams.set('account', request.credentials.username);
  return url;
}

function authorizationFor(credentials: UpstreamCredentials | undefined): string | undefined {
  if (!credentials) return undefined;
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`, 'utf8').toString('base64')}`;
}

/** `upstream X: the token service at https://auth.example/token`: origin and path, never the query (it may carry `account`). */
function describeRealm(request: TokenRequest): string {
  return `upstream ${request.upstreamName}: the token service at ${request.realm.origin}${request.realm.pathname}`;
}

async function requestWithRedirects(
  start: URL, authorization: string | undefined, dispatcher: Dispatcher, signal: AbortSignal,
): Promise<Response> {
  let url = start;
  for (let hop = 0; ; hop++) {
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'pullthrough' };
    // Credentials are for the realm the trust check approved, not wherever it points us.
    if (authorization !== undefined && url.origin === start.origin) headers['authorization'] = authorization;
    const res = await dispatcher.request({ origin: url.origin, path: url.pathname + url.search, method: 'GET', headers, signal });
    const location = headerValue(res.headers['location']);
    if (!REDIRECT_STATUSES.has(res.statusCode) || location === undefined) return res;
    await res.body.dump().catch(() => undefined);
    if (hop >= MAX_REDIRECTS) throw new ExchangeError('too many redirects');
    url = resolveRedirect(location, url);
  }
}

function statusError(request: TokenRequest, where: string, status: number): UpstreamAuthError {
  const detail = { upstream: request.upstreamName, status };
  if (status === 401 || status === 403) {
    return request.credentials
      ? new UpstreamAuthError('unauthorized', `${where} rejected the configured credentials (${status})`, detail)
      : new UpstreamAuthError('denied', `${where} refused an anonymous token (${status}); the upstream may need credentials`, detail);
  }
  return UpstreamAuthError.unavailable(request.upstreamName, `${where} answered ${status}`);
}

function parseTokenResponse(body: Buffer, now: number, where: string, upstream: string): FetchedToken {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw UpstreamAuthError.unavailable(upstream, `${where} sent an answer that is not JSON`);
  }
  const fields = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>;
  const token = nonEmptyString(fields['token']) ?? nonEmptyString(fields['access_token']);
  if (token === undefined) throw UpstreamAuthError.unavailable(upstream, `${where} sent no token`);
  const expiresIn = fields['expires_in'];
  const lifetimeMs = 1000 * (typeof expiresIn === 'number' && Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn : DEFAULT_EXPIRES_IN_SECONDS);
  const issuedAt = plausibleIssuedAt(fields['issued_at'], now, lifetimeMs);
  return { token, issuedAt, expiresAt: issuedAt + lifetimeMs };
}

function plausibleIssuedAt(value: unknown, now: number, lifetimeMs: number): number {
  const issued = typeof value === 'string' ? Date.parse(value) : NaN;
  return Number.isFinite(issued) && issued <= now && issued > now - lifetimeMs ? issued : now;
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** A failure of ours whose message is safe to show (no URL, no credentials). */
class ExchangeError extends Error {}

function resolveRedirect(location: string, base: URL): URL {
  let url: URL;
  try {
    url = new URL(location, base);
  } catch {
    throw new ExchangeError('redirect to an invalid URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new ExchangeError('redirect to an unsupported URL');
  return url;
}

/** A short reason for a failed exchange; other errors' messages are not shown, as they might quote the URL. */
function errorCode(err: unknown): string {
  if (err instanceof ExchangeError) return err.message;
  const e = err as { code?: unknown; cause?: { code?: unknown }; name?: unknown };
  const code = e.code ?? e.cause?.code;
  if (typeof code === 'string') return code;
  return typeof e.name === 'string' ? e.name : 'unknown error';
}

async function readLimited(body: Response['body'], limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      body.destroy();
      throw new ExchangeError(`answered more than ${limit} bytes (maxTokenResponseSize)`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}
