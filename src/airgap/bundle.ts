import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import { OCTET_STREAM, type Descriptor } from '../registry/descriptor.js';
import { parseDigest, type Digest, type ParsedDigest } from '../registry/digest.js';
import { parseManifest, registryBlobs, type ParsedManifest } from '../registry/imageManifest.js';
import { MAX_MANIFEST_BYTES, MEDIA_TYPES } from '../registry/mediaTypes.js';
import type { Tag } from '../registry/names.js';
import type { RepositoryRef } from '../registry/services.js';
import type { LocalBlobStore } from '../storage/blobs.js';
import type { FilesystemDriver } from '../storage/filesystem.js';
import { UPLOADS_DIR, blobDataPath } from '../storage/layout.js';
import type { LocalManifestStore } from '../storage/manifests.js';
import type { LocalTagStore } from '../storage/tags.js';

/**
 * Cached images as ONE OCI image layout tar (`oci-layout`, `index.json`,
 * `blobs/<alg>/<hex>`), and back. What `pullthrough export` writes, standard
 * tools read (`skopeo inspect oci-archive:bundle.tar:<ref>`), and
 * `pullthrough import` loads into another storage root.
 *
 * Each image is an `index.json` entry whose `org.opencontainers.image.ref.name`
 * is the full reference with its upstream (`ghcr.io/org/app:1.2`,
 * `docker.io/library/alpine@sha256:…`): that is how import knows where the
 * image belongs.
 */

/** The annotation that names an image of an OCI layout. */
export const REF_NAME = 'org.opencontainers.image.ref.name';
/** The same name for `ctr images import`, which reads this one. */
export const CONTAINERD_NAME = 'io.containerd.image.name';
/** When the exporting cache last learned the tag from its upstream (ISO 8601). */
export const TAG_FETCHED_AT = 'dev.pullthrough.tag.fetched-at';

const OCI_LAYOUT = JSON.stringify({ imageLayoutVersion: '1.0.0' });
const MAX_INDEX_JSON_BYTES = 16 * 1024 * 1024;
const MAX_LAYOUT_FILE_BYTES = 64 * 1024;
/** Entries carry a fixed time, so the same images always make the same bundle bytes. */
const EPOCH = new Date(0);

/** The local stores a bundle is read from or written to. */
export interface BundleStorage {
  readonly driver: FilesystemDriver;
  readonly manifests: LocalManifestStore;
  readonly tags: LocalTagStore;
  readonly blobs: LocalBlobStore;
}

/** A refusal: the bundle (or the cache) is not what it must be; nothing was recorded. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BundleError';
  }
}

// ---------------------------------------------------------------- export

/** One image to export: where it is cached, and the name it gets in the bundle. */
export interface ExportImage {
  readonly refName: string;
  readonly repository: RepositoryRef;
  readonly digest: Digest;
  /** When the tag was learned upstream, if the name is a tag the cache recorded. */
  readonly tagFetchedAt: number | undefined;
}

