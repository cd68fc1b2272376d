import type { Tag } from '../registry/names.js';
import type { RepositoryRef, TagRecord, TagRecordService } from '../registry/services.js';
import { decodeTagRecord, encodeTagRecord } from '../registry/tagRecord.js';
import type { RedisConnection } from './redis.js';
import { repositoryReference } from './redisDescriptors.js';

/** `<prefix>tag:<upstream>/<name>:<tag>`: a tag contains no `:`, so the last one separates it. */
export function tagKey(prefix: string, repository: RepositoryRef, tag: Tag): string {
  return `${prefix}tag:${repositoryReference(repository)}:${tag}`;
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
export class RedisTagRecords implements TagRecordService {
  constructor(private readonly redis: RedisConnection) {}

  async get(repository: RepositoryRef, tag: Tag): Promise<TagRecord | undefined> {
    const value = await this.redis.run((c) => c.get(tagKey(this.redis.prefix, repository, tag)), null);
    return value === null ? undefined : decodeTagRecord(value);
  }

  async put(repository: RepositoryRef, tag: Tag, record: TagRecord): Promise<void> {
    await this.redis.run(
      (c) => c.set(tagKey(this.redis.prefix, repository, tag), encodeTagRecord(record), 'PX', this.redis.settings.keyTtlMs),
      null,
    );
  }
}
