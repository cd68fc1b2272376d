import type { Descriptor } from '../registry/descriptor.js';
import type { Digest } from '../registry/digest.js';
import type { BlobDescriptorService, BlobStatter, Scope } from '../registry/services.js';

/**
 * A statter with a cache in front of a slower one (Distribution's
 * cachedBlobStatter). Tiers compose by nesting: memory in front of Redis in
 * front of storage is `new CachedBlobStatter(memory, new CachedBlobStatter(redis, storage))`.
 *
 * A hit in the cache never reaches the backend. What the backend finds is
 * remembered. `setDescriptor` and `clear` go to every tier, so a commit or
 * an eviction is seen by the next `stat` at once.
 */
export class CachedBlobStatter implements BlobDescriptorService {
  constructor(
    private readonly cache: BlobDescriptorService,
    private readonly backend: BlobStatter | BlobDescriptorService,
  ) {}

  async stat(scope: Scope, digest: Digest): Promise<Descriptor | undefined> {
    const cached = await this.cache.stat(scope, digest);
    if (cached) return cached;
    const found = await this.backend.stat(scope, digest);
    if (found) await this.cache.setDescriptor(scope, digest, found);
    return found;
  }

  async setDescriptor(scope: Scope, digest: Digest, descriptor: Descriptor): Promise<void> {
    if (isDescriptorService(this.backend)) await this.backend.setDescriptor(scope, digest, descriptor);
    await this.cache.setDescriptor(scope, digest, descriptor);
  }

  async clear(scope: Scope, digest: Digest): Promise<void> {
    if (isDescriptorService(this.backend)) await this.backend.clear(scope, digest);
    await this.cache.clear(scope, digest);
  }
}

function isDescriptorService(s: BlobStatter | BlobDescriptorService): s is BlobDescriptorService {
  return typeof (s as BlobDescriptorService).setDescriptor === 'function';
}
