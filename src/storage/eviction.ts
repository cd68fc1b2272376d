import { parseDigest, type Digest } from '../registry/digest.js';
import type { RepositoryRef } from '../registry/services.js';
import { decodeTagRecord } from '../registry/tagRecord.js';
import { referencedDigests } from '../registry/imageManifest.js';
import type { StorageDriver } from './driver.js';
import { BLOBS_DIR, UPLOADS_DIR, uploadsEntryPath, blobAlgorithmDir, blobDataPath, blobDir, blobPrefixDir, layerLinkPath, layersDir, manifestRevisionPath, revisionsDir, tagPath, tagsPath, walkedBlobDataPath } from './layout.js';
import { digestsIn, findRepositories } from './catalog.js';

/** What decides which cached content may go. */
export interface EvictionPolicy {
  /** Keep the bytes of all blobs at most this; undefined: no size cap. */
  readonly maxBytes: number | undefined;
  /** Evict when use passes maxBytes × high, down to maxBytes × low. */
  readonly highWatermark: number;
  readonly lowWatermark: number;
  /** Remove images not used for this long, whatever the size; undefined: never. */
  readonly maxIdleMs: number | undefined;
  /** Content used more recently than this is never removed (a pull may be in progress). */
  readonly graceMs: number;
  /** Images (and so their blobs) that never go. */
  readonly isPinned: (repository: RepositoryRef, tags: readonly string[], digest: Digest) => boolean;
  /** Blobs being read or filled in this process. */
  readonly inUse: (digest: Digest) => boolean;
  /** Called before each run: loads what `isPinned` reads (the pins file). */
  readonly prepare?: () => Promise<void>;
}

/** An image as eviction sees it: a top-level manifest, its children, its tags, its blobs. */
interface Unit {
  readonly repository: RepositoryRef;
  readonly digest: Digest;
  readonly manifests: Digest[];
  readonly tags: string[];
  readonly blobs: Set<Digest>;
  lastUsed: number;
}

interface RepositoryScan {
  readonly repository: RepositoryRef;
  readonly layers: Digest[];
}

export interface EvictionReport {
  /** Bytes of all blobs before the run, and of the uploads in `_uploads` (fills in progress count against the budget too). */
  readonly totalBytes: number;
  /** Of `totalBytes`, the uploads': they cannot be evicted, so images go to make room for them. */
  readonly uploadBytes: number;
  readonly freedBytes: number;
  /** `<upstream>/<name>@<digest>` of every image removed. */
  readonly removedImages: string[];
  readonly removedBlobs: number;
  readonly dryRun: boolean;
}

/** Called for everything removed, so caches forget it. */
export interface EvictionHooks {
  readonly blobRemoved?: (digest: Digest, repositories: readonly RepositoryRef[]) => Promise<void> | void;
  readonly manifestRemoved?: (repository: RepositoryRef, digest: Digest) => Promise<void> | void;
}

/**
 * Mark and sweep over the cache: images (a top-level manifest with its
 * children and tags) go least recently used first, then every blob that no
 * retained image references. Runs in the background or from `pullthrough
 * gc`; safe beside a running server, because nothing used within `graceMs`
 * is touched, and every removal is of a whole file.
 */
export async function collectGarbage(
  driver: StorageDriver, policy: EvictionPolicy, options: { dryRun: boolean; now: number; hooks?: EvictionHooks },
): Promise<EvictionReport> {
  const now = options.now;
  const blobs = await scanBlobs(driver);
  const uploadBytes = await scanUploads(driver);
  const repositories = await scanRepositories(driver);
  const units = (await Promise.all(repositories.map((r) => scanUnits(driver, r.repository)))).flat();

  const refcount = new Map<Digest, number>();
  for (const unit of units) for (const d of unit.blobs) refcount.set(d, (refcount.get(d) ?? 0) + 1);
  const totalBytes = [...blobs.values()].reduce((n, b) => n + b.size, 0) + uploadBytes;
  const recent = (t: number): boolean => now - t < policy.graceMs;
  const protectedUnit = (u: Unit): boolean => recent(u.lastUsed) || policy.isPinned(u.repository, u.tags, u.digest);

  const removed = new Set<Unit>();
  let projected = totalBytes;
  const release = (unit: Unit): void => {
    removed.add(unit);
    for (const d of unit.blobs) {
      const left = (refcount.get(d) ?? 1) - 1;
      refcount.set(d, left);
      const blob = blobs.get(d);
      if (left === 0 && blob && !recent(blob.modifiedMs) && !policy.inUse(d)) projected -= blob.size;
    }
  };
  // Garbage from the start: blobs no image references.
  for (const [d, blob] of blobs) {
    if (!refcount.get(d) && !recent(blob.modifiedMs) && !policy.inUse(d)) projected -= blob.size;
  }
  const candidates = units.filter((u) => !protectedUnit(u)).sort((a, b) => a.lastUsed - b.lastUsed);
  if (policy.maxIdleMs !== undefined) {
    for (const unit of candidates) if (now - unit.lastUsed >= policy.maxIdleMs) release(unit);
  }
  if (policy.maxBytes !== undefined && projected > policy.maxBytes * policy.highWatermark) {
    for (const unit of candidates) {
      if (projected <= policy.maxBytes * policy.lowWatermark) break;
      if (!removed.has(unit)) release(unit);
    }
  }

  const doomedBlobs = [...blobs].filter(([d, b]) => !refcount.get(d) && !recent(b.modifiedMs) && !policy.inUse(d));
  const report: EvictionReport = {
    totalBytes,
    uploadBytes,
    freedBytes: doomedBlobs.reduce((n, [, b]) => n + b.size, 0),
    removedImages: [...removed].map((u) => `${u.repository.upstream}/${u.repository.name}@${u.digest}`),
    removedBlobs: doomedBlobs.length,
    dryRun: options.dryRun,
  };
  if (options.dryRun) return report;

  for (const unit of removed) await removeUnit(driver, unit, options.hooks);
  const linksByDigest = new Map<Digest, RepositoryRef[]>();
  for (const r of repositories) {
    for (const d of r.layers) linksByDigest.set(d, [...(linksByDigest.get(d) ?? []), r.repository]);
  }
  for (const [digest] of doomedBlobs) {
    // Checked again: a pull may have started on it since the scan.
    if (policy.inUse(digest)) continue;
    const info = await driver.stat(blobDataPath(digest));
    if (info && recent(info.modifiedMs)) continue;
    const linked = linksByDigest.get(digest) ?? [];
    for (const repository of linked) await driver.delete(layerLinkPath(repository, digest));
    await driver.delete(blobDir(digest));
    await options.hooks?.blobRemoved?.(digest, linked);
  }
  return report;
}

