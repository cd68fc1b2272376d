import type { Descriptor } from './descriptor.js';
import { parseDigest } from './digest.js';
import { INDEX_MEDIA_TYPES } from './mediaTypes.js';

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
 * Parses a manifest body. `mediaType` is what the store recorded (it wins
 * over the body's own field, which OCI lets a manifest leave out).
 */
export function parseManifest(body: Buffer, mediaType: string): ParsedManifest {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ManifestParseError('manifest is not JSON');
  }
  if (typeof json !== 'object' || json === null) throw new ManifestParseError('manifest is not a JSON object');
  const m = json as Record<string, unknown>;
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