export interface ExportReport {
  readonly images: number;
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

/** Everything one export writes, deduplicated by digest. */
interface ExportPlan {
  readonly top: Map<ExportImage, ExportManifest>;
  readonly manifests: Map<Digest, ExportManifest>;
  readonly blobs: Map<Digest, number>;
}

/**
 * Writes `images` as an OCI layout tar at `out`. Everything is checked to be
 * in the cache before a byte is written; the tar is written next to `out`
 * and renamed over it only when complete, so `out` is never a partial
 * bundle. Blobs are streamed from storage and hashed on the way (a cached
 * blob that no longer matches its digest fails the export).
 */
export async function exportBundle(storage: BundleStorage, images: readonly ExportImage[], out: string): Promise<ExportReport> {
  const plan = await planExport(storage, images);
  const temp = join(dirname(out), `.${randomUUID()}.partial`);
  try {
    await writeTar(storage, plan, temp);
    await rename(temp, out);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  const manifestBytes = [...plan.manifests.values()].reduce((n, m) => n + m.body.length, 0);
  const blobBytes = [...plan.blobs.values()].reduce((n, s) => n + s, 0);
  return { images: images.length, manifests: plan.manifests.size, blobs: plan.blobs.size, bytes: manifestBytes + blobBytes };
}

async function planExport(storage: BundleStorage, images: readonly ExportImage[]): Promise<ExportPlan> {
  const plan: ExportPlan = { top: new Map(), manifests: new Map(), blobs: new Map() };
  for (const image of images) {
    plan.top.set(image, await collect(storage, image, image.digest, plan, 0));
  }
  return plan;
}

/** Adds a cached manifest and what it references; children an index lists but the cache lacks are left out. */
async function collect(storage: BundleStorage, image: ExportImage, digest: Digest, plan: ExportPlan, depth: number): Promise<ExportManifest> {
  const where = `${image.refName}${digest === image.digest ? '' : ` (manifest ${digest})`}`;
  const stored = await storage.manifests.get(image.repository, digest).catch(() => undefined);
  if (!stored) throw new BundleError(`${where} is not cached`);
  const manifest: ExportManifest = stored.manifest;
  plan.manifests.set(digest, manifest);
  const parsed = parseOrRefuse(manifest.body, manifest.mediaType, where);
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

/** `oci-layout` first, manifests, blobs, and `index.json` last: a bundle cut short has no index, and is refused. */
async function writeTar(storage: BundleStorage, plan: ExportPlan, path: string): Promise<void> {
  const pack = tar.pack();
  const written = pipeline(pack, createWriteStream(path, { flags: 'wx' }));
  // If the file cannot be written, the entries below would wait forever for a reader: fail them.
  written.catch((err: unknown) => pack.destroy(err as Error));
  try {
    await addEntry(pack, 'oci-layout', Buffer.from(OCI_LAYOUT));
    for (const m of plan.manifests.values()) await addEntry(pack, blobEntryName(parseDigest(m.digest)), m.body);
    for (const [digest, size] of plan.blobs) await addBlobEntry(storage, pack, parseDigest(digest), size);
    await addEntry(pack, 'index.json', Buffer.from(indexJson(plan)));
    pack.finalize();
  } catch (err) {
    pack.destroy(err as Error);
    await written.catch(() => undefined);
    throw err;
  }
  await written;
}

function indexJson(plan: ExportPlan): string {
  const manifests = [...plan.top].map(([image, m]) => ({
    mediaType: m.mediaType,
    digest: m.digest,
    size: m.body.length,
    annotations: {
      [REF_NAME]: image.refName,
      [CONTAINERD_NAME]: image.refName,
      ...(image.tagFetchedAt !== undefined ? { [TAG_FETCHED_AT]: new Date(image.tagFetchedAt).toISOString() } : {}),
    },
  }));
  return JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }, null, 2);
}

function parseOrRefuse(body: Buffer, mediaType: string, where: string): ParsedManifest {
  try {
    return parseManifest(body, mediaType);
  } catch (err) {
    throw new BundleError(`${where}: the cached manifest cannot be read (${(err as Error).message})`);
  }
}

function blobEntryName(d: ParsedDigest): string {
  return `blobs/${d.algorithm}/${d.hex}`;
}

function addEntry(pack: tar.Pack, name: string, body: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry({ name, size: body.length, mode: 0o644, mtime: EPOCH }, body, (err) => (err ? reject(err) : resolve()));
  });
}

/** Streams one blob from storage into the tar, hashing it: the size goes in the header, so it is known first. */
async function addBlobEntry(storage: BundleStorage, pack: tar.Pack, digest: ParsedDigest, size: number): Promise<void> {
  const source = await storage.driver.openReader(blobDataPath(digest.digest));
  if (!source) throw new BundleError(`blob ${digest.digest} vanished from the cache during the export`);
  const hash = createHash(digest.algorithm);
  let finish!: (err?: Error | null) => void;
  const done = new Promise<void>((resolve, reject) => { finish = (err) => (err ? reject(err) : resolve()); });
  const sink = pack.entry({ name: blobEntryName(digest), size, mode: 0o644, mtime: EPOCH }, (err) => finish(err));
  try {
    for await (const chunk of source) {
      hash.update(chunk as Buffer);
      if (!sink.write(chunk)) await new Promise<void>((resolve) => sink.once('drain', () => resolve()));
    }
    const actual = `${digest.algorithm}:${hash.digest('hex')}`;
    if (actual !== digest.digest) throw new BundleError(`cached blob ${digest.digest} is corrupt (it hashes to ${actual}); run pullthrough gc and warm again`);
    sink.end(undefined);
    await done;
  } catch (err) {
    source.destroy();
    sink.destroy(err as Error);
    throw err;
  }
}

// ---------------------------------------------------------------- import

/** Where an image named in a bundle belongs: the server's routing of its ref name. */
export interface ImportRoute {
  readonly repository: RepositoryRef;
  readonly tag: Tag | undefined;
  /** A ref name may also carry a digest (`app:1.2@sha256:…`): it must be the entry's. */
  readonly digest: Digest | undefined;
}

export interface ImportedImage {
  readonly refName: string;
  readonly repository: RepositoryRef;
  readonly tag: Tag | undefined;
  readonly digest: Digest;
  /** False when the storage already had a tag record learned more recently, which was kept. */
  readonly tagRecorded: boolean;
}

