import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import type { Server as TlsServer } from 'node:tls';
import type { ServerLimits } from '../config/settings.js';
import type { Logger } from 'pino';
import type { RegistryServices } from './services.js';
import { OPEN_ACCESS, type ClientAccess } from './auth/access.js';
import type { TlsListener } from './tls.js';
import { clientErrorHandler, registerErrorHandling, sendFrameworkError } from './errors.js';
import { registerRequestReport } from './report.js';
import { registryRoutes } from './routes/registry.js';
import { SCHEMA_CONTROLLER } from './schemaCompilers.js';

export interface AppOptions {
  readonly mirror: RegistryServices;
  readonly logger: Logger;
  /** More routes on the same listener (the operator's endpoints, when they have no listener of their own). */
  readonly plugins?: readonly FastifyPluginAsync[];
  /** Who may pull what (`auth`); everyone everything by default. */
  readonly access?: ClientAccess;
  /** HTTPS (`listen.tls`); plain HTTP by default. */
  readonly tls?: TlsListener;
  /** What the listener accepts from clients (`limits`). */
  readonly limits: ServerLimits;
}

/**
 * node's server options for the limits. node checks the head and request
 * timeouts only every `connectionsCheckingInterval` (30 s by default), which
 * would let a slowloris connection live that long past its timeout.
 */
function serverOptions(limits: ServerLimits): { maxHeaderSize: number; headersTimeout: number; requestTimeout: number; connectionsCheckingInterval: number } {
  return {
    maxHeaderSize: limits.headerBytes,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
  };
}

/**
 * The fastify app. HEAD routes are declared, not derived from GET, so a HEAD
 * never opens a blob or starts a fill. Every answer carries the API version
 * header; every request ends in exactly one log line.
 */
export function buildApp({ mirror, logger, plugins = [], access = OPEN_ACCESS, tls, limits }: AppOptions): FastifyInstance {
  const loggerInstance: FastifyBaseLogger = logger;
  const nodeOptions = serverOptions(limits);
  const app: FastifyInstance = Fastify({
    loggerInstance,
    // Our onResponse hook writes the one line per request.
    logController: new LogController({ disableRequestLogging: true }),
    // A child logger per request (with its reqId) costs a pino child and its redaction set-up: made only
    // when the per-request line (info) is written. Above info, a request's warnings carry their own fields.
    childLoggerFactory: (parent, bindings, options) => (logger.isLevelEnabled('info') ? parent.child(bindings, options) : parent),
    exposeHeadRoutes: false,
    schemaController: SCHEMA_CONTROLLER,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 1024 },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    requestIdHeader: false,
    // Malformed percent-encodings and the like answer OCI error JSON too, not fastify's own body.
    frameworkErrors: sendFrameworkError,
    // Errors before a request exists (a head too large or too slow, bad HTTP): OCI error JSON on the raw socket.
    clientErrorHandler,
    requestTimeout: limits.requestTimeoutMs,
    connectionTimeout: limits.idleTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    ...(tls ? { https: { ...tls.serverOptions, ...nodeOptions } } : { http: nodeOptions }),
  }) as unknown as FastifyInstance;
  if (tls) tls.attach(app.server as unknown as TlsServer);
  app.server.maxConnections = limits.maxConnections;
  // fastify sets these after creating the server; node reads the head timeout from the server object too.
  app.server.headersTimeout = limits.headersTimeoutMs;
  // Set by the first onRequest hook; fastify wants no shared object as a decoration's initial value.
  app.decorateRequest('identity', null);

  // A callback hook, not an async one: without \`auth\` the identity is known at once, and a promise per request shows in the profile.
  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('docker-distribution-api-version', 'registry/2.0');
    const identity = access.identify(request);
    if (!(identity instanceof Promise)) {
      request.identity = identity;
      done();
      return;
    }
    identity.then((found) => {
      request.identity = found;
      done();
    }, done);
  });
  registerRequestReport(app, mirror.requestEvents, () => logger.isLevelEnabled('info'));
  closeConnectionsGoingIdle(app);

  registerErrorHandling(app);
  void app.register(registryRoutes, { mirror, access, maxPageSize: limits.maxPageSize });
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
