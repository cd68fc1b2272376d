import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import type { Digest } from '../registry/digest.js';
import { RegistryError, UpstreamOffline, isUpstreamFailure } from '../registry/errors.js';
import { DEFAULT_MANIFEST_ACCEPT, MEDIA_TYPES } from '../registry/mediaTypes.js';
import {
  readReferrersIndex, referrersTag, type ReferrerDescriptor, type ReferrersRecord, type ReferrersSource,
} from '../registry/referrers.js';
import {
  repositoryItemKey,
  type ManifestService, type ReferrersResult, type ReferrersService, type RepositoryRef, type TagResolution, type TagService,
} from '../registry/services.js';
import type { LocalReferrersStore } from '../storage/referrers.js';
import type { UpstreamLookup } from './blobs.js';
import { SingleFlight } from './singleFlight.js';

export interface ProxyReferrersServiceOptions {
  readonly local: LocalReferrersStore;
  /** The proxy tag service: the referrers tag is resolved like any tag. */
  readonly tags: TagService;
  /** The proxy manifest store: the index under the referrers tag is fetched by digest and verified. */
  readonly manifests: ManifestService;
  readonly upstreams: UpstreamLookup;
  readonly logger: Logger;
  readonly clock: Clock;
}

/** What one revalidation learned. */
interface FetchedList {
  readonly referrers: readonly ReferrerDescriptor[];
  readonly source: ReferrersSource;
  /** The referrers tag answered from its record because the upstream failed half way. */
  readonly stale: boolean;
}

/**
 * The proxy referrers service: the referrers of a subject digest, cached per
 * subject in storage and revalidated by the tag freshness policy (a
 * signature can be added at any time, like a tag can move): a record younger
 * than the upstream's `tagMaxAge` answers without asking. Asked, the
 * upstream's referrers API answers; an upstream without one (404) is read
 * through the referrers tag schema, `sha256-<hex>`, resolved like any tag
 * and its index fetched by digest. When the upstream fails, the recorded
 * list answers, marked stale (within `maxStale`).
 *
 * The list is only a list: every referrer it names is fetched by digest and
 * verified by the manifest store when a client first asks for it.
 */
export class ProxyReferrersService implements ReferrersService {
  private readonly flights = new SingleFlight<FetchedList>();

  constructor(private readonly options: ProxyReferrersServiceOptions) {}

  async list(repository: RepositoryRef, subject: Digest): Promise<ReferrersResult> {
    const { clock, local } = this.options;
    const settings = this.options.upstreams(repository.upstream).settings;
    const record = await local.get(repository, subject);
    if (record && clock.now() - record.fetchedAt < settings.tagMaxAgeMs) {
      return { referrers: record.referrers, cache: 'hit', stale: false };
    }
    let fetched: FetchedList;
    try {
      fetched = (await this.flights.do(repositoryItemKey(repository, subject), () => this.fetch(repository, subject))).value;
    } catch (err) {
      if (!record || !isUpstreamFailure(err) || clock.now() - record.fetchedAt > settings.maxStaleMs) throw err;
      // Offline is the normal state of an air-gapped mirror, not news worth a warning per request.
      const level = err instanceof UpstreamOffline ? 'debug' : 'warn';
      this.options.logger[level](
        { upstream: repository.upstream, repository: repository.name, subject, err: err.message },
        'upstream failed; serving the recorded referrers (stale)',
      );
      return { referrers: record.referrers, cache: 'hit', stale: true };
    }
    const cache = record && sameDigests(record.referrers, fetched.referrers) ? 'hit' : 'miss';
    if (fetched.stale) return { referrers: fetched.referrers, cache, stale: true };
    await local.put(repository, subject, { referrers: fetched.referrers, fetchedAt: clock.now(), source: fetched.source });
    return { referrers: fetched.referrers, cache, stale: false };
  }

  /** Asks the upstream: its referrers API, or the referrers tag when it has none. */
  private async fetch(repository: RepositoryRef, subject: Digest): Promise<FetchedList> {
    const listed = await this.options.upstreams(repository.upstream).getReferrers(repository.name, subject);
    if (listed) return { referrers: listed, source: 'api', stale: false };
    return this.fromReferrersTag(repository, subject);
  }

  /**
   * The referrers tag schema: the index a pushing client keeps under
   * `sha256-<hex>`. No such tag means no referrers yet; anything there but
   * an image index means none either (the spec's rule for clients).
   */
  private async fromReferrersTag(repository: RepositoryRef, subject: Digest): Promise<FetchedList> {
    let resolution: TagResolution;
    try {
      resolution = await this.options.tags.resolve(repository, referrersTag(subject), DEFAULT_MANIFEST_ACCEPT);
    } catch (err) {
      if (err instanceof RegistryError && err.code === 'MANIFEST_UNKNOWN') return { referrers: [], source: 'tag', stale: false };
      throw err;
    }
    const { manifest } = await this.options.manifests.get(repository, resolution.descriptor.digest, [MEDIA_TYPES.ociIndex]);
    const referrers = manifest.mediaType === MEDIA_TYPES.ociIndex ? readReferrersIndex(manifest.body) ?? [] : [];
    return { referrers, source: 'tag', stale: resolution.stale };
  }
}

function sameDigests(a: ReferrersRecord['referrers'], b: readonly ReferrerDescriptor[]): boolean {
  return a.length === b.length && a.every((r, i) => r.digest === b[i]!.digest);
}
