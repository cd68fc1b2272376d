import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import type { Server as TlsServer } from 'node:tls';
import type { Logger } from 'pino';
import type { RegistryServices } from './services.js';
import { OPEN_ACCESS, type ClientAccess } from './auth/access.js';
import type { TlsListener } from './tls.js';
import { registerErrorHandling } from './errors.js';
import { registerRequestReport } from './report.js';
import { registryRoutes } from './routes/registry.js';

export interface AppOptions {
  readonly mirror: RegistryServices;
  readonly logger: Logger;
  /** More routes on the same listener (the operator's endpoints, when they have no listener of their own). */
  readonly plugins?: readonly FastifyPluginAsync[];
  /** Who may pull what (`auth`); everyone everything by default. */
  readonly access?: ClientAccess;
  /** HTTPS (`listen.tls`); plain HTTP by default. */
  readonly tls?: TlsListener;
}

/**
 * The fastify app. HEAD routes are declared, not derived from GET, so a HEAD
 * never opens a blob or starts a fill. Every answer carries the API version
 * header; every request ends in exactly one log line.
 */
export function buildApp({ mirror, logger, plugins = [], access = OPEN_ACCESS, tls }: AppOptions): FastifyInstance {
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
    ...(tls ? { https: tls.serverOptions } : {}),
  }) as unknown as FastifyInstance;
  if (tls) tls.attach(app.server as unknown as TlsServer);
  // Set by the first onRequest hook; fastify wants no shared object as a decoration's initial value.
  app.decorateRequest('identity', null);

  app.addHook('onRequest', async (request, reply) => {
    void reply.header('docker-distribution-api-version', 'registry/2.0');
    request.identity = await access.identify(request);
  });
  registerRequestReport(app, mirror.requestEvents);
  closeConnectionsGoingIdle(app);

  registerErrorHandling(app);
  void app.register(registryRoutes, { mirror, access });
  for (const plugin of plugins) void app.register(plugin);
  return app;
}

/**
 * `forceCloseConnections: 'idle'` closes the connections idle when close()
 * begins; a keep-alive connection whose response finishes later would hold
 * close() (and a SIGTERM'd process) until its keep-alive timeout. So once
 * closing, a connection is closed as soon as its response is done.
 */
function closeConnectionsGoingIdle(app: FastifyInstance): void {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onResponse', async () => {
    if (closing) setImmediate(() => app.server.closeIdleConnections());
  });
}
