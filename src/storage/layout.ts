import type { ParsedDigest } from '../registry/digest.js';
import type { RepositoryRef } from '../registry/services.js';

/**
 * The storage layout, in one place (ARCHITECTURE.md "Storage layout"):
 *
 *   blobs/<alg>/<hex[0:2]>/<hex>/data                        content, shared by every upstream
 *   repositories/<upstream>/<repo>/_layers/<alg>/<hex>        link: blob usable in this repository
 *   repositories/<upstream>/<repo>/_manifests/revisions/<alg>/<hex>   link + media type
 *   repositories/<upstream>/<repo>/_manifests/tags/<tag>      tag record (JSON)
 *   _uploads/<random>                                         in-flight fills
 *
 * Every argument has passed the name, tag or digest grammar, so no path
 * here can climb out of the root.
 */
export const UPLOADS_DIR = '_uploads';
export const REPOSITORIES_DIR = 'repositories';

export function blobDataPath(d: ParsedDigest): string {
  return `blobs/${d.algorithm}/${d.hex.slice(0, 2)}/${d.hex}/data`;
}

export function repositoryPath(r: RepositoryRef): string {
  return `${REPOSITORIES_DIR}/${r.upstream}/${r.name}`;
}

export function layerLinkPath(r: RepositoryRef, d: ParsedDigest): string {
  return `${repositoryPath(r)}/_layers/${d.algorithm}/${d.hex}`;
}

export function manifestRevisionPath(r: RepositoryRef, d: ParsedDigest): string {
  return `${repositoryPath(r)}/_manifests/revisions/${d.algorithm}/${d.hex}`;
}

export function tagsPath(r: RepositoryRef): string {
  return `${repositoryPath(r)}/_manifests/tags`;
}

export function tagPath(r: RepositoryRef, tag: string): string {
  return `${tagsPath(r)}/${tag}`;
}
