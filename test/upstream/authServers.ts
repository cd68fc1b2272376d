/**
 * Small node:http servers for the authorizer tests: a token service that
 * counts and records its requests, and a registry whose 401s and accepted
 * credentials each test chooses. Both listen on 127.0.0.1; `loopbackAgent`
 * resolves every host name to 127.0.0.1 so tests can use realistic names
 * (`registry.example.test`, `auth.evil.test`) for the realm-trust rules.
 */
import { serveOnLoopback } from '../fixtures/net.js';
import { Agent, type Dispatcher } from '../../src/upstream/undici.js';
import type { ChallengeAuthorizer } from '../../src/upstream/auth/challengeAuthorizer.js';

/** An undici Agent for which every host name is 127.0.0.1. */
export function loopbackAgent(): Agent {
  type Lookup = (err: Error | null, address: string | { address: string; family: number }[], family?: number) => void;
  return new Agent({
    connect: {
      lookup: (_host: string, options: { all?: boolean }, callback: Lookup) => {
        if (options.all) callback(null, [{ address: '127.0.0.1', family: 4 }]);
        else callback(null, '127.0.0.1', 4);
      },
    } as Record<string, unknown>,
  });
}

/** One request the token service received. */
export interface SeenTokenRequest {
  path: string;
  query: URLSearchParams;
  authorization: string | undefined;
}

/** How the token service answers; tests change it between steps. */
export interface TokenServiceBehaviour {
  /** When set, Basic credentials must match one of these users (else 401). */
  users?: Record<string, string>;
  /** `expires_in`; omitted from the answer when undefined. */
  expiresIn?: number | undefined;
  /** Which field carries the token. Default both. */
  field?: 'token' | 'access_token' | 'both' | 'none';
  /** `issued_at`, when set. */
  issuedAt?: string;
  /** Answer every request with this status instead. */
  status?: number;
  /** Wait this long before answering. */
  delayMs?: number;
  /** Answer 307 to this URL (query kept) instead. */
  redirectTo?: string;
}

export interface TokenService {
  port: number;
  /** `http://<host>:<port>/token` */
  realm(host?: string): string;
  requests: SeenTokenRequest[];
  /** Tokens issued, with the scope each was issued for. */
  issued: Map<string, string>;
  behaviour: TokenServiceBehaviour;
  stop(): Promise<void>;
}

/** A token service issuing `tok-<n>` for whatever scope is asked. Any path answers. */
export async function startTokenService(behaviour: TokenServiceBehaviour = {}): Promise<TokenService> {
  // The handler reads `service.behaviour` on each request, so tests may replace or edit it between steps.
  const service: TokenService = {
    port: 0, requests: [], issued: new Map(), behaviour,
    realm: (host = '127.0.0.1') => `http://${host}:${service.port}/token`,
    stop: async () => undefined,
  };
  const server = await serveOnLoopback((req, res) => {
    const url = new URL(req.url ?? '/', 'http://token.invalid');
    service.requests.push({ path: url.pathname, query: url.searchParams, authorization: req.headers.authorization });
    const b = service.behaviour;
    const answer = (): void => {
      if (b.redirectTo !== undefined) {
        res.writeHead(307, { location: `${b.redirectTo}${url.search}` }).end();
        return;
      }
      if (b.status !== undefined) {
        res.writeHead(b.status, { 'content-type': 'application/json' }).end('{"errors":[]}');
        return;
      }
      if (b.users && !basicMatches(req.headers.authorization, b.users)) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="token"' }).end('{"errors":[]}');
        return;
      }
      const token = `tok-${service.issued.size + 1}`;
      service.issued.set(token, url.searchParams.get('scope') ?? '');
      const field = b.field ?? 'both';
      const body: Record<string, unknown> = {};
      if (field === 'token' || field === 'both') body['token'] = token;
      if (field === 'access_token' || field === 'both') body['access_token'] = token;
      if (b.expiresIn !== undefined) body['expires_in'] = b.expiresIn;
      if (b.issuedAt !== undefined) body['issued_at'] = b.issuedAt;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    if (b.delayMs) setTimeout(answer, b.delayMs);
    else answer();
  });
  service.port = server.port;
  service.stop = server.stop;
  return service;
}

function basicMatches(header: string | undefined, users: Record<string, string>): boolean {
  if (!header?.startsWith('Basic ')) return false;
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon > 0 && users[decoded.slice(0, colon)] === decoded.slice(colon + 1);
}

