import type { Descriptor } from '../registry/descriptor.js';
import type { Digest } from '../registry/digest.js';
import { decodeDescriptorRecord, encodeDescriptorRecord } from '../registry/descriptorRecord.js';
import type { BlobDescriptorService, RepositoryRef, Scope } from '../registry/services.js';
import type { RedisConnection } from './redis.js';

/**
 * The Redis key of a descriptor (README "Redis"):
 *
 *   <prefix>blob:<digest>                       the blob is in storage
 *   <prefix>repo:<upstream>/<name>@<digest>     ...and linked into that repository
 *   <prefix>manifest:<upstream>/<name>@<digest> a manifest revision of that repository
 *
 * `<upstream>/<name>@<digest>` is the usual image reference form; a name can
 * contain neither `@` nor `:`, so the key cannot be read two ways.
 */
export function descriptorKey(prefix: string, scope: Scope, digest: Digest): string {
  if (scope.kind === 'global') return `${prefix}blob:${digest}`;
  return `${prefix}${scope.kind === 'repository' ? 'repo' : 'manifest'}:${repositoryReference(scope.repository)}@${digest}`;
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
 * Redis trouble is never an error here: `stat` answers `undefined` (the
 * caller asks storage), `setDescriptor` and `clear` do nothing. A `clear`
 * lost that way can leave a descriptor for a removed blob, which the blob
 * store notices when it opens the file (and clears again); `keyTtl` bounds it.
 */
export class RedisBlobDescriptorService implements BlobDescriptorService {
  constructor(private readonly redis: RedisConnection) {}

  async stat(scope: Scope, digest: Digest): Promise<Descriptor | undefined> {
    const value = await this.redis.run((c) => c.get(this.key(scope, digest)), null);
    return value === null ? undefined : decodeDescriptorRecord(digest, value);
  }

  async setDescriptor(scope: Scope, digest: Digest, descriptor: Descriptor): Promise<void> {
    const value = encodeDescriptorRecord(descriptor);
    await this.redis.run((c) => c.set(this.key(scope, digest), value, 'PX', this.redis.settings.keyTtlMs), null);
  }

  async clear(scope: Scope, digest: Digest): Promise<void> {
    await this.redis.run((c) => c.del(this.key(scope, digest)), null);
  }

  private key(scope: Scope, digest: Digest): string {
    return descriptorKey(this.redis.prefix, scope, digest);
  }
}
