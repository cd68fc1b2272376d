import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { NO_REQUEST_EVENTS, type RequestEvents } from '../registry/telemetry.js';
import { identityName } from './auth/identity.js';
import { clientOf } from './context.js';

/** Longest URL in a log line, and path in the status page's last errors. */
const MAX_LOGGED_URL = 512;
const MAX_REPORTED_PATH = 200;

const REPLY = Symbol('pullthrough.reply');
type ReportedResponse = ServerResponse & { [REPLY]?: FastifyReply };

/**
 * The one line per request, and the report of each registry request to the
 * metrics. Body bytes are counted for every answer: a stream as it flows
 * (`countBytes`), anything else by its length; a HEAD delivers none.
 *
 * Reported when the response closes, not in fastify's onResponse: that one
 * runs only for responses that finished, and a client may close its
 * connection as soon as it has every byte it was promised (skopeo does), a
 * moment before our side of the response has finished.
 */
export function registerRequestReport(
  app: FastifyInstance, events: RequestEvents = NO_REQUEST_EVENTS, logsRequests: () => boolean = () => true,
): void {
  app.decorateRequest('cacheOutcome', undefined);
  app.decorateRequest('bodyBytes', 0);
  app.decorateRequest('streamedBody', false);
  app.decorateRequest('requestKind', undefined);
  app.decorateRequest('repository', undefined);
  app.decorateRequest('failure', undefined);

  // One listener function for every response: the reply it reports is found on the response.
  function closed(this: ReportedResponse): void {
    const reply = this[REPLY];
    if (reply) report(reply);
  }
  app.addHook('onRequest', (_request, reply, done) => {
    (reply.raw as ReportedResponse)[REPLY] = reply;
    reply.raw.on('close', closed);
    done();
  });

  const report = (reply: FastifyReply): void => {
    const { request } = reply;
    const status = reply.statusCode;
    // A body that is not a stream goes out in one write, whose length fastify put in Content-Length.
    if (!request.streamedBody && request.method !== 'HEAD') request.bodyBytes = Number(reply.getHeader('content-length') ?? 0);
    const repository = request.repository;
    // Above info the line is not written: its fields are not even gathered (issue 19, the hot path).
    if (logsRequests()) logLine(reply, repository);
    const kind = request.requestKind;
    if (kind !== undefined) {
      const outcome = status >= 400 ? 'error' : request.cacheOutcome ?? 'hit';
      events.served(kind, request.method, outcome, repository, request.bodyBytes, reply.elapsedTime / 1000);
    }
    if (status >= 400 && request.url.startsWith('/v2/')) {
      events.failed({
        at: Date.now(),
        method: request.method,
        path: decodedPath(request.url).slice(0, MAX_REPORTED_PATH),
        status,
        code: request.failure?.code,
        message: request.failure?.message,
        upstream: repository?.upstream,
      });
    }
  };
}

/** The one line per request (level info). */
function logLine(reply: FastifyReply, repository: FastifyReply['request']['repository']): void {
  const { request } = reply;
  const status = reply.statusCode;
  request.log.info({
    method: request.method,
    url: request.url.length > MAX_LOGGED_URL ? `${request.url.slice(0, MAX_LOGGED_URL)}...` : request.url,
    status,
    user: identityName(clientOf(request)),
    bytes: request.bodyBytes,
    ms: Math.round(reply.elapsedTime * 10) / 10,
    cache: request.cacheOutcome,
    upstream: repository?.upstream,
    repository: repository?.name,
    aborted: !reply.raw.writableFinished || undefined,
  }, 'request');
}

/** The path as the client meant it (percent-decoding undone where it can be). */
function decodedPath(url: string): string {
  const path = url.split('?')[0]!;
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}
