import type { Descriptor } from './descriptor.js';
import { parseDigest, type Digest } from './digest.js';
import { RegistryError } from './errors.js';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MEDIA_TYPES, isMediaType } from './mediaTypes.js';

/**
 * What warm, export and import need to know about a manifest: an index lists
 * child manifests (with platforms), an image lists the blobs it is made of.
 * Read from the exact stored bytes; nothing is ever re-serialised.
 */

/** An OCI platform: `linux/arm64/v8` is os `linux`, architecture `arm64`, variant `v8`. */
export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** A descriptor as a manifest states it: the core, plus what decides whether it must be fetched. */
export interface ManifestEntry extends Descriptor {
  readonly platform: Platform | undefined;
  /** Foreign (non-distributable) layers live at these URLs, not in the registry. */
  readonly urls: readonly string[];
}

export type ParsedManifest =
  | { readonly kind: 'index'; readonly children: readonly ManifestEntry[] }
  | { readonly kind: 'image'; readonly config: ManifestEntry | undefined; readonly layers: readonly ManifestEntry[] };

export class ManifestParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ManifestParseError';
  }
}

/**
 * The one reading of a manifest's JSON, for everything that looks inside a
 * manifest (parsing, media-type sniffing, eviction's references, bundles):
 * the top-level object, or undefined when the body is not a JSON object.
 */
export function readManifestJson(body: Buffer): Record<string, unknown> | undefined {
  try {
    const json: unknown = JSON.parse(body.toString('utf8'));
    return typeof json === 'object' && json !== null && !Array.isArray(json) ? json as Record<string, unknown> : undefined;
  } catch {
    return undefined;
  }
}

/** The `mediaType` a manifest declares, if any. */
export function declaredMediaType(body: Buffer): string | undefined {
  const declared = readManifestJson(body)?.['mediaType'];
  return typeof declared === 'string' && declared.length > 0 ? declared : undefined;
}

/** Content-Types that say nothing about which manifest a body is. */
const GENERIC_TYPES: ReadonlySet<string> = new Set(['application/json', 'text/plain', 'application/octet-stream']);

/**
 * The media type of a manifest from an upstream: its Content-Type, unless
 * that is generic, then the `mediaType` field the manifest declares. Throws
 * UPSTREAM_INVALID when that is not a media type by RFC 6838's grammar: it
 * would be stored, and then sent as a Content-Type header.
 */
export function manifestMediaType(contentType: string | undefined, body: Buffer): string {
  const type = contentType && !GENERIC_TYPES.has(contentType)
    ? contentType
    : declaredMediaType(body) ?? contentType ?? 'application/octet-stream';
  if (!isMediaType(type)) {
    throw new RegistryError('UPSTREAM_INVALID', 'upstream sent a manifest whose media type is not a media type', { mediaType: type.slice(0, 200) });
  }
  return type;
}

/**
 * What an upstream answered a tag GET with, if it is a manifest we serve:
 * a JSON object with `schemaVersion` 2, whose declared `mediaType` and
 * Content-Type (unless generic) agree, and name one of
 * `MANIFEST_MEDIA_TYPES`. Undefined for anything else: a tag only ever
 * records a manifest, never some other document an upstream returned.
 */
export function tagManifestMediaType(contentType: string | undefined, body: Buffer): string | undefined {
  const json = readManifestJson(body);
  if (!json || json['schemaVersion'] !== 2) return undefined;
  const declared = typeof json['mediaType'] === 'string' ? json['mediaType'] : undefined;
  const stated = contentType && !GENERIC_TYPES.has(contentType) ? contentType : undefined;
  if (declared !== undefined && stated !== undefined && declared !== stated) return undefined;
  const type = declared ?? stated;
  return type !== undefined && MANIFEST_MEDIA_TYPES.has(type) ? type : undefined;
}

/**
 * The media type of a manifest whose descriptor leaves it out (OCI lets both
 * the descriptor and the manifest omit it): declared, else an index when it
 * lists manifests, else an image manifest.
 */
export function impliedMediaType(body: Buffer): string {
  const declared = declaredMediaType(body);
  if (declared) return declared;
  return Array.isArray(readManifestJson(body)?.['manifests']) ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest;
}

/**
 * The digests a manifest is made of, whatever its kind: config, layers,
 * children, blobs. Not its `subject`: a signature refers to an image, it
 * does not contain it (`manifestSubject` reads that).
 */
