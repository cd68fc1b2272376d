import type { FastifyBaseLogger, FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import type { Server as TlsServer } from 'node:tls';
import { SCHEMA_CONTROLLER } from '../http/schemaCompilers.js';
import type { TlsListener } from '../http/tls.js';
import type { PullthroughMetrics } from './metrics.js';
import { STATUS_PAGE, STATUS_PAGE_CSP } from './page.js';
import type { ReadinessProbe } from './probes.js';
import type { StatusReporter } from './status.js';

export interface AdminOptions {
  readonly metrics: PullthroughMetrics;
  readonly readiness: ReadinessProbe;
  readonly status: StatusReporter;
}

/** Where `admin.listen` puts the operator's endpoints. */
export interface AdminAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * The operator's side of a mirror: `/metrics`, `/livez`, `/readyz`, the
 * status page (`/`, `/status`) and `/status.json`. Served by the registry
 * listener (`routes` registered on its app), or by a listener of its own
 * when `admin.listen` is configured (`listen`), so a mirror open to many
 * clients can keep them private.
 */
export class Admin {
  constructor(private readonly options: AdminOptions) {}

  /** The routes, as a fastify plugin. Registering them turns on the process metrics. */
  readonly routes: FastifyPluginAsync = async (app) => {
    const { metrics, readiness, status } = this.options;
    metrics.collectProcessMetrics();
    // Probes and scrapes come every few seconds: their log lines only when something is wrong.
    const quiet = { logLevel: 'warn' } as const;

    app.get('/metrics', quiet, async (_request, reply) => reply.type(metrics.contentType).send(await metrics.text()));
    app.get('/livez', quiet, async (_request, reply) => reply.type('application/json').send('{"status":"live"}'));
    app.get('/readyz', quiet, async (_request, reply) => {
      const { ready, checks } = await readiness.check();
      const failing = Object.entries(checks).filter(([, c]) => !c.ok).map(([name]) => name);
      return reply.code(ready ? 200 : 503).type('application/json')
        .send(JSON.stringify({ status: ready ? 'ready' : 'unready', failing, checks }));
    });
    const page = async (_request: unknown, reply: FastifyReply): Promise<void> => {
      await reply.type('text/html; charset=utf-8').headers({
        'content-security-policy': STATUS_PAGE_CSP,
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
      }).send(STATUS_PAGE);
    };
    app.get('/', page);
    app.get('/status', page);
    app.get('/status.json', async (_request, reply) =>
      reply.type('application/json').header('cache-control', 'no-store').send(JSON.stringify(await status.status())));
  };

  /** A listener of the operator's endpoints alone (`admin.listen`), over HTTPS with `admin.tls` (the same block as `listen.tls`). */
  async listen(address: AdminAddress, logger: Logger, tls?: TlsListener): Promise<FastifyInstance> {
    const loggerInstance: FastifyBaseLogger = logger.child({ component: 'admin' });
    // Loaded here, not at import: every mirror has an Admin, and the commands that serve nothing (warm, export, gc) need no fastify.
    const { default: Fastify, LogController } = await import('fastify');
    const app = Fastify({
      loggerInstance,
      logController: new LogController({ disableRequestLogging: true }),
      forceCloseConnections: true,
      schemaController: SCHEMA_CONTROLLER,
      ...(tls ? { https: tls.serverOptions } : {}),
    }) as unknown as FastifyInstance;
    if (tls) tls.attach(app.server as unknown as TlsServer);
    await app.register(this.routes);
    app.setNotFoundHandler((_request, reply) => reply.code(404).type('application/json').send('{"error":"not found"}'));
    await app.listen({ host: address.host, port: address.port });
    return app;
  }
}
