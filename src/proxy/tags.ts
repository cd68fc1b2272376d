import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import type { Descriptor } from '../registry/descriptor.js';
import { digestOf, splitDigest } from '../registry/digest.js';
import { RegistryError, UpstreamDown, UpstreamOffline, isUpstreamFailure } from '../registry/errors.js';
import { tagManifestMediaType } from '../registry/imageManifest.js';
import { DEFAULT_MANIFEST_ACCEPT, MANIFEST_MEDIA_TYPES } from '../registry/mediaTypes.js';
import type { Tag } from '../registry/names.js';
import { repositoryItemKey, type RepositoryRef, type TagRecord, type TagRecordService, type TagResolution, type TagService } from '../registry/services.js';
import { isFreshTagRecord, tagRecordAge } from '../registry/tagRecord.js';
import type { LocalTagStore } from '../storage/tags.js';
import type { RequestOptions } from '../upstream/client.js';
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
 * When the upstream fails (network, timeout, 5xx, 429, or known to be down)
 * the recorded tag answers, marked stale. Revalidating a tag that has a
 * record waits at most `revalidateTimeout`; within `staleWhileRevalidate`
 * past `tagMaxAge` it does not wait at all: the record answers and one
 * background revalidation per tag refreshes it.
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
    const settings = this.options.upstreams(repository.upstream).settings;
    // A fetchedAt in the future (a bundle's or Redis' claim) is as old as can be: never fresh, revalidated first.
    const age = (r: TagRecord): number => tagRecordAge(r, clock.now());
    const isFresh = (r: TagRecord): boolean => isFreshTagRecord(r, clock.now(), settings.tagMaxAgeMs);
    const record = await records.get(repository, tag, isFresh);
    if (record && isFresh(record)) {
      return { descriptor: record.descriptor, cache: 'hit', stale: false };
    }
    if (record && age(record) < settings.tagMaxAgeMs + settings.staleWhileRevalidateMs) {
      this.refresh(repository, tag, record, isFresh).catch((err: Error) => this.options.logger.debug(
        { upstream: repository.upstream, repository: repository.name, tag, err: err.message }, 'background revalidation of a tag failed'));
      return { descriptor: record.descriptor, cache: 'hit', stale: true };
    }
    let descriptor: Descriptor;
    try {
      descriptor = await this.refresh(repository, tag, record);
    } catch (err) {
      if (!record || !isUpstreamFailure(err)) throw err;
      if (age(record) > settings.maxStaleMs) throw err;
      // Offline is the normal state of an air-gapped mirror, and a down upstream was logged when it went down:
      // neither is news worth a warning per request.
      const level = err instanceof UpstreamOffline || err instanceof UpstreamDown ? 'debug' : 'warn';
      this.options.logger[level](
        { upstream: repository.upstream, repository: repository.name, tag, err: (err as Error).message },
        'upstream failed; serving the recorded tag (stale)',
      );
      return { descriptor: record.descriptor, cache: 'hit', stale: true };
    }
    return { descriptor, cache: record?.descriptor.digest === descriptor.digest ? 'hit' : 'miss', stale: false };
  }

  /**
   * One revalidation per tag at a time, recorded in every tier: each one
   * reaches Redis (one SET), which is what lets other replicas skip theirs.
   * With a record to fall back on, the upstream gets `revalidateTimeout`;
   * without one, the full timeouts. With `fresh` (a background
   * refresh, which no client waits for) the record is read again first: a
   * request that read the old one just before another refresh finished
   * must not ask the upstream a second time.
   */
  private refresh(repository: RepositoryRef, tag: Tag, record: TagRecord | undefined, fresh?: (r: TagRecord) => boolean): Promise<Descriptor> {
    // Keyed without Accept: every client's revalidation of a tag is the same one (asked with the full Accept).
    const key = repositoryItemKey(repository, tag);
    const deadlineMs = record ? this.options.upstreams(repository.upstream).settings.revalidateTimeoutMs : undefined;
    return this.flights.do(key, async () => {
      const latest = fresh && await this.options.records.get(repository, tag, fresh);
      if (latest && fresh!(latest)) return latest.descriptor;
      const descriptor = await this.revalidate(repository, tag, deadlineMs);
      await this.options.records.put(repository, tag, { descriptor, fetchedAt: this.options.clock.now() });
      return descriptor;
    }).then((flight) => flight.value);
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
  private async revalidate(repository: RepositoryRef, tag: Tag, deadlineMs: number | undefined): Promise<Descriptor> {
    const client = this.options.upstreams(repository.upstream);
    // One deadline for the whole revalidation, the GET after a HEAD that could not tell included.
    const clock = this.options.clock;
    const until = deadlineMs === undefined ? undefined : clock.now() + deadlineMs;
    const limits = (): RequestOptions | undefined => (until === undefined ? undefined : { deadlineMs: Math.max(1, until - clock.now()) });
    const head = await client.headManifest(repository.name, tag, DEFAULT_MANIFEST_ACCEPT, limits());
    if (!head) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { tag });
    if (head.digest && head.mediaType && MANIFEST_MEDIA_TYPES.has(head.mediaType) && head.size !== undefined) {
      return { digest: head.digest, mediaType: head.mediaType, size: head.size };
    }
    // The upstream cannot answer HEAD (or leaves out the digest): GET, and keep the manifest we paid for,
    // once it is known to be one: the bytes are stored and served under their own digest.
    const fetched = await client.getManifest(repository.name, tag, DEFAULT_MANIFEST_ACCEPT, limits());
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
