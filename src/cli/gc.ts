import { loadConfig } from '../config/load.js';
import { createLogger } from '../config/logger.js';
import { Mirror } from '../mirror.js';
import { showStackTraces } from './errors.js';

/** `pullthrough gc`: one eviction run against the configured storage, safe beside a running server. */
export async function gc(options: { config?: string; dryRun?: boolean }): Promise<void> {
  const config = loadConfig(options.config);
  showStackTraces(config.logLevel);
  const logger = createLogger('warn');
  const mirror = await Mirror.create({ config, logger });
  const report = await mirror.evictor.collect(options.dryRun === true);
  const verb = report.dryRun ? 'would remove' : 'removed';
  for (const image of report.removedImages) process.stdout.write(`${verb} ${image}\n`);
  process.stdout.write(`${verb} ${report.removedImages.length} images and ${report.removedBlobs} blobs, `
    + `freeing ${report.freedBytes} of ${report.totalBytes} bytes\n`);
  await mirror.close(0);
}
