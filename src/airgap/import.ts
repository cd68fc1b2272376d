import type { Readable } from 'node:stream';
import { OCTET_STREAM, type Descriptor } from '../registry/descriptor.js';
import type { Digest } from '../registry/digest.js';
import { impliedMediaType, parseManifest, registryBlobs, type ParsedManifest } from '../registry/imageManifest.js';
import { MAX_MANIFEST_BYTES, isMediaType } from '../registry/mediaTypes.js';
import type { Tag } from '../registry/names.js';
import { manifestSubject, mergeReferrers, referrerDescriptor, type ReferrerDescriptor } from '../registry/referrers.js';
import { repositoryItemKey, repositoryKey, type RepositoryRef } from '../registry/services.js';
import { BundleError, type BundleStorage } from './bundle.js';
import { parseIndexFile, type LayoutImage } from './ociLayout.js';
import { StagedBlobs, readLayout } from './staging.js';

/** Where an image named in a bundle belongs: the server's routing of its ref name. */
export interface ImportRoute {
  readonly repository: RepositoryRef;
  readonly tag: Tag | undefined;
  /** A ref name may also carry a digest (`app:1.2@sha256:…`): it must be the entry's. */
  readonly digest: Digest | undefined;
}

export interface ImportOptions {
  /** Routes a ref name as the server would; throws for a name no configured upstream serves. */
  readonly route: (refName: string) => ImportRoute;
  /** The time a tag is recorded at when the bundle does not say when it was learned. */
  readonly now: number;
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
  /** Manifests with a `subject` (signatures, SBOMs, attestations) recorded as referrers of it. */
  readonly referrers: number;
}

/** An image of the bundle, verified complete, ready to record. */
interface CheckedImage {
  readonly refName: string;
  readonly route: ImportRoute;
  readonly top: Descriptor;
  readonly tagFetchedAt: number | undefined;
  /** Children before parents, so the top manifest is recorded last. */
  readonly manifests: { descriptor: Descriptor; body: Buffer }[];
  readonly blobs: Descriptor[];
}

/**
 * Loads an OCI layout tar into storage, all or nothing:
 *
 * 1. **Stage.** The tar is streamed; each `blobs/<alg>/<hex>` goes into a
 *    driver upload, hashed as it is written, and is refused at once when it
 *    does not hash to its name. A tar cut short fails here too.
 * 2. **Check.** From `index.json`, every image's manifests (read back from
 *    their uploads) are parsed, and every blob they need must be staged with
 *    the size the manifest states; every ref name must route to a
 *    configured upstream.
 * 3. **Commit**, only when all of that holds. Each blob goes through the
 *    one commit (`LocalBlobStore.commit`): its bytes are moved into place (an
 *    existing one is kept, content-addressed), every cache tier records it,
 *    each repository whose images use it is linked, and the evictor counts
 *    it. Then per image the manifest revisions (children first) and last the
 *    tag: a tag never points at something not fully recorded.
 *
 * A refused bundle leaves storage exactly as it was: its uploads are
 * discarded and nothing else was written. Should the process die during the
 * commit itself, what it leaves is complete images and blobs that no image
 * references yet (which `pullthrough gc` removes).
 */
export async function importBundle(storage: BundleStorage, input: Readable, options: ImportOptions): Promise<ImportReport> {
  const staged = new StagedBlobs(() => storage.blobs.createUpload());
  try {
    const index = parseIndexFile(await readLayout(input, staged));
    const named = index.filter((e) => e.refName !== undefined);
    // An image listed under its short names too is one image: one entry per full name and manifest.
    const distinct = [...new Map(named.map((e) => [`${e.refName!} ${e.descriptor.digest}`, e])).values()];
    const images = await checkImages(distinct, staged, options.route);
    return await commit(storage, images, staged, index.length - named.length, options.now);
  } finally {
    await staged.release();
  }
}

