import type { Tag } from '../registry/names.js';
import type { RepositoryRef, TagRecord, TagRecordService } from '../registry/services.js';

/**
 * A tag tier in front of a slower one, as `CachedBlobStatter` is for
 * descriptors: memory in front of Redis in front of storage is
 * `new CachedTagRecords(memory, new CachedTagRecords(redis, storage))`.
 *
 * `get` stops at the first tier whose record is good enough (fresh); a stale
 * one asks the tiers behind, since another replica may have revalidated the
 * tag meanwhile, and the newest record wins and is remembered in front.
 * `put` goes to every tier, the slowest first, so a record is never in a
 * cache without being behind it too.
 */
export class CachedTagRecords implements TagRecordService {
  constructor(private readonly cache: TagRecordService, private readonly backend: TagRecordService) {}

  async get(repository: RepositoryRef, tag: Tag, goodEnough?: (record: TagRecord) => boolean): Promise<TagRecord | undefined> {
    const cached = await this.cache.get(repository, tag, goodEnough);
    if (cached && (!goodEnough || goodEnough(cached))) return cached;
    const behind = await this.backend.get(repository, tag, goodEnough);
    if (!behind || (cached && behind.fetchedAt <= cached.fetchedAt)) return cached;
    await this.cache.put(repository, tag, behind);
    return behind;
  }

  async put(repository: RepositoryRef, tag: Tag, record: TagRecord): Promise<void> {
    await this.backend.put(repository, tag, record);
    await this.cache.put(repository, tag, record);
  }
}
