import type { StorageDriver } from './driver.js';
import { REPOSITORIES_DIR } from './layout.js';

/** Directories that mark a repository; anything else below `repositories/` is a name component. */
const REPOSITORY_MARKERS = new Set(['_manifests', '_layers']);
/** Name components nest at most this deep (255 characters of `a/b/...`). */
const MAX_DEPTH = 128;

/**
 * The cached repositories, as `<upstream>/<name>`, sorted. Walks only the
 * `repositories/` records, never the blobs; used by `_catalog`, not at start-up.
 */
export async function listCachedRepositories(driver: StorageDriver): Promise<string[]> {
  const found: string[] = [];
  for (const upstream of await driver.list(REPOSITORIES_DIR)) {
    await walk(driver, `${REPOSITORIES_DIR}/${upstream}`, upstream, found, 0);
  }
  return found.sort();
}

async function walk(driver: StorageDriver, path: string, name: string, found: string[], depth: number): Promise<void> {
  if (depth > MAX_DEPTH) return;
  const entries = await driver.list(path);
  if (entries.some((e) => REPOSITORY_MARKERS.has(e))) found.push(name);
  for (const entry of entries) {
    if (REPOSITORY_MARKERS.has(entry) || entry.startsWith('_')) continue;
    await walk(driver, `${path}/${entry}`, `${name}/${entry}`, found, depth + 1);
  }
}
