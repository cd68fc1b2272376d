import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_STATUS, RegistryError, StorageUnavailable, type ErrorCode } from '../registry/errors.js';

/** The OCI error body. */
export function errorBody(code: ErrorCode, message: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message, detail: detail ?? null }] });
}

/** Turns a fastify schema failure into the registry error a client understands. */
function fromValidation(error: FastifyError): RegistryError {
  const field = error.validation?.[0]?.instancePath ?? '';
  if (error.validationContext === 'querystring' && /\/n$/.test(field)) {
    return new RegistryError('PAGINATION_NUMBER_INVALID', 'invalid number of results requested');
  }
  return new RegistryError('UNSUPPORTED', `invalid ${error.validationContext ?? 'request'}: ${error.message}`);
}

/** Fastify's routing errors, which come before any hook or route: the request path itself is not usable. */
function fromFramework(error: FastifyError): RegistryError | undefined {
  switch (error.code) {
    case 'FST_ERR_BAD_URL':
      return new RegistryError('NAME_INVALID', 'the request path is not a valid URL (a malformed percent-encoding)');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new RegistryError('NAME_INVALID', 'the request path is too long');
    default:
      return undefined;
  }
}

/** Any error as the registry error a client gets: the one mapping, for the error handler and the framework's errors alike. */
function asRegistryError(error: FastifyError, request: FastifyRequest): RegistryError {
  if (error instanceof RegistryError) return error;
  if (error.validation) return fromValidation(error);
  const framework = fromFramework(error);
  if (framework) return framework;
  // A local write that failed (a full disk) is the mirror's trouble, and passes: 503, not 500.
  const storage = StorageUnavailable.from(error, 'to storage');
  if (storage) return storage;
  if (error.statusCode !== undefined && error.statusCode < 500) return new RegistryError('UNSUPPORTED', error.message);
  request.log.error({ err: error }, 'unexpected error');
  return new RegistryError('UNKNOWN', 'internal error');
}

function sendError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const registryError = asRegistryError(error, request);
  if (registryError.status >= 500) request.log.warn({ code: registryError.code, message: registryError.message }, 'request failed');
  request.failure = { code: registryError.code, message: registryError.message };
  void reply
    .code(registryError.status)
    .headers(registryError.headers ?? {})
    .header('docker-distribution-api-version', 'registry/2.0')
    .type('application/json; charset=utf-8')
    .send(errorBody(registryError.code, registryError.message, registryError.detail));
}

/** fastify's `frameworkErrors`: a malformed URL (`%zz`, `%ff`, a lone `%`) gets the same OCI error JSON as everything else. */
export function sendFrameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  sendError(error, request, reply);
}

/** What a client that broke HTTP itself is told, by node's error code. */
function clientErrorOf(err: NodeJS.ErrnoException): RegistryError {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return new RegistryError('REQUEST_TIMEOUT', 'the request did not arrive in time');
  if (err.code === 'HPE_HEADER_OVERFLOW') return new RegistryError('HEADER_TOO_LARGE', 'the request headers are too large');
  return new RegistryError('REQUEST_INVALID', 'the request is not valid HTTP');
}

/**
 * fastify's `clientErrorHandler`: node's parser or timers refused the
 * request before fastify saw one (a head too large or too slow, garbage).
 * There is no reply object yet: the OCI error goes on the raw socket, which
 * is then closed.
 */
export function clientErrorHandler(this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const error = clientErrorOf(err);
  this.log.debug({ code: error.code, reason: err.code }, 'client error');
  if (socket.writable) {
    const body = errorBody(error.code, error.message);
    socket.write(`HTTP/1.1 ${ERROR_STATUS[error.code]} ${STATUS_CODES[ERROR_STATUS[error.code]] ?? ''}\r\n`
      + 'Docker-Distribution-API-Version: registry/2.0\r\nContent-Type: application/json; charset=utf-8\r\n'
      + `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}

/**
 * The one place where errors become HTTP: typed registry errors keep their
 * code and status; schema failures and fastify's routing errors become the
 * matching registry error; anything else is a 500 with no internals in the
 * body (the log has them).
 */
export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler(sendError);

  app.setNotFoundHandler((request, reply) => {
    const message = `no such endpoint: ${request.method} ${request.url.split('?')[0]!.slice(0, 200)}`;
    request.failure = { code: 'NAME_UNKNOWN', message };
    void reply.code(404).type('application/json; charset=utf-8').send(errorBody('NAME_UNKNOWN', message));
  });
}
