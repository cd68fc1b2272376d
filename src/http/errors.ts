import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RegistryError, type ErrorCode } from '../registry/errors.js';

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

/**
 * The one place where errors become HTTP: typed registry errors keep their
 * code and status; schema failures become the matching registry error;
 * anything else is a 500 with no internals in the body (the log has them).
 */
export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    let registryError: RegistryError;
    if (error instanceof RegistryError) {
      registryError = error;
    } else if (error.validation) {
      registryError = fromValidation(error);
    } else if (error.statusCode !== undefined && error.statusCode < 500) {
      registryError = new RegistryError('UNSUPPORTED', error.message);
    } else {
      request.log.error({ err: error }, 'unexpected error');
      registryError = new RegistryError('UNKNOWN', 'internal error');
    }
    if (registryError.status >= 500) request.log.warn({ code: registryError.code, message: registryError.message }, 'request failed');
    request.failure = { code: registryError.code, message: registryError.message };
    void reply
      .code(registryError.status)
      .headers(registryError.headers ?? {})
      .type('application/json; charset=utf-8')
      .send(errorBody(registryError.code, registryError.message, registryError.detail));
  });

  app.setNotFoundHandler((request, reply) => {
    const message = `no such endpoint: ${request.method} ${request.url.split('?')[0]!.slice(0, 200)}`;
    request.failure = { code: 'NAME_UNKNOWN', message };
    void reply.code(404).type('application/json; charset=utf-8').send(errorBody('NAME_UNKNOWN', message));
  });
}
