import { LRUCache } from 'lru-cache';
import type { Descriptor } from '../registry/descriptor.js';
import type { Digest } from '../registry/digest.js';
import type { Tag } from '../registry/names.js';
import {
  repositoryItemKey,
  type BlobDescriptorService, type RepositoryRef, type Scope, type TagRecord, type TagRecordService,
} from '../registry/services.js';

/** The key of a descriptor in the memory tier: the scope's kind and repository, then the digest. */
export function scopeKey(scope: Scope, digest: Digest): string {
  return scope.kind === 'global' ? `g\0${digest}` : `${scope.kind === 'repository' ? 'r' : 'm'}\0${repositoryItemKey(scope.repository, digest)}`;
}

/** An in-process tier: an LRU bounded by entry count, answering in memory with no I/O. */
abstract class MemoryTier<V extends object> {
  protected readonly entries: LRUCache<string, V>;

  constructor(maxEntries: number) {
    // Bounded by a size of 1 per entry, not by `max`: with `max` lru-cache allocates its arrays for all
    // 100,000 entries up front (about 3 MiB per tier, and 10 ms of start-up); this way they grow as used.
    this.entries = new LRUCache({ maxSize: Math.max(1, maxEntries), sizeCalculation: () => 1 });
  }
}

/** The in-process descriptor tier; forgets the least recently used descriptors first. */
export class MemoryBlobDescriptorService extends MemoryTier<Descriptor> implements BlobDescriptorService {
  async stat(scope: Scope, digest: Digest): Promise<Descriptor | undefined> {
    return this.entries.get(scopeKey(scope, digest));
  }

  async setDescriptor(scope: Scope, digest: Digest, descriptor: Descriptor): Promise<void> {
    this.entries.set(scopeKey(scope, digest), descriptor);
  }

  async clear(scope: Scope, digest: Digest): Promise<void> {
    this.entries.delete(scopeKey(scope, digest));
  }
}

/** The in-process tag tier. */
export class MemoryTagRecords extends MemoryTier<TagRecord> implements TagRecordService {
  async get(repository: RepositoryRef, tag: Tag): Promise<TagRecord | undefined> {
    return this.entries.get(repositoryItemKey(repository, tag));
  }

  async put(repository: RepositoryRef, tag: Tag, record: TagRecord): Promise<void> {
    this.entries.set(repositoryItemKey(repository, tag), record);
  }
}

/** Manifest bodies in memory by digest, bounded in bytes: the hot path of a cached manifest GET reads no file. */
export class MemoryManifestBodies {
  private readonly bodies: LRUCache<string, Buffer>;

  constructor(maxBytes: number) {
    this.bodies = new LRUCache({ maxSize: Math.max(1, maxBytes), sizeCalculation: (b) => Math.max(1, b.length) });
  }

  get(digest: Digest): Buffer | undefined {
    return this.bodies.get(digest);
  }

  set(digest: Digest, body: Buffer): void {
    this.bodies.set(digest, body);
  }
}
