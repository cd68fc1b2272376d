import type { Descriptor } from '../registry/descriptor.js';
import type { Digest } from '../registry/digest.js';
import { decodeDescriptorRecord, encodeDescriptorRecord } from '../registry/descriptorRecord.js';
import { RegistryError } from '../registry/errors.js';
import {
  manifestScope,
  type BlobDescriptorService, type BlobStatter, type Manifest, type ManifestResult, type ManifestService, type RepositoryRef, type Scope,
} from '../registry/services.js';
import type { StorageDriver } from './driver.js';
import type { UsageRecorder } from './usage.js';
import { blobDataPath, manifestRevisionPath } from './layout.js';

/**
 * Answers `stat` in the `manifest` scope from the revision records in
 * storage: the slow tier that the descriptor caches sit in front of, as
 * `StorageBlobStatter` is for blobs.
 */
export class StorageRevisionStatter implements BlobStatter {
  constructor(private readonly driver: StorageDriver) {}

  async stat(scope: Scope, digest: Digest): Promise<Descriptor | undefined> {
    if (scope.kind !== 'manifest') return undefined;
    const content = await this.driver.getContent(manifestRevisionPath(scope.repository, digest));
    // A record we cannot read is a miss: the manifest is fetched again.
    return content && decodeDescriptorRecord(digest, content.toString('utf8'));
  }
}

/** Manifest bodies kept in memory by digest; a miss is read from storage. */
export interface ManifestBodyCache {
  get(digest: Digest): Buffer | undefined;
  set(digest: Digest, body: Buffer): void;
}

export interface LocalManifestStoreOptions {
  readonly driver: StorageDriver;
  /** Every descriptor tier (memory → Redis → `StorageRevisionStatter`); revisions live in the `manifest` scope. */
  readonly revisions: BlobDescriptorService;
  readonly bodies: ManifestBodyCache;
  readonly usage?: UsageRecorder;
  /** A manifest body of `bytes` went into `blobs/`: it counts towards the cache size as a committed blob does. */
  readonly onStored?: (bytes: number) => void;
}

/**
 * Manifests in local storage: the bytes as a content-addressed blob, and a
 * revision record per repository holding the media type the upstream gave.
 * The hot path is free of syscalls: revisions come from the descriptor
 * tiers, bodies from the body cache.
 */
export class LocalManifestStore implements ManifestService {
  private readonly driver: StorageDriver;
  private readonly revisions: BlobDescriptorService;

  constructor(private readonly options: LocalManifestStoreOptions) {
    this.driver = options.driver;
    this.revisions = options.revisions;
  }

  stat(repository: RepositoryRef, digest: Digest): Promise<Descriptor | undefined> {
    return this.revisions.stat(manifestScope(repository), digest);
  }

  async get(repository: RepositoryRef, digest: Digest): Promise<ManifestResult> {
    const found = await this.find(repository, digest);
    if (!found) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { digest });
    return found;
  }

  /** The manifest when this repository has it; undefined otherwise (no exception on the miss path). */
  async find(repository: RepositoryRef, digest: Digest): Promise<ManifestResult | undefined> {
    const revision = await this.stat(repository, digest);
    const body = revision && await this.body(digest);
    if (!revision || !body) return undefined;
    this.options.usage?.used(manifestRevisionPath(repository, digest));
    return { manifest: { digest, mediaType: revision.mediaType, body }, cache: 'hit' };
  }

  /** Stores a manifest whose digest the caller has verified. Bytes are kept exactly. */
  async put(repository: RepositoryRef, manifest: Manifest): Promise<void> {
    if (!(await this.driver.stat(blobDataPath(manifest.digest)))) {
      await this.driver.putContent(blobDataPath(manifest.digest), manifest.body);
      this.options.onStored?.(manifest.body.length);
    }
    const revision: Descriptor = { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.body.length };
    await this.driver.putContent(manifestRevisionPath(repository, manifest.digest), encodeDescriptorRecord(revision));
    await this.revisions.setDescriptor(manifestScope(repository), manifest.digest, revision);
    this.options.bodies.set(manifest.digest, manifest.body);
  }

  /** Eviction removed this revision: every tier forgets it (the body may still serve other repositories). */
  async evicted(repository: RepositoryRef, digest: Digest): Promise<void> {
    await this.revisions.clear(manifestScope(repository), digest);
  }

  private async body(digest: Digest): Promise<Buffer | undefined> {
    const cached = this.options.bodies.get(digest);
    if (cached) return cached;
    const body = await this.driver.getContent(blobDataPath(digest));
    if (body) this.options.bodies.set(digest, body);
    return body;
  }
}
