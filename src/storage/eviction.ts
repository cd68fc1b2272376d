import { parseDigest, type Digest } from '../registry/digest.js';
import type { RepositoryRef } from '../registry/services.js';
import { decodeTagRecord } from '../registry/tagRecord.js';
import { referencedDigests } from '../registry/imageManifest.js';
import { manifestSubject, referrersTag } from '../registry/referrers.js';
import type { StorageDriver } from './driver.js';
import type { UseTimes } from './usage.js';
import {
  BLOBS_DIR, UPLOADS_DIR, uploadsEntryPath, blobAlgorithmDir, blobDataPath, blobDir, blobPrefixDir, layerLinkPath, layersDir, manifestRevisionPath,
  referrersRecordPath, revisionsDir, tagPath, tagsPath, walkedBlobDataPath,
} from './layout.js';
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
  /**
   * Content used (or written) more recently than this is kept where a run
   * cannot know better: by `maxIdle`, for blobs no image references yet (a
   * bundle import or a warm beside the server commits blobs before it records
   * their manifests), and everywhere in a run that cannot see the server's
   * readers (`pullthrough gc`). It never holds back the size cap of a
   * running server, which knows what is in use.
   */
  readonly graceMs: number;
  /** Images (and so their blobs) that never go. */
  readonly isPinned: (repository: RepositoryRef, tags: readonly string[], digest: Digest) => boolean;
  /** Blobs being read or filled in this process. */
  readonly inUse: (digest: Digest) => boolean;
  /** Blobs being read by another process on the same storage (replicas with Redis); asked just before a removal. */
  readonly inUseElsewhere?: (digest: Digest) => Promise<boolean>;
  /** Called before each run: loads what `isPinned` reads (the pins file). */
  readonly prepare?: () => Promise<void>;
}

export interface CollectOptions {
  readonly dryRun: boolean;
  readonly now: number;
  readonly hooks?: EvictionHooks;
  /**
   * True in the server: `policy.inUse` sees every reader and fill, so the
   * size cap removes least recently used content whatever its age. False
   * for `pullthrough gc`, which cannot see a running server's readers:
   * content used within the grace stands in for content in use.
   */
  readonly inUseIsKnown: boolean;
  /**
   * Blobs an earlier run would have removed but for a reader or a fill
   * (its report's `heldInUse`): once released they go, whatever use just
   * touched them. In use they were; within a grace they are not.
   */
  readonly heldInUse?: ReadonlySet<Digest>;
  /**
   * Last uses that file times do not show (S3): read once per run, a file's
   * last use is the later of its modification time and its time here. The
   * run drops the entries of what it removes, of every recorded path its
   * scan did not find (removed elsewhere, or re-added by a late flush), and
   * of blobs last used before the grace (only the grace asks a blob's use;
   * revisions keep theirs: they order images). When the times cannot be
   * read, the run removes no image (by `maxIdle` or the size cap): with
   * write times standing in, a hot image cached long ago would go first.
   * Blobs no image references still go past their grace.
   */
  readonly useTimes?: UseTimes;
}

/** A file's last use: its modification time, or a later use recorded beside the storage. */
type LastUse = (path: string, modifiedMs: number) => number;

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

interface StoredBlob {
  readonly size: number;
  readonly modifiedMs: number;
}

/** An image named in a report. */
export interface ImageSummary {
  /** `<upstream>/<name>@<digest>`. */
  readonly id: string;
  readonly repository: RepositoryRef;
  readonly digest: Digest;
  readonly tags: readonly string[];
  /** Bytes of its blobs in storage, shared ones included. */
  readonly bytes: number;
  readonly lastUsed: number;
}

/** Why content that the size cap wanted gone stayed. */
export type KeptReason = 'in use' | 'pinned' | 'within the grace';

/** Content a run kept above the low watermark: an image, or a blob (with the image it belonged to, if any). */
export interface KeptContent {
  readonly reason: KeptReason;
  readonly bytes: number;
  readonly image: ImageSummary | undefined;
  /** Set for a blob kept on its own. */
  readonly blob: Digest | undefined;
}