export interface ImportReport {
  readonly images: readonly ImportedImage[];
  /** Distinct manifests, and distinct blobs besides them (configs and layers). */
  readonly manifests: number;
  readonly blobs: number;
  /** Bytes of every manifest and blob the images are made of. */
  readonly bytes: number;
  /** Of those, bytes the storage did not have before. */
  readonly newBytes: number;
  /** index.json entries without a ref name: nothing to record them under, so not imported. */
  readonly unnamed: number;
}

/** A blob read from the bundle into a temp file, verified against its name. */
interface Staged {
  readonly digest: ParsedDigest;
  readonly path: string;
  readonly size: number;
}

interface LayoutEntry {
  readonly descriptor: Descriptor;
  readonly refName: string | undefined;
  readonly fetchedAt: number | undefined;
}

/** An image of the bundle, verified complete, ready to record. */
interface CheckedImage {
  readonly refName: string;
  readonly route: ImportRoute;
  readonly top: Descriptor;
  readonly fetchedAt: number | undefined;
  /** Children before parents, so the top manifest is recorded last. */
  readonly manifests: { descriptor: Descriptor; body: Buffer }[];
  readonly blobs: Descriptor[];
}

/**
 * Loads an OCI layout tar into storage, all or nothing:
 *
 * 1. **Stage.** The tar is streamed; each `blobs/<alg>/<hex>` goes through a
 *    hash into a temp file under `_uploads/`, and is refused at once when it
 *    does not hash to its name. A tar cut short fails here too.
 * 2. **Check.** From `index.json`, every image's manifests are parsed and
 *    every blob they need must be staged with the size the manifest states;
 *    every ref name must route to a configured upstream.
 * 3. **Commit**, only when all of that holds: blobs are renamed into place
 *    (content-addressed, so an existing one is simply kept), then per image
 *    the layer links, the manifest revisions (children first) and last the
 *    tag: a tag never points at something not fully recorded.
 *
 * A refused bundle leaves storage exactly as it was: the temp files are
 * removed and nothing else was written. Should the process die during the
 * commit itself, what it leaves is complete images and blobs that no image
 * references yet (which `pullthrough gc` removes).
 */
export async function importBundle(
  storage: BundleStorage, path: string, route: (refName: string) => ImportRoute, now: number = Date.now(),
): Promise<ImportReport> {
  const stagingDir = join(storage.driver.root, UPLOADS_DIR, `import-${Date.now().toString(36)}-${randomUUID()}`);
  await mkdir(stagingDir, { recursive: true });
  try {
    const layout = await stageTar(path, stagingDir);
    const entries = parseIndexJson(layout.indexJson);
    const named = entries.filter((e) => e.refName !== undefined);
    const images = await checkImages(named, layout.staged, route);
    return await commit(storage, images, layout.staged, entries.length - named.length, now);
  } finally {
    await rm(stagingDir, { recursive: true, force: true });
  }
}

interface StagedLayout {
  readonly indexJson: Buffer;
  readonly staged: Map<Digest, Staged>;
}

async function stageTar(path: string, stagingDir: string): Promise<StagedLayout> {
  const staged = new Map<Digest, Staged>();
  let indexJson: Buffer | undefined;
  let layout: Buffer | undefined;
  const input = createReadStream(path);
  const extract = tar.extract();
  const feeding = pipeline(input, extract);
  feeding.catch(() => undefined);
  try {
    for await (const entry of extract) {
      const name = entry.header.name.replace(/^(\.\/)+/, '');
      const type = entry.header.type ?? 'file';
      if (type !== 'file' && type !== 'contiguous-file') {
        entry.resume();
      } else if (name === 'index.json') {
        indexJson = await readSmall(entry, MAX_INDEX_JSON_BYTES, name);
      } else if (name === 'oci-layout') {
        layout = await readSmall(entry, MAX_LAYOUT_FILE_BYTES, name);
      } else {
        const digest = blobDigestOf(name);
        if (digest && !staged.has(digest.digest)) staged.set(digest.digest, await stageBlob(entry, digest, stagingDir));
        else entry.resume();
      }
    }
    await feeding;
  } catch (err) {
    input.destroy();
    if (err instanceof BundleError) throw err;
    throw new BundleError(`${path} is truncated or not a tar archive (${(err as Error).message})`);
  }
  if (!layout) throw new BundleError(`${path} is not an OCI image layout: it has no oci-layout file`);
  checkLayoutVersion(layout);
  if (!indexJson) throw new BundleError(`${path} has no index.json: it is truncated or not an OCI image layout`);
  return { indexJson, staged };
}

