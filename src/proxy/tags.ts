import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import type { Descriptor } from '../registry/descriptor.js';
import { digestOf } from '../registry/digest.js';
import { RegistryError, UpstreamDown, UpstreamOffline, isUpstreamFailure } from '../registry/errors.js';
import { manifestMediaType } from '../registry/imageManifest.js';
import type { Tag } from '../registry/names.js';
import { repositoryItemKey, type RepositoryRef, type TagRecord, type TagRecordService, type TagResolution, type TagService } from '../registry/services.js';
import type { LocalTagStore } from '../storage/tags.js';
import type { RequestOptions } from '../upstream/client.js';
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
 * When the upstream fails (network, timeout, 5xx, 429, or known to be down)
 * the recorded tag answers, marked stale. Revalidating a tag that has a
 * record waits at most `revalidateTimeout`; within `staleWhileRevalidate`
 * past `tagMaxAge` it does not wait at all: the record answers and one
 * background revalidation per tag refreshes it.
 */
export class ProxyTagService implements TagService {
  private readonly flights = new SingleFlight<Descriptor>();

  constructor(private readonly options: ProxyTagServiceOptions) {}

  async resolve(repository: RepositoryRef, tag: Tag, accept: readonly string[]): Promise<TagResolution> {
    const { clock, records } = this.options;
    const settings = this.options.upstreams(repository.upstream).settings;
    const age = (r: TagRecord): number => clock.now() - r.fetchedAt;
    const isFresh = (r: TagRecord): boolean => age(r) < settings.tagMaxAgeMs;
    const record = await records.get(repository, tag, isFresh);
    if (record && isFresh(record)) {
      return { descriptor: record.descriptor, cache: 'hit', stale: false };
    }
    if (record && age(record) < settings.tagMaxAgeMs + settings.staleWhileRevalidateMs) {
      this.refresh(repository, tag, accept, record, isFresh).catch((err: Error) => this.options.logger.debug(
        { upstream: repository.upstream, repository: repository.name, tag, err: err.message }, 'background revalidation of a tag failed'));
      return { descriptor: record.descriptor, cache: 'hit', stale: true };
    }
    let descriptor: Descriptor;
    try {
      descriptor = await this.refresh(repository, tag, accept, record);
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
  private refresh(
    repository: RepositoryRef, tag: Tag, accept: readonly string[], record: TagRecord | undefined, fresh?: (r: TagRecord) => boolean,
  ): Promise<Descriptor> {
    const key = repositoryItemKey(repository, `${tag}\0${accept.join(',')}`);
    const deadlineMs = record ? this.options.upstreams(repository.upstream).settings.revalidateTimeoutMs : undefined;
    return this.flights.do(key, async () => {
      const latest = fresh && await this.options.records.get(repository, tag, fresh);
      if (latest && fresh!(latest)) return latest.descriptor;
      const descriptor = await this.revalidate(repository, tag, accept, deadlineMs);
      await this.options.records.put(repository, tag, { descriptor, fetchedAt: this.options.clock.now() });
      return descriptor;
    }).then((flight) => flight.value);
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
  private async revalidate(repository: RepositoryRef, tag: Tag, accept: readonly string[], deadlineMs: number | undefined): Promise<Descriptor> {
    const client = this.options.upstreams(repository.upstream);
    // One deadline for the whole revalidation, the GET after a HEAD that could not tell included.
    const clock = this.options.clock;
    const until = deadlineMs === undefined ? undefined : clock.now() + deadlineMs;
    const limits = (): RequestOptions | undefined => (until === undefined ? undefined : { deadlineMs: Math.max(1, until - clock.now()) });
    const head = await client.headManifest(repository.name, tag, accept, limits());
    if (!head) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { tag });
    if (head.digest && head.mediaType && head.size !== undefined) {
      return { digest: head.digest, mediaType: head.mediaType, size: head.size };
    }
    // The upstream cannot answer HEAD (or leaves out the digest): GET, and keep the manifest we paid for.
    const fetched = await client.getManifest(repository.name, tag, accept, limits());
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
