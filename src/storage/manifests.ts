import { LRUCache } from 'lru-cache';
import type { Descriptor } from '../registry/descriptor.js';
import type { Digest } from '../registry/digest.js';
import { RegistryError } from '../registry/errors.js';
import type { Manifest, ManifestResult, ManifestService, RepositoryRef } from '../registry/services.js';
import type { StorageDriver } from './driver.js';
import type { UsageRecorder } from './usage.js';
import { blobDataPath, manifestRevisionPath } from './layout.js';

interface RevisionRecord {
  mediaType: string;
  size: number;
}

function revisionKey(r: RepositoryRef, digest: Digest): string {
  return `${r.upstream}\0${r.name}\0${digest}`;
}

/**
 * Manifests in local storage: the bytes as a content-addressed blob, and a
 * revision record per repository holding the media type the upstream gave.
 *
 * Two memory caches keep the hot path free of syscalls: revision records by
 * (upstream, repository, digest), and bodies by digest, bounded in bytes.
 */
export class LocalManifestStore implements ManifestService {
  private readonly revisions: LRUCache<string, RevisionRecord>;
  private readonly bodies: LRUCache<string, Buffer>;

  private readonly usage: UsageRecorder | undefined;

  constructor(private readonly driver: StorageDriver, options: { memoryEntries: number; memoryBytes: number; usage?: UsageRecorder }) {
    this.usage = options.usage;
    this.revisions = new LRUCache({ max: Math.max(1, options.memoryEntries) });
    this.bodies = new LRUCache({ maxSize: Math.max(1, options.memoryBytes), sizeCalculation: (b) => Math.max(1, b.length) });
  }

  async stat(repository: RepositoryRef, digest: Digest): Promise<Descriptor | undefined> {
    const revision = await this.revision(repository, digest);
    return revision && { digest, size: revision.size, mediaType: revision.mediaType };
  }

  async get(repository: RepositoryRef, digest: Digest): Promise<ManifestResult> {
    const found = await this.find(repository, digest);
    if (!found) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { digest });
    return found;
  }

  /** The manifest when this repository has it; undefined otherwise (no exception on the miss path). */
  async find(repository: RepositoryRef, digest: Digest): Promise<ManifestResult | undefined> {
    const revision = await this.revision(repository, digest);
    const body = revision && await this.body(digest);
    if (!revision || !body) return undefined;
    this.usage?.used(manifestRevisionPath(repository, digest));
    return { manifest: { digest, mediaType: revision.mediaType, body }, cache: 'hit' };
  }

  /** Stores a manifest whose digest the caller has verified. Bytes are kept exactly. */
  async put(repository: RepositoryRef, manifest: Manifest): Promise<void> {
    if (!(await this.driver.stat(blobDataPath(manifest.digest)))) {
      await this.driver.putContent(blobDataPath(manifest.digest), manifest.body);
    }
    const record: RevisionRecord = { mediaType: manifest.mediaType, size: manifest.body.length };
    await this.driver.putContent(manifestRevisionPath(repository, manifest.digest), JSON.stringify(record));
    this.revisions.set(revisionKey(repository, manifest.digest), record);
    this.bodies.set(manifest.digest, manifest.body);
  }

  /** Eviction removed this revision: forget it (the body may still serve other repositories). */
  evicted(repository: RepositoryRef, digest: Digest): void {
    this.revisions.delete(revisionKey(repository, digest));
  }

  private async revision(repository: RepositoryRef, digest: Digest): Promise<RevisionRecord | undefined> {
    const key = revisionKey(repository, digest);
    const cached = this.revisions.get(key);
    if (cached) return cached;
    const content = await this.driver.getContent(manifestRevisionPath(repository, digest));
    const record = content && parseRevision(content);
    if (record) this.revisions.set(key, record);
    return record;
  }

  private async body(digest: Digest): Promise<Buffer | undefined> {
    const cached = this.bodies.get(digest);
    if (cached) return cached;
    const body = await this.driver.getContent(blobDataPath(digest));
    if (body) this.bodies.set(digest, body);
    return body;
  }
}

function parseRevision(content: Buffer): RevisionRecord | undefined {
  try {
    const value = JSON.parse(content.toString('utf8')) as Partial<RevisionRecord>;
    if (typeof value.mediaType === 'string' && typeof value.size === 'number') {
      return { mediaType: value.mediaType, size: value.size };
    }
  } catch {
    // A record we cannot read is a miss: the manifest is fetched again.
  }
  return undefined;
}
