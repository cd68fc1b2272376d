import type { Descriptor } from '../registry/descriptor.js';
import type { Digest } from '../registry/digest.js';
import { decodeDescriptorRecord, encodeDescriptorRecord } from '../registry/descriptorRecord.js';
import type { BlobDescriptorService, RepositoryRef, Scope } from '../registry/services.js';
import type { RedisConnection } from './redis.js';

/**
 * The Redis key of a blob's descriptor (README "Redis"):
 *
 *   <prefix>blob:<digest>      the blob is in storage, and its size
 */
export function descriptorKey(prefix: string, digest: Digest): string {
  return `${prefix}blob:${digest}`;
}

/** `<upstream>/<name>`, e.g. `docker.io/library/alpine`. */
export function repositoryReference(repository: RepositoryRef): string {
  return `${repository.upstream}/${repository.name}`;
}

/**
 * The shared tier of the cached statter: descriptors in Redis, seen by every
 * replica. Values are JSON strings `{"size":<bytes>,"mediaType":"..."}` that
 * live for `keyTtl` after their last write.
 *
 * Only the global scope lives here ("this blob is in storage"). Whatever is
 * in Redis, anyone who can write to it could have written, so nothing read
 * here may grant access: whether a repository may use a blob or a manifest
 * (its link, its revision record) is answered by memory and storage only,
 * and a size read here never becomes a Content-Length (that comes from the
 * opened file). For the other scopes `stat` answers undefined and the
 * writes do nothing.
 *
 * Redis trouble is never an error here: `stat` answers `undefined` (the
 * caller asks storage), `setDescriptor` and `clear` do nothing. A `clear`
 * lost that way can leave a descriptor for a removed blob, which the blob
 * store notices when it opens the file (and clears again); `keyTtl` bounds it.
 */
export class RedisBlobDescriptorService implements BlobDescriptorService {
  constructor(private readonly redis: RedisConnection) {}

  async stat(scope: Scope, digest: Digest): Promise<Descriptor | undefined> {
    if (scope.kind !== 'global') return undefined;
    const value = await this.redis.run((c) => c.get(this.key(digest)), null);
    return value === null ? undefined : decodeDescriptorRecord(digest, value);
  }

  async setDescriptor(scope: Scope, digest: Digest, descriptor: Descriptor): Promise<void> {
    if (scope.kind !== 'global') return;
    const value = encodeDescriptorRecord(descriptor);
    await this.redis.run((c) => c.set(this.key(digest), value, 'PX', this.redis.settings.keyTtlMs), null);
  }

  async clear(scope: Scope, digest: Digest): Promise<void> {
    if (scope.kind !== 'global') return;
    await this.redis.run((c) => c.del(this.key(digest)), null);
  }

  private key(digest: Digest): string {
    return descriptorKey(this.redis.prefix, digest);
  }
}
