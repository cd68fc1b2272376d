import { randomUUID, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { OCTET_STREAM, type Descriptor } from '../../registry/descriptor.js';
import { createDigester, type ParsedDigest } from '../../registry/digest.js';
import { UpstreamUnavailable } from '../../registry/errors.js';
import type { ByteRange, CacheOutcome } from '../../registry/services.js';
import type { Upload } from '../../storage/driver.js';
import { blobDataPath, UPLOADS_DIR } from '../../storage/layout.js';
import type { BlobFill } from '../fill.js';
import { ChangeSignal, GrowingReader, READ_CHUNK, type GrowingSource } from '../growingReader.js';
import type { AcquireResult, FillLeases } from './lease.js';

/**
 * Replicas: several pullthrough processes on one storage root and one Redis
 * fetch a cold blob once between them (README "Replicas").
 *
 * The replica that wins the Redis lease fetches, into a temp file under
 * `<root>/_uploads/` whose name it publishes under the lease. Every other
 * replica that is asked for the blob meanwhile *follows* that file: it serves
 * the bytes as they land, like the clients of an in-process fill, instead of
 * waiting for the end. A follower hashes what it reads, lets its readers have
 * only bytes it has hashed, and releases the last byte only when its own
 * hash matches the digest AND the committed blob is visible at its final
 * path; so a follower can never complete a wrong response, whatever happened
 * to the file it read (owner died, shared file system serving stale pages).
 *
 * When the owner dies its lease runs out (when its fill is cut off, or its
 * process shuts down, it lets the lease go); a follower takes the lease over,
 * fetches the blob itself, and goes on serving its readers from the new file.
 * The bytes its readers already had came from the dead owner's file: the
 * follower checks that the new file starts with exactly those bytes (the hash
 * of that prefix must come out the same) before anything goes further.
 */

/** What requests read while a blob is on its way: a fill of this process, another replica's, or a blob just committed. */
export interface FillSource {
  readonly digest: ParsedDigest;
  /** The size, when the upstream stated it or the blob is complete. */
  readonly size: number | undefined;
  /** Resolves when the blob is committed to storage; rejects when the fill failed. */
  readonly done: Promise<Descriptor>;
  /** How the request that found this source was served; a fill of our own (no value) is a miss. */
  readonly outcome?: CacheOutcome;
  /** The bytes, whole or a range; the stream errors (never ends early) if the fill fails. */
  reader(range?: ByteRange): Readable;
  /** Stops following or fetching (shutdown); readers see an error. */
  abort(reason: Error): void;
  /**
   * The store has stopped handing this source to new requests: what it holds
   * open for late readers may close once its current readers are done.
   */
  retire?(): void;
}

/** Makes the temp file a fill writes, once the upstream said how long the blob is. */
export type UploadFactory = (expectedSize: number | undefined) => Promise<Upload>;

/**
 * Fetches the blob from the upstream into an upload from `createUpload`,
 * resolving once the upstream answered (as `ProxyBlobStore` does for a miss);
 * rejects with its error (BLOB_UNKNOWN for a 404...).
 */
export type FetchBlob = (createUpload: UploadFactory) => Promise<BlobFill>;

/** A temp file in `<root>/_uploads/` whose name other replicas can be told. */
export interface SharedUpload extends Upload {
  readonly name: string;
}

/**
 * Creates a temp file the way `FilesystemDriver.createUpload` does (same
 * directory, same name shape, fsync then rename on commit), but with its
 * name known, since followers open it by name.
 */
export async function createSharedUpload(root: string): Promise<SharedUpload> {
  const name = `${Date.now().toString(36)}-${randomUUID()}`;
  const tempPath = join(root, UPLOADS_DIR, name);
  await mkdir(dirname(tempPath), { recursive: true });
  const handle = await open(tempPath, 'w+', 0o644);
  let gone = false;
  let closed = false;
  return {
    name,
    handle,
    async commit(path: string): Promise<void> {
      await handle.sync();
      const target = join(root, path);
      await mkdir(dirname(target), { recursive: true });
      await rename(tempPath, target);
      gone = true;
    },
    async discard(): Promise<void> {
      if (gone) return;
      gone = true;
      await unlink(tempPath).catch(() => undefined);
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await handle.close().catch(() => undefined);
    },
  };
}

/** What a `ReplicaCoordinator` works with. */
export interface ReplicaCoordinatorOptions {
  readonly leases: FillLeases;
  /** The shared storage root. */
  readonly root: string;
  readonly logger: Logger;
  /** How often a follower looks for new bytes while none came. Default 25 ms. */
  readonly pollIntervalMs?: number;
}

/** The result of trying to own a fill: our own fill, or someone else's work to follow. */
type Ownership =
  | { readonly kind: 'fetching'; readonly fill: BlobFill; readonly upload: string }
  | { readonly kind: 'taken' }
  | { readonly kind: 'committed'; readonly size: number };

/**
 * Decides, per cold blob, whether this replica fetches it (and holds the
 * lease while it does) or follows the replica that does. One per process;
 * `ProxyBlobStore` asks it only for the first request of a digest in this
 * process, later ones join the same `FillSource`.
 */
export class ReplicaCoordinator {
  private readonly pollIntervalMs: number;
  private stopping = false;

  constructor(private readonly options: ReplicaCoordinatorOptions) {
    this.pollIntervalMs = options.pollIntervalMs ?? 25;
  }

  /**
   * Shutdown has begun: fills this process gives up from now on (the grace
   * period ran out) let their lease go without a failure, so that the
   * replicas following them take over instead of failing their clients.
   */
  beginShutdown(): void {
    this.stopping = true;
  }

  /**
   * The source for a cold blob. `fetch` goes upstream (when this replica
   * wins the lease, or cannot ask Redis); `confirm` checks with an upstream
   * HEAD that the requesting repository has the blob, for when the bytes come
   * from a fetch made for another repository or another replica.
   */
  async claim(digest: ParsedDigest, fetch: FetchBlob, confirm: () => Promise<void>): Promise<FillSource> {
    const owned = await this.own(digest, fetch, await this.options.leases.acquire(digest.digest));
    // Our own GET confirms the repository; anything else serves bytes fetched for someone else.
    if (owned.kind === 'fetching') return owned.fill;
    await confirm();
    if (owned.kind === 'committed') return new CommittedBlob(this.options.root, digest, owned.size);
    return this.awaitOwner(digest, fetch);
  }

  /**
   * With the lease acquired (or Redis unavailable), fetch, unless the blob
   * was committed between our storage lookup and the lease: the previous
   * owner commits before it lets go.
   */
  private async own(digest: ParsedDigest, fetch: FetchBlob, acquired: AcquireResult): Promise<Ownership> {
    if (acquired === 'taken') return { kind: 'taken' };
    const size = await committedSize(this.options.root, digest);
    if (size !== undefined) {
      if (acquired === 'owned') await this.options.leases.release(digest.digest);
      return { kind: 'committed', size };
    }
    const { fill, upload } = await this.fetchLeased(digest, fetch, acquired === 'owned');
    return { kind: 'fetching', fill, upload };
  }

  /**
   * Fetches, holding the lease if we have it: renewed every third of its
   * life while the fill runs, the temp file's name published as soon as it
   * exists, released after the commit, or marked failed with the error.
   * Without the lease (Redis away) the fetch just runs: at worst twice.
   */
  private async fetchLeased(digest: ParsedDigest, fetch: FetchBlob, leased: boolean): Promise<{ fill: BlobFill; upload: string }> {
    const { leases, root, logger } = this.options;
    const d = digest.digest;
    let renewal: NodeJS.Timeout | undefined;
    if (leased) {
      let warned = false;
      renewal = setInterval(() => {
        void leases.renew(d).then((ours) => {
          if (ours !== false || warned) return;
          // Another replica took over (we were too slow to renew): our fill goes on; a verified commit is still right.
          warned = true;
          logger.warn({ digest: d }, 'lost the lease of a running fill; finishing it anyway');
        });
      }, Math.max(50, Math.floor(leases.ttlMs / 3)));
      renewal.unref();
    }
    let upload: string | undefined;
    let fill: BlobFill;
    try {
      fill = await fetch(async (expectedSize) => {
        const created = await createSharedUpload(root);
        upload = created.name;
        if (leased) await leases.publish(d, created.name, expectedSize);
        return created;
      });
    } catch (err) {
      clearInterval(renewal);
      if (leased) await leases.fail(d, err);
      throw err;
    }
    void fill.done.then(
      async () => {
        clearInterval(renewal);
        if (leased) await leases.release(d);
      },
      async (err: unknown) => {
        clearInterval(renewal);
        if (!leased) return;
        // Cut off mid-way (connection lost, shutdown, abandoned by our clients): let a follower take
        // over. A verdict (404, digest mismatch, 429) is passed on: fetching again would not change it.
        if (this.stopping || err instanceof UpstreamUnavailable) await leases.release(d);
        else await leases.fail(d, err);
      },
    );
    return { fill, upload: upload! };
  }

  /**
   * Waits for the lease's owner to publish its temp file, then follows it;
   * or finds the blob committed, or the owner's failure, or the lease lapsed
   * (its owner died before it published) and fetches itself.
   */
  private async awaitOwner(digest: ParsedDigest, fetch: FetchBlob): Promise<FillSource> {
    const { leases, root } = this.options;
    let owner: string | undefined;
    for (;;) {
      const size = await committedSize(root, digest);
      if (size !== undefined) return new CommittedBlob(root, digest, size);
      const state = await leases.look(digest.digest);
      // Redis stopped answering: the owner cannot be seen. Fetching costs at worst a second download.
      if (!state) return (await this.fetchLeased(digest, fetch, false)).fill;
      owner = state.owner ?? owner;
      const info = state.fill;
      if (info && 'failed' in info && state.owner === undefined && (owner === undefined || info.owner === owner)) {
        throw info.failed;
      }
      if (state.owner !== undefined && info && 'upload' in info && info.owner === state.owner) {
        const follower = await ReplicaFollower.follow(this.followerContext(digest, fetch), {
          path: join(root, UPLOADS_DIR, info.upload), upload: info.upload, owner: info.owner, size: info.size,
        });
        if (follower) return follower;
        // The file is gone already: committed or failed, which a later round sees.
        await sleep(this.pollIntervalMs);
        continue;
      }
      if (state.owner === undefined) {
        const owned = await this.own(digest, fetch, await leases.acquire(digest.digest));
        if (owned.kind === 'fetching') return owned.fill;
        if (owned.kind === 'committed') return new CommittedBlob(root, digest, owned.size);
        continue;
      }
      await sleep(this.pollIntervalMs);
    }
  }

  private followerContext(digest: ParsedDigest, fetch: FetchBlob): FollowerContext {
    return {
      digest,
      root: this.options.root,
      leases: this.options.leases,
      logger: this.options.logger,
      pollIntervalMs: this.pollIntervalMs,
      takeOver: (acquired) => this.own(digest, fetch, acquired),
    };
  }
}

/** The size of the committed blob, or undefined when it is not (yet) in storage. */
async function committedSize(root: string, digest: ParsedDigest): Promise<number | undefined> {
  const info = await stat(join(root, blobDataPath(digest))).catch(() => undefined);
  return info?.isFile() ? info.size : undefined;
}

/**
 * A blob another replica committed while this one was deciding: read from
 * its final path. The committing replica verified it.
 */
class CommittedBlob implements FillSource {
  readonly outcome: CacheOutcome = 'hit';
  readonly done: Promise<Descriptor>;
  private readonly path: string;

  constructor(root: string, readonly digest: ParsedDigest, readonly size: number) {
    this.path = join(root, blobDataPath(digest));
    this.done = Promise.resolve({ digest: digest.digest, size, mediaType: OCTET_STREAM });
  }

  reader(range?: ByteRange): Readable {
    return createReadStream(this.path, { start: range?.start, end: range?.end, highWaterMark: READ_CHUNK });
  }

  abort(): void {
    // Nothing runs: readers of a committed file finish by themselves.
  }
}

/** The lease is looked at no more often than this (the committed file is looked for at every poll). */
const LOOK_INTERVAL_MS = 100;

interface FollowerContext {
  readonly digest: ParsedDigest;
  readonly root: string;
  readonly leases: FillLeases;
  readonly logger: Logger;
  readonly pollIntervalMs: number;
  /** Tries to become the fill's owner (after the previous one vanished). */
  readonly takeOver: (acquired: AcquireResult) => Promise<Ownership>;
}

/** A file being followed: another replica's temp file, our own fill's, or the committed blob. */
interface Source {
  readonly path: string;
  /** The temp file's name, when it is one. */
  readonly upload?: string;
  /** The replica whose lease covers this file, for another replica's fill. */
  readonly owner?: string;
  /** Our own fill, after a takeover. */
  readonly fill?: BlobFill;
  /** The upstream's Content-Length, as the file's writer announced it. */
  readonly size?: number | undefined;
}

/** A prefix readers may already have had from an earlier source, as its hash. */
interface PrefixCheck {
  readonly at: number;
  readonly digest: string;
}

/**
 * Follows a fill running in another replica by reading its temp file as it
 * grows (see the module comment). One per digest per process; every request
 * of this process for the digest reads through it.
 */
class ReplicaFollower implements FillSource, GrowingSource {
  readonly outcome: CacheOutcome = 'coalesced';
  readonly digest: ParsedDigest;
  readonly done: Promise<Descriptor>;
  private source: Source;
  private handle: FileHandle;
  /** Every handle opened, closed together once nothing reads any more. */
  private readonly handles: FileHandle[] = [];
  /** Bumped at each change of source, so a read that straddled one is not used. */
  private generation = 0;
  private hash: Hash;
  /** Bytes of the current source hashed so far, from its start. */
  private hashed = 0;
  private checks: PrefixCheck[] = [];
  private expectedSize: number | undefined;
  private finalSize: number | undefined;
  private state: 'running' | 'verified' | 'failed' = 'running';
  private failure: Error | undefined;
  private aborted: Error | undefined;
  private readers = 0;
  /** The run loop holds one reference to the handles; each reader holds one. */
  private refs = 1;
  private lastProgress = Date.now();
  private lastLook = 0;
  private readonly buffer = Buffer.allocUnsafe(READ_CHUNK);
  private readonly signal = new ChangeSignal();

  /** Starts following the file at `source.path`; undefined if it no longer exists. */
  static async follow(context: FollowerContext, source: Source): Promise<ReplicaFollower | undefined> {
    const handle = await openExisting(source.path);
    return handle && new ReplicaFollower(context, source, handle);
  }

  private constructor(private readonly context: FollowerContext, source: Source, handle: FileHandle) {
    this.digest = context.digest;
    this.source = source;
    this.handle = handle;
    this.handles.push(handle);
    this.expectedSize = source.size;
    this.hash = createDigester(this.digest.algorithm);
    this.done = this.run();
    this.done.catch(() => undefined);
  }

  get size(): number | undefined {
    return this.finalSize ?? this.expectedSize;
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  get isRunning(): boolean {
    return this.state === 'running';
  }

  reader(range?: ByteRange): Readable {
    if (this.failure) throw this.failure;
    return new GrowingReader(this, range?.start ?? 0, range?.end);
  }

  abort(reason: Error): void {
    if (this.state !== 'running') return;
    this.aborted = reason;
    this.source.fill?.abort(reason);
    this.notify();
  }

  /** @internal How far readers may read: all once verified, else hashed bytes short of the last one. */
  readableLimit(): number {
    if (this.state === 'verified') return this.finalSize!;
    const limit = this.expectedSize !== undefined ? Math.min(this.hashed, this.expectedSize - 1) : this.hashed - 1;
    return Math.max(0, limit);
  }

  /** @internal Reads from the current source; `generation` tells the reader which one that was. */
  async readAt(buffer: Buffer, position: number): Promise<{ bytesRead: number; generation: number }> {
    const generation = this.generation;
    const { bytesRead } = await this.handle.read(buffer, 0, buffer.length, position);
    return { bytesRead, generation };
  }

  /** @internal */
  currentGeneration(): number {
    return this.generation;
  }

  /** @internal Resolves at the next hashed bytes, change of source, verification or failure. */
  waitForChange(): Promise<void> {
    return this.signal.wait();
  }

  /** @internal */
  attach(): void {
    this.readers++;
    this.refs++;
  }

  /** @internal */
  detach(): void {
    this.readers--;
    this.release();
  }

  private notify(): void {
    this.signal.notify();
  }

  private release(): void {
    if (--this.refs > 0) return;
    for (const handle of this.handles) void handle.close().catch(() => undefined);
  }

  private async run(): Promise<Descriptor> {
    try {
      for (;;) {
        if (this.aborted) throw this.aborted;
        const progressed = await this.pump();
        const descriptor = await this.inspect(progressed);
        if (descriptor) {
          this.state = 'verified';
          return descriptor;
        }
        if (!progressed) await sleep(this.context.pollIntervalMs);
      }
    } catch (err) {
      this.state = 'failed';
      this.failure = err instanceof Error ? err : new Error(String(err));
      throw this.failure;
    } finally {
      this.notify();
      this.release();
    }
  }

  /** Hashes what the current source has beyond what was hashed; true if there was anything. */
  private async pump(): Promise<boolean> {
    const available = (await this.handle.stat()).size;
    if (available <= this.hashed) return false;
    while (this.hashed < available) {
      const check = this.checks[0];
      const until = Math.min(available, check?.at ?? Infinity, this.hashed + READ_CHUNK);
      const { bytesRead } = await this.handle.read(this.buffer, 0, until - this.hashed, this.hashed);
      if (bytesRead === 0) break;
      this.hash.update(this.buffer.subarray(0, bytesRead));
      this.hashed += bytesRead;
      if (check && this.hashed === check.at) {
        if (this.hash.copy().digest('hex') !== check.digest) {
          throw new UpstreamUnavailable('the blob read from another replica changed when its fill was taken over');
        }
        this.checks.shift();
      }
      if (this.expectedSize !== undefined && this.hashed > this.expectedSize) {
        throw new UpstreamUnavailable('the fill being followed is longer than the upstream announced');
      }
      this.notify();
    }
    this.lastProgress = Date.now();
    return true;
  }

  /**
   * Decides what the state of the world means, once the bytes available are
   * hashed: done (verified and committed), keep going, switch to another
   * file, take the fill over, or fail.
   */
  private async inspect(progressed: boolean): Promise<Descriptor | undefined> {
    const { root, leases } = this.context;
    const digest = this.digest;
    // Bytes are flowing and not all are there yet: nothing to decide until the next look is due.
    const short = this.expectedSize === undefined || this.hashed < this.expectedSize;
    if (progressed && short && Date.now() - this.lastLook < LOOK_INTERVAL_MS) return undefined;
    const finalPath = join(root, blobDataPath(digest));
    const final = await stat(finalPath).catch(() => undefined);
    if (final) {
      if (this.hashed === final.size && this.checks.length === 0) {
        const actual = `${digest.algorithm}:${this.hash.copy().digest('hex')}`;
        if (actual !== digest.digest) throw new UpstreamUnavailable('the blob read from another replica does not match its digest');
        this.finalSize = final.size;
        return { digest: digest.digest, size: final.size, mediaType: OCTET_STREAM };
      }
      if (this.hashed > final.size) throw new UpstreamUnavailable('the fill being followed is longer than the committed blob');
      // Committed, and our file stopped short of it (its writer died and someone else finished): read the committed one.
      if (!progressed && !(await this.sourceIs(final.ino, final.dev))) await this.switchTo({ path: finalPath });
      return undefined;
    }
    if (this.source.fill) {
      // Our own fill: it commits (and we see the blob above), or it fails.
      if (this.source.fill.failed) throw this.source.fill.failed;
      return undefined;
    }
    if (this.source.owner === undefined) {
      // Following the committed file, and it is gone (removed under us).
      throw new UpstreamUnavailable('the committed blob vanished while it was being read');
    }
    if (Date.now() - this.lastLook < LOOK_INTERVAL_MS) return undefined;
    this.lastLook = Date.now();
    const state = await leases.look(digest.digest);
    if (!state) {
      // Redis is away: the owner cannot be seen. A file that stops growing for a lease's life is a dead fill.
      if (Date.now() - this.lastProgress > leases.ttlMs) await this.takeOver('unavailable');
      return undefined;
    }
    if (state.owner === this.source.owner) return undefined;
    const info = state.fill;
    if (info && 'failed' in info && info.owner === this.source.owner) throw info.failed;
    if (state.owner === undefined) {
      await this.takeOver(await leases.acquire(digest.digest));
    } else if (info && 'upload' in info && info.owner === state.owner) {
      // Another replica took the fill over: follow its file instead.
      await this.switchTo({ path: join(root, UPLOADS_DIR, info.upload), upload: info.upload, owner: info.owner, size: info.size });
    }
    return undefined;
  }

  /** The owner let the lease go without a commit: it died. Fetch ourselves, and read on from our own file. */
  private async takeOver(acquired: AcquireResult): Promise<void> {
    const dead = this.source;
    const owned = await this.context.takeOver(acquired);
    if (owned.kind !== 'fetching') return; // Someone else won the lease, or the blob is committed: the next look sees which.
    this.context.logger.warn(
      { digest: this.digest.digest, previousOwner: dead.owner, leased: acquired === 'owned' },
      'took over a fill whose replica stopped renewing its lease',
    );
    const switched = await this.switchTo({
      path: join(this.context.root, UPLOADS_DIR, owned.upload), upload: owned.upload, fill: owned.fill, size: owned.fill.size,
    });
    // Our fill finished before we could open its temp file: its commit is what we read next.
    if (!switched) this.source = { ...this.source, fill: owned.fill };
    // A lapsed lease says the writer is gone: its temp file would otherwise wait for a restart's sweep.
    if (acquired === 'owned' && dead.upload) await unlink(join(this.context.root, UPLOADS_DIR, dead.upload)).catch(() => undefined);
  }

  private async sourceIs(ino: number, dev: number): Promise<boolean> {
    const info = await this.handle.stat();
    return info.ino === ino && info.dev === dev;
  }

  /**
   * Reads on from another file. Readers may have had up to `hashed` bytes of
   * the current one, so the new file must hash to the same value over that
   * prefix: it is re-hashed from its start and checked there.
   */
  private async switchTo(next: Source): Promise<boolean> {
    const handle = await openExisting(next.path);
    if (!handle) return false;
    this.handles.push(handle);
    if (this.hashed > 0) {
      // Pending checks are all further along than `hashed`: they stay, after this one.
      this.checks = [{ at: this.hashed, digest: this.hash.copy().digest('hex') }, ...this.checks];
    }
    this.hash = createDigester(this.digest.algorithm);
    this.hashed = 0;
    this.source = next;
    this.handle = handle;
    this.generation++;
    this.expectedSize ??= next.size;
    this.lastProgress = Date.now();
    this.notify();
    return true;
  }
}

/** Opens a file for reading; undefined when it does not exist. */
async function openExisting(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