/** Every named image, complete and routable, or a refusal naming every problem found. */
async function checkImages(
  entries: readonly LayoutImage[], staged: StagedBlobs, route: (refName: string) => ImportRoute,
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
      const image: CheckedImage = {
        refName, route: target, top: entry.descriptor, tagFetchedAt: entry.tagFetchedAt, manifests: [], blobs: [],
      };
      await checkManifest(image, entry.descriptor, staged, 0);
      images.push(image);
    } catch (err) {
      problems.push(`${refName}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new BundleError(`refused, nothing was imported:\n  ${problems.join('\n  ')}`);
  return images;
}

async function checkManifest(image: CheckedImage, descriptor: Descriptor, staged: StagedBlobs, depth: number): Promise<void> {
  const file = staged.get(descriptor.digest);
  if (!file) throw new Error(`manifest ${descriptor.digest} is missing from the bundle (truncated?)`);
  if (file.size !== descriptor.size) throw new Error(`manifest ${descriptor.digest} has ${file.size} bytes, its descriptor says ${descriptor.size}`);
  if (file.size > MAX_MANIFEST_BYTES) throw new Error(`manifest ${descriptor.digest} is larger than ${MAX_MANIFEST_BYTES} bytes`);
  const body = await staged.read(descriptor.digest);
  const mediaType = descriptor.mediaType || impliedMediaType(body);
  // It is stored, and served as a Content-Type: only a media type by the grammar.
  if (!isMediaType(mediaType)) throw new Error(`manifest ${descriptor.digest}: "${mediaType.slice(0, 100)}" is not a media type`);
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

/** What one commit call gets: a staged blob, and the repositories whose images use it as a config or layer. */
interface BlobCommit {
  readonly descriptor: Descriptor;
  readonly repositories: Map<string, RepositoryRef>;
}

async function commit(
  storage: BundleStorage, images: readonly CheckedImage[], staged: StagedBlobs, unnamed: number, now: number,
): Promise<ImportReport> {
  const commits = new Map<Digest, BlobCommit>();
  const manifests = new Set<Digest>();
  const use = (digest: Digest, repository: RepositoryRef | undefined): void => {
    let c = commits.get(digest);
    if (!c) {
      // Sized by the verified bytes, as the blob tier reports any blob.
      c = { descriptor: { digest, size: staged.get(digest)!.size, mediaType: OCTET_STREAM }, repositories: new Map() };
      commits.set(digest, c);
    }
    if (repository) c.repositories.set(repositoryKey(repository), repository);
  };
  for (const image of images) {
    for (const m of image.manifests) {
      manifests.add(m.descriptor.digest);
      // A manifest's bytes are a blob too, but not linked as a layer: its revision record says it is in the repository.
      use(m.descriptor.digest, undefined);
    }
    for (const blob of image.blobs) use(blob.digest, image.route.repository);
  }
  let newBytes = 0;
  for (const [digest, c] of commits) {
    const added = await storage.blobs.commit(staged.get(digest)!.upload, c.descriptor, c.repositories.values());
    staged.markCommitted(digest);
    if (added) newBytes += c.descriptor.size;
  }
  const recorded: ImportedImage[] = [];
  for (const image of images) recorded.push(await recordImage(storage, image, now));
  const referrers = await recordReferrers(storage, images, now);
  return {
    images: recorded,
    manifests: manifests.size,
    blobs: [...commits.keys()].filter((d) => !manifests.has(d)).length,
    bytes: [...commits.values()].reduce((n, c) => n + c.descriptor.size, 0),
    newBytes,
    unnamed,
    referrers,
  };
}

/**
 * Every imported manifest with a `subject` joins the referrers record of
 * that subject (added to what storage knew), so that the referrers endpoint
 * answers offline with what the bundle carried; the referrers tag, if the
 * bundle has one, is recorded like any tag. Recorded at `now`: the bundle
 * does not say when the lists were learned. Resolves with how many.
 */
async function recordReferrers(storage: BundleStorage, images: readonly CheckedImage[], now: number): Promise<number> {
  const lists = new Map<string, { repository: RepositoryRef; subject: Digest; referrers: Map<Digest, ReferrerDescriptor> }>();
  for (const image of images) {
    const { repository } = image.route;
    for (const m of image.manifests) {
      const subject = manifestSubject(m.body);
      if (!subject) continue;
      const key = repositoryItemKey(repository, subject);
      const list = lists.get(key) ?? { repository, subject, referrers: new Map() };
      lists.set(key, list);
      const { digest, mediaType } = m.descriptor;
      list.referrers.set(digest, referrerDescriptor({ digest, mediaType, body: m.body }));
    }
  }
  let count = 0;
  for (const { repository, subject, referrers } of lists.values()) {
    const known = await storage.referrers.get(repository, subject);
    await storage.referrers.put(repository, subject, {
      referrers: mergeReferrers(known?.referrers ?? [], [...referrers.values()]),
      fetchedAt: known?.fetchedAt ?? now,
      source: known?.source ?? 'bundle',
    });
    count += referrers.size;
  }
  return count;
}

/** Manifest revisions (children first), then the tag, so a tag never points at something half recorded. */
async function recordImage(storage: BundleStorage, image: CheckedImage, now: number): Promise<ImportedImage> {
  const { repository, tag } = image.route;
  for (const m of image.manifests) {
    await storage.manifests.put(repository, { digest: m.descriptor.digest, mediaType: m.descriptor.mediaType, body: m.body });
  }
  let tagRecorded = false;
  if (tag) {
    // The bundle's writer chose this time: at most the time of the import, so a mirror that is online asks the
    // upstream again after tagMaxAge, however far in the future the bundle claims the tag was learned.
    const fetchedAt = Math.min(image.tagFetchedAt ?? now, now);
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
