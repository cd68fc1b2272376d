import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import type { WatchedFiles } from '../http/watchedFiles.js';
import { ConfigError } from './settings.js';

export interface WatchOptions {
  readonly logger: Logger;
  /** Changes within this long are read as one (a certificate and its key replaced one after the other). */
  readonly settleMs?: number;
}

/**
 * Reads `paths` now (a file that cannot be read is a configuration error)
 * and again whenever something changes in their directories. The
 * directories are watched, not the files: renewals replace a file by
 * renaming a new one over it, and Kubernetes swaps a symlinked directory,
 * and a watch on the old inode would see neither. Listeners hear only of
 * contents that differ from the last read; a file that cannot be read at
 * that moment (half-way through a replacement) keeps its last contents.
 */
export async function watchFiles(paths: readonly string[], options: WatchOptions): Promise<WatchedFiles> {
  const contents = await Promise.all(paths.map(async (path) => {
    try {
      return await readFile(path);
    } catch (err) {
      throw new ConfigError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }));
  const listeners: ((contents: readonly Buffer[]) => void)[] = [];
  const settleMs = options.settleMs ?? 100;
  let timer: NodeJS.Timeout | undefined;
  let reading = Promise.resolve();

  const reread = async (): Promise<void> => {
    const fresh = await Promise.all(paths.map((path, i) => readFile(path).catch(() => contents[i]!)));
    if (fresh.every((bytes, i) => bytes.equals(contents[i]!))) return;
    fresh.forEach((bytes, i) => { contents[i] = bytes; });
    for (const listener of listeners) {
      try {
        listener([...contents]);
      } catch (err) {
        options.logger.error({ err, files: paths }, 'a reload of changed files failed');
      }
    }
  };
  const changed = (): void => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => { reading = reading.then(reread); }, settleMs);
    timer.unref();
  };

  const watchers: FSWatcher[] = [];
  for (const dir of new Set(paths.map((p) => dirname(p)))) {
    const names = new Set(paths.filter((p) => dirname(p) === dir).map((p) => basename(p)));
    const watcher = watch(dir, { persistent: false }, (_event, name) => {
      // A symlink swap (`..data` in Kubernetes) names another entry: any change may be ours.
      if (name === null || names.has(name.toString()) || name.toString().startsWith('..')) changed();
    });
    watcher.on('error', (err) => options.logger.warn({ err, dir }, 'cannot watch a directory for changed files'));
    watchers.push(watcher);
  }

  return {
    paths,
    current: () => [...contents],
    onChange: (listener) => { listeners.push(listener); },
    close: () => {
      if (timer) clearTimeout(timer);
      for (const watcher of watchers) watcher.close();
    },
  };
}
