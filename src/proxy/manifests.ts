import { digestOf, splitDigest, type Digest } from '../registry/digest.js';
import { RegistryError } from '../registry/errors.js';
import { manifestMediaType } from '../registry/imageManifest.js';
import { DEFAULT_MANIFEST_ACCEPT } from '../registry/mediaTypes.js';
import { repositoryItemKey, type Manifest, type ManifestResult, type ManifestService, type RepositoryRef, type StatResult } from '../registry/services.js';
import type { LocalManifestStore } from '../storage/manifests.js';
import type { UpstreamLookup } from './blobs.js';
import { SingleFlight } from './singleFlight.js';

/**
 * By digest, ask for every type the client accepts and every type we know:
 * a digest names one byte sequence, so a wider Accept can never change what
 * comes back, while a narrow one could make an upstream convert or refuse.
 */
function acceptForDigest(accept: readonly string[]): string[] {
  return [...new Set([...accept, ...DEFAULT_MANIFEST_ACCEPT])];
}

/** What `ManifestFetchCoordinator.once` found: the manifest, and whether this process fetched it. */
export interface OnceResult {
  readonly manifest: Manifest;
  /** False when another replica fetched it and this one found it in the shared storage. */
  readonly fetched: boolean;
}

/**
 * With replicas: one upstream fetch of a manifest by digest across the
 * processes on one storage root. `ProxyManifestStore` asks it once per
 * digest and repository in this process; later requests join that flight.
 */
export interface ManifestFetchCoordinator {
  /**
   * Runs `fetch` (which stores what it fetched) in one replica at a time for
   * this repository and digest; the others wait until `find` sees the result
   * in the shared storage, or take over when that replica gave up.
   */
  once(repository: RepositoryRef, digest: Digest, fetch: () => Promise<Manifest>, find: () => Promise<Manifest | undefined>): Promise<OnceResult>;
}

export interface ProxyManifestStoreOptions {
  readonly local: LocalManifestStore;
  readonly upstreams: UpstreamLookup;
  /** With Redis: replicas on this storage root fetch each manifest once between them. */
  readonly coordinator?: ManifestFetchCoordinator;
}

/**
 * The proxy manifest store: local first, by digest; on a miss one upstream
 * GET by digest (never by tag), verified against the digest before it is
 * stored, bit-exact, with its media type. One fetch per digest at a time
 * in this process, and with replicas across them.
 */
export class ProxyManifestStore implements ManifestService {
  private readonly flights = new SingleFlight<OnceResult>();
  private readonly local: LocalManifestStore;
  private readonly upstreams: UpstreamLookup;

  constructor(private readonly options: ProxyManifestStoreOptions) {
    this.local = options.local;
    this.upstreams = options.upstreams;
  }

  async stat(repository: RepositoryRef, digest: Digest, accept: readonly string[]): Promise<StatResult | undefined> {
    const local = await this.local.stat(repository, digest);
    if (local) return local;
    const head = await this.upstreams(repository.upstream).headManifest(repository.name, digest, acceptForDigest(accept));
    if (!head) return undefined;
    if (head.size === undefined || head.mediaType === undefined) {
      const { manifest, cache } = await this.get(repository, digest, accept);
      return { digest, size: manifest.body.length, mediaType: manifest.mediaType, cache };
    }
    return { digest, size: head.size, mediaType: head.mediaType, cache: 'miss' };
  }

  async get(repository: RepositoryRef, digest: Digest, accept: readonly string[]): Promise<ManifestResult> {
    const local = await this.local.find(repository, digest);
    if (local) return local;
    const key = repositoryItemKey(repository, digest);
    const { value, shared } = await this.flights.do(key, () => this.fetchOnce(repository, digest, accept));
    return { manifest: value.manifest, cache: shared || !value.fetched ? 'coalesced' : 'miss' };
  }

  /**
   * Stores a manifest the tag service fetched by tag. Its digest was computed
   * from these very bytes, so it names them; nothing else needs checking.
   */
  async store(repository: RepositoryRef, manifest: Manifest): Promise<void> {
    await this.local.put(repository, manifest);
  }

  private async fetchOnce(repository: RepositoryRef, digest: Digest, accept: readonly string[]): Promise<OnceResult> {
    const fetch = (): Promise<Manifest> => this.fetch(repository, digest, accept);
    const { coordinator } = this.options;
    if (!coordinator) return { manifest: await fetch(), fetched: true };
    return coordinator.once(repository, digest, fetch, async () => (await this.local.find(repository, digest))?.manifest);
  }

  private async fetch(repository: RepositoryRef, digest: Digest, accept: readonly string[]): Promise<Manifest> {
    const fetched = await this.upstreams(repository.upstream).getManifest(repository.name, digest, acceptForDigest(accept));
    if (!fetched) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { digest });
    const actual = digestOf(fetched.body, splitDigest(digest).algorithm);
    if (actual !== digest) {
      throw new RegistryError('UPSTREAM_INVALID', 'upstream sent a manifest that does not match its digest', { expected: digest, actual });
    }
    const manifest: Manifest = { digest, mediaType: manifestMediaType(fetched.mediaType, fetched.body), body: fetched.body };
    await this.local.put(repository, manifest);
    return manifest;
  }
}
