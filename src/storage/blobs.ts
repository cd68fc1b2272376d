import { OCTET_STREAM, type Descriptor } from '../registry/descriptor.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { RegistryError } from '../registry/errors.js';
import {
  GLOBAL_SCOPE, repositoryScope,
  type BlobDescriptorService, type BlobHandle, type BlobStatter, type BlobStore, type ByteRange, type RepositoryRef, type Scope,
} from '../registry/services.js';
import type { Readable } from 'node:stream';
import type { StorageDriver } from './driver.js';
import type { UsageRecorder } from './usage.js';
import { blobDataPath, layerLinkPath } from './layout.js';

/**
 * Answers `stat` from the storage driver: globally, the blob's data file;
 * for a repository, its link and then the data file. The slow tier that the
 * descriptor caches sit in front of.
 */
export class StorageBlobStatter implements BlobStatter {
  constructor(private readonly driver: StorageDriver) {}

  async stat(scope: Scope, digest: Digest): Promise<Descriptor | undefined> {
    const parsed = parseDigest(digest);
    if (scope.kind === 'repository') {
      const link = await this.driver.stat(layerLinkPath(scope.repository, parsed));
      if (!link) return undefined;
    }
    const data = await this.driver.stat(blobDataPath(parsed));
    return data ? { digest, size: data.size, mediaType: OCTET_STREAM } : undefined;
  }
}

/**
 * Blobs in local storage. `stat` and `get` answer only for blobs linked into
 * the repository; the proxy decides what to do about the rest.
 */
export interface LocalBlobStoreOptions {
  /** Notes each read, for least-recently-used eviction. */
  readonly usage?: UsageRecorder;
  /** Told of every committed blob (the evictor's size estimate). */
  readonly onCommitted?: (descriptor: Descriptor) => void;
}

export class LocalBlobStore implements BlobStore {
  /** Open readers per digest: eviction never removes a blob being read. */
  private readonly readers = new Map<Digest, number>();

  constructor(
    private readonly driver: StorageDriver,
    /** The cached statter: memory (and Redis) in front of `StorageBlobStatter`. */
    readonly descriptors: BlobDescriptorService,
    private readonly options: LocalBlobStoreOptions = {},
  ) {}

  /** True while a reader has this blob open. */
  isReading(digest: Digest): boolean {
    return this.readers.has(digest);
  }

  /** Eviction removed a blob: every cache tier forgets it, globally and in each repository that linked it. */
  async evicted(digest: Digest, repositories: readonly RepositoryRef[]): Promise<void> {
    await this.descriptors.clear(GLOBAL_SCOPE, digest);
    for (const repository of repositories) await this.descriptors.clear(repositoryScope(repository), digest);
  }

  stat(repository: RepositoryRef, digest: Digest): Promise<Descriptor | undefined> {
    return this.descriptors.stat(repositoryScope(repository), digest);
  }

  /** The blob exists in storage, whichever repository brought it. */
  statGlobal(digest: Digest): Promise<Descriptor | undefined> {
    return this.descriptors.stat(GLOBAL_SCOPE, digest);
  }

  async get(repository: RepositoryRef, digest: Digest): Promise<BlobHandle> {
    const descriptor = await this.stat(repository, digest);
    if (!descriptor) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
    return this.handle(descriptor, repository);
  }

  /** A handle on a blob known to exist; opening it re-checks, since eviction may have removed it. */
  handle(descriptor: Descriptor, repository: RepositoryRef): BlobHandle {
    const path = blobDataPath(parseDigest(descriptor.digest));
    return {
      digest: descriptor.digest,
      size: descriptor.size,
      cache: 'hit',
      knownSize: async () => descriptor.size,
      open: async (range?: ByteRange) => {
        const stream = await this.driver.openReader(path, range);
        if (stream) return this.track(descriptor.digest, path, stream);
        await this.forget(repository, descriptor.digest);
        throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: descriptor.digest });
      },
    };
  }

  /** Records that `repository` may use this blob (which must already be in storage). */
  async link(repository: RepositoryRef, descriptor: Descriptor): Promise<void> {
    await this.driver.putContent(layerLinkPath(repository, parseDigest(descriptor.digest)), descriptor.digest);
    await this.descriptors.setDescriptor(repositoryScope(repository), descriptor.digest, descriptor);
  }

  /** Tells the caches that a blob was just committed to storage. */
  async committed(descriptor: Descriptor): Promise<void> {
    await this.descriptors.setDescriptor(GLOBAL_SCOPE, descriptor.digest, descriptor);
    this.options.onCommitted?.(descriptor);
  }

  private track(digest: Digest, path: string, stream: Readable): Readable {
    this.options.usage?.used(path);
    this.readers.set(digest, (this.readers.get(digest) ?? 0) + 1);
    stream.once('close', () => {
      const left = (this.readers.get(digest) ?? 1) - 1;
      if (left > 0) this.readers.set(digest, left);
      else this.readers.delete(digest);
    });
    return stream;
  }

  private async forget(repository: RepositoryRef, digest: Digest): Promise<void> {
    await this.descriptors.clear(GLOBAL_SCOPE, digest);
    await this.descriptors.clear(repositoryScope(repository), digest);
  }
}
