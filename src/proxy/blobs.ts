import type { Logger } from 'pino';
import type { Descriptor } from '../registry/descriptor.js';
import { OCTET_STREAM } from '../registry/descriptor.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { RegistryError, UpstreamUnavailable } from '../registry/errors.js';
import type { BlobHandle, BlobStore, CacheOutcome, RepositoryRef } from '../registry/services.js';
import type { LocalBlobStore } from '../storage/blobs.js';
import type { StorageDriver } from '../storage/driver.js';
import { blobDataPath } from '../storage/layout.js';
import type { UpstreamClient } from '../upstream/client.js';
import { BlobFill } from './fill.js';
import type { FillSource, ReplicaCoordinator, UploadFactory } from './replicas/coordinator.js';

export type UpstreamLookup = (upstream: string) => UpstreamClient;

function repoKey(r: RepositoryRef): string {
  return `${r.upstream}\0${r.name}`;
}

interface InFlight {
  /**
   * Resolves once the upstream answered with headers (or, with replicas, once
   * another replica's fill is found to follow); rejects on 404 or failure.
   */
  readonly started: Promise<FillSource>;
  /** Repositories the upstream confirmed this blob for: all are linked on commit. */
  readonly repositories: Map<string, RepositoryRef>;
}

/**
 * The proxy blob store: local storage first; on a miss, exactly one upstream
 * GET per digest in this process, however many clients and repositories ask.
 *
 * A blob is served under a repository only if it is linked there, or the
 * upstream confirms the repository has it: bytes are shared by digest,
 * access is not.
 */
export class ProxyBlobStore implements BlobStore {
  private readonly fills = new Map<Digest, InFlight>();

  constructor(
    private readonly local: LocalBlobStore,
    private readonly driver: StorageDriver,
    private readonly upstreams: UpstreamLookup,
    private readonly logger: Logger,
    /** With Redis: replicas on this storage root fetch each cold blob once between them. */
    private readonly replicas?: ReplicaCoordinator,
  ) {}

  async stat(repository: RepositoryRef, digest: Digest): Promise<Descriptor | undefined> {
    const local = await this.local.stat(repository, digest);
    if (local) return local;
    const inFlight = this.fills.get(digest);
    if (inFlight?.repositories.has(repoKey(repository))) {
      const fill = await inFlight.started.catch(() => undefined);
      if (fill?.size !== undefined) return { digest, size: fill.size, mediaType: OCTET_STREAM };
    }
    // A HEAD on a miss costs one upstream HEAD and stores nothing.
    const head = await this.upstreams(repository.upstream).headBlob(repository.name, digest);
    if (!head) return undefined;
    const global = await this.local.statGlobal(digest);
    if (global) {
      await this.local.link(repository, global);
      return global;
    }
    if (head.size === undefined) {
      throw new RegistryError('UPSTREAM_INVALID', `upstream ${repository.upstream} answered a blob HEAD without its size`, { digest });
    }
    return { digest, size: head.size, mediaType: OCTET_STREAM };
  }

  async get(repository: RepositoryRef, digest: Digest): Promise<BlobHandle> {
    const local = await this.local.stat(repository, digest);
    if (local) return this.local.handle(local, repository);

    const inFlight = this.fills.get(digest);
    if (inFlight) return this.follow(inFlight, repository, digest);

    const global = await this.local.statGlobal(digest);
    if (global) {
      await this.confirm(repository, digest);
      await this.local.link(repository, global);
      return this.local.handle(global, repository);
    }
    // Another request may have started the fill while we looked at storage.
    const raced = this.fills.get(digest);
    return raced ? this.follow(raced, repository, digest) : this.start(repository, digest);
  }

  /** True while this process fills the digest (eviction must leave it alone). */
  isFilling(digest: Digest): boolean {
    return this.fills.has(digest);
  }

  /** Number of fills running now. */
  get activeFills(): number {
    return this.fills.size;
  }

  /** Waits for running fills (shutdown); aborts those still running after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    const pending = [...this.fills.values()].map((f) => f.started.then((fill) => fill.done).catch(() => undefined));
    if (pending.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), timeoutMs); });
    const outcome = await Promise.race([Promise.all(pending), timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      for (const f of this.fills.values()) {
        void f.started.then((fill) => fill.abort(new UpstreamUnavailable('pullthrough is shutting down')), () => undefined);
      }
      await Promise.all(pending);
    }
  }

  /** Asks the upstream whether `repository` has the blob; throws BLOB_UNKNOWN when not. */
  private async confirm(repository: RepositoryRef, digest: Digest): Promise<void> {
    const head = await this.upstreams(repository.upstream).headBlob(repository.name, digest);
    if (!head) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
  }

  private async follow(inFlight: InFlight, repository: RepositoryRef, digest: Digest): Promise<BlobHandle> {
    const key = repoKey(repository);
    if (!inFlight.repositories.has(key)) {
      await this.confirm(repository, digest);
      inFlight.repositories.set(key, repository);
    }
    return this.fillHandle(await inFlight.started, 'coalesced');
  }

  private start(repository: RepositoryRef, digest: Digest): Promise<BlobHandle> {
    const parsed = parseDigest(digest);
    const repositories = new Map([[repoKey(repository), repository]]);
    const started: Promise<FillSource> = this.replicas
      ? this.replicas.claim(parsed, (createUpload) => this.open(repository, parsed, createUpload), () => this.confirm(repository, digest))
      : this.open(repository, parsed);
    const inFlight: InFlight = { started, repositories };
    this.fills.set(digest, inFlight);
    started.then(
      (fill) => fill.done.then(
        (descriptor) => this.committed(descriptor, inFlight),
        (err: Error) => this.logger.warn({ digest, upstream: repository.upstream, repository: repository.name, err: err.message }, 'blob fill failed'),
      ),
      () => undefined,
    ).finally(() => {
      this.fills.delete(digest);
      void started.then((fill) => fill.retire?.(), () => undefined);
    });
    return started.then((fill) => this.fillHandle(fill, fill.outcome ?? 'miss'));
  }

  /** One upstream GET into a temp file; `createUpload` makes a temp file other replicas can find. */
  private async open(
    repository: RepositoryRef,
    digest: ReturnType<typeof parseDigest>,
    createUpload: UploadFactory = () => this.driver.createUpload(),
  ): Promise<BlobFill> {
    const client = this.upstreams(repository.upstream);
    const response = await client.getBlob(repository.name, digest.digest);
    if (!response) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: digest.digest });
    let upload;
    try {
      upload = await createUpload(response.size);
    } catch (err) {
      response.body.destroy();
      throw err;
    }
    return new BlobFill({
      digest,
      expectedSize: response.size,
      body: response.body,
      upload,
      commit: (u) => u.commit(blobDataPath(digest)),
      detachedTimeoutMs: client.settings.detachedFillTimeoutMs,
    });
  }

  /** Caches learn of the blob, then every confirmed repository is linked, before the fill leaves the map. */
  private async committed(descriptor: Descriptor, inFlight: InFlight): Promise<void> {
    try {
      await this.local.committed(descriptor);
      for (const repository of inFlight.repositories.values()) await this.local.link(repository, descriptor);
    } catch (err) {
      this.logger.error({ digest: descriptor.digest, err: (err as Error).message }, 'linking a committed blob failed');
    }
  }

  private fillHandle(fill: FillSource, cache: CacheOutcome): BlobHandle {
    return {
      digest: fill.digest.digest,
      size: fill.size,
      cache,
      knownSize: async () => fill.size ?? (await fill.done).size,
      open: async (range) => fill.reader(range),
    };
  }
}
