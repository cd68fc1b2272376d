/**
 * Upstream failures in words an operator can act on: which upstream, the
 * URL tried, and what came back. And the check that an upstream answering
 * 404 (or a web page) is a registry at all, since a URL that points at a
 * web server otherwise looks to clients like "manifest unknown".
 *
 * Every cause is logged at warn once per upstream until the upstream
 * answers well again, not once per request.
 */
import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';

type Headers = Record<string, string | string[] | undefined>;

function first(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** A connection-level failure, with the URL it happened on (undici's error is its `cause`). */
export class ConnectionFailure extends Error {
  readonly code: string | undefined;
  constructor(readonly url: string, cause: unknown) {
    super((cause as Error | undefined)?.message ?? String(cause), { cause });
    const c = cause as { code?: string; cause?: { code?: string } };
    this.code = c.code ?? c.cause?.code;
    this.name = 'ConnectionFailure';
  }
}

const TLS_MISMATCH = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG', 'EPROTO', 'ERR_SSL_HTTP_REQUEST']);
const UNTRUSTED_CERTIFICATE = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_NOT_YET_VALID',
]);

/** What a connection error code means for the operator. */
export function connectionErrorWords(code: string | undefined, url: string): string {
  if (code && TLS_MISMATCH.has(code)) {
    return url.startsWith('https:')
      ? 'it does not answer in TLS; if it is a plain-HTTP registry, write its url with http://'
      : 'the TLS handshake failed';
  }
  if (code && UNTRUSTED_CERTIFICATE.has(code)) return 'its TLS certificate is not trusted';
  switch (code) {
    case 'ECONNREFUSED': return 'nothing listens there';
    case 'ENOTFOUND':
    case 'EAI_AGAIN': return 'its host name does not resolve';
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED': return 'it closed the connection';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH': return 'there is no route to it';
    case 'UND_ERR_CONNECT_TIMEOUT': return 'connecting took longer than timeouts.connect';
    case 'UND_ERR_HEADERS_TIMEOUT': return 'it sent no answer within timeouts.headers';
    case 'UND_ERR_BODY_TIMEOUT': return 'it went silent for longer than timeouts.bodyIdle';
    default: return 'the request failed';
  }
}

/**
 * True when a response carries what registries put on every answer: the
 * Distribution API header, a JSON (OCI error) body, or an auth challenge.
 * A web server's 404 page has none of them.
 */
export function answersLikeRegistry(headers: Headers): boolean {
  if (first(headers, 'docker-distribution-api-version') !== undefined) return true;
  if (first(headers, 'www-authenticate') !== undefined) return true;
  const type = first(headers, 'content-type')?.toLowerCase() ?? '';
  return type.includes('json');
}

/** What `GET /v2/` says about an upstream: a registry answers 200 or 401, like a registry. */
export function registryProbeVerdict(status: number, headers: Headers): { registry: boolean; answer: string } {
  const type = first(headers, 'content-type')?.split(';')[0]?.trim();
  const answer = `${status}${type ? ` (${type})` : ''}`;
  return { registry: (status === 200 || status === 401) && answersLikeRegistry(headers), answer };
}

export interface UpstreamDiagnosticsOptions {
  readonly upstream: string;
  readonly logger: Logger;
  readonly clock: Clock;
}

/** How long a verdict of the `/v2/` probe stands before a suspicious answer probes again. */
const PROBE_TTL_MS = 60_000;

/**
 * One upstream's warnings and its registry probe: each cause is warned
 * about once until the upstream answers well (`answeredWell`), and the probe
 * runs at most once a minute, only when an answer looked wrong.
 */
export class UpstreamDiagnostics {
  private readonly warned = new Set<string>();
  private probe: { at: number; verdict: Promise<{ registry: boolean; answer: string }> } | undefined;

  constructor(private readonly options: UpstreamDiagnosticsOptions) {}

  /** Logs `message` at warn, unless this cause was logged since the upstream last answered well. */
  warnOnce(cause: string, fields: Record<string, unknown>, message: string): void {
    if (this.warned.has(cause)) return;
    this.warned.add(cause);
    this.options.logger.warn({ upstream: this.options.upstream, cause, ...fields }, message);
  }

  /** A good answer: the next failure of any cause is news again. */
  answeredWell(): void {
    if (this.warned.size > 0) this.warned.clear();
  }

  /** The probe's verdict, asking `probe` again only when the last verdict is older than a minute. */
  registryVerdict(probe: () => Promise<{ registry: boolean; answer: string }>): Promise<{ registry: boolean; answer: string }> {
    const now = this.options.clock.now();
    if (!this.probe || now - this.probe.at >= PROBE_TTL_MS) {
      // A probe that cannot connect says nothing about what answered before: let the caller go on as if it were a registry.
      this.probe = { at: now, verdict: probe().catch(() => ({ registry: true, answer: 'no answer' })) };
    }
    return this.probe.verdict;
  }
}
