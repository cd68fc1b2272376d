import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import { DigestVerifier, splitDigest, type Digest } from '../registry/digest.js';
import { parseManifest, registryBlobs, type ParsedManifest } from '../registry/imageManifest.js';
import type { Tag } from '../registry/names.js';
import { referrersTag } from '../registry/referrers.js';
import type { RepositoryRef } from '../registry/services.js';
import { blobDataPath } from '../storage/layout.js';
import { BundleError, type BundleStorage } from './bundle.js';
import { blobEntryName, indexFile, layoutFile, INDEX_FILE, LAYOUT_FILE } from './ociLayout.js';

/** One image to export: where it is cached, and the name it gets in the bundle. */
export interface ExportImage {
  readonly refName: string;
  readonly repository: RepositoryRef;
  readonly digest: Digest;
  /** When the tag was learned upstream, if the name is a tag the cache recorded. */
  readonly tagFetchedAt: number | undefined;
  /** The names it was asked for by, where they differ from `refName` (`alpine:3.19`): OCI tools find it by these too. */
  readonly shortNames?: readonly string[];
}

export interface ExportReport {
  readonly images: number;
  /** Entries added for referrers: each cached referrer, and each cached referrers-tag index. */
  readonly referrers: number;
  readonly manifests: number;
  readonly blobs: number;
  /** Bytes of manifests and blobs written (tar framing not counted). */
  readonly bytes: number;
}

interface ExportManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly body: Buffer;
}

/**
 * Everything one export writes, deduplicated by digest, each piece found in
 * the cache: what `planExport` hands to `exportBundle`.
 */
export interface ExportPlan {
  readonly report: ExportReport;
  readonly top: ReadonlyMap<ExportImage, ExportManifest>;
  readonly manifests: ReadonlyMap<Digest, ExportManifest>;
  /** Blob digest → its size as the manifests state it (and the cache holds it). */
  readonly blobs: ReadonlyMap<Digest, number>;
}

export interface ExportOptions {
  /**
   * Also every referrer of every exported manifest (signatures, SBOMs,
   * attestations, and theirs in turn) that the cache holds, each an entry
   * named by `refName` (by digest), and the index under a referrers tag the
   * cache recorded (by that tag).
   */
  readonly referrers?: { readonly refName: (repository: RepositoryRef, tag: Tag | undefined, digest: Digest) => string };
}

/** What `collect` gathers: everything the bundle holds, and the manifests of the image at hand. */
interface Collected {
  readonly manifests: Map<Digest, ExportManifest>;
  readonly blobs: Map<Digest, number>;
  readonly visited: Digest[];
}

/**
 * Checks that every image is in the cache, with all it is made of, before
 * a byte is written: a refusal (`BundleError`) names what is missing. The
 * children of an index that the cache lacks (warmed with `--platform`) are
 * left out; an index none of whose children is cached is refused. With
 * `referrers`, the cached referrers of every manifest join the plan as
 * images of their own; those the cache lacks are left out.
 */
export async function planExport(storage: BundleStorage, images: readonly ExportImage[], options: ExportOptions = {}): Promise<ExportPlan> {
  const top = new Map<ExportImage, ExportManifest>();
  const manifests = new Map<Digest, ExportManifest>();
  const blobs = new Map<Digest, number>();
  const queue = [...images];
  const named = new Set(images.map((i) => i.refName));
  for (let i = 0; i < queue.length; i++) {
    const image = queue[i]!;
    const collected: Collected = { manifests, blobs, visited: [] };
    top.set(image, await collect(storage, image, image.digest, collected, 0));
    if (!options.referrers) continue;
    for (const subject of collected.visited) {
      for (const referrer of await cachedReferrers(storage, image.repository, subject, options.referrers.refName)) {
        if (named.has(referrer.refName)) continue;
        named.add(referrer.refName);
        queue.push(referrer);
      }
    }
  }
  const manifestBytes = [...manifests.values()].reduce((n, m) => n + m.body.length, 0);
  const blobBytes = [...blobs.values()].reduce((n, s) => n + s, 0);
  const report = {
    images: images.length, referrers: queue.length - images.length,
    manifests: manifests.size, blobs: blobs.size, bytes: manifestBytes + blobBytes,
  };
  return { report, top, manifests, blobs };
}

/**
 * The referrers of `subject` that the cache holds, as images to export:
 * those its referrers record lists, and the index under its referrers tag
 * when that tag was recorded (an upstream without the referrers API) and
 * the index lists a cached referrer.
 */
async function cachedReferrers(
  storage: BundleStorage, repository: RepositoryRef, subject: Digest, refName: NonNullable<ExportOptions['referrers']>['refName'],
): Promise<ExportImage[]> {
  const found: ExportImage[] = [];
  const cached = async (digest: Digest): Promise<boolean> => (await storage.manifests.stat(repository, digest)) !== undefined;
  const image = (tag: Tag | undefined, digest: Digest, tagFetchedAt: number | undefined): ExportImage =>
    ({ refName: refName(repository, tag, digest), repository, digest, tagFetchedAt });
  for (const referrer of (await storage.referrers.get(repository, subject))?.referrers ?? []) {
    if (await cached(referrer.digest)) found.push(image(undefined, referrer.digest, undefined));
  }
  const tag = referrersTag(subject);
  const index = await storage.tags.get(repository, tag);
  const body = index && (await storage.manifests.find(repository, index.descriptor.digest))?.manifest;
  if (index && body && await anyChildCached(body, cached)) found.push(image(tag, index.descriptor.digest, index.fetchedAt));
  return found;
}

