import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import { OCTET_STREAM, type Descriptor } from '../registry/descriptor.js';
import { parseDigest, type Digest, type ParsedDigest } from '../registry/digest.js';
import { RegistryError, StorageUnavailable, UpstreamUnavailable } from '../registry/errors.js';
import type { Readable } from 'node:stream';
import { repositoryKey, type BlobHandle, type BlobStore, type ByteRange, type CacheOutcome, type RepositoryRef, type StatResult } from '../registry/services.js';
import type { LocalBlobStore } from '../storage/blobs.js';
import { NO_FILL_EVENTS, type FillEvents } from '../registry/telemetry.js';
import type { UpstreamClient } from '../upstream/client.js';
import { BlobFill, blobTooLarge } from './fill.js';
import type { BlobBody, FillCoordinator, FillSource, UploadFactory } from './fillSource.js';
import type { StorageSpace } from './storageSpace.js';
import { FillSlots } from './fillSlots.js';
import { sameBytes } from './sameBytes.js';

export type UpstreamLookup = (upstream: string) => UpstreamClient;

/** A cold blob on its way in this process, and the repositories waiting for it. */
class InFlight {
  /**
   * Resolves once the upstream answered with headers (or, with replicas, once
   * another replica's fill is found to follow); rejects on 404 or failure.
   */
  started!: Promise<FillSource>;
  /** The source once `started` resolved, for progress reports. */
  source: FillSource | undefined;
  /** When the first request asked, on the mirror's clock. */
  readonly startedAt: number;
  readonly first: RepositoryRef;
  /** Repositories the upstream confirmed this blob for: all are linked by the commit. */
  readonly repositories = new Map<string, RepositoryRef>();
  /**
   * Set when the commit has taken `repositories`: a repository confirmed
   * after that is linked by its own request, once the fill is done.
   */
  sealed = false;

  constructor(first: RepositoryRef, startedAt: number) {
    this.first = first;
    this.startedAt = startedAt;
    this.repositories.set(repositoryKey(first), first);
  }

  /** The repositories the commit links; from now on a newly confirmed one links itself. */
  seal(): RepositoryRef[] {
    this.sealed = true;
    return [...this.repositories.values()];
  }
}

export interface ProxyBlobStoreOptions {
  readonly local: LocalBlobStore;
  readonly upstreams: UpstreamLookup;
  readonly logger: Logger;
  readonly clock: Clock;
  /** With Redis: replicas on this storage root fetch each cold blob once between them. */
  readonly coordinator?: FillCoordinator;
  /** Told when a fill of this process is over (eviction may have been waiting for that). */
  readonly onReleased?: (digest: Digest) => void;
  /** Where the fills of each upstream report (metrics). */
  readonly fillEvents?: (upstream: string) => FillEvents;
  /** Whether storage takes fills: told of every fill's local failure and commit; refuses new fills while failing. */
  readonly space?: StorageSpace;
  /** Fills of one upstream running at once; more wait (`FillSlots`). Default the upstream's `maxConcurrentFills`. */
  readonly fillsPerUpstream?: number;
  /**
   * For repositories this answers true, a blob already in storage (or on
   * its way in for another repository) is linked only after the
   * repository's own upstream served the same bytes: a GET compared byte by
   * byte with the stored blob, stopped at the first difference. Otherwise an
   * upstream HEAD confirms, as it always has. Off by default: without access
   * rules every client may pull from every upstream anyway, so a HEAD that
   * lies gains nothing (README "Security"). Access rules turn it on for the
   * upstreams they restrict. Such a repository's fills are its own (never
   * another replica's): its own GET is its confirmation.
   */
  readonly confirmByContent?: (repository: RepositoryRef) => boolean;
}

/** A cold blob on its way, as the status page shows it. */
export interface FillProgress {
  readonly digest: Digest;
  /** The repository that asked first. */
  readonly repository: RepositoryRef;
  /** Bytes received so far; undefined while the upstream has not answered, or when another replica fetches. */
  readonly receivedBytes: number | undefined;
  /** The size, when the upstream stated it. */
  readonly sizeBytes: number | undefined;
  readonly startedAt: number;
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
  private readonly local: LocalBlobStore;
  private readonly slots = new Map<string, FillSlots>();

  constructor(private readonly options: ProxyBlobStoreOptions) {
    this.local = options.local;
  }

