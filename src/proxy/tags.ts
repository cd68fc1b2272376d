import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Descriptor } from '../registry/descriptor.js';
import { digestOf } from '../registry/digest.js';
import { RegistryError, UpstreamOffline, isUpstreamFailure } from '../registry/errors.js';
import type { Tag } from '../registry/names.js';
import type { RepositoryRef, TagRecord, TagResolution, TagService } from '../registry/services.js';
import type { LocalTagStore } from '../storage/tags.js';
import type { UpstreamLookup } from './blobs.js';
import { manifestMediaType, type ProxyManifestStore } from './manifests.js';
import { SingleFlight } from './singleFlight.js';

/** A tag record in memory, with when it was last written to storage. */
interface KnownTag extends TagRecord {
  readonly persistedAt: number;
}

/** Storage is rewritten for an unchanged tag at most this often: freshness lives in memory. */
const PERSIST_INTERVAL_MS = 60_000;
/** Upstream tag-list pages followed at most. */
const MAX_TAG_PAGES = 20;

/**
 * Tag records shared by replicas (Redis): between memory and storage, so a tag
 * one replica just resolved is fresh for all. Never throws: trouble is a miss.
 */
export interface SharedTagRecords {
  get(repository: RepositoryRef, tag: Tag): Promise<TagRecord | undefined>;
  put(repository: RepositoryRef, tag: Tag, record: TagRecord): Promise<void>;
}

export interface ProxyTagServiceOptions {
  readonly local: LocalTagStore;
  /** The Redis tier; without it, memory then storage. */
  readonly shared?: SharedTagRecords;
  readonly manifests: ProxyManifestStore;
  readonly upstreams: UpstreamLookup;
  readonly logger: Logger;
  readonly memoryEntries: number;
  readonly now?: () => number;
}

/**
 * The proxy tag service: tag → descriptor by an upstream HEAD (which Docker
 * Hub does not count against the rate limit), recorded locally. A record
 * younger than the upstream's `tagMaxAge` answers without asking. When the
 * upstream fails (network, timeout, 5xx, 429) the recorded tag answers,
 * marked stale.
 */
export class ProxyTagService implements TagService {
  private readonly known: LRUCache<string, KnownTag>;
  private readonly flights = new SingleFlight<Descriptor>();
  private readonly now: () => number;

  constructor(private readonly options: ProxyTagServiceOptions) {
    this.known = new LRUCache({ max: Math.max(1, options.memoryEntries) });
    this.now = options.now ?? Date.now;
  }

  async resolve(repository: RepositoryRef, tag: Tag, accept: readonly string[]): Promise<TagResolution> {
    const key = `${repository.upstream}\0${repository.name}\0${tag}`;
    const client = this.options.upstreams(repository.upstream);
    const isFresh = (r: KnownTag | undefined): boolean => r !== undefined && this.now() - r.fetchedAt < client.settings.tagMaxAgeMs;
    let record = this.known.get(key);
    // A fresh record in memory answers with no I/O; otherwise another replica may have asked the upstream lately.
    if (!isFresh(record)) record = await this.loadShared(key, repository, tag, record) ?? record;
    record ??= await this.load(key, repository, tag);
    if (record && isFresh(record)) {
      return { descriptor: record.descriptor, cache: 'hit', stale: false };
    }
    let descriptor: Descriptor;
    try {
      const flight = await this.flights.do(`${key}\0${accept.join(',')}`, () => this.revalidate(repository, tag, accept));
      descriptor = flight.value;
    } catch (err) {
      if (!record || !isUpstreamFailure(err)) throw err;
      if (this.now() - record.fetchedAt > client.settings.maxStaleMs) throw err;
      // Offline is the normal state of an air-gapped mirror, not news worth a warning per request.
      const level = err instanceof UpstreamOffline ? 'debug' : 'warn';
      this.options.logger[level](
        { upstream: repository.upstream, repository: repository.name, tag, err: (err as Error).message },
        'upstream failed; serving the recorded tag (stale)',
      );
      return { descriptor: record.descriptor, cache: 'hit', stale: true };
    }
    await this.remember(key, repository, tag, descriptor, record);
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

  /** The shared record, when it is newer than what this process knows. */
  private async loadShared(key: string, repository: RepositoryRef, tag: Tag, known: KnownTag | undefined): Promise<KnownTag | undefined> {
    const shared = await this.options.shared?.get(repository, tag);
    if (!shared || (known && shared.fetchedAt <= known.fetchedAt)) return undefined;
    // The replica that wrote it also wrote storage, if its own rules said so: count that as persisted.
    const record = { ...shared, persistedAt: known?.persistedAt ?? shared.fetchedAt };
    this.known.set(key, record);
    return record;
  }

  private async load(key: string, repository: RepositoryRef, tag: Tag): Promise<KnownTag | undefined> {
    const stored = await this.options.local.get(repository, tag);
    if (!stored) return undefined;
    const known = { ...stored, persistedAt: stored.fetchedAt };
    this.known.set(key, known);
    return known;
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

  private async remember(key: string, repository: RepositoryRef, tag: Tag, descriptor: Descriptor, previous: KnownTag | undefined): Promise<void> {
    const now = this.now();
    const changed = previous?.descriptor.digest !== descriptor.digest;
    const persist = changed || now - (previous?.persistedAt ?? 0) >= PERSIST_INTERVAL_MS;
    this.known.set(key, { descriptor, fetchedAt: now, persistedAt: persist ? now : previous!.persistedAt });
    // Every revalidation goes to Redis (one SET): that is what lets the other replicas skip theirs.
    await this.options.shared?.put(repository, tag, { descriptor, fetchedAt: now });
    if (persist) await this.options.local.put(repository, tag, { descriptor, fetchedAt: now });
  }
}