async function anyChildCached(index: ExportManifest, cached: (digest: Digest) => Promise<boolean>): Promise<boolean> {
  let parsed: ParsedManifest;
  try {
    parsed = parseManifest(index.body, index.mediaType);
  } catch {
    return false; // Not an index we can carry: the referrers travel without it.
  }
  if (parsed.kind !== 'index') return false;
  for (const child of parsed.children) if (await cached(child.digest)) return true;
  return false;
}

/** Adds a cached manifest and what it references; children an index lists but the cache lacks are left out. */
async function collect(
  storage: BundleStorage, image: ExportImage, digest: Digest, plan: Collected, depth: number,
): Promise<ExportManifest> {
  const where = `${image.refName}${digest === image.digest ? '' : ` (manifest ${digest})`}`;
  const stored = await storage.manifests.find(image.repository, digest);
  if (!stored) throw new BundleError(`${where} is not cached`);
  const manifest: ExportManifest = stored.manifest;
  plan.manifests.set(digest, manifest);
  plan.visited.push(digest);
  const parsed = parseOrRefuse(manifest, where);
  if (parsed.kind === 'index') {
    if (depth >= 2) throw new BundleError(`${where}: indexes nested too deep`);
    let present = 0;
    for (const child of parsed.children) {
      // Warmed with --platform: only some children are cached, and only those travel.
      if (!(await storage.manifests.stat(image.repository, child.digest))) continue;
      await collect(storage, image, child.digest, plan, depth + 1);
      present++;
    }
    if (present === 0) throw new BundleError(`${where}: none of the index's manifests is cached`);
    return manifest;
  }
  for (const blob of registryBlobs(parsed)) {
    const info = await storage.driver.stat(blobDataPath(blob.digest));
    if (!info) throw new BundleError(`${where} is not completely cached: blob ${blob.digest} is missing (warm it again)`);
    if (info.size !== blob.size) throw new BundleError(`${where}: cached blob ${blob.digest} has ${info.size} bytes, the manifest says ${blob.size}`);
    plan.blobs.set(blob.digest, blob.size);
  }
  return manifest;
}

function parseOrRefuse(manifest: ExportManifest, where: string): ParsedManifest {
  try {
    return parseManifest(manifest.body, manifest.mediaType);
  } catch (err) {
    throw new BundleError(`${where}: the cached manifest cannot be read (${(err as Error).message})`);
  }
}

/** Entries carry a fixed time, so the same images always make the same bundle bytes. */
const EPOCH = new Date(0);

/**
 * Writes the plan to `out` as an OCI layout tar, and ends `out`: `oci-layout`
 * first, the manifests, the blobs, and `index.json` last, so a bundle cut
 * short has no index and is refused by import. Blobs are streamed from
 * storage and hashed on the way: a cached blob that no longer matches its
 * digest fails the export. On failure `out` is destroyed; what it got is
 * not a bundle, and the caller (which knows where `out` goes) throws it away.
 */
export async function exportBundle(storage: BundleStorage, plan: ExportPlan, out: Writable): Promise<ExportReport> {
  const pack = tar.pack();
  const written = pipeline(pack, out);
  // If `out` cannot be written, the entries below would wait forever for a reader: fail them.
  written.catch((err: unknown) => pack.destroy(err as Error));
  try {
    await addEntry(pack, LAYOUT_FILE, layoutFile());
    for (const m of plan.manifests.values()) await addEntry(pack, blobEntryName(m.digest), m.body);
    for (const [digest, size] of plan.blobs) await addBlobEntry(storage, pack, digest, size);
    const images = [...plan.top].map(([image, m]) => ({
      descriptor: { digest: m.digest, mediaType: m.mediaType, size: m.body.length },
      refName: image.refName,
      tagFetchedAt: image.tagFetchedAt,
      shortNames: image.shortNames,
    }));
    await addEntry(pack, INDEX_FILE, indexFile(images));
    pack.finalize();
  } catch (err) {
    pack.destroy(err as Error);
    await written.catch(() => undefined);
    throw err;
  }
  await written;
  return plan.report;
}

function addEntry(pack: tar.Pack, name: string, body: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry({ name, size: body.length, mode: 0o644, mtime: EPOCH }, body, (err) => (err ? reject(err) : resolve()));
  });
}

/** Streams one blob from storage into the tar, hashing it: the size goes in the header, so it is known first. */
async function addBlobEntry(storage: BundleStorage, pack: tar.Pack, digest: Digest, size: number): Promise<void> {
  const source = (await storage.driver.openReader(blobDataPath(digest)))?.stream;
  if (!source) throw new BundleError(`blob ${digest} vanished from the cache during the export`);
  const verifier = new DigestVerifier({ digest, ...splitDigest(digest) });
  let settle!: (err?: Error | null) => void;
  const added = new Promise<void>((resolve, reject) => { settle = (err) => (err ? reject(err) : resolve()); });
  added.catch(() => undefined); // A failed pipeline below is what gets reported.
  const sink = pack.entry({ name: blobEntryName(digest), size, mode: 0o644, mtime: EPOCH }, (err) => settle(err));
  // The entry is ended only after the last chunk hashed right: a corrupt blob never completes it.
  await pipeline(source, async function* verify(chunks: AsyncIterable<Buffer>) {
    for await (const chunk of chunks) {
      verifier.update(chunk);
      yield chunk;
    }
    if (!verifier.matches()) {
      throw new BundleError(`cached blob ${digest} is corrupt (it hashes to ${verifier.current()}); run pullthrough gc and warm again`);
    }
  }, sink);
  await added;
}
