import type { Descriptor } from '../registry/descriptor.js';
import { parseDigest, splitDigest, type Digest, type ParsedDigest } from '../registry/digest.js';
import { MEDIA_TYPES } from '../registry/mediaTypes.js';
import { BundleError } from './bundle.js';

/**
 * The OCI image layout as pullthrough writes and reads it in a tar:
 * `oci-layout`, `index.json` and `blobs/<alg>/<hex>`. Entry names, the
 * annotations that say where an image belongs, and `index.json` and
 * `oci-layout` both ways. No storage and no streams here.
 *
 * Each image is an `index.json` entry whose `org.opencontainers.image.ref.name`
 * is the full reference with its upstream (`ghcr.io/org/app:1.2`,
 * `docker.io/library/alpine@sha256:…`). The names a user typed for it
 * (`alpine:3.19` in a lock file) are further entries of the same manifest,
 * so OCI tools find it by those too. Every entry's `io.containerd.image.name`
 * is the full reference: that is how import (and containerd) know where
 * the image belongs, whatever the short name would mean on another mirror.
 */

/** The annotation that names an image of an OCI layout. */
export const REF_NAME = 'org.opencontainers.image.ref.name';
/** The same name for `ctr images import`, which reads this one. */
export const CONTAINERD_NAME = 'io.containerd.image.name';
/** When the exporting cache last learned the tag from its upstream (ISO 8601). */
export const TAG_FETCHED_AT = 'dev.pullthrough.tag.fetched-at';

export const LAYOUT_FILE = 'oci-layout';
export const INDEX_FILE = 'index.json';
/** What is read of the two small files at most: anything larger is not a layout we write. */
export const MAX_INDEX_BYTES = 16 * 1024 * 1024;
export const MAX_LAYOUT_FILE_BYTES = 64 * 1024;

/** The `oci-layout` file's content. */
export function layoutFile(): Buffer {
  return Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' }));
}

/** `blobs/<alg>/<hex>`: where a layout keeps a manifest or blob. */
export function blobEntryName(digest: Digest): string {
  const { algorithm, hex } = splitDigest(digest);
  return `blobs/${algorithm}/${hex}`;
}

/** An image of the layout: its top manifest, and the name and tag time its annotations give. */
export interface LayoutImage {
  readonly descriptor: Descriptor;
  readonly refName: string | undefined;
  /** When the exporting cache learned the tag upstream (ms since the epoch). */
  readonly tagFetchedAt: number | undefined;
  /** Other names for it, as a user typed them (written only: read back, each is an entry with the full name). */
  readonly shortNames?: readonly string[];
}

/** `index.json` listing `images`, each under its name and its short names for OCI tools, and its full name for containerd. */
export function indexFile(images: readonly LayoutImage[]): Buffer {
  const manifests = images.flatMap((image) => [image.refName, ...(image.shortNames ?? [])].map((name) => ({
    mediaType: image.descriptor.mediaType,
    digest: image.descriptor.digest,
    size: image.descriptor.size,
    annotations: {
      ...(name !== undefined ? { [REF_NAME]: name, [CONTAINERD_NAME]: image.refName ?? name } : {}),
      ...(image.tagFetchedAt !== undefined ? { [TAG_FETCHED_AT]: new Date(image.tagFetchedAt).toISOString() } : {}),
    },
  })));
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }, null, 2));
}

/** The images `index.json` lists; a descriptor may leave its media type out (then it is ''). */
export function parseIndexFile(body: Buffer): LayoutImage[] {
  let index: { manifests?: unknown };
  try {
    index = JSON.parse(body.toString('utf8')) as { manifests?: unknown };
  } catch {
    throw new BundleError(`the bundle's ${INDEX_FILE} is not JSON`);
  }
  if (!Array.isArray(index?.manifests)) throw new BundleError(`the bundle's ${INDEX_FILE} lists no manifests`);
  return index.manifests.map((raw, i) => {
    const d = raw as { digest?: unknown; size?: unknown; mediaType?: unknown; annotations?: Record<string, unknown> } | null;
    if (typeof d?.digest !== 'string' || typeof d.size !== 'number') throw new BundleError(`${INDEX_FILE} entry ${i} has no digest and size`);
    let digest: Digest;
    try {
      digest = parseDigest(d.digest).digest;
    } catch {
      throw new BundleError(`${INDEX_FILE} entry ${i} has an invalid digest`);
    }
    // containerd's name is the full one (ref.name may be a short name, or only a tag in containerd's own exports).
    const name = d.annotations?.[CONTAINERD_NAME] ?? d.annotations?.[REF_NAME];
    const fetchedAt = typeof d.annotations?.[TAG_FETCHED_AT] === 'string' ? Date.parse(d.annotations[TAG_FETCHED_AT] as string) : NaN;
    return {
      descriptor: { digest, size: d.size, mediaType: typeof d.mediaType === 'string' ? d.mediaType : '' },
      refName: typeof name === 'string' && name ? name : undefined,
      tagFetchedAt: Number.isFinite(fetchedAt) ? fetchedAt : undefined,
    };
  });
}

