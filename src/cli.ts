#!/usr/bin/env node
import { Command } from 'commander';
import { ConfigError, loadConfig } from './config/load.js';
import { createLogger } from './config/logger.js';
import { buildApp } from './http/app.js';
import { Mirror } from './proxy/mirror.js';

/** `pullthrough serve`: load the configuration, prepare storage, listen; stop gracefully on SIGTERM/SIGINT. */
async function serve(options: { config?: string }): Promise<void> {
  const config = loadConfig(options.config);
  const logger = createLogger(config.logLevel);
  const mirror = new Mirror({ config, logger });
  await mirror.start();
  const app = buildApp({ mirror, logger });
  await app.listen({ host: config.listen.host, port: config.listen.port });
  logger.info({ upstreams: config.upstreams.map((u) => u.name), storage: config.storageRoot }, 'pullthrough is serving');

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
    Promise.all([app.close(), mirror.close(config.shutdownGraceMs)])
      .then(() => process.exit(0), (err: unknown) => {
        logger.error({ err }, 'error while shutting down');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/** `pullthrough gc`: one eviction run against the configured storage, safe beside a running server. */
async function gc(options: { config?: string; dryRun?: boolean }): Promise<void> {
  const config = loadConfig(options.config);
  const logger = createLogger('warn');
  const mirror = new Mirror({ config, logger });
  const report = await mirror.evictor.collect(options.dryRun === true);
  const verb = report.dryRun ? 'would remove' : 'removed';
  for (const image of report.removedImages) process.stdout.write(`${verb} ${image}\n`);
  process.stdout.write(`${verb} ${report.removedImages.length} images and ${report.removedBlobs} blobs, `
    + `freeing ${report.freedBytes} of ${report.totalBytes} bytes\n`);
  await mirror.close(0);
}

const program = new Command()
  .name('pullthrough')
  .description('A pull-through caching proxy for OCI/Docker registries');

program.command('serve', { isDefault: true })
  .description('serve the registry mirror')
  .option('-c, --config <file>', 'configuration file (default: $PULLTHROUGH_CONFIG, else the embedded proxy.config.json)')
  .action(serve);

program.command('gc')
  .description('remove what the eviction policy says must go (maxSize, maxIdle) and every blob no cached image references')
  .option('-c, --config <file>', 'configuration file')
  .option('-n, --dry-run', 'report what would be removed and the bytes it frees, remove nothing')
  .action(gc);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`pullthrough: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`pullthrough: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
