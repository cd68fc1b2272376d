import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import type { Logger } from 'pino';
import type { RegistryServices } from './services.js';
import { registerErrorHandling } from './errors.js';
import { registerRequestReport } from './report.js';
import { registryRoutes } from './routes/registry.js';

export interface AppOptions {
  readonly mirror: RegistryServices;
  readonly logger: Logger;
  /** More routes on the same listener (the operator's endpoints, when they have no listener of their own). */
  readonly plugins?: readonly FastifyPluginAsync[];
}

/**
 * The fastify app. HEAD routes are declared, not derived from GET, so a HEAD
 * never opens a blob or starts a fill. Every answer carries the API version
 * header; every request ends in exactly one log line.
 */
export function buildApp({ mirror, logger, plugins = [] }: AppOptions): FastifyInstance {
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
  app.addHook('onRequest', async (_request, reply) => {
    void reply.header('docker-distribution-api-version', 'registry/2.0');
  });
  registerRequestReport(app, mirror.requestEvents);

  registerErrorHandling(app);
  void app.register(registryRoutes, { mirror });
  for (const plugin of plugins) void app.register(plugin);
  return app;
}
