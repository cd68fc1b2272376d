import { keyOverride, loadConfig } from '../config/load.js';
import { createLogger } from '../config/logger.js';
import type { ConfigOverride } from '../config/overrides.js';
import { PACKAGE_VERSION } from '../config/version.js';
import { buildApp } from '../http/app.js';
import { Mirror } from '../mirror.js';
import { showStackTraces } from './errors.js';
import { listening, preparingStorage } from './startup.js';
import { startupSummary } from './summary.js';
import { listenerSecurity, tlsListener } from './listenerSecurity.js';

export interface ServeOptions {
  readonly config?: string;
  /** Shorthand for `listen.port`. */
  readonly port?: string;
  /** Shorthand for `storage.root`. */
  readonly root?: string;
}

/** The flags of `serve` as overrides: they win over the file and the environment. */
function serveFlags(options: ServeOptions): ConfigOverride[] {
  return [
    ...(options.port !== undefined ? [keyOverride('--port', ['listen', 'port'], options.port)] : []),
    ...(options.root !== undefined ? [keyOverride('--root', ['storage', 'root'], options.root)] : []),
  ];
}

/** `pullthrough serve`: load the configuration, prepare storage, listen; stop gracefully on SIGTERM/SIGINT. */
export async function serve(options: ServeOptions): Promise<void> {
  const config = loadConfig(options.config, process.env, serveFlags(options));
  showStackTraces(config.logLevel);
  const logger = createLogger(config.logLevel);
  const mirror = await Mirror.create({ config, logger, version: PACKAGE_VERSION });
  await preparingStorage(config.storageRoot, () => mirror.start());
  // The operator's endpoints: on their own listener with `admin.listen`, else beside the registry API.
  const security = await listenerSecurity(config, logger);
  const app = buildApp({ mirror, logger, plugins: mirror.plugins(), tls: security.tls, access: security.access });
  const { host, port } = config.listen;
  await listening({ key: 'listen', host, port, portFlag: '--port' }, () => app.listen({ host, port }));
  const adminListen = config.admin?.listen;
  const adminTls = config.admin?.tls && await tlsListener(config.admin.tls, logger);
  const admin = adminListen && await listening({ key: 'admin.listen', host: adminListen.host, port: adminListen.port },
    () => mirror.admin.listen(adminListen, logger, adminTls));
  const bound = app.server.address();
  const listen = bound !== null && typeof bound === 'object' ? `${bound.address}:${bound.port}` : `${host}:${port}`;
  const adminAt = adminListen ? `${adminListen.host}:${adminListen.port}` : 'registry listener';
  logger.info(startupSummary(config, PACKAGE_VERSION, listen, adminAt), 'pullthrough is serving');

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, graceMs: config.shutdownGraceMs }, 'shutting down: finishing running responses and fills');
    const deadline = setTimeout(() => {
      logger.warn('grace period over: closing remaining connections');
      app.server.closeAllConnections();
    }, config.shutdownGraceMs);
    deadline.unref();
    security.close();
    adminTls?.close();
    Promise.all([app.close(), admin?.close(), mirror.close(config.shutdownGraceMs)])
      .then(() => process.exit(0), (err: unknown) => {
        logger.error({ err }, 'error while shutting down');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
