import { LRUCache } from 'lru-cache';
import type { Descriptor } from '../registry/descriptor.js';
import type { Digest } from '../registry/digest.js';
import type { BlobDescriptorService, Scope } from '../registry/services.js';

/** The key of a descriptor in any cache tier: the scope, then the digest. */
export function scopeKey(scope: Scope, digest: Digest): string {
  return scope.kind === 'global'
    ? `g\0${digest}`
    : `r\0${scope.repository.upstream}\0${scope.repository.name}\0${digest}`;
}

/**
 * The in-process tier: an LRU bounded by entry count. Answers in memory, with
 * no I/O; forgets the least recently used descriptors first.
 */
export class MemoryBlobDescriptorService implements BlobDescriptorService {
  private readonly entries: LRUCache<string, Descriptor>;

  constructor(maxEntries: number) {
    this.entries = new LRUCache({ max: Math.max(1, maxEntries) });
  }

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