export interface EvictionReport {
  /** Bytes of all blobs before the run, and of the uploads in `_uploads` (fills in progress count against the budget too). */
  readonly totalBytes: number;
  /** Of `totalBytes`, the uploads': they cannot be evicted, so images go to make room for them. */
  readonly uploadBytes: number;
  /** Bytes of the blobs removed (a dry run: that would be removed, before the re-check just before each removal). */
  readonly freedBytes: number;
  /** The size the cap brings use down to (maxBytes × lowWatermark); undefined without a cap. */
  readonly targetBytes: number | undefined;
  /** Every image removed, least recently used first. */
  readonly removedImages: ImageSummary[];
  readonly removedBlobs: number;
  /** When the run could not get down to `targetBytes`: what it kept, and why. Empty otherwise. */
  readonly kept: KeptContent[];
  /** Blobs the run would have removed but for a reader or a fill: the next run removes them once released. */
  readonly heldInUse: Digest[];
  /** The last-use times beside the storage could not be read (Redis away or too slow): no image was removed. */
  readonly lastUseUnknown: boolean;
  readonly dryRun: boolean;
}

/** Called for everything removed, so caches forget it. */
export interface EvictionHooks {
  readonly blobRemoved?: (digest: Digest, repositories: readonly RepositoryRef[]) => Promise<void> | void;
  readonly manifestRemoved?: (repository: RepositoryRef, digest: Digest) => Promise<void> | void;
}

/** A blob the run removes, and whether an image removed in this run held it (else no image referenced it). */
interface Doomed {
  readonly blob: StoredBlob;
  readonly ofRemovedImage: boolean;
}

/**
 * Mark and sweep over the cache: images (a top-level manifest with its
 * children and tags) go least recently used first, then every blob that no
 * retained image references. Over the high watermark, images go until use
 * is under the low one, whatever their age: only pinned images and blobs in
 * use stay (and, where the run cannot see what is in use, content used
 * within the grace). Every removal is of a whole file.
 */
