import type { Tag } from '../registry/names.js';
import type { RepositoryRef, TagRecord, TagRecordService } from '../registry/services.js';
import { decodeTagRecord, encodeTagRecord } from '../registry/tagRecord.js';
import type { StorageDriver } from './driver.js';
import { tagPath, tagsPath } from './layout.js';

/**
 * An unchanged tag's record is rewritten at most this often: freshness lives
 * in the tiers in front (memory, Redis), storage only has to survive a
 * restart with roughly the right time.
 */
const REWRITE_INTERVAL_MS = 60_000;

/** Tag records in local storage (the slowest tag tier): what a tag pointed to, and when that was learned. */
export class LocalTagStore implements TagRecordService {
  constructor(private readonly driver: StorageDriver) {}

  async get(repository: RepositoryRef, tag: Tag): Promise<TagRecord | undefined> {
    const content = await this.driver.getContent(tagPath(repository, tag));
    return content && decodeTagRecord(content.toString('utf8'));
  }

  /** Writes the record, unless storage already says the same digest as of less than a minute before. */
  async put(repository: RepositoryRef, tag: Tag, record: TagRecord): Promise<void> {
    const stored = await this.get(repository, tag);
    if (stored?.descriptor.digest === record.descriptor.digest
      && record.fetchedAt >= stored.fetchedAt && record.fetchedAt - stored.fetchedAt < REWRITE_INTERVAL_MS) return;
    await this.driver.putContent(tagPath(repository, tag), encodeTagRecord(record));
  }

  /** The tags recorded for a repository, sorted. */
  async list(repository: RepositoryRef): Promise<string[]> {
    return (await this.driver.list(tagsPath(repository))).sort();
  }
}