/** `blobs/sha256/<hex>` → the digest; anything else in the tar is not ours to read. */
function blobDigestOf(name: string): ParsedDigest | undefined {
  const match = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(name);
  if (!match) return undefined;
  try {
    return parseDigest(`${match[1]}:${match[2]}`);
  } catch {
    return undefined;
  }
}

/** Streams one tar entry through a hash into a temp file (fsynced); refuses it when it does not match its name. */
async function stageBlob(entry: AsyncIterable<unknown>, digest: ParsedDigest, stagingDir: string): Promise<Staged> {
  const path = join(stagingDir, `${digest.algorithm}-${digest.hex}`);
  const hash = createHash(digest.algorithm);
  const file = await open(path, 'wx', 0o644);
  let size = 0;
  try {
    for await (const chunk of entry) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
      await file.write(chunk as Buffer);
    }
    await file.sync();
  } finally {
    await file.close();
  }
  const actual = `${digest.algorithm}:${hash.digest('hex')}`;
  if (actual !== digest.digest) {
    throw new BundleError(`the bundle is corrupt: ${blobEntryName(digest)} does not match its digest (it hashes to ${actual})`);
  }
  return { digest, path, size };
}

async function readSmall(entry: AsyncIterable<unknown>, limit: number, name: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of entry) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new BundleError(`${name} in the bundle is larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function checkLayoutVersion(layout: Buffer): void {
  let version: unknown;
  try {
    version = (JSON.parse(layout.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
  } catch {
    throw new BundleError('the bundle\'s oci-layout file is not JSON');
  }
  if (typeof version !== 'string' || !version.startsWith('1.')) {
    throw new BundleError(`the bundle has OCI image layout version ${String(version)}; only 1.x is supported`);
  }
}

function parseIndexJson(body: Buffer): LayoutEntry[] {
  let index: { manifests?: unknown };
  try {
    index = JSON.parse(body.toString('utf8')) as { manifests?: unknown };
  } catch {
    throw new BundleError('the bundle\'s index.json is not JSON');
  }
  if (!Array.isArray(index.manifests)) throw new BundleError('the bundle\'s index.json lists no manifests');
  return index.manifests.map((raw, i) => {
    const d = raw as { digest?: unknown; size?: unknown; mediaType?: unknown; annotations?: Record<string, unknown> } | null;
    if (typeof d?.digest !== 'string' || typeof d.size !== 'number') throw new BundleError(`index.json entry ${i} has no digest and size`);
    let digest: Digest;
    try {
      digest = parseDigest(d.digest).digest;
    } catch {
      throw new BundleError(`index.json entry ${i} has an invalid digest`);
    }
    const name = d.annotations?.[REF_NAME] ?? d.annotations?.[CONTAINERD_NAME];
    const fetchedAt = typeof d.annotations?.[TAG_FETCHED_AT] === 'string' ? Date.parse(d.annotations[TAG_FETCHED_AT] as string) : NaN;
    return {
      descriptor: { digest, size: d.size, mediaType: typeof d.mediaType === 'string' ? d.mediaType : '' },
      refName: typeof name === 'string' && name ? name : undefined,
      fetchedAt: Number.isFinite(fetchedAt) ? fetchedAt : undefined,
    };
  });
}

/** Every named image, complete and routable, or a refusal naming every problem found. */
async function checkImages(
  entries: readonly LayoutEntry[], staged: ReadonlyMap<Digest, Staged>, route: (refName: string) => ImportRoute,
): Promise<CheckedImage[]> {
  const problems: string[] = [];
  const images: CheckedImage[] = [];
  for (const entry of entries) {
    const refName = entry.refName!;
    try {
      const target = route(refName);
      if (target.digest && target.digest !== entry.descriptor.digest) {
        throw new Error(`the name says ${target.digest} but the entry is ${entry.descriptor.digest}`);
      }
      const image: CheckedImage = { refName, route: target, top: entry.descriptor, fetchedAt: entry.fetchedAt, manifests: [], blobs: [] };
      await checkManifest(image, entry.descriptor, staged, 0);
      images.push(image);
    } catch (err) {
      problems.push(`${refName}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new BundleError(`refused, nothing was imported:\n  ${problems.join('\n  ')}`);
  return images;
}

