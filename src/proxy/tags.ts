import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import type { Descriptor } from '../registry/descriptor.js';
import { digestOf } from '../registry/digest.js';
import { RegistryError, UpstreamOffline, isUpstreamFailure } from '../registry/errors.js';
import { manifestMediaType } from '../registry/imageManifest.js';
import type { Tag } from '../registry/names.js';
import { repositoryItemKey, type RepositoryRef, type TagRecord, type TagRecordService, type TagResolution, type TagService } from '../registry/services.js';
import type { LocalTagStore } from '../storage/tags.js';
import type { UpstreamLookup } from './blobs.js';
import type { ProxyManifestStore } from './manifests.js';
import { SingleFlight } from './singleFlight.js';

/** Upstream tag-list pages followed at most. */
const MAX_TAG_PAGES = 20;

export interface ProxyTagServiceOptions {
  /** Every tag tier: memory → Redis (with replicas) → storage, composed by `CachedTagRecords`. */
  readonly records: TagRecordService;
  /** The storage tier, for the tags recorded in a repository. */
  readonly local: LocalTagStore;
  readonly manifests: ProxyManifestStore;
  readonly upstreams: UpstreamLookup;
  readonly logger: Logger;
  readonly clock: Clock;
}

/**
 * The proxy tag service: tag → descriptor by an upstream HEAD (which Docker
 * Hub does not count against the rate limit), recorded in every tag tier. A
 * record younger than the upstream's `tagMaxAge` answers without asking.
 * When the upstream fails (network, timeout, 5xx, 429) the recorded tag
 * answers, marked stale.
 */
export class ProxyTagService implements TagService {
  private readonly flights = new SingleFlight<Descriptor>();

  constructor(private readonly options: ProxyTagServiceOptions) {}

  async resolve(repository: RepositoryRef, tag: Tag, accept: readonly string[]): Promise<TagResolution> {
    const { clock, records } = this.options;
    const client = this.options.upstreams(repository.upstream);
    const isFresh = (r: TagRecord): boolean => clock.now() - r.fetchedAt < client.settings.tagMaxAgeMs;
    const record = await records.get(repository, tag, isFresh);
    if (record && isFresh(record)) {
      return { descriptor: record.descriptor, cache: 'hit', stale: false };
    }
    let descriptor: Descriptor;
    try {
      const key = repositoryItemKey(repository, `${tag}\0${accept.join(',')}`);
      descriptor = (await this.flights.do(key, () => this.revalidate(repository, tag, accept))).value;
    } catch (err) {
      if (!record || !isUpstreamFailure(err)) throw err;
      if (clock.now() - record.fetchedAt > client.settings.maxStaleMs) throw err;
      // Offline is the normal state of an air-gapped mirror, not news worth a warning per request.
      const level = err instanceof UpstreamOffline ? 'debug' : 'warn';
      this.options.logger[level](
        { upstream: repository.upstream, repository: repository.name, tag, err: (err as Error).message },
        'upstream failed; serving the recorded tag (stale)',
      );
      return { descriptor: record.descriptor, cache: 'hit', stale: true };
    }
    // Every revalidation reaches every tier (Redis: one SET): that is what lets other replicas skip theirs.
    await records.put(repository, tag, { descriptor, fetchedAt: clock.now() });
    return { descriptor, cache: record?.descriptor.digest === descriptor.digest ? 'hit' : 'miss', stale: false };
  }

  async list(repository: RepositoryRef): Promise<readonly string[]> {
    const local = await this.options.local.list(repository);
    let upstream: string[] | undefined;
    try {
      upstream = await this.listUpstream(repository);
    } catch (err) {
      if (!isUpstreamFailure(err) || local.length === 0) throw err;
    }
    if (upstream === undefined && local.length === 0) {
      throw new RegistryError('NAME_UNKNOWN', 'repository name not known to registry', { name: repository.name });
    }
    return [...new Set([...local, ...(upstream ?? [])])].sort();
  }

  private async listUpstream(repository: RepositoryRef): Promise<string[] | undefined> {
    const client = this.options.upstreams(repository.upstream);
    const tags: string[] = [];
    let page: string | undefined;
    for (let i = 0; i < MAX_TAG_PAGES; i++) {
      const result = await client.listTags(repository.name, page);
      if (!result) return i === 0 ? undefined : tags;
      tags.push(...result.tags);
      if (!result.next) break;
      page = result.next;
    }
    return tags;
  }

  /** Asks the upstream what the tag points to now: HEAD, or GET if HEAD cannot tell. */
  private async revalidate(repository: RepositoryRef, tag: Tag, accept: readonly string[]): Promise<Descriptor> {
    const client = this.options.upstreams(repository.upstream);
    const head = await client.headManifest(repository.name, tag, accept);
    if (!head) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { tag });
    if (head.digest && head.mediaType && head.size !== undefined) {
      return { digest: head.digest, mediaType: head.mediaType, size: head.size };
    }
    // The upstream cannot answer HEAD (or leaves out the digest): GET, and keep the manifest we paid for.
    const fetched = await client.getManifest(repository.name, tag, accept);
    if (!fetched) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { tag });
    const digest = digestOf(fetched.body);
    if (fetched.digestHeader && fetched.digestHeader !== digest && fetched.digestHeader.startsWith('sha256:')) {
      throw new RegistryError('UPSTREAM_INVALID', 'upstream sent a manifest that does not match its digest', { tag });
    }
    const mediaType = manifestMediaType(fetched.mediaType, fetched.body);
    await this.options.manifests.store(repository, { digest, mediaType, body: fetched.body });
    return { digest, mediaType, size: fetched.body.length };
  }
}
