import type { Descriptor } from '../registry/descriptor.js';
import { parseDigest } from '../registry/digest.js';
import type { Tag } from '../registry/names.js';
import type { RepositoryRef, TagRecord } from '../registry/services.js';
import type { StorageDriver } from './driver.js';
import { tagPath, tagsPath } from './layout.js';

/** The tag record as stored: JSON, readable by a person. */
interface StoredTag {
  digest: string;
  mediaType: string;
  size: number;
  fetchedAt: string;
}

/** Tag records in local storage: what a tag pointed to, and when that was learned. */
export class LocalTagStore {
  constructor(private readonly driver: StorageDriver) {}

  async get(repository: RepositoryRef, tag: Tag): Promise<TagRecord | undefined> {
    const content = await this.driver.getContent(tagPath(repository, tag));
    return content && parseTagRecord(content);
  }

  async put(repository: RepositoryRef, tag: Tag, record: TagRecord): Promise<void> {
    const stored: StoredTag = {
      digest: record.descriptor.digest,
      mediaType: record.descriptor.mediaType,
      size: record.descriptor.size,
      fetchedAt: new Date(record.fetchedAt).toISOString(),
    };
    await this.driver.putContent(tagPath(repository, tag), JSON.stringify(stored));
  }

  /** The tags recorded for a repository, sorted. */
  async list(repository: RepositoryRef): Promise<string[]> {
    return (await this.driver.list(tagsPath(repository))).sort();
  }
}

function parseTagRecord(content: Buffer): TagRecord | undefined {
  try {
    const value = JSON.parse(content.toString('utf8')) as Partial<StoredTag>;
    if (typeof value.digest !== 'string' || typeof value.mediaType !== 'string'
      || typeof value.size !== 'number' || typeof value.fetchedAt !== 'string') return undefined;
    const descriptor: Descriptor = { digest: parseDigest(value.digest).digest, mediaType: value.mediaType, size: value.size };
    const fetchedAt = Date.parse(value.fetchedAt);
    return Number.isFinite(fetchedAt) ? { descriptor, fetchedAt } : undefined;
  } catch {
    // An unreadable record is no record: the tag is resolved upstream again.
    return undefined;
  }
}
