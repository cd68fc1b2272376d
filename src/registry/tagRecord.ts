import { parseDigest } from './digest.js';
import { isMediaType } from './mediaTypes.js';
import type { TagRecord } from './services.js';

/**
 * The one serialised form of a tag record, used by storage (the tag file) and
 * Redis (the tag key) alike: `{"digest","mediaType","size","fetchedAt"}`, with
 * `fetchedAt` in ISO 8601 so a person can read it.
 */
interface EncodedTagRecord {
  digest: string;
  mediaType: string;
  size: number;
  fetchedAt: string;
}

export function encodeTagRecord(record: TagRecord): string {
  const encoded: EncodedTagRecord = {
    digest: record.descriptor.digest,
    mediaType: record.descriptor.mediaType,
    size: record.descriptor.size,
    fetchedAt: new Date(record.fetchedAt).toISOString(),
  };
  return JSON.stringify(encoded);
}

/**
 * True while a record may answer without asking the upstream: learned less
 * than `maxAgeMs` ago. A time in the future (a bundle's or Redis' claim,
 * or a clock that jumped back) is never fresh: it would otherwise be fresh
 * forever, in every tier it reached.
 */
export function isFreshTagRecord(record: TagRecord, now: number, maxAgeMs: number): boolean {
  return tagRecordAge(record, now) < maxAgeMs;
}

/** How long ago the record was learned; Infinity for a time in the future, which no window (fresh, stale-while-revalidate) holds. */
export function tagRecordAge(record: TagRecord, now: number): number {
  return record.fetchedAt <= now ? now - record.fetchedAt : Infinity;
}

/** The record, or undefined for anything unreadable: no record, so the tag is resolved upstream again. */
export function decodeTagRecord(text: string): TagRecord | undefined {
  try {
    const value = JSON.parse(text) as Partial<EncodedTagRecord>;
    if (typeof value.digest !== 'string' || typeof value.mediaType !== 'string'
      || typeof value.size !== 'number' || !Number.isSafeInteger(value.size) || value.size < 0
      || typeof value.fetchedAt !== 'string' || !isMediaType(value.mediaType)) return undefined;
    const fetchedAt = Date.parse(value.fetchedAt);
    if (!Number.isFinite(fetchedAt)) return undefined;
    return { descriptor: { digest: parseDigest(value.digest).digest, mediaType: value.mediaType, size: value.size }, fetchedAt };
  } catch {
    return undefined;
  }
}
