import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { RegistryServices } from './services.js';
import { registerErrorHandling } from './errors.js';
import { registryRoutes } from './routes/registry.js';

export interface AppOptions {
  readonly mirror: RegistryServices;
  readonly logger: Logger;
}

/**
 * The fastify app. HEAD routes are declared, not derived from GET, so a HEAD
 * never opens a blob or starts a fill. Every answer carries the API version
 * header; every request ends in exactly one log line.
 */
export function buildApp({ mirror, logger }: AppOptions): FastifyInstance {
  const loggerInstance: FastifyBaseLogger = logger;
  const app: FastifyInstance = Fastify({
    loggerInstance,
    // Our onResponse hook writes the one line per request.
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 1024 },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    requestIdHeader: false,
  });
  app.decorateRequest('cacheOutcome', undefined);
  app.decorateRequest('bodyBytes', 0);

  app.addHook('onRequest', async (_request, reply) => {
    void reply.header('docker-distribution-api-version', 'registry/2.0');
  });
  app.addHook('onResponse', async (request, reply) => {
    request.log.info({
      method: request.method,
      url: request.url.length > 512 ? `${request.url.slice(0, 512)}...` : request.url,
      status: reply.statusCode,
      bytes: request.bodyBytes,
      ms: Math.round(reply.elapsedTime * 10) / 10,
      cache: request.cacheOutcome,
      aborted: !reply.raw.writableFinished || undefined,
    }, 'request');
  });

  registerErrorHandling(app);
  void app.register(registryRoutes, { mirror });
  return app;
}
