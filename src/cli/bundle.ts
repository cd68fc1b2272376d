import { resolve } from 'node:path';
import { CachedBlobStatter } from '../cache/cachedStatter.js';
import { MemoryBlobDescriptorService } from '../cache/memory.js';
import { loadConfig, type ResolvedConfig } from '../config/load.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { parseManifest } from '../registry/imageManifest.js';
import { parseRepositoryName, parseTag, type Tag } from '../registry/names.js';
import type { RepositoryRef } from '../registry/services.js';
import { UpstreamRouter } from '../routing/router.js';
import type { ReferenceEntry } from '../warm/references.js';
import { LocalBlobStore, StorageBlobStatter } from '../storage/blobs.js';
import { BundleError, exportBundle, importBundle, type BundleStorage, type ExportImage } from '../airgap/bundle.js';
import { listCachedRepositories } from '../storage/catalog.js';
import { FilesystemDriver } from '../storage/filesystem.js';
import { manifestRevisionPath, repositoryPath } from '../storage/layout.js';
import { LocalManifestStore } from '../storage/manifests.js';
import { LocalTagStore } from '../storage/tags.js';
import { formatBytes } from './format.js';
import { UsageError, gatherReferences } from './warm.js';

/**
 * `pullthrough export` and `pullthrough import`: storage to bundle and back.
 * Neither builds upstream clients: they read and write local storage only,
 * so neither can ever contact an upstream.
 */

export interface ExportCommandOptions {
  readonly config?: string;
  readonly out: string;
  readonly lock?: string;
  readonly from: string[];
}

/** The local stores on the configured root, with no upstream behind them. */
function localStorage(config: ResolvedConfig): BundleStorage {
  const driver = new FilesystemDriver(config.storageRoot);
  const descriptors = new CachedBlobStatter(new MemoryBlobDescriptorService(config.cache.memoryEntries), new StorageBlobStatter(driver));
  return {
    driver,
    manifests: new LocalManifestStore(driver, { memoryEntries: config.cache.memoryEntries, memoryBytes: config.cache.manifestMemoryBytes }),
    tags: new LocalTagStore(driver),
    blobs: new LocalBlobStore(driver, descriptors),
  };
}

/** `pullthrough export --out bundle.tar [REF...] [--lock FILE]`: the named cached images, or all of them. */
export async function exportCommand(references: string[], options: ExportCommandOptions): Promise<number> {
  const config = loadConfig(options.config);
  const router = new UpstreamRouter(config.upstreams, config.defaultUpstream);
  const storage = localStorage(config);
  const entries = gatherReferences(references, [...(options.lock ? [options.lock] : []), ...options.from]);
  const images = entries.length > 0 ? await namedImages(storage, router, entries) : await allImages(storage);
  if (images.length === 0) throw new UsageError('nothing to export: the cache holds no images');
  const out = resolve(options.out);
  const report = await exportBundle(storage, images, out);
  for (const image of images) process.stdout.write(`${image.refName}  ${image.digest}\n`);
  process.stdout.write(`exported ${report.images} images (${report.manifests} manifests, ${report.blobs} blobs, `
    + `${formatBytes(report.bytes)}) to ${options.out}\n`);
  return 0;
}

/** The bundle name of an image: the full reference with its upstream, as the router reads it back. */
function refName(repository: RepositoryRef, tag: Tag | undefined, digest: Digest): string {
  return `${repository.upstream}/${repository.name}${tag ? `:${tag}` : `@${digest}`}`;
}

/** Each entry must be cached: a lock's digest, the reference's digest, or the tag as recorded. */
async function namedImages(storage: BundleStorage, router: UpstreamRouter, entries: readonly ReferenceEntry[]): Promise<ExportImage[]> {
  const images = new Map<string, ExportImage>();
  const missing: string[] = [];
  for (const entry of entries) {
    const ref = router.parseReference(entry.reference);
    const repository = ref.route.repository;
    const tag = ref.tag ?? (ref.digest || entry.lockedDigest ? undefined : parseTag('latest'));
    const record = tag ? await storage.tags.get(repository, tag) : undefined;
    const digest = entry.lockedDigest ?? ref.digest ?? record?.descriptor.digest;
    if (!digest || !(await storage.manifests.stat(repository, digest))) {
      missing.push(`${entry.reference} (${entry.source})`);
      continue;
    }
    const name = refName(repository, tag, digest);
    const tagFetchedAt = record?.descriptor.digest === digest ? record.fetchedAt : undefined;
    if (!images.has(name)) images.set(name, { refName: name, repository, digest, tagFetchedAt });
  }
  if (missing.length > 0) throw new BundleError(`not cached (warm them first):\n  ${missing.join('\n  ')}`);
  return [...images.values()];
}