/** Refuses an `oci-layout` file of a version other than 1.x. */
export function checkLayoutFile(body: Buffer): void {
  let version: unknown;
  try {
    version = (JSON.parse(body.toString('utf8')) as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
  } catch {
    throw new BundleError(`the bundle's ${LAYOUT_FILE} file is not JSON`);
  }
  if (typeof version !== 'string' || !version.startsWith('1.')) {
    throw new BundleError(`the bundle has OCI image layout version ${String(version)}; only 1.x is supported`);
  }
}

/** What a tar entry is to the layout; anything else in the tar is not ours to read. */
export type LayoutEntry =
  | { readonly kind: 'layout' }
  | { readonly kind: 'index' }
  | { readonly kind: 'blob'; readonly digest: ParsedDigest }
  | { readonly kind: 'other' };

/** The parts of a tar header the layout looks at. */
export interface EntryHeader {
  readonly name: string;
  readonly type?: string | null;
  readonly linkname?: string | null;
}

/**
 * What a tar entry is, or a refusal. Entries are never written out by name
 * (blobs are staged by digest), so a hostile name could do no harm here; but
 * a bundle with a name or a link that climbs out of the layout (tar-slip),
 * or a link where the layout has content, is not a layout any tool writes,
 * and it is refused rather than half believed. Links elsewhere (the legacy
 * `<id>/layer.tar` links of `docker save`) are ignored.
 */
export function classifyEntry(header: EntryHeader): LayoutEntry {
  const name = header.name.replace(/^(\.\/)+/, '');
  if (climbsOut(name, '')) throw new BundleError(`the bundle has an entry ${quote(header.name)} outside the layout`);
  const type = header.type ?? 'file';
  const isLink = type === 'symlink' || type === 'link';
  if (isLink) {
    const target = header.linkname ?? '';
    // A symbolic link is read from its own directory, a hard link from the top of the archive.
    if (climbsOut(target, type === 'symlink' ? parentOf(name) : '')) {
      throw new BundleError(`the bundle has a link ${quote(name)} to ${quote(target)}, outside the layout`);
    }
  }
  const entry = layoutEntryOf(name.replace(/\/+$/, ''));
  if (entry.kind === 'other') return entry;
  if (type !== 'file' && type !== 'contiguous-file') {
    throw new BundleError(`the bundle's ${quote(name)} is a ${type}, not a file`);
  }
  return entry;
}

function layoutEntryOf(name: string): LayoutEntry {
  if (name === INDEX_FILE) return { kind: 'index' };
  if (name === LAYOUT_FILE) return { kind: 'layout' };
  const match = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(name);
  if (!match) return { kind: 'other' };
  try {
    return { kind: 'blob', digest: parseDigest(`${match[1]}:${match[2]}`) };
  } catch {
    // An algorithm we do not verify: not a blob we can import.
    return { kind: 'other' };
  }
}

/** True when `path`, read from directory `from` (both relative to the top of the archive), leaves the archive. */
function climbsOut(path: string, from: string): boolean {
  if (path.startsWith('/') || path.includes('\\') || /^[a-zA-Z]:/.test(path)) return true;
  let depth = from.split('/').filter((p) => p && p !== '.').length;
  for (const part of path.split('/')) {
    if (part === '..') depth--;
    else if (part && part !== '.') depth++;
    if (depth < 0) return true;
  }
  return false;
}

function parentOf(name: string): string {
  const slash = name.replace(/\/+$/, '').lastIndexOf('/');
  return slash < 0 ? '' : name.slice(0, slash);
}

function quote(name: string): string {
  return JSON.stringify(name.slice(0, 200));
}