export function referencedDigests(body: Buffer): Digest[] {
  const m = readManifestJson(body);
  if (!m) return [];
  const found: Digest[] = [];
  const take = (d: unknown): void => {
    const digest = (d as { digest?: unknown } | undefined)?.digest;
    if (typeof digest !== 'string') return;
    try {
      found.push(parseDigest(digest).digest);
    } catch {
      // Not a digest we store; nothing to keep for it.
    }
  };
  take(m['config']);
  for (const key of ['layers', 'manifests', 'blobs']) {
    const list = m[key];
    if (Array.isArray(list)) list.forEach(take);
  }
  return found;
}

/**
 * Parses a manifest body. `mediaType` is what the store recorded (it wins
 * over the body's own field, which OCI lets a manifest leave out).
 */
export function parseManifest(body: Buffer, mediaType: string): ParsedManifest {
  const m = readManifestJson(body);
  if (!m) throw new ManifestParseError('manifest is not a JSON object');
  // Schema 1 lists `fsLayers`, not descriptors: read as an image it would seem to have no blobs at all.
  if (m['schemaVersion'] === 1) throw new ManifestParseError('docker schema 1 manifests are not supported');
  if (INDEX_MEDIA_TYPES.has(mediaType) || Array.isArray(m['manifests'])) {
    return { kind: 'index', children: entries(m['manifests'], 'manifests') };
  }
  const config = m['config'] === undefined ? undefined : entry(m['config'], 'config');
  // Artifact manifests (OCI 1.1 drafts) carry `blobs` instead of `layers`.
  const layers = entries(m['layers'] ?? m['blobs'] ?? [], 'layers');
  return { kind: 'image', config, layers };
}

/** The blobs of an image manifest that live in the registry (foreign layers do not). */
export function registryBlobs(manifest: ParsedManifest & { kind: 'image' }): ManifestEntry[] {
  const all = manifest.config ? [manifest.config, ...manifest.layers] : [...manifest.layers];
  return all.filter((b) => !isForeign(b));
}

/** A foreign layer: a registry only points to it (`urls`), and it is not fetched or bundled. */
export function isForeign(entry: ManifestEntry): boolean {
  return entry.urls.length > 0 && /foreign|nondistributable/.test(entry.mediaType);
}

/** `linux/amd64`, `linux/arm64/v8`. */
export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/** Parses `linux/amd64,linux/arm64/v8`; throws on a malformed entry. */
export function parsePlatforms(value: string): Platform[] {
  return value.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const parts = s.split('/');
    if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/i.test(p))) {
      throw new ManifestParseError(`invalid platform ${s}: expected os/architecture[/variant], e.g. linux/amd64`);
    }
    return parts[2] ? { os: parts[0]!, architecture: parts[1]!, variant: parts[2] } : { os: parts[0]!, architecture: parts[1]! };
  });
}

/** A wanted platform without a variant matches every variant of that os/architecture. */
export function platformMatches(wanted: Platform, actual: Platform | undefined): boolean {
  if (!actual) return false;
  return wanted.os === actual.os && wanted.architecture === actual.architecture
    && (wanted.variant === undefined || wanted.variant === actual.variant);
}

function entries(value: unknown, field: string): ManifestEntry[] {
  if (!Array.isArray(value)) throw new ManifestParseError(`manifest field ${field} is not a list`);
  return value.map((v) => entry(v, field));
}

function entry(value: unknown, field: string): ManifestEntry {
  const d = value as Record<string, unknown> | null;
  if (typeof d !== 'object' || d === null) throw new ManifestParseError(`manifest field ${field} holds a non-object`);
  const { digest, size, mediaType } = d;
  if (typeof digest !== 'string' || typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new ManifestParseError(`manifest field ${field} holds a descriptor without a valid digest and size`);
  }
  const urls = Array.isArray(d['urls']) ? d['urls'].filter((u): u is string => typeof u === 'string') : [];
  return {
    digest: parseDigest(digest).digest,
    size,
    mediaType: typeof mediaType === 'string' ? mediaType : 'application/octet-stream',
    platform: platformOf(d['platform']),
    urls,
  };
}

function platformOf(value: unknown): Platform | undefined {
  const p = value as Record<string, unknown> | null | undefined;
  if (typeof p !== 'object' || p === null) return undefined;
  const { os, architecture, variant } = p;
  if (typeof os !== 'string' || typeof architecture !== 'string') return undefined;
  return typeof variant === 'string' && variant ? { os, architecture, variant } : { os, architecture };
}