export async function collectGarbage(driver: StorageDriver, policy: EvictionPolicy, options: CollectOptions): Promise<EvictionReport> {
  const { now, inUseIsKnown } = options;
  const recorded = await options.useTimes?.lastUsed();
  const lastUseUnknown = options.useTimes !== undefined && recorded === undefined;
  const lastUse: LastUse = recorded ? (path, modifiedMs) => Math.max(modifiedMs, recorded.get(path) ?? 0) : (_, modifiedMs) => modifiedMs;
  const blobs = await scanBlobs(driver, lastUse);
  const uploadBytes = await scanUploads(driver);
  const repositories = await scanRepositories(driver);
  /** Revision paths the scan found, so that the entries of others can go. */
  const revisionPaths = new Set<string>();
  const units = (await Promise.all(repositories.map((r) => scanUnits(driver, r.repository, lastUse, revisionPaths)))).flat();

  const refcount = new Map<Digest, number>();
  for (const unit of units) for (const d of unit.blobs) refcount.set(d, (refcount.get(d) ?? 0) + 1);
  const totalBytes = [...blobs.values()].reduce((n, b) => n + b.size, 0) + uploadBytes;
  const withinGrace = (t: number): boolean => now - t < policy.graceMs;
  const summarise = (u: Unit): ImageSummary => ({
    id: `${u.repository.upstream}/${u.repository.name}@${u.digest}`,
    repository: u.repository,
    digest: u.digest,
    tags: u.tags,
    bytes: [...u.blobs].reduce((n, d) => n + (blobs.get(d)?.size ?? 0), 0),
    lastUsed: u.lastUsed,
  });
  /** Why an image must stay; `forCap`: the size cap asks, which a running server's grace does not hold back. */
  const imageHeld = (u: Unit, forCap: boolean): KeptReason | undefined => {
    if (policy.isPinned(u.repository, u.tags, u.digest)) return 'pinned';
    return (!forCap || !inUseIsKnown) && withinGrace(u.lastUsed) ? 'within the grace' : undefined;
  };
  const blobHeld = (d: Digest, blob: StoredBlob, ofRemovedImage: boolean): KeptReason | undefined => {
    if (policy.inUse(d)) return 'in use';
    if (options.heldInUse?.has(d)) return undefined;
    return (!ofRemovedImage || !inUseIsKnown) && withinGrace(blob.modifiedMs) ? 'within the grace' : undefined;
  };

  const removed = new Set<Unit>();
  const doomed = new Map<Digest, Doomed>();
  const held = new Map<Digest, { reason: KeptReason; unit: Unit | undefined }>();
  let projected = totalBytes;
  const consider = (d: Digest, unit: Unit | undefined): void => {
    const blob = blobs.get(d);
    if (!blob || doomed.has(d)) return;
    const reason = blobHeld(d, blob, unit !== undefined);
    if (reason) {
      held.set(d, { reason, unit });
      return;
    }
    doomed.set(d, { blob, ofRemovedImage: unit !== undefined });
    projected -= blob.size;
  };
  const release = (unit: Unit): void => {
    removed.add(unit);
    for (const d of unit.blobs) {
      const left = (refcount.get(d) ?? 1) - 1;
      refcount.set(d, left);
      if (left === 0) consider(d, unit);
    }
  };
  // Garbage from the start: blobs no image references.
  for (const d of blobs.keys()) if (!refcount.get(d)) consider(d, undefined);
  // Without the times every image's last use would be its write time: none goes by age or size this run.
  const leastRecentFirst = lastUseUnknown ? [] : [...units].sort((a, b) => a.lastUsed - b.lastUsed);
  if (policy.maxIdleMs !== undefined) {
    for (const unit of leastRecentFirst) {
      if (now - unit.lastUsed >= policy.maxIdleMs && !imageHeld(unit, false)) release(unit);
    }
  }
  const keptImages: KeptContent[] = [];
  const targetBytes = policy.maxBytes === undefined ? undefined : Math.floor(policy.maxBytes * policy.lowWatermark);
  const overCap = policy.maxBytes !== undefined && projected > policy.maxBytes * policy.highWatermark;
  if (overCap) {
    for (const unit of leastRecentFirst) {
      if (projected <= targetBytes!) break;
      if (removed.has(unit)) continue;
      const reason = imageHeld(unit, true);
      if (!reason) {
        release(unit);
        continue;
      }
      const image = summarise(unit);
      keptImages.push({ reason, bytes: image.bytes, image, blob: undefined });
    }
  }
  const stuck = overCap && projected > targetBytes!;
  const keptBlobs = [...held].map(([digest, h]): KeptContent => ({
    reason: h.reason, bytes: blobs.get(digest)!.size, image: h.unit && summarise(h.unit), blob: digest,
  }));

  const report = (freedBytes: number, removedBlobs: number): EvictionReport => ({
    totalBytes,
    uploadBytes,
    freedBytes,
    targetBytes,
    removedImages: [...removed].map(summarise),
    removedBlobs,
    kept: stuck ? [...keptImages, ...keptBlobs] : [],
    heldInUse: [...held].filter(([, h]) => h.reason === 'in use').map(([d]) => d),
    lastUseUnknown,
    dryRun: options.dryRun,
  });
  if (options.dryRun) return report([...doomed.values()].reduce((n, d) => n + d.blob.size, 0), doomed.size);

  const forgotten: string[] = [];
  for (const unit of removed) {
    await removeUnit(driver, unit, options.hooks);
    for (const digest of unit.manifests) forgotten.push(manifestRevisionPath(unit.repository, digest));
  }
  const linksByDigest = new Map<Digest, RepositoryRef[]>();
  for (const r of repositories) {
    for (const d of r.layers) linksByDigest.set(d, [...(linksByDigest.get(d) ?? []), r.repository]);
  }
  let freedBytes = 0;
  let removedBlobs = 0;
  for (const [digest, { blob, ofRemovedImage }] of doomed) {
    // Checked again: a pull may have started on it since the scan.
    const path = blobDataPath(digest);
    const info = await driver.stat(path);
    if (policy.inUse(digest) || (info && blobHeld(digest, { size: info.size, modifiedMs: lastUse(path, info.modifiedMs) }, ofRemovedImage))) continue;
    if (await policy.inUseElsewhere?.(digest)) continue;
    const linked = linksByDigest.get(digest) ?? [];
    for (const repository of linked) await driver.delete(layerLinkPath(repository, digest));
    await driver.delete(blobDir(digest));
    forgotten.push(path);
    // What the scan counted in `totalBytes`, so that total minus freed is what is left.
    freedBytes += blob.size;
    removedBlobs++;
    await options.hooks?.blobRemoved?.(digest, linked);
  }
  await options.useTimes?.forget(forgotten);
  // Only as old as what was read: a use flushed during the run is newer than `now`'s read and stays.
  if (recorded) await options.useTimes?.forget(stale(recorded, blobs, revisionPaths, now - policy.graceMs), now);
  return report(freedBytes, removedBlobs);
}

/**
 * Recorded entries the store no longer needs: paths the scan did not find
 * (removed by another process, by a re-verification, or re-added by a flush
 * after the run that removed them forgot them), and blobs last used before
 * `graceStart` (a blob's use matters only within the grace). They are
 * forgotten only where not recorded again since the read (`forget`'s
 * `recordedBefore`), so a use flushed during the run stays.
 */
function stale(recorded: ReadonlyMap<string, number>, blobs: ReadonlyMap<Digest, StoredBlob>, revisionPaths: ReadonlySet<string>, graceStart: number): string[] {
  const blobPaths = new Set([...blobs.keys()].map(blobDataPath));
  const gone: string[] = [];
  for (const [path, time] of recorded) {
    if (revisionPaths.has(path)) continue;
    if (!blobPaths.has(path) || time < graceStart) gone.push(path);
  }
  return gone;
}