  async stat(repository: RepositoryRef, digest: Digest): Promise<StatResult | undefined> {
    const local = await this.local.stat(repository, digest);
    if (local) return local;
    const inFlight = this.fills.get(digest);
    if (inFlight?.repositories.has(repositoryKey(repository))) {
      const fill = await inFlight.started.catch(() => undefined);
      if (fill?.size !== undefined) return { digest, size: fill.size, mediaType: OCTET_STREAM, cache: 'coalesced' };
    }
    // A HEAD on a miss costs one upstream HEAD and stores nothing.
    const head = await this.options.upstreams(repository.upstream).headBlob(repository.name, digest);
    if (!head) return undefined;
    const global = await this.local.statGlobal(digest);
    if (global) {
      // The bytes were here; the upstream was asked only whether this repository may have them.
      // Confirmed by content, the link waits for the GET that compares the bytes.
      if (!this.confirmsByContent(repository)) return this.local.link(repository, global);
      return this.local.stored(digest);
    }
    if (head.size === undefined) {
      throw new RegistryError('UPSTREAM_INVALID', `upstream ${repository.upstream} answered a blob HEAD without its size`, { digest });
    }
    return { digest, size: head.size, mediaType: OCTET_STREAM, cache: 'miss' };
  }

  async get(repository: RepositoryRef, digest: Digest): Promise<BlobHandle> {
    const local = await this.local.stat(repository, digest);
    if (local) return this.local.handle(local, repository);

    const inFlight = this.fills.get(digest);
    if (inFlight) return this.follow(inFlight, repository, digest);

    const global = await this.local.statGlobal(digest);
    if (global) {
      await this.confirmStored(repository, global);
      return this.local.handle(await this.local.link(repository, global), repository);
    }
    // Another request may have started the fill while we looked at storage.
    const raced = this.fills.get(digest);
    return raced ? this.follow(raced, repository, digest) : this.start(repository, digest);
  }

  /** True while this process fills the digest (eviction must leave it alone). */
  isFilling(digest: Digest): boolean {
    return this.fills.has(digest);
  }

  /** The source of this process's fill of `digest`, once it started; undefined when there is none (the internal endpoint). */
  async inProgress(digest: Digest): Promise<FillSource | undefined> {
    return this.fills.get(digest)?.started.catch(() => undefined);
  }

  /** Number of fills running now. */
  get activeFills(): number {
    return this.fills.size;
  }

  /** The fills running now, oldest first. */
  fillsInProgress(): FillProgress[] {
    return [...this.fills.entries()].map(([digest, f]) => ({
      digest,
      repository: f.first,
      receivedBytes: f.source?.written,
      sizeBytes: f.source?.size,
      startedAt: f.startedAt,
    }));
  }

  /** Waits for running fills (shutdown); aborts those still running after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    const pending = [...this.fills.values()].map((f) => f.started.then((fill) => fill.done).catch(() => undefined));
    if (pending.length === 0) return;
    let timedOut = false;
    const timer = this.options.clock.setTimeout(() => {
      timedOut = true;
      for (const slots of this.slots.values()) slots.close();
      for (const f of this.fills.values()) {
        void f.started.then((fill) => fill.abort(new UpstreamUnavailable('pullthrough is shutting down')), () => undefined);
      }
    }, timeoutMs);
    await Promise.all(pending);
    if (!timedOut) timer.cancel();
  }

  /** Asks the upstream whether `repository` has the blob; throws BLOB_UNKNOWN when not. */
  private async confirm(repository: RepositoryRef, digest: Digest): Promise<void> {
    const head = await this.options.upstreams(repository.upstream).headBlob(repository.name, digest);
    if (!head) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
  }

  private confirmsByContent(repository: RepositoryRef): boolean {
    return this.options.confirmByContent?.(repository) === true;
  }

  /** Confirms that `repository` may use a blob in storage: by HEAD, or by content (see `confirmByContent`). */
  private async confirmStored(repository: RepositoryRef, descriptor: Descriptor): Promise<void> {
    if (this.confirmsByContent(repository)) await this.confirmBytes(repository, descriptor);
    else await this.confirm(repository, descriptor.digest);
  }

