import type { Readable } from 'node:stream';
import { OCTET_STREAM, type Descriptor } from '../registry/descriptor.js';
import { DigestVerifier, parseDigest, type Digest } from '../registry/digest.js';
import { RegistryError } from '../registry/errors.js';
import {
  GLOBAL_SCOPE, repositoryScope,
  type BlobDescriptorService, type BlobHandle, type BlobStatter, type BlobStore, type ByteRange, type OpenedBlob, type RangeChooser,
  type RepositoryRef, type Scope,
} from '../registry/services.js';
import type { StorageDriver, Upload } from './driver.js';
import type { UsageRecorder } from './usage.js';
import { blobDataPath, blobDir, layerLinkPath } from './layout.js';

/**
 * Answers `stat` from the storage driver: globally, the blob's data file;
 * for a repository, its link and then the data file. The slow tier that the
 * descriptor caches sit in front of.
 */
export class StorageBlobStatter implements BlobStatter {
  constructor(private readonly driver: StorageDriver) {}

  async stat(scope: Scope, digest: Digest): Promise<Descriptor | undefined> {
    if (scope.kind === 'repository') {
      const link = await this.driver.stat(layerLinkPath(scope.repository, digest));
      if (!link) return undefined;
    }
    const data = await this.driver.stat(blobDataPath(digest));
    return data ? { digest, size: data.size, mediaType: OCTET_STREAM } : undefined;
  }
}

/** Blobs being read, as other processes on the same storage can see them (eviction there keeps them). */
export interface SharedReaders {
  begin(digest: Digest): void;
  end(digest: Digest): void;
}

export interface LocalBlobStoreOptions {
  readonly driver: StorageDriver;
  /** The cached statter: memory (and Redis) in front of `StorageBlobStatter`. */
  readonly descriptors: BlobDescriptorService;
  /** Notes each read, for least-recently-used eviction. */
  readonly usage?: UsageRecorder;
  /** Told of every blob whose bytes a commit added (the evictor's size estimate). */
  readonly onCommitted?: (descriptor: Descriptor) => void;
  /** Told when the last reader of a blob let go of it (eviction may have been waiting for that). */
  readonly onReleased?: (digest: Digest) => void;
  /** Told when a read error made a committed blob be checked, and what the check found (the log). */
  readonly onReverified?: (digest: Digest, outcome: 'intact' | 'removed', reason: string) => void;
  /** Told of the bytes of a committed blob that a re-verification removed (the evictor's size estimate and the ledger subtract them). */
  readonly onRemoved?: (digest: Digest, bytes: number) => void;
  /** Readers of every replica on this storage (Redis): told of each read here, so that eviction elsewhere keeps the blob. */
  readonly sharedReaders?: SharedReaders;
  /** A short-lived URL of a stored file that clients may fetch themselves (S3 presigned); absent: bytes flow through here. */
  readonly redirectUrl?: (path: string) => Promise<string>;
}

/**
 * Blobs in local storage. `stat` and `get` answer only for blobs linked into
 * the repository; the proxy decides what to do about the rest.
 */
export class LocalBlobStore implements BlobStore {
  /** Open readers per digest: eviction never removes a blob being read. */
  private readonly readers = new Map<Digest, number>();
  /** Blobs being hashed again after a read error: one check per blob at a time. */
  private readonly reverifying = new Set<Digest>();
  private readonly driver: StorageDriver;
  /** Every descriptor tier, for commits, evictions and lookups. */
  readonly descriptors: BlobDescriptorService;

  constructor(private readonly options: LocalBlobStoreOptions) {
    this.driver = options.driver;
    this.descriptors = options.descriptors;
  }

  /**
   * The one commit of a verified upload (Distribution's `blobWriter.Commit`):
   * moves the bytes into place, records the descriptor in every cache tier,
   * links every repository given, and tells the evictor. When it returns the
   * blob is served under each of those repositories; a caller that streams
   * the upload's bytes lets its readers have the last byte only then.
   *
   * A blob already in storage (content-addressed: the same bytes) is kept,
   * and the upload discarded. Resolves true when the commit added the bytes.
   */
  async commit(upload: Upload, descriptor: Descriptor, repositories: Iterable<RepositoryRef>): Promise<boolean> {
    const path = blobDataPath(descriptor.digest);
    const existing = await this.driver.stat(path);
    const added = existing?.size !== descriptor.size;
    if (added) {
      await upload.commit(path);
      this.options.onCommitted?.(descriptor);
    } else {
      await upload.discard();
    }
    await this.recordCommitted(descriptor, repositories);
    return added;
  }

  /**
   * The rest of a commit, for bytes another process moved into place (a
   * replica on the same root): the cache tiers learn of the blob and every
   * repository is linked.
   */
  async recordCommitted(descriptor: Descriptor, repositories: Iterable<RepositoryRef>): Promise<void> {
    await this.descriptors.setDescriptor(GLOBAL_SCOPE, descriptor.digest, descriptor);
    for (const repository of repositories) await this.link(repository, descriptor);
  }

  /** A new upload for a fill of `digest` (or a staged import), on the same storage as the blobs. */
  createUpload(forDigest?: Digest): Promise<Upload> {
    return this.driver.createUpload(forDigest);
  }

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