async function removeUnit(driver: StorageDriver, unit: Unit, hooks: EvictionHooks | undefined): Promise<void> {
  for (const tag of unit.tags) await driver.delete(tagPath(unit.repository, tag));
  for (const digest of unit.manifests) {
    await driver.delete(referrersRecordPath(unit.repository, digest));
    await driver.delete(manifestRevisionPath(unit.repository, digest));
    await hooks?.manifestRemoved?.(unit.repository, digest);
  }
}

/** Bytes of every blob in storage: one walk over `blobs/` (the operator's view of the size when nothing is evicted). */
export async function measureBlobBytes(driver: StorageDriver): Promise<number> {
  let total = 0;
  for (const blob of (await scanBlobs(driver, (_, modifiedMs) => modifiedMs)).values()) total += blob.size;
  return total;
}

async function scanBlobs(driver: StorageDriver, lastUse: LastUse): Promise<Map<Digest, StoredBlob>> {
  const found = new Map<Digest, StoredBlob>();
  for (const algorithm of await driver.list(BLOBS_DIR)) {
    for (const prefix of await driver.list(blobAlgorithmDir(algorithm))) {
      for (const hex of await driver.list(blobPrefixDir(algorithm, prefix))) {
        let digest: Digest;
        try {
          digest = parseDigest(`${algorithm}:${hex}`).digest;
        } catch {
          continue;
        }
        const path = walkedBlobDataPath(algorithm, prefix, hex);
        const info = await driver.stat(path);
        if (info) found.set(digest, { size: info.size, modifiedMs: lastUse(path, info.modifiedMs) });
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

/**
 * The images of a repository: manifests not referenced by another manifest
 * of it, with their children. A referrer (a manifest whose `subject` is
 * cached here) and the index under the subject's referrers tag belong to
 * the subject's image: kept by its pins and its use, removed with it.
 */
async function scanUnits(driver: StorageDriver, repository: RepositoryRef, lastUse: LastUse, revisionPaths: Set<string>): Promise<Unit[]> {
  const revisions = new Map<Digest, { lastUsed: number; references: Digest[] }>();
  const subjects = new Map<Digest, Digest>();
  for (const digest of await digestsIn(driver, revisionsDir(repository))) {
    const path = manifestRevisionPath(repository, digest);
    const info = await driver.stat(path);
    const body = await driver.getContent(blobDataPath(digest));
    if (info) revisions.set(digest, { lastUsed: lastUse(path, info.modifiedMs), references: body ? referencedDigests(body) : [] });
    if (info) revisionPaths.add(path);
    const subject = body && manifestSubject(body);
    if (subject) subjects.set(digest, subject);
  }
  const tagsByDigest = new Map<Digest, string[]>();
  const tagged = new Map<string, Digest>();
  for (const tag of await driver.list(tagsPath(repository))) {
    const digest = tagDigest(await driver.getContent(tagPath(repository, tag)));
    if (digest) tagsByDigest.set(digest, [...(tagsByDigest.get(digest) ?? []), tag]);
    if (digest) tagged.set(tag, digest);
  }
  const attached = new Map<Digest, Digest[]>();
  const attach = (subject: Digest, d: Digest | undefined): void => {
    if (d && d !== subject && revisions.has(subject) && revisions.has(d)) attached.set(subject, [...(attached.get(subject) ?? []), d]);
  };
  for (const [d, subject] of subjects) attach(subject, d);
  for (const subject of revisions.keys()) attach(subject, tagged.get(referrersTag(subject)));
  const children = new Set<Digest>();
  for (const r of revisions.values()) for (const d of r.references) if (revisions.has(d)) children.add(d);
  for (const list of attached.values()) list.forEach((d) => children.add(d));
  const units: Unit[] = [];
  for (const [digest, revision] of revisions) {
    if (children.has(digest)) continue;
    const unit: Unit = { repository, digest, manifests: [], tags: [], blobs: new Set(), lastUsed: revision.lastUsed };
    const visit = (d: Digest): void => {
      if (unit.blobs.has(d)) return;
      unit.blobs.add(d);
      const child = revisions.get(d);
      if (!child) return;
      unit.manifests.push(d);
      unit.tags.push(...(tagsByDigest.get(d) ?? []));
      unit.lastUsed = Math.max(unit.lastUsed, child.lastUsed);
      child.references.forEach(visit);
      attached.get(d)?.forEach(visit);
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
