import { parseDigest, type Digest } from '../registry/digest.js';
import { isValidRepositoryName, type RepositoryName } from '../registry/names.js';
import type { RepositoryRef } from '../registry/services.js';
import type { Clock } from '../registry/clock.js';
import type { StorageDriver } from './driver.js';
import { LAYERS_DIR, MANIFESTS_DIR, REPOSITORIES_DIR, digestRecordDir, repositoryPath } from './layout.js';

/** Name components nest at most this deep (255 characters of `a/b/...`). */
const MAX_DEPTH = 128;

/**
 * Every cached repository, sorted by upstream and name: the one walk over
 * `repositories/` (never the blobs), shared by `_catalog`, eviction and
 * export. Not used at start-up.
 */
export async function findRepositories(driver: StorageDriver): Promise<RepositoryRef[]> {
  const found: RepositoryRef[] = [];
  const walk = async (upstream: string, name: string[]): Promise<void> => {
    const joined = name.join('/');
    const entries = await driver.list(repositoryPath({ upstream, name: joined }));
    if (name.length > 0 && isValidRepositoryName(joined) && entries.some((e) => e === MANIFESTS_DIR || e === LAYERS_DIR)) {
      found.push({ upstream, name: joined as RepositoryName });
    }
    if (name.length >= MAX_DEPTH) return;
    for (const entry of entries) if (!entry.startsWith('_')) await walk(upstream, [...name, entry]);
  };
  for (const upstream of await driver.list(REPOSITORIES_DIR)) await walk(upstream, []);
  return found.sort((a, b) => (a.upstream === b.upstream ? compare(a.name, b.name) : compare(a.upstream, b.upstream)));
}

/** The cached repositories as `<upstream>/<name>`, sorted: what `_catalog` lists. */
export async function listCachedRepositories(driver: StorageDriver): Promise<string[]> {
  return (await findRepositories(driver)).map((r) => `${r.upstream}/${r.name}`).sort();
}

export interface CachedCatalogOptions {
  readonly driver: StorageDriver;
  readonly clock: Clock;
  /** How long one walk answers every `_catalog` request. */
  readonly maxAgeMs: number;
}

/**
 * `_catalog` without a walk per request: anonymous clients may ask as often
 * as they like, and each walk reads the whole `repositories/` tree. One walk
 * answers for `maxAgeMs` (on the clock), and requests that arrive during a
 * walk share it; a repository cached meanwhile shows up at the next walk.
 */
export class CachedCatalog {
  private cached: { readonly at: number; readonly repositories: Promise<string[]> } | undefined;

  constructor(private readonly options: CachedCatalogOptions) {}

  list(): Promise<string[]> {
    const now = this.options.clock.now();
    const cached = this.cached;
    if (cached && now - cached.at < this.options.maxAgeMs) return cached.repositories;
    const repositories = listCachedRepositories(this.options.driver);
    this.cached = { at: now, repositories };
    // A failed walk is not remembered.
    repositories.catch(() => { if (this.cached?.repositories === repositories) this.cached = undefined; });
    return repositories;
  }
}

/** The digests named by a directory of `<algorithm>/<hex>` records (layer links, manifest revisions). */
export async function digestsIn(driver: StorageDriver, dir: string): Promise<Digest[]> {
  const found: Digest[] = [];
  for (const algorithm of await driver.list(dir)) {
    for (const hex of await driver.list(digestRecordDir(dir, algorithm))) {
      try {
        found.push(parseDigest(`${algorithm}:${hex}`).digest);
      } catch {
        // Not a record of ours.
      }
    }
  }
  return found;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
