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

export interface ProxyManifestStoreOptions {
  readonly local: LocalManifestStore;
  readonly upstreams: UpstreamLookup;
}

/**
 * The proxy manifest store: local first, by digest; on a miss one upstream
 * GET by digest (never by tag), verified against the digest before it is
 * stored, bit-exact, with its media type.
 */
export class ProxyManifestStore implements ManifestService {
  private readonly flights = new SingleFlight<Manifest>();

  private readonly local: LocalManifestStore;
  private readonly upstreams: UpstreamLookup;

  constructor(options: ProxyManifestStoreOptions) {
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
    const { value, shared } = await this.flights.do(key, () => this.fetch(repository, digest, accept));
    return { manifest: value, cache: shared ? 'coalesced' : 'miss' };
  }

  /**
   * Stores a manifest the tag service fetched by tag. Its digest was computed
   * from these very bytes, so it names them; nothing else needs checking.
   */
  async store(repository: RepositoryRef, manifest: Manifest): Promise<void> {
    await this.local.put(repository, manifest);
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
