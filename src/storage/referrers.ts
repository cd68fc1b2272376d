import type { Digest } from '../registry/digest.js';
import { decodeReferrersRecord, encodeReferrersRecord, type ReferrersRecord } from '../registry/referrers.js';
import type { RepositoryRef } from '../registry/services.js';
import type { StorageDriver } from './driver.js';
import { referrersRecordPath } from './layout.js';

/**
 * Referrers lists in local storage, one record per subject digest of a
 * repository. No memory tier in front: a referrers request is not the pull
 * path, and replicas on one root then share every revalidation.
 */
export class LocalReferrersStore {
  constructor(private readonly driver: StorageDriver) {}

  async get(repository: RepositoryRef, subject: Digest): Promise<ReferrersRecord | undefined> {
    const content = await this.driver.getContent(referrersRecordPath(repository, subject));
    return content && decodeReferrersRecord(content.toString('utf8'));
  }

  async put(repository: RepositoryRef, subject: Digest, record: ReferrersRecord): Promise<void> {
    await this.driver.putContent(referrersRecordPath(repository, subject), encodeReferrersRecord(record));
  }
}