async function removeUnit(driver: StorageDriver, unit: Unit, hooks: EvictionHooks | undefined): Promise<void> {
  for (const tag of unit.tags) await driver.delete(tagPath(unit.repository, tag));
  for (const digest of unit.manifests) {
    await driver.delete(manifestRevisionPath(unit.repository, digest));
    await hooks?.manifestRemoved?.(unit.repository, digest);
  }
}

async function scanBlobs(driver: StorageDriver): Promise<Map<Digest, { size: number; modifiedMs: number }>> {
  const found = new Map<Digest, { size: number; modifiedMs: number }>();
  for (const algorithm of await driver.list(BLOBS_DIR)) {
    for (const prefix of await driver.list(blobAlgorithmDir(algorithm))) {
      for (const hex of await driver.list(blobPrefixDir(algorithm, prefix))) {
        let digest: Digest;
        try {
          digest = parseDigest(`${algorithm}:${hex}`).digest;
        } catch {
          continue;
        }
        const info = await driver.stat(walkedBlobDataPath(algorithm, prefix, hex));
        if (info) found.set(digest, { size: info.size, modifiedMs: info.modifiedMs });
      }
    }
  }
  return found;
}

/** Bytes in `_uploads`: fills running, imports being staged, temp files of writes. */
async function scanUploads(driver: StorageDriver): Promise<number> {
  let bytes = 0;
  for (const entry of await driver.list(UPLOADS_DIR)) bytes += (await driver.stat(uploadsEntryPath(entry)))?.size ?? 0;
  return bytes;
}

async function scanRepositories(driver: StorageDriver): Promise<RepositoryScan[]> {
  const found: RepositoryScan[] = [];
  for (const repository of await findRepositories(driver)) found.push({ repository, layers: await digestsIn(driver, layersDir(repository)) });
  return found;
}

/** The images of a repository: manifests not referenced by another manifest of it, with their children. */
async function scanUnits(driver: StorageDriver, repository: RepositoryRef): Promise<Unit[]> {
  const revisions = new Map<Digest, { lastUsed: number; references: Digest[] }>();
  for (const digest of await digestsIn(driver, revisionsDir(repository))) {
    const info = await driver.stat(manifestRevisionPath(repository, digest));
    const body = await driver.getContent(blobDataPath(digest));
    if (info) revisions.set(digest, { lastUsed: info.modifiedMs, references: body ? referencedDigests(body) : [] });
  }
  const tagsByDigest = new Map<Digest, string[]>();
  for (const tag of await driver.list(tagsPath(repository))) {
    const digest = tagDigest(await driver.getContent(tagPath(repository, tag)));
    if (digest) tagsByDigest.set(digest, [...(tagsByDigest.get(digest) ?? []), tag]);
  }
  const children = new Set<Digest>();
  for (const r of revisions.values()) for (const d of r.references) if (revisions.has(d)) children.add(d);
  const units: Unit[] = [];
  for (const [digest, revision] of revisions) {
    if (children.has(digest)) continue;
    const unit: Unit = { repository, digest, manifests: [], tags: tagsByDigest.get(digest) ?? [], blobs: new Set(), lastUsed: revision.lastUsed };
    const visit = (d: Digest): void => {
      if (unit.blobs.has(d)) return;
      unit.blobs.add(d);
      const child = revisions.get(d);
      if (!child) return;
      unit.manifests.push(d);
      unit.lastUsed = Math.max(unit.lastUsed, child.lastUsed);
      child.references.forEach(visit);
    };
    visit(digest);
    units.push(unit);
  }
  return units;
}

function tagDigest(content: Buffer | undefined): Digest | undefined {
  // An unreadable tag record keeps nothing alive.
  return content && decodeTagRecord(content.toString('utf8'))?.descriptor.digest;
}
