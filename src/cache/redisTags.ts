import { parseDigest } from '../registry/digest.js';
import type { Tag } from '../registry/names.js';
import type { RepositoryRef, TagRecord } from '../registry/services.js';
import type { RedisConnection } from './redis.js';
import { repositoryReference } from './redisDescriptors.js';

/** `<prefix>tag:<upstream>/<name>:<tag>`: a tag contains no `:`, so the last one separates it. */
export function tagKey(prefix: string, repository: RepositoryRef, tag: Tag): string {
  return `${prefix}tag:${repositoryReference(repository)}:${tag}`;
}

/** The value: the same JSON as the tag record in storage. */
interface StoredTag {
  digest: string;
  mediaType: string;
  size: number;
  /** ISO 8601, when the upstream last told us. */
  fetchedAt: string;
}

/**
 * Tag records in Redis, so that replicas share freshness decisions: a tag one
 * replica resolved upstream a moment ago is fresh for all of them. The value
 * is `{"digest","mediaType","size","fetchedAt"}` (fetchedAt in ISO 8601), the
 * storage record's format, living for `keyTtl` after its last write.
 *
 * Redis trouble is never an error: `get` answers `undefined` and `put` does
 * nothing, and the tag service falls back to memory, storage and upstream.
 */
export class RedisTagRecords {
  constructor(private readonly redis: RedisConnection) {}

  async get(repository: RepositoryRef, tag: Tag): Promise<TagRecord | undefined> {
    const value = await this.redis.run((c) => c.get(tagKey(this.redis.prefix, repository, tag)), null);
    return value === null ? undefined : parseTag(value);
  }

  async put(repository: RepositoryRef, tag: Tag, record: TagRecord): Promise<void> {
    const stored: StoredTag = {
      digest: record.descriptor.digest,
      mediaType: record.descriptor.mediaType,
      size: record.descriptor.size,
      fetchedAt: new Date(record.fetchedAt).toISOString(),
    };
    await this.redis.run(
      (c) => c.set(tagKey(this.redis.prefix, repository, tag), JSON.stringify(stored), 'PX', this.redis.settings.keyTtlMs),
      null,
    );
  }
}

function parseTag(value: string): TagRecord | undefined {
  try {
    const parsed = JSON.parse(value) as Partial<StoredTag>;
    if (typeof parsed.digest !== 'string' || typeof parsed.mediaType !== 'string'
      || typeof parsed.size !== 'number' || typeof parsed.fetchedAt !== 'string') return undefined;
    const fetchedAt = Date.parse(parsed.fetchedAt);
    if (!Number.isFinite(fetchedAt)) return undefined;
    return { descriptor: { digest: parseDigest(parsed.digest).digest, mediaType: parsed.mediaType, size: parsed.size }, fetchedAt };
  } catch {
    // Not ours, or not a digest we verify: no record, the tag is resolved as if Redis had none.
    return undefined;
  }
}