  /**
   * The repository's upstream must serve exactly the stored bytes: its GET
   * is compared with the blob, stopped at the first difference. Holds a fill
   * slot while it runs, as a fill does. Throws BLOB_UNKNOWN when the
   * upstream has no such blob or sends other bytes.
   */
  private async confirmBytes(repository: RepositoryRef, descriptor: Descriptor): Promise<void> {
    const { digest } = descriptor;
    const slot = await this.slotsFor(repository.upstream).acquire();
    try {
      const response = await this.options.upstreams(repository.upstream).getBlob(repository.name, digest);
      if (!response) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
      const sizeDiffers = response.size !== undefined && response.size !== descriptor.size;
      if (sizeDiffers) response.body.destroy();
      if (sizeDiffers || !(await sameBytes(response.body, await this.local.open(digest, repository)))) {
        this.options.logger.warn({ digest, upstream: repository.upstream, repository: repository.name },
          'the upstream confirmed a cached blob but served other bytes for it: not linked');
        throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
      }
    } finally {
      slot.release();
    }
  }

  private async follow(inFlight: InFlight, repository: RepositoryRef, digest: Digest): Promise<BlobHandle> {
    const key = repositoryKey(repository);
    if (!inFlight.repositories.has(key) && this.confirmsByContent(repository)) {
      // The bytes can be compared only once they are in: wait for the fill, then confirm against the stored blob.
      const descriptor = await (await inFlight.started).done;
      await this.confirmBytes(repository, descriptor);
      return this.local.handle(await this.local.link(repository, descriptor), repository);
    }
    if (!inFlight.repositories.has(key)) {
      await this.confirm(repository, digest);
      if (inFlight.sealed) {
        // The commit has already taken its repositories: this one is linked here, and read from storage.
        const descriptor = await (await inFlight.started).done;
        return this.local.handle(await this.local.link(repository, descriptor), repository);
      }
      inFlight.repositories.set(key, repository);
    }
    return this.fillHandle(await inFlight.started, 'coalesced');
  }

  private start(repository: RepositoryRef, digest: Digest): Promise<BlobHandle> {
    // A full disk refuses new fills at once (503), before the upstream is asked for bytes that could not be kept.
    this.options.space?.admit();
    const parsed = parseDigest(digest);
    const inFlight = new InFlight(repository, this.options.clock.now());
    const fetch = (createUpload?: UploadFactory): Promise<BlobFill> => this.fetch(repository, parsed, inFlight, createUpload);
    const open = (): Promise<BlobBody> => this.openUpstream(repository, parsed);
    const fill = (body: BlobBody, createUpload?: UploadFactory, events?: FillEvents): Promise<BlobFill> =>
      this.fillFrom(repository, parsed, inFlight, body, { createUpload: createUpload ?? (() => this.local.createUpload(parsed.digest)), events });
    inFlight.started = this.options.coordinator && !this.confirmsByContent(repository)
      ? this.options.coordinator.claim(parsed, {
        fetch,
        open,
        fill,
        confirm: () => this.confirm(repository, digest),
        record: (descriptor) => this.local.recordCommitted(descriptor, inFlight.seal()),
        openCommitted: (range) => this.openCommitted(repository, digest, range),
        fillFrom: (source) => this.fillFrom(repository, parsed, inFlight, source, { createUpload: () => this.local.createUpload() }),
        upstreamBody: () => this.openUpstream(repository, parsed),
      })
      : fetch();
    this.fills.set(digest, inFlight);
    const { started } = inFlight;
    started.then((source) => { inFlight.source = source; }, () => undefined);
    started.then(
      (fill) => fill.done.then(() => this.options.space?.recovered(), (err: Error) => this.fillFailed(err, repository, digest)),
      (err: unknown) => { if (err instanceof StorageUnavailable) this.options.space?.failed(err); },
    ).finally(() => {
      this.fills.delete(digest);
      this.options.onReleased?.(digest);
    });
    return started.then((fill) => this.fillHandle(fill, fill.outcome ?? 'miss'));
  }

  /** A storage failure is logged once by `space`, not per fill; anything else is this fill's own warning. */
  private fillFailed(err: Error, repository: RepositoryRef, digest: Digest): void {
    const context = { digest, upstream: repository.upstream, repository: repository.name, err: err.message };
    if (err instanceof StorageUnavailable && this.options.space) {
      this.options.logger.debug(context, 'blob fill failed');
      this.options.space.failed(err);
      return;
    }
    this.options.logger.warn(context, 'blob fill failed');
  }