  /**
   * A handle on a blob known to exist; opening it re-checks, since eviction
   * may have removed it. Sizes come from the opened file: a descriptor that
   * disagrees (a stale or forged cache entry) is forgotten in every tier.
   */
  handle(descriptor: Descriptor, repository: RepositoryRef): BlobHandle {
    return {
      digest: descriptor.digest,
      cache: 'hit',
      open: async (range?: RangeChooser) => {
        const opened = await this.openSized(descriptor.digest, repository, range);
        if (opened.size !== descriptor.size) {
          await this.forget(repository, descriptor.digest);
          // A stale or forged descriptor, or a file cut short on disk: hashing it again tells which.
          void this.reverify(descriptor.digest, repository, `size ${opened.size}, recorded ${descriptor.size}`);
        }
        return opened;
      },
      ...(this.options.redirectUrl ? { redirect: () => this.redirect(descriptor.digest) } : {}),
    };
  }

  /**
   * Streams a committed blob, whole or a range; BLOB_UNKNOWN (and forgotten)
   * when it vanished. Without a repository (a peer asking by digest) only the
   * global record is forgotten.
   */
  async open(digest: Digest, repository: RepositoryRef | undefined, range?: ByteRange): Promise<Readable> {
    return (await this.openSized(digest, repository, () => range)).stream;
  }

  private async openSized(digest: Digest, repository: RepositoryRef | undefined, range?: RangeChooser): Promise<OpenedBlob> {
    const path = blobDataPath(digest);
    const opened = await this.driver.openReader(path, range);
    if (opened) return { ...opened, stream: this.track(digest, repository, path, opened.stream) };
    await this.forget(repository, digest);
    throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
  }

  /** The URL a client fetches the blob from; the redirect counts as a use, as a read would. */
  private redirect(digest: Digest): Promise<string> {
    const path = blobDataPath(digest);
    this.options.usage?.used(path);
    return this.options.redirectUrl!(path);
  }

  /**
   * Records that `repository` may use this blob, which must be in storage:
   * BLOB_UNKNOWN (and forgotten) when it is not. Resolves with its
   * descriptor as storage has it: the size recorded for the repository is
   * the file's, whatever descriptor the caller had (a cached one may be
   * stale, and one from Redis may be forged).
   */
  async link(repository: RepositoryRef, descriptor: Descriptor): Promise<Descriptor> {
    const stored = await this.stored(descriptor.digest);
    if (!stored) {
      await this.forget(repository, descriptor.digest);
      throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: descriptor.digest });
    }
    await this.driver.putContent(layerLinkPath(repository, descriptor.digest), descriptor.digest);
    await this.descriptors.setDescriptor(repositoryScope(repository), descriptor.digest, stored);
    return stored;
  }

  /** The blob's descriptor from its data file in storage (no cache tier), or undefined when it is not there. */
  async stored(digest: Digest): Promise<Descriptor | undefined> {
    const data = await this.driver.stat(blobDataPath(digest));
    return data && !data.isDirectory ? { digest, size: data.size, mediaType: OCTET_STREAM } : undefined;
  }

  private track(digest: Digest, repository: RepositoryRef | undefined, path: string, stream: Readable): Readable {
    this.options.usage?.used(path);
    this.readers.set(digest, (this.readers.get(digest) ?? 0) + 1);
    stream.once('error', (err: NodeJS.ErrnoException) => void this.reverify(digest, repository, err.code ?? err.message));
    this.options.sharedReaders?.begin(digest);
    stream.once('close', () => {
      this.options.sharedReaders?.end(digest);
      const left = (this.readers.get(digest) ?? 1) - 1;
      if (left > 0) {
        this.readers.set(digest, left);
        return;
      }
      this.readers.delete(digest);
      this.options.onReleased?.(digest);
    });
    return stream;
  }

  /**
   * A read of a committed blob failed: hash the file again. Intact, it stays
   * (the error was passing: the client was cut off, the next read may work);
   * unreadable or wrong, it is removed and forgotten in every tier, so the
   * next request of `repository` fills it afresh from the upstream. Links
   * stay: they say which repositories may have the digest, not that its
   * bytes are here.
   */
  async reverify(digest: Digest, repository: RepositoryRef | undefined, reason: string): Promise<'intact' | 'removed' | undefined> {
    if (this.reverifying.has(digest)) return undefined;
    this.reverifying.add(digest);
    try {
      const outcome = await this.hashesRight(digest) ? 'intact' : 'removed';
      if (outcome === 'removed') {
        const stored = await this.driver.stat(blobDataPath(digest));
        await this.driver.delete(blobDir(digest));
        await this.forget(repository, digest);
        if (stored) this.options.onRemoved?.(digest, stored.size);
      }
      this.options.onReverified?.(digest, outcome, reason);
      return outcome;
    } finally {
      this.reverifying.delete(digest);
    }
  }

  private async hashesRight(digest: Digest): Promise<boolean> {
    const verifier = new DigestVerifier(parseDigest(digest));
    try {
      const opened = await this.driver.openReader(blobDataPath(digest));
      if (!opened) return false;
      for await (const chunk of opened.stream as AsyncIterable<Buffer>) verifier.update(chunk);
      verifier.check();
      return true;
    } catch {
      return false;
    }
  }

  private async forget(repository: RepositoryRef | undefined, digest: Digest): Promise<void> {
    await this.descriptors.clear(GLOBAL_SCOPE, digest);
    if (repository) await this.descriptors.clear(repositoryScope(repository), digest);
  }
}
