import { MultiBar, type SingleBar } from 'cli-progress';
import type { WarmReporter, WarmResult } from '../warm/warm.js';
import { formatBytes, formatDuration } from './format.js';

/** A reporter that also has something to tidy up at the end. */
export interface ClosableReporter extends WarmReporter {
  stop(): void;
}

/** One line per image as it finishes: `ok  <reference>  <digest>  ...`. */
export function imageLine(result: WarmResult): string {
  if (result.status === 'failed') return `failed  ${result.reference}: ${result.error ?? 'unknown error'}`;
  const fetched = result.status === 'cached' ? 'all cached' : `fetched ${formatBytes(result.fetchedBytes)}`;
  const platforms = result.platforms.length > 0 ? result.platforms.join(',') : '-';
  return `ok      ${result.reference}  ${result.digest}  ${platforms}  ${formatBytes(result.bytes)} (${fetched})  ${formatDuration(result.durationMs)}`;
}

/** For CI logs and pipes: no bars, one line per image, and one per retry (rare, and worth seeing). */
export class LineReporter implements ClosableReporter {
  constructor(private readonly out: NodeJS.WritableStream) {}

  retrying(reference: string, attempt: number, delayMs: number, reason: string): void {
    this.out.write(`retry   ${reference}: ${reason} (attempt ${attempt + 1} in ${formatDuration(delayMs)})\n`);
  }

  finished(result: WarmResult): void {
    this.out.write(`${imageLine(result)}\n`);
  }

  stop(): void {
    // Nothing buffered.
  }
}

interface LiveImage {
  readonly bar: SingleBar;
  readonly startedAt: number;
  done: number;
  total: number | undefined;
}

const NAME_WIDTH = 40;

/**
 * On a terminal: a bar per image in flight (bytes, speed, ETA) under a bar
 * for the whole run; a finished image leaves its bar and becomes a line
 * above them.
 */
export class BarReporter implements ClosableReporter {
  private readonly bars: MultiBar;
  private readonly overall: SingleBar;
  private readonly images = new Map<string, LiveImage>();
  private readonly startedAt = Date.now();
  private done = 0;
  private total = 0;

  constructor(stream: NodeJS.WritableStream) {
    this.bars = new MultiBar({
      stream,
      format: '{name} |{bar}| {percentage}% {progress} {speed} ETA {remaining}',
      barsize: 24,
      hideCursor: true,
      clearOnComplete: false,
      autopadding: true,
      fps: 8,
    });
    this.overall = this.bars.create(1, 0, this.payload('all images', 0, undefined, this.startedAt));
  }

  started(reference: string): void {
    const startedAt = Date.now();
    const bar = this.bars.create(1, 0, this.payload(reference, 0, undefined, startedAt));
    this.images.set(reference, { bar, startedAt, done: 0, total: undefined });
  }

  sized(reference: string, total: number): void {
    const image = this.images.get(reference);
    if (!image) return;
    image.total = total;
    image.bar.setTotal(Math.max(1, total));
    this.total += total;
    this.overall.setTotal(Math.max(1, this.total));
    this.render(reference, image);
  }

  progressed(reference: string, bytes: number): void {
    const image = this.images.get(reference);
    if (!image) return;
    image.done += bytes;
    this.done += bytes;
    this.render(reference, image);
  }

  retrying(reference: string, attempt: number, delayMs: number, reason: string): void {
    this.bars.log(`retry   ${reference}: ${reason} (attempt ${attempt + 1} in ${formatDuration(delayMs)})\n`);
  }

  finished(result: WarmResult): void {
    const image = this.images.get(result.reference);
    if (image) {
      this.bars.remove(image.bar);
      this.images.delete(result.reference);
    }
    this.bars.log(`${imageLine(result)}\n`);
  }

  stop(): void {
    // Logged lines wait for the next redraw: draw once more so the last finished image is not lost.
    if (this.bars.isActive) this.bars.update();
    this.bars.stop();
  }

  private render(reference: string, image: LiveImage): void {
    image.bar.update(image.done, this.payload(reference, image.done, image.total, image.startedAt));
    this.overall.update(this.done, this.payload('all images', this.done, this.total, this.startedAt));
  }

  private payload(name: string, done: number, total: number | undefined, since: number): Record<string, string> {
    const seconds = Math.max(0.001, (Date.now() - since) / 1000);
    const speed = done / seconds;
    const shown = name.length > NAME_WIDTH ? `…${name.slice(-(NAME_WIDTH - 1))}` : name.padEnd(NAME_WIDTH);
    // The average since the image started: steadier than cli-progress's window when blobs arrive in bursts.
    const eta = total === undefined || speed <= 0 ? '?' : formatDuration((Math.max(0, total - done) / speed) * 1000);
    return {
      name: shown,
      progress: `${formatBytes(done)}/${total === undefined ? '?' : formatBytes(total)}`,
      speed: `${formatBytes(speed)}/s`,
      remaining: eta,
    };
  }
}