  /** One upstream GET into an upload; `createUpload` makes one whose name other replicas are told. */
  /** The fill slots of an upstream. */
  private slotsFor(upstream: string): FillSlots {
    let slots = this.slots.get(upstream);
    if (!slots) {
      const { fills } = this.options.upstreams(upstream).settings;
      slots = new FillSlots({ limit: this.options.fillsPerUpstream ?? fills.concurrent, queue: fills.queue, upstream });
      this.slots.set(upstream, slots);
    }
    return slots;
  }

  /**
   * One upstream GET into an upload, holding one of the upstream's fill
   * slots until the fill has settled; `createUpload` makes an upload whose
   * name other replicas are told.
   */
  private async fetch(
    repository: RepositoryRef, digest: ParsedDigest, inFlight: InFlight, createUpload: UploadFactory = () => this.local.createUpload(digest.digest),
  ): Promise<BlobFill> {
    const slots = this.slotsFor(repository.upstream);
    const slot = await slots.acquire();
    try {
      const fill = await this.fetchInto(repository, digest, inFlight, createUpload, () => slots.detached());
      slot.occupy(fill);
      fill.done.then(() => slot.release(), () => slot.release());
      return fill;
    } catch (err) {
      slot.release();
      throw err;
    }
  }

  private async fetchInto(
    repository: RepositoryRef, digest: ParsedDigest, inFlight: InFlight, createUpload: UploadFactory, onDetached: () => void,
  ): Promise<BlobFill> {
    return this.fillFrom(repository, digest, inFlight, await this.openUpstream(repository, digest), { createUpload, onDetached });
  }

  /** One upstream GET of the blob; BLOB_UNKNOWN when the upstream has none. */
  private async openUpstream(repository: RepositoryRef, digest: ParsedDigest): Promise<BlobBody & { requestedAt: number }> {
    const requestedAt = performance.now();
    const response = await this.options.upstreams(repository.upstream).getBlob(repository.name, digest.digest);
    if (!response) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: digest.digest });
    return { ...response, requestedAt };
  }

  /**
   * A fill of `response` (the upstream's body, or a peer's) into an upload
   * from `createUpload`; `events` count its bytes (the upstream's fill
   * metrics by default).
   */
  private async fillFrom(
    repository: RepositoryRef, digest: ParsedDigest, inFlight: InFlight, response: BlobBody & { requestedAt?: number },
    how: { createUpload: UploadFactory; onDetached?: () => void; events?: FillEvents | undefined },
  ): Promise<BlobFill> {
    const client = this.options.upstreams(repository.upstream);
    const maxSize = client.settings.maxBlobBytes;
    let upload;
    try {
      if (response.size !== undefined && response.size > maxSize) throw blobTooLarge(maxSize);
      upload = await how.createUpload(response.size);
    } catch (err) {
      response.body.destroy();
      throw StorageUnavailable.from(err, 'a new upload') ?? err;
    }
    return new BlobFill({
      digest,
      expectedSize: response.size,
      body: response.body,
      upload,
      commit: async (u, descriptor) => { await this.local.commit(u, descriptor, inFlight.seal()); },
      openCommitted: (range) => this.openCommitted(repository, digest.digest, range),
      detachedTimeoutMs: client.settings.detachedFillTimeoutMs,
      maxSize,
      ...(how.onDetached ? { onDetached: how.onDetached } : {}),
      clock: this.options.clock,
      events: how.events ?? this.options.fillEvents?.(repository.upstream) ?? NO_FILL_EVENTS,
      requestedAt: response.requestedAt ?? performance.now(),
    });
  }

  private openCommitted(repository: RepositoryRef, digest: Digest, range?: ByteRange): Promise<Readable> {
    return this.local.open(digest, repository, range);
  }

  private fillHandle(fill: FillSource, cache: CacheOutcome): BlobHandle {
    return {
      digest: fill.digest.digest,
      cache,
      open: async (chooseRange) => {
        if (!chooseRange) return { stream: fill.reader(), size: fill.size, range: undefined };
        // A range needs the size: the upstream's Content-Length, or the end of a fill that gave none.
        const size = fill.size ?? (await fill.done).size;
        const range = chooseRange(size);
        return { stream: fill.reader(range), size, range };
      },
    };
  }
}