async function checkManifest(image: CheckedImage, descriptor: Descriptor, staged: ReadonlyMap<Digest, Staged>, depth: number): Promise<void> {
  const file = staged.get(descriptor.digest);
  if (!file) throw new Error(`manifest ${descriptor.digest} is missing from the bundle (truncated?)`);
  if (file.size !== descriptor.size) throw new Error(`manifest ${descriptor.digest} has ${file.size} bytes, its descriptor says ${descriptor.size}`);
  if (file.size > MAX_MANIFEST_BYTES) throw new Error(`manifest ${descriptor.digest} is larger than ${MAX_MANIFEST_BYTES} bytes`);
  const body = await readFile(file.path);
  const mediaType = descriptor.mediaType || declaredMediaType(body);
  let parsed: ParsedManifest;
  try {
    parsed = parseManifest(body, mediaType);
  } catch (err) {
    throw new Error(`manifest ${descriptor.digest}: ${(err as Error).message}`);
  }
  if (parsed.kind === 'index') {
    if (depth >= 2) throw new Error(`manifest ${descriptor.digest}: indexes nested too deep`);
    // An image exported after warming some platforms only carries those: absent children are allowed.
    for (const child of parsed.children) {
      if (staged.has(child.digest)) await checkManifest(image, child, staged, depth + 1);
    }
  } else {
    for (const blob of registryBlobs(parsed)) {
      const b = staged.get(blob.digest);
      if (!b) throw new Error(`blob ${blob.digest} of manifest ${descriptor.digest} is missing from the bundle (truncated?)`);
      if (b.size !== blob.size) throw new Error(`blob ${blob.digest} has ${b.size} bytes, the manifest says ${blob.size}`);
      image.blobs.push({ digest: blob.digest, size: blob.size, mediaType: OCTET_STREAM });
    }
  }
  image.manifests.push({ descriptor: { ...descriptor, mediaType }, body });
}

/** The `mediaType` a manifest declares, for descriptors that leave it out; OCI lets both be absent. */
function declaredMediaType(body: Buffer): string {
  try {
    const declared = JSON.parse(body.toString('utf8')) as { mediaType?: unknown; manifests?: unknown };
    if (typeof declared.mediaType === 'string' && declared.mediaType) return declared.mediaType;
    if (Array.isArray(declared.manifests)) return MEDIA_TYPES.ociIndex;
  } catch {
    // parseManifest reports it.
  }
  return MEDIA_TYPES.ociManifest;
}

async function commit(
  storage: BundleStorage, images: readonly CheckedImage[], staged: ReadonlyMap<Digest, Staged>, unnamed: number, now: number,
): Promise<ImportReport> {
  const used = new Map<Digest, Staged>();
  const manifests = new Set<Digest>();
  for (const image of images) {
    for (const m of image.manifests) manifests.add(m.descriptor.digest);
    for (const d of [...image.manifests.map((m) => m.descriptor), ...image.blobs]) used.set(d.digest, staged.get(d.digest)!);
  }
  let newBytes = 0;
  for (const file of used.values()) newBytes += await commitBlob(storage.driver, file);
  const recorded: ImportedImage[] = [];
  for (const image of images) recorded.push(await recordImage(storage, image, now));
  return {
    images: recorded,
    manifests: manifests.size,
    blobs: [...used.keys()].filter((d) => !manifests.has(d)).length,
    bytes: [...used.values()].reduce((n, f) => n + f.size, 0),
    newBytes,
    unnamed,
  };
}

/** Renames a verified temp file into place; resolves with the bytes added (0 when the blob was already there). */
async function commitBlob(driver: FilesystemDriver, file: Staged): Promise<number> {
  const target = join(driver.root, blobDataPath(file.digest.digest));
  if (await stat(target).catch(() => undefined)) return 0;
  await mkdir(dirname(target), { recursive: true });
  await rename(file.path, target);
  return file.size;
}

/** Links, revisions (children first), then the tag, so a tag never points at something half recorded. */
async function recordImage(storage: BundleStorage, image: CheckedImage, now: number): Promise<ImportedImage> {
  const { repository, tag } = image.route;
  for (const blob of image.blobs) await storage.blobs.link(repository, blob);
  for (const m of image.manifests) {
    await storage.manifests.put(repository, { digest: m.descriptor.digest, mediaType: m.descriptor.mediaType, body: m.body });
  }
  let tagRecorded = false;
  if (tag) {
    const fetchedAt = image.fetchedAt ?? now;
    const existing = await storage.tags.get(repository, tag);
    // A record learned more recently than the bundle's knows better what the tag is now.
    if (!existing || existing.fetchedAt <= fetchedAt) {
      const top = image.manifests[image.manifests.length - 1]!.descriptor;
      await storage.tags.put(repository, tag, { descriptor: top, fetchedAt });
      tagRecorded = true;
    }
  }
  return { refName: image.refName, repository, tag, digest: image.top.digest, tagRecorded };
}
