#!/usr/bin/env node
import { Command } from 'commander';
import { ConfigError, loadConfig } from './config/load.js';
import { createLogger } from './config/logger.js';
import { buildApp } from './http/app.js';
import { Mirror } from './mirror.js';
import { exportCommand, importCommand, type ExportCommandOptions } from './cli/bundle.js';
import { isReportedError, reportedExitCode } from './cli/errors.js';
import { collect, warm, type WarmCommandOptions } from './cli/warm.js';

/** `pullthrough serve`: load the configuration, prepare storage, listen; stop gracefully on SIGTERM/SIGINT. */
async function serve(options: { config?: string }): Promise<void> {
  const config = loadConfig(options.config);
  const logger = createLogger(config.logLevel);
  const mirror = await Mirror.create({ config, logger });
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
  const mirror = await Mirror.create({ config, logger });
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

program.command('warm')
  .description('fetch images into the cache ahead of the pulls that need them')
  .argument('[references...]', 'image references: alpine:3.20, ghcr.io/org/app:1.2, registry.k8s.io/pause@sha256:...')
  .option('-c, --config <file>', 'configuration file')
  .option('-f, --from <file>', 'a list (one reference a line), a lock file, a docker-compose file or Kubernetes manifests; repeatable', collect, [])
  .option('-p, --platform <list>', 'only these platforms of a multi-platform image, e.g. linux/amd64,linux/arm64')
  .option('-j, --jobs <n>', 'images and blobs fetched in parallel', '4')
  .option('--retries <n>', 'retries of an upstream failure, with back-off (Retry-After respected)', '4')
  .option('--pin', 'protect what was warmed from eviction (recorded in <storage root>/pins.json)')
  .option('--lock <file>', 'write "<reference> <digest>" for every image; read it back with --from')
  .option('-e, --env <name[=value]>', 'a variable compose files may use (${NAME}); its value from the environment unless given; repeatable', collect, [])
  .option('--env-file <file>', 'variables compose files may use, NAME=value a line; repeatable (nothing else of the environment is read)', collect, [])
  .action(async (references: string[], options: WarmCommandOptions) => { process.exitCode = await warm(references, options); });

program.command('export')
  .description('write cached images as one OCI image layout tar')
  .argument('[references...]', 'images to export (default: every cached image)')
  .requiredOption('-o, --out <file>', 'the bundle to write, e.g. bundle.tar')
  .option('-c, --config <file>', 'configuration file')
  .option('--lock <file>', 'export exactly the images of this lock file (written by warm --lock)')
  .option('-f, --from <file>', 'references from a list, compose file or Kubernetes manifests; repeatable', collect, [])
  .option('-e, --env <name[=value]>', 'a variable compose files may use; repeatable', collect, [])
  .option('--env-file <file>', 'variables compose files may use, NAME=value a line; repeatable', collect, [])
  .action(async (references: string[], options: ExportCommandOptions) => { process.exitCode = await exportCommand(references, options); });

program.command('import')
  .description('load a bundle written by export (any OCI image layout tar with full ref names) into the cache')
  .argument('<bundle>', 'the bundle, e.g. bundle.tar')
  .option('-c, --config <file>', 'configuration file')
  .action(async (bundle: string, options: { config?: string }) => { process.exitCode = await importCommand(bundle, options); });

program.parseAsync(process.argv).catch((err: unknown) => {
  if (isReportedError(err)) {
    process.stderr.write(`pullthrough: ${err.message}\n`);
    process.exit(reportedExitCode(err));
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`pullthrough: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`pullthrough: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
