import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import type { Descriptor } from '../registry/descriptor.js';
import { digestOf, splitDigest } from '../registry/digest.js';
import { RegistryError, UpstreamOffline, isUpstreamFailure } from '../registry/errors.js';
import { tagManifestMediaType } from '../registry/imageManifest.js';
import { DEFAULT_MANIFEST_ACCEPT, MANIFEST_MEDIA_TYPES } from '../registry/mediaTypes.js';
import type { Tag } from '../registry/names.js';
import { repositoryItemKey, type RepositoryRef, type TagRecord, type TagRecordService, type TagResolution, type TagService } from '../registry/services.js';
import { isFreshTagRecord } from '../registry/tagRecord.js';
import type { LocalTagStore } from '../storage/tags.js';
import type { UpstreamLookup } from './blobs.js';
import type { ProxyManifestStore } from './manifests.js';
import { SingleFlight } from './singleFlight.js';
import { UpstreamTagLists, type TagListLimits } from './tagList.js';

export interface ProxyTagServiceOptions {
  /** Every tag tier: memory → Redis (with replicas) → storage, composed by `CachedTagRecords`. */
  readonly records: TagRecordService;
  /** The storage tier, for the tags recorded in a repository. */
  readonly local: LocalTagStore;
  readonly manifests: ProxyManifestStore;
  readonly upstreams: UpstreamLookup;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Bounds on upstream tag lists; `DEFAULT_TAG_LIST_LIMITS` by default. */
  readonly tagListLimits?: TagListLimits;
}

/**
 * The proxy tag service: tag → descriptor by an upstream HEAD (which Docker
 * Hub does not count against the rate limit), recorded in every tag tier. A
 * record younger than the upstream's `tagMaxAge` answers without asking.
 * When the upstream fails (network, timeout, 5xx, 429) the recorded tag
 * answers, marked stale.
 *
 * The upstream is always asked with the full list of manifest types we
 * serve, whatever the client accepts, so that a tag's record (and its 404)
 * is the same for every client; one client's narrow Accept can neither
 * make a tag unknown for the others nor swap an index for one platform's
 * image. A client whose Accept leaves out the recorded type gets
 * MANIFEST_UNKNOWN, as from Distribution, never another document.
 */
export class ProxyTagService implements TagService {
  private readonly flights = new SingleFlight<Descriptor>();
  private readonly tagLists: UpstreamTagLists;

  constructor(private readonly options: ProxyTagServiceOptions) {
    this.tagLists = new UpstreamTagLists({ clock: options.clock, logger: options.logger, limits: options.tagListLimits });
  }

  async resolve(repository: RepositoryRef, tag: Tag, accept: readonly string[]): Promise<TagResolution> {
    const resolution = await this.resolveForAnyone(repository, tag);
    if (!accept.includes(resolution.descriptor.mediaType)) {
      throw new RegistryError('MANIFEST_UNKNOWN', `the tag is a ${resolution.descriptor.mediaType}, which the request does not accept`, { tag });
    }
    return resolution;
  }

  /** The tag's record, fresh or revalidated, the same whoever asks. */
  private async resolveForAnyone(repository: RepositoryRef, tag: Tag): Promise<TagResolution> {
    const { clock, records } = this.options;
    const client = this.options.upstreams(repository.upstream);
    const isFresh = (r: TagRecord): boolean => isFreshTagRecord(r, clock.now(), client.settings.tagMaxAgeMs);
    const record = await records.get(repository, tag, isFresh);
    if (record && isFresh(record)) {
      return { descriptor: record.descriptor, cache: 'hit', stale: false };
    }
    let descriptor: Descriptor;
    try {
      descriptor = (await this.flights.do(repositoryItemKey(repository, tag), () => this.revalidate(repository, tag))).value;
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
    let upstream: readonly string[] | undefined;
    try {
      upstream = await this.listUpstream(repository);
    } catch (err) {
      if (!isUpstreamFailure(err) || local.length === 0) throw err;
    }
    if (upstream === undefined && local.length === 0) {
      throw new RegistryError('NAME_UNKNOWN', 'repository name not known to registry', { name: repository.name });
    }
    // The local tags merged in: tags recorded here stay listed when the upstream forgot them or cut its list.
    const all = new Set(local);
    for (const tag of upstream ?? []) all.add(tag);
    return [...all].sort();
  }

  private async listUpstream(repository: RepositoryRef): Promise<readonly string[] | undefined> {
    return (await this.tagLists.list(this.options.upstreams(repository.upstream), repository))?.tags;
  }

  /** Asks the upstream what the tag points to now, with the full Accept: HEAD, or GET if HEAD cannot tell. */
  private async revalidate(repository: RepositoryRef, tag: Tag): Promise<Descriptor> {
    const client = this.options.upstreams(repository.upstream);
    const head = await client.headManifest(repository.name, tag, DEFAULT_MANIFEST_ACCEPT);
    if (!head) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { tag });
    if (head.digest && head.mediaType && MANIFEST_MEDIA_TYPES.has(head.mediaType) && head.size !== undefined) {
      return { digest: head.digest, mediaType: head.mediaType, size: head.size };
    }
    // The upstream cannot answer HEAD (or leaves out the digest): GET, and keep the manifest we paid for,
    // once it is known to be one: the bytes are stored and served under their own digest.
    const fetched = await client.getManifest(repository.name, tag, DEFAULT_MANIFEST_ACCEPT);
    if (!fetched) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { tag });
    const mediaType = tagManifestMediaType(fetched.mediaType, fetched.body);
    if (mediaType === undefined) {
      throw new RegistryError('UPSTREAM_INVALID', `upstream ${repository.upstream} answered the tag with something that is not a manifest`, { tag });
    }
    const declared = fetched.digestHeader;
    if (declared && digestOf(fetched.body, splitDigest(declared).algorithm) !== declared) {
      throw new RegistryError('UPSTREAM_INVALID', 'upstream sent a manifest that does not match its digest', { tag });
    }
    const digest = digestOf(fetched.body);
    await this.options.manifests.store(repository, { digest, mediaType, body: fetched.body });
    return { digest, mediaType, size: fetched.body.length };
  }
}
