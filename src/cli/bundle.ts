import { createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { BundleError, type BundleStorage } from '../airgap/bundle.js';
import { exportBundle, planExport, type ExportImage, type ExportPlan, type ExportReport } from '../airgap/export.js';
import { importBundle, type ImportReport, type ImportRoute } from '../airgap/import.js';
import { loadConfig, type ResolvedConfig } from '../config/load.js';
import { createLogger } from '../config/logger.js';
import { Mirror } from '../mirror.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { parseManifest } from '../registry/imageManifest.js';
import { parseRepositoryName, parseTag, type Tag } from '../registry/names.js';
import type { RepositoryRef } from '../registry/services.js';
import type { UpstreamRouter } from '../routing/router.js';
import type { ReferenceEntry } from '../warm/references.js';
import { listCachedRepositories } from '../storage/catalog.js';
import { digestRecordDir, manifestRevisionPath, revisionsDir } from '../storage/layout.js';
import { formatBytes } from './format.js';
import { UsageError, gatherReferences, variablesFrom, type VariableOptions } from './warm.js';

/**
 * `pullthrough export` and `pullthrough import`: storage to bundle and back.
 * They use a `Mirror`'s local stores, built as the server builds them (so an
 * import's one commit reaches every cache tier and the evictor), and never
 * its upstream clients: neither command can contact an upstream. Neither
 * starts the mirror either: no sweep of `_uploads`, which a server running
 * on the same root may be filling.
 */

export interface ExportCommandOptions extends VariableOptions {
  readonly config?: string;
  readonly out: string;
  readonly lock?: string;
  readonly from: string[];
  /** Also the cached referrers of every exported image. */
  readonly referrers?: boolean;
}

/**
 * The mirror of the configured root, built but not started (nothing is
 * swept, no timer runs), handed to `use` with its local stores, and closed
 * after.
 */
async function withMirror<T>(config: ResolvedConfig, use: (mirror: Mirror, storage: BundleStorage) => Promise<T>): Promise<T> {
  // Logs go to stderr: stdout is the command's report.
  const mirror = await Mirror.create({ config, logger: createLogger('warn', pino.destination(2)) });
  try {
    return await use(mirror, {
      driver: mirror.driver, manifests: mirror.localManifests, tags: mirror.localTags, blobs: mirror.localBlobs, referrers: mirror.localReferrers,
    });
  } finally {
    await mirror.close(0);
  }
}

/** `pullthrough export --out bundle.tar [REF...] [--lock FILE]`: the named cached images, or all of them. */
export async function exportCommand(references: string[], options: ExportCommandOptions): Promise<number> {
  const config = loadConfig(options.config);
  const entries = gatherReferences(references, [...(options.lock ? [options.lock] : []), ...options.from], variablesFrom(options));
  return withMirror(config, async (mirror, storage) => {
    const images = entries.length > 0 ? await namedImages(storage, mirror.router, entries) : await allImages(storage);
    if (images.length === 0) throw new UsageError('nothing to export: the cache holds no images');
    const plan = await planExport(storage, images, options.referrers ? { referrers: { refName } } : {});
    const report = await writeBundleFile(storage, plan, resolve(options.out));
    for (const image of plan.top.keys()) process.stdout.write(`${image.refName}  ${image.digest}\n`);
    const referrers = options.referrers ? ` and ${report.referrers} referrers` : '';
    process.stdout.write(`exported ${report.images} images${referrers} (${report.manifests} manifests, ${report.blobs} blobs, `
      + `${formatBytes(report.bytes)}) to ${options.out}\n`);
    return 0;
  });
}

/**
 * Writes the bundle to a temp file next to `out`, makes it durable, and
 * only then renames it over `out`: `out` is never a partial bundle, and a
 * failed export leaves nothing behind.
 */
async function writeBundleFile(storage: BundleStorage, plan: ExportPlan, out: string): Promise<ExportReport> {
  const temp = join(dirname(out), `.${basename(out)}.${randomUUID()}.partial`);
  try {
    // `flush`: fsynced before it closes, and exportBundle resolves only once it closed.
    const report = await exportBundle(storage, plan, createWriteStream(temp, { flags: 'wx', mode: 0o644, flush: true }));
    await rename(temp, out);
    return report;
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

/** The bundle name of an image: the full reference with its upstream, as the router reads it back. */
function refName(repository: RepositoryRef, tag: Tag | undefined, digest: Digest): string {
  return `${repository.upstream}/${repository.name}${tag ? `:${tag}` : `@${digest}`}`;
}

/** Each entry must be cached: a lock's digest, the reference's digest, or the tag as recorded. */
async function namedImages(storage: BundleStorage, router: UpstreamRouter, entries: readonly ReferenceEntry[]): Promise<ExportImage[]> {
  const images = new Map<string, ExportImage & { shortNames: readonly string[] }>();
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
    const image = images.get(name) ?? { refName: name, repository, digest, tagFetchedAt, shortNames: [] };
    // The name as typed (a lock file's `alpine:3.19`) finds the image in the bundle too.
    const typed = entry.reference.trim();
    images.set(name, typed === name || image.shortNames.includes(typed) ? image : { ...image, shortNames: [...image.shortNames, typed] });
  }
  if (missing.length > 0) throw new BundleError(`not cached (warm them first):\n  ${missing.join('\n  ')}`);
  const fullNames = new Set(images.keys());
  return [...images.values()].map((image) => ({ ...image, shortNames: image.shortNames.filter((s) => !fullNames.has(s)) }));
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
  const dir = revisionsDir(repository);
  for (const algorithm of await storage.driver.list(dir)) {
    for (const hex of await storage.driver.list(digestRecordDir(dir, algorithm))) {
      let digest: Digest;
      try {
        digest = parseDigest(`${algorithm}:${hex}`).digest;
      } catch {
        continue; // Not a revision record.
      }
      if (await storage.driver.stat(manifestRevisionPath(repository, digest))) revisions.push(digest);
    }
  }
  const children = new Set<Digest>();
  for (const digest of revisions) {
    const manifest = (await storage.manifests.find(repository, digest))?.manifest;
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
  let file;
  try {
    file = await open(bundle, 'r');
  } catch (err) {
    process.stderr.write(`pullthrough import: cannot read ${bundle}: ${(err as Error).message}\n`);
    return 1;
  }
  const input = file.createReadStream();
  try {
    return await withMirror(config, async (mirror, storage) => {
      await mirror.driver.init();
      const route = (name: string): ImportRoute => {
        const ref = mirror.router.parseReference(name);
        return { repository: ref.route.repository, tag: ref.tag, digest: ref.digest };
      };
      let report: ImportReport;
      try {
        report = await importBundle(storage, input, { route, now: mirror.clock.now() });
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
      if (report.referrers > 0) process.stdout.write(`recorded ${report.referrers} referrers (signatures, SBOMs, attestations)\n`);
      process.stdout.write(`imported ${report.images.length} images (${report.manifests} manifests, ${report.blobs} blobs, `
        + `${formatBytes(report.bytes)}; ${formatBytes(report.newBytes)} new) into ${config.storageRoot}\n`);
      return 0;
    });
  } finally {
    input.destroy();
  }
}