/** Every cached image: each recorded tag, and each top-level manifest no tag points to. */
async function allImages(storage: BundleStorage): Promise<ExportImage[]> {
  const images: ExportImage[] = [];
  for (const path of await listCachedRepositories(storage.driver)) {
    const slash = path.indexOf('/');
    const repository: RepositoryRef = { upstream: path.slice(0, slash), name: parseRepositoryName(path.slice(slash + 1)) };
    const tagged = new Set<Digest>();
    for (const tagName of await storage.tags.list(repository)) {
      const tag = parseTag(tagName);
      const record = await storage.tags.get(repository, tag);
      if (!record || !(await storage.manifests.stat(repository, record.descriptor.digest))) continue;
      tagged.add(record.descriptor.digest);
      images.push({ refName: refName(repository, tag, record.descriptor.digest), repository, digest: record.descriptor.digest, tagFetchedAt: record.fetchedAt });
    }
    for (const digest of await untaggedTopLevel(storage, repository, tagged)) {
      images.push({ refName: refName(repository, undefined, digest), repository, digest, tagFetchedAt: undefined });
    }
  }
  return images;
}

/** Revisions that are neither tagged nor a child of another revision of the repository. */
async function untaggedTopLevel(storage: BundleStorage, repository: RepositoryRef, tagged: ReadonlySet<Digest>): Promise<Digest[]> {
  const revisions: Digest[] = [];
  const dir = `${repositoryPath(repository)}/_manifests/revisions`;
  for (const algorithm of await storage.driver.list(dir)) {
    for (const hex of await storage.driver.list(`${dir}/${algorithm}`)) {
      try {
        const parsed = parseDigest(`${algorithm}:${hex}`);
        if (await storage.driver.stat(manifestRevisionPath(repository, parsed.digest))) revisions.push(parsed.digest);
      } catch {
        // Not a revision record.
      }
    }
  }
  const children = new Set<Digest>();
  for (const digest of revisions) {
    const { manifest } = await storage.manifests.get(repository, digest).catch(() => ({ manifest: undefined }));
    if (!manifest) continue;
    try {
      const parsed = parseManifest(manifest.body, manifest.mediaType);
      if (parsed.kind === 'index') parsed.children.forEach((c) => children.add(c.digest));
    } catch {
      // Unreadable manifests are reported by the export itself.
    }
  }
  return revisions.filter((d) => !children.has(d) && !tagged.has(d)).sort();
}

/** `pullthrough import bundle.tar`: all of it, verified, or nothing. */
export async function importCommand(bundle: string, options: { config?: string }): Promise<number> {
  const config = loadConfig(options.config);
  const router = new UpstreamRouter(config.upstreams, config.defaultUpstream);
  const storage = localStorage(config);
  await storage.driver.init();
  const route = (name: string): { repository: RepositoryRef; tag: Tag | undefined; digest: Digest | undefined } => {
    const ref = router.parseReference(name);
    return { repository: ref.route.repository, tag: ref.tag, digest: ref.digest };
  };
  let report;
  try {
    report = await importBundle(storage, bundle, route);
  } catch (err) {
    if (!(err instanceof BundleError)) throw err;
    process.stderr.write(`pullthrough import: ${bundle} refused: ${err.message}\n`);
    return 1;
  }
  for (const image of report.images) {
    const note = image.tag && !image.tagRecorded ? '  (tag kept: the storage knows a newer one)' : '';
    process.stdout.write(`${image.refName}  ${image.digest}${note}\n`);
  }
  if (report.unnamed > 0) process.stdout.write(`skipped ${report.unnamed} images without a ref name\n`);
  process.stdout.write(`imported ${report.images.length} images (${report.manifests} manifests, ${report.blobs} blobs, `
    + `${formatBytes(report.bytes)}; ${formatBytes(report.newBytes)} new) into ${config.storageRoot}\n`);
  return 0;
}
