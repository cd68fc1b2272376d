import { randomUUID } from 'node:crypto';
import { splitDigest, type Digest } from '../registry/digest.js';
import type { RepositoryRef } from '../registry/services.js';

/**
 * The storage layout, in one place (ARCHITECTURE.md "Storage layout"):
 *
 *   blobs/<alg>/<hex[0:2]>/<hex>/data                        content, shared by every upstream
 *   repositories/<upstream>/<repo>/_layers/<alg>/<hex>        link: blob usable in this repository
 *   repositories/<upstream>/<repo>/_manifests/revisions/<alg>/<hex>   link + media type
 *   repositories/<upstream>/<repo>/_manifests/tags/<tag>      tag record (JSON)
 *   repositories/<upstream>/<repo>/_manifests/referrers/<alg>/<hex>   referrers of that subject (JSON)
 *   _uploads/[<alg>-<hex>-]<uuid>                             in-flight fills (named for their digest) and staged imports
 *   pins.json                                                 pins written by `warm --pin`
 *   _pullthrough/usage.json                                   S3 without Redis: last-use times and the size ledger
 *
 * Every argument has passed the name, tag or digest grammar, so no path
 * here can climb out of the root. Nothing else builds or edits a path.
 */
export const UPLOADS_DIR = '_uploads';
export const REPOSITORIES_DIR = 'repositories';
export const BLOBS_DIR = 'blobs';
export const PINS_PATH = 'pins.json';
/**
 * The usage record (`BucketUsageRecord`): where a driver whose files cannot
 * be touched (S3) keeps last-use times and the size total when no Redis is
 * configured. Outside `blobs/`, `repositories/` and `_uploads/`, so no walk
 * or sweep meets it.
 */
export const USAGE_RECORD_PATH = '_pullthrough/usage.json';

/** Directory names inside a repository; anything else below `repositories/` is a name component. */
export const LAYERS_DIR = '_layers';
export const MANIFESTS_DIR = '_manifests';

/** `blobs/<alg>/<hex[0:2]>/<hex>`: the directory that holds a blob (eviction removes it whole). */
export function blobDir(digest: Digest): string {
  const { algorithm, hex } = splitDigest(digest);
  return `${BLOBS_DIR}/${algorithm}/${hex.slice(0, 2)}/${hex}`;
}

export function blobDataPath(digest: Digest): string {
  return `${blobDir(digest)}/data`;
}

/** The levels below `blobs/`, for a walk over every blob: algorithms, then prefixes, then digests. */
export function blobAlgorithmDir(algorithm: string): string {
  return `${BLOBS_DIR}/${algorithm}`;
}

export function blobPrefixDir(algorithm: string, prefix: string): string {
  return `${BLOBS_DIR}/${algorithm}/${prefix}`;
}

/** The data file of a blob found by walking `blobs/<alg>/<prefix>/<hex>`. */
export function walkedBlobDataPath(algorithm: string, prefix: string, hex: string): string {
  return `${BLOBS_DIR}/${algorithm}/${prefix}/${hex}/data`;
}

export function upstreamRepositoriesDir(upstream: string): string {
  return `${REPOSITORIES_DIR}/${upstream}`;
}

/** A repository, or a name prefix of one while walking the tree (`name` may be empty). */
export function repositoryPath(r: RepositoryRef | { upstream: string; name: string }): string {
  return r.name ? `${REPOSITORIES_DIR}/${r.upstream}/${r.name}` : upstreamRepositoriesDir(r.upstream);
}

export function layersDir(r: RepositoryRef): string {
  return `${repositoryPath(r)}/${LAYERS_DIR}`;
}

export function layerLinkPath(r: RepositoryRef, digest: Digest): string {
  const { algorithm, hex } = splitDigest(digest);
  return `${layersDir(r)}/${algorithm}/${hex}`;
}

export function revisionsDir(r: RepositoryRef): string {
  return `${repositoryPath(r)}/${MANIFESTS_DIR}/revisions`;
}

export function manifestRevisionPath(r: RepositoryRef, digest: Digest): string {
  const { algorithm, hex } = splitDigest(digest);
  return `${revisionsDir(r)}/${algorithm}/${hex}`;
}

export function tagsPath(r: RepositoryRef): string {
  return `${repositoryPath(r)}/${MANIFESTS_DIR}/tags`;
}

export function tagPath(r: RepositoryRef, tag: string): string {
  return `${tagsPath(r)}/${tag}`;
}

/** The referrers record of a subject manifest: what lists it, as the upstream said, and when. */
export function referrersRecordPath(r: RepositoryRef, subject: Digest): string {
  const { algorithm, hex } = splitDigest(subject);
  return `${repositoryPath(r)}/${MANIFESTS_DIR}/referrers/${algorithm}/${hex}`;
}

/** `<dir>/<algorithm>` and `<dir>/<algorithm>/<hex>` of a directory of digest-named records. */
export function digestRecordDir(dir: string, algorithm: string): string {
  return `${dir}/${algorithm}`;
}

// ---------------------------------------------------------------- uploads

/**
 * Upload names are random UUIDs: unguessable, and a safe path component. A
 * fill's upload name starts with the digest it is for
 * (`sha256-<hex>-<uuid>`), so that a replica told by Redis to follow an
 * upload can check that it is one made for that digest: Redis is shared, and
 * a name in it is a hint, never proof of whose file it is.
 */
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const UPLOAD_NAME = new RegExp(`^(?:[a-z0-9]{1,16}-[0-9a-f]{32,128}-)?${UUID}$`);

/** A fresh upload name; for a fill, give the digest it fetches. */
export function newUploadName(forDigest?: Digest): string {
  if (forDigest === undefined) return randomUUID();
  const { algorithm, hex } = splitDigest(forDigest);
  return `${algorithm}-${hex}-${randomUUID()}`;
}

/** True for a name `newUploadName` makes; anything else (from Redis, from a listing) is not an upload of ours. */
export function isUploadName(name: string): boolean {
  return UPLOAD_NAME.test(name);
}

/** True when the upload name says it was made for a fill of `digest`. */
export function isUploadFor(name: string, digest: Digest): boolean {
  const { algorithm, hex } = splitDigest(digest);
  return isUploadName(name) && name.startsWith(`${algorithm}-${hex}-`);
}

export function uploadPath(name: string): string {
  if (!isUploadName(name)) throw new Error(`not an upload name: ${name.slice(0, 80)}`);
  return `${UPLOADS_DIR}/${name}`;
}

/**
 * The readiness probe's file (`_uploads/readyz-<id>`, one id per process):
 * written, read back and removed. It lives among the uploads, so one that a
 * crash left behind is swept at the next start like any dead upload.
 */
export function readinessProbePath(id: string): string {
  if (!isUploadName(id)) throw new Error(`not a probe id: ${id.slice(0, 80)}`);
  return `${UPLOADS_DIR}/readyz-${id}`;
}

/** Any entry found by listing the uploads directory (a name from a listing holds no `/`). */
export function uploadsEntryPath(entry: string): string {
  return `${UPLOADS_DIR}/${entry}`;
}