/** The registry's verdict on one request's Authorization header. */
export type Verdict = { ok: true } | { challenge: string | undefined };

export interface FakeRegistry {
  port: number;
  /** `http://<host>:<port>` */
  url(host?: string): string;
  /** The Authorization header of every request, in order. */
  authorizations: (string | undefined)[];
  stop(): Promise<void>;
}

/**
 * A registry answering `GET /v2/<name>/manifests/<ref>` with 200 when
 * `judge` says ok, else 401 with the challenge it returns (none when
 * undefined).
 */
export async function startRegistry(judge: (authorization: string | undefined, repository: string) => Verdict): Promise<FakeRegistry> {
  const authorizations: (string | undefined)[] = [];
  const server = await serveOnLoopback((req, res) => {
    authorizations.push(req.headers.authorization);
    const match = /^\/v2\/(.+)\/manifests\/[^/]+$/.exec(new URL(req.url ?? '/', 'http://r.invalid').pathname);
    if (!match) {
      res.writeHead(404).end();
      return;
    }
    const verdict = judge(req.headers.authorization, match[1]!);
    if ('ok' in verdict) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    res.writeHead(401, verdict.challenge === undefined ? {} : { 'www-authenticate': verdict.challenge }).end('{"errors":[]}');
  });
  return { port: server.port, url: (host = '127.0.0.1') => `http://${host}:${server.port}`, authorizations, stop: server.stop };
}

/**
 * Docker-style bearer judging: a token the service issued for this
 * repository's pull scope and not revoked passes; a request without one gets
 * the bare challenge, a revoked or unknown token `invalid_token`, a token
 * for another scope or a denied repository `insufficient_scope`.
 */
export function bearerJudge(
  tokens: TokenService, realm: string, service: string, revoked: Set<string>, denied: Set<string> = new Set(),
): (authorization: string | undefined, repository: string) => Verdict {
  return (authorization, repository) => {
    const scope = `repository:${repository}:pull`;
    const base = `Bearer realm="${realm}",service="${service}",scope="${scope}"`;
    if (!authorization?.startsWith('Bearer ')) return { challenge: base };
    const token = authorization.slice(7);
    const grantedScope = tokens.issued.get(token);
    if (grantedScope === undefined || revoked.has(token)) return { challenge: `${base},error="invalid_token"` };
    if (grantedScope !== scope || denied.has(repository)) return { challenge: `${base},error="insufficient_scope"` };
    return { ok: true };
  };
}

/**
 * One pull the way the upstream client makes it: authorize, send, and on a
 * 401 hand the challenge and what was sent over, and retry once if told to
 * (never with what was just refused). Resolves to the final status.
 */
export async function pull(
  authorizer: ChallengeAuthorizer, registryUrl: string, repository: string, dispatcher: Dispatcher,
): Promise<number> {
  const send = async (authorization: string | undefined): Promise<Dispatcher.ResponseData> => {
    const url = new URL(`/v2/${repository}/manifests/latest`, registryUrl);
    const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
    return dispatcher.request({ origin: url.origin, path: url.pathname, method: 'GET', headers });
  };
  const sent = await authorizer.authorize(repository);
  let res = await send(sent);
  await res.body.dump();
  if (res.statusCode !== 401) return res.statusCode;
  const challenge = res.headers['www-authenticate'];
  const values = challenge === undefined ? [] : Array.isArray(challenge) ? challenge : [challenge];
  if (!(await authorizer.challenged(repository, values, sent))) return res.statusCode;
  const retry = await authorizer.authorize(repository);
  if (retry === sent) return res.statusCode;
  res = await send(retry);
  await res.body.dump();
  return res.statusCode;
}

/** A logger that records every call, for checking warnings and that no secret is ever logged. */
export function recordingLogger(): { logger: { warn: (obj: unknown, msg?: string) => void; debug: (obj: unknown, msg?: string) => void }; lines: { level: string; obj: unknown; msg: string | undefined }[] } {
  const lines: { level: string; obj: unknown; msg: string | undefined }[] = [];
  return {
    lines,
    logger: {
      warn: (obj, msg) => void lines.push({ level: 'warn', obj, msg }),
      debug: (obj, msg) => void lines.push({ level: 'debug', obj, msg }),
    },
  };
}
