import type { Tag } from '../registry/names.js';
import type { RepositoryRef, TagRecord } from '../registry/services.js';
import { decodeTagRecord, encodeTagRecord } from '../registry/tagRecord.js';
import type { StorageDriver } from './driver.js';
import { tagPath, tagsPath } from './layout.js';

/** Tag records in local storage: what a tag pointed to, and when that was learned. */
export class LocalTagStore {
  constructor(private readonly driver: StorageDriver) {}

  async get(repository: RepositoryRef, tag: Tag): Promise<TagRecord | undefined> {
    const content = await this.driver.getContent(tagPath(repository, tag));
    return content && decodeTagRecord(content.toString('utf8'));
  }

  async put(repository: RepositoryRef, tag: Tag, record: TagRecord): Promise<void> {
    await this.driver.putContent(tagPath(repository, tag), encodeTagRecord(record));
  }

  /** The tags recorded for a repository, sorted. */
  async list(repository: RepositoryRef): Promise<string[]> {
    return (await this.driver.list(tagsPath(repository))).sort();
  }
}
