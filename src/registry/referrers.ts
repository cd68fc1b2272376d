import type { Descriptor } from './descriptor.js';
import { parseDigest, splitDigest, type Digest } from './digest.js';
import { readManifestJson } from './imageManifest.js';
import { MEDIA_TYPES } from './mediaTypes.js';
import { parseTag, type Tag } from './names.js';
import type { Manifest } from './services.js';

/**
 * OCI 1.1 referrers (distribution-spec "Listing Referrers" and "Referrers
 * Tag Schema"), in one place: the manifests whose `subject` names another
 * manifest (signatures, SBOMs, attestations), the descriptor a referrers
 * list gives each, the list as an image index, the tag a registry without
 * the referrers API keeps that index under, and the record storage keeps.
 */

/** A referrer as a referrers list describes it: the descriptor core, its artifact type and annotations. */
export interface ReferrerDescriptor extends Descriptor {
  /** Omitted for an index that states none (the spec's rule). */
  readonly artifactType?: string;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** Where a referrers list came from. */
export type ReferrersSource =
  /** The upstream's `GET /v2/<name>/referrers/<digest>`. */
  | 'api'
  /** The upstream has no referrers API: the index under the referrers tag. */
  | 'tag'
  /** An imported bundle: the referrers it carried, read from their `subject`. */
  | 'bundle';

/** The referrers of one subject as learned, and when. */
export interface ReferrersRecord {
  readonly referrers: readonly ReferrerDescriptor[];
  readonly fetchedAt: number;
  readonly source: ReferrersSource;
}

/** `OCI-Filters-Applied` value when the list was filtered by artifact type. */
export const ARTIFACT_TYPE_FILTER = 'artifactType';

/**
 * The referrers tag of a subject: the algorithm truncated to 32 characters,
 * `-`, the encoded part truncated to 64 (`sha256:ab…` → `sha256-ab…`). Our
 * digests are lowercase alphanumerics, so nothing needs replacing.
 */
export function referrersTag(subject: Digest): Tag {
  const { algorithm, hex } = splitDigest(subject);
  return parseTag(`${algorithm.slice(0, 32)}-${hex.slice(0, 64)}`);
}

/** The digest a manifest's `subject` names, if it names one we can store. */
export function manifestSubject(body: Buffer): Digest | undefined {
  const subject = readManifestJson(body)?.['subject'] as { digest?: unknown } | undefined;
  if (typeof subject?.digest !== 'string') return undefined;
  try {
    return parseDigest(subject.digest).digest;
  } catch {
    return undefined;
  }
}

/**
 * The descriptor a referrers list gives a manifest (the spec's rules): its
 * `artifactType`, else for an image manifest its config's media type; and
 * its annotations.
 */
export function referrerDescriptor(manifest: Manifest): ReferrerDescriptor {
  const m = readManifestJson(manifest.body) ?? {};
  const declared = nonEmptyString(m['artifactType']);
  const configType = nonEmptyString((m['config'] as { mediaType?: unknown } | undefined)?.mediaType);
  const artifactType = declared ?? configType;
  const annotations = stringMap(m['annotations']);
  return {
    mediaType: manifest.mediaType,
    digest: manifest.digest,
    size: manifest.body.length,
    ...(artifactType ? { artifactType } : {}),
    ...(annotations ? { annotations } : {}),
  };
}

/**
 * The referrers an image index lists (a referrers API answer, or the index
 * under a referrers tag); undefined when the body is not an index. Entries
 * without a digest, size and media type we can use are left out: nobody
 * could fetch them.
 */
export function readReferrersIndex(body: Buffer): ReferrerDescriptor[] | undefined {
  const manifests = readManifestJson(body)?.['manifests'];
  if (!Array.isArray(manifests)) return undefined;
  const found: ReferrerDescriptor[] = [];
  for (const entry of manifests) {
    const descriptor = readReferrer(entry);
    if (descriptor) found.push(descriptor);
  }
  return found;
}

/** The response body of the referrers API: an OCI image index of `referrers`. */
export function referrersIndexBody(referrers: readonly ReferrerDescriptor[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: referrers }));
}

/** The referrers of one type (an exact match, as the spec filters). */
export function ofArtifactType(referrers: readonly ReferrerDescriptor[], artifactType: string): ReferrerDescriptor[] {
  return referrers.filter((r) => r.artifactType === artifactType);
}

/** `lists` joined, each digest once, the first occurrence winning (pages of one list, or a record and new ones). */
export function mergeReferrers(...lists: readonly (readonly ReferrerDescriptor[])[]): ReferrerDescriptor[] {
  const byDigest = new Map<Digest, ReferrerDescriptor>();
  for (const list of lists) for (const r of list) if (!byDigest.has(r.digest)) byDigest.set(r.digest, r);
  return [...byDigest.values()];
}

/** The one serialised form of a referrers record (storage): `{"source","fetchedAt","manifests"}`, the time in ISO 8601. */
export function encodeReferrersRecord(record: ReferrersRecord): string {
  return JSON.stringify({ source: record.source, fetchedAt: new Date(record.fetchedAt).toISOString(), manifests: record.referrers });
}

/** The record, or undefined for anything unreadable: then the list is asked for again. */
export function decodeReferrersRecord(text: string): ReferrersRecord | undefined {
  let value: { source?: unknown; fetchedAt?: unknown; manifests?: unknown };
  try {
    value = JSON.parse(text) as typeof value;
  } catch {
    return undefined;
  }
  const fetchedAt = typeof value?.fetchedAt === 'string' ? Date.parse(value.fetchedAt) : NaN;
  if (!Number.isFinite(fetchedAt) || !Array.isArray(value.manifests)) return undefined;
  if (value.source !== 'api' && value.source !== 'tag' && value.source !== 'bundle') return undefined;
  const referrers = value.manifests.map(readReferrer);
  if (referrers.some((r) => r === undefined)) return undefined;
  return { referrers: referrers as ReferrerDescriptor[], fetchedAt, source: value.source };
}

/** One descriptor of a referrers list, normalised to the fields the spec gives it; undefined when unusable. */
function readReferrer(value: unknown): ReferrerDescriptor | undefined {
  const d = value as Record<string, unknown> | null;
  if (typeof d !== 'object' || d === null) return undefined;
  const { digest, size, mediaType } = d;
  if (typeof digest !== 'string' || typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) return undefined;
  if (typeof mediaType !== 'string' || mediaType.length === 0) return undefined;
  let parsed: Digest;
  try {
    parsed = parseDigest(digest).digest;
  } catch {
    return undefined;
  }
  const artifactType = nonEmptyString(d['artifactType']);
  const annotations = stringMap(d['annotations']);
  return { mediaType, digest: parsed, size, ...(artifactType ? { artifactType } : {}), ...(annotations ? { annotations } : {}) };
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

/** Annotations are string to string; anything else in them is dropped. */
function stringMap(value: unknown): Record<string, string> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const entries = Object.entries(value).filter((e): e is [string, string] => typeof e[1] === 'string');
  return entries.length > 0 ? Object.fromEntries(entries) : undefined;
}
