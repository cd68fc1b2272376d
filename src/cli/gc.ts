/** What `pullthrough gc` prints: the images it removes by name, sizes in human units, and what it kept and why. */
import { loadConfig } from '../config/load.js';
import { createLogger } from '../config/logger.js';
import { Mirror } from '../mirror.js';
import type { EvictionReport, ImageSummary, KeptContent } from '../storage/eviction.js';
import { showStackTraces } from './stackTraces.js';
import { formatBytes, formatDuration } from './format.js';

/** Lines of kept content printed at most; the rest is counted. */
const MAX_KEPT_LINES = 20;

/** `docker.io/library/alpine:3.20,latest` by its tags, or `docker.io/library/alpine@sha256:…` when it has none. */
export function imageName(image: ImageSummary): string {
  const repository = `${image.repository.upstream}/${image.repository.name}`;
  return image.tags.length > 0 ? `${repository}:${image.tags.join(',')}` : `${repository}@${image.digest}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function why(kept: KeptContent, graceMs: number, now: number): string {
  if (kept.reason !== 'within the grace') return kept.reason;
  const usedAt = kept.image && !kept.blob ? kept.image.lastUsed : undefined;
  const ago = usedAt === undefined ? 'written' : `used ${formatDuration(Math.max(0, now - usedAt))} ago`;
  return `within the grace (${ago}; evictionGrace ${formatDuration(graceMs)})`;
}

function keptLine(kept: KeptContent, graceMs: number, now: number): string {
  const what = kept.blob
    ? `blob ${kept.blob}${kept.image ? ` of ${imageName(kept.image)}` : ''}`
    : imageName(kept.image!);
  return `  ${what} (${formatBytes(kept.bytes)}): ${why(kept, graceMs, now)}\n`;
}

/**
 * The report as text, one removed image a line, then the totals, then, when
 * the run could not get down to the low watermark, what stayed and why.
 */
export function formatGcReport(report: EvictionReport, options: { graceMs: number; now: number }): string {
  const verb = report.dryRun ? 'would remove' : 'removed';
  let text = '';
  for (const image of report.removedImages) text += `${verb} ${imageName(image)} (${formatBytes(image.bytes)})\n`;
  const target = report.targetBytes === undefined ? '' : `; the size cap brings it down to ${formatBytes(report.targetBytes)}`;
  text += `${verb} ${plural(report.removedImages.length, 'image')} and ${plural(report.removedBlobs, 'blob')}, `
    + `freeing ${formatBytes(report.freedBytes)} of ${formatBytes(report.totalBytes)}${target}\n`;
  if (report.lastUseUnknown) text += 'the last-use times could not be read (Redis away or too slow): no image was removed, only unreferenced blobs\n';
  if (report.kept.length === 0) return text;
  const keptBytes = report.kept.reduce((n, k) => n + k.bytes, 0);
  text += `kept above the low watermark (${formatBytes(keptBytes)}):\n`;
  for (const kept of report.kept.slice(0, MAX_KEPT_LINES)) text += keptLine(kept, options.graceMs, options.now);
  if (report.kept.length > MAX_KEPT_LINES) text += `  … and ${report.kept.length - MAX_KEPT_LINES} more\n`;
  return text;
}

/** `pullthrough gc`: one eviction run against the configured storage, safe beside a running server. */
export async function gc(options: { config?: string; dryRun?: boolean }): Promise<void> {
  const config = loadConfig(options.config);
  showStackTraces(config.logLevel);
  const logger = createLogger('warn');
  const mirror = await Mirror.create({ config, logger });
  const report = await mirror.evictor.collect(options.dryRun === true);
  process.stdout.write(formatGcReport(report, { graceMs: config.storage.evictionGraceMs, now: mirror.clock.now() }));
  if (!options.dryRun) {
    // Beside a running server: only uploads nobody has written for a while (S3: begun abandonedUploadAge ago).
    const swept = await mirror.sweepUploads(true);
    if (swept > 0) process.stdout.write(`removed ${plural(swept, 'upload')} of interrupted fills\n`);
  }
  await mirror.close(0);
}
