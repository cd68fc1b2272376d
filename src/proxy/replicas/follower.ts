import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Clock } from '../../registry/clock.js';
import { OCTET_STREAM, type Descriptor } from '../../registry/descriptor.js';
import { DigestVerifier, type ParsedDigest } from '../../registry/digest.js';
import { UpstreamUnavailable } from '../../registry/errors.js';
import type { ByteRange, CacheOutcome } from '../../registry/services.js';
import type { FileReader, StorageDriver } from '../../storage/driver.js';
import { blobDataPath, uploadPath } from '../../storage/layout.js';
import type { BlobFill } from '../fill.js';
import type { FillSource } from '../fillSource.js';
import { ChangeSignal, GrowingReader, READ_CHUNK, openedOnRead, type GrowingSource } from '../growingReader.js';
import type { AcquireResult, FillInfo, FillLeases } from './lease.js';

/**
 * The two sources of a blob that another replica brings in (see
 * coordinator.ts): its fill in progress, followed by reading the upload as
 * it grows (`ReplicaFollower`), or the blob it has already committed
 * (`CommittedBlob`). Both finish the one commit in this process, by calling
 * `record` (caches, links), before their readers may have the last byte.
 */

/** What the owner of a running fill published under its lease. */
export type PublishedFill = Extract<FillInfo, { readonly upload: string }>;

/** Our own fill, when this replica became the owner. */
export interface OwnFill {
  readonly fill: BlobFill;
  /** The name of the upload it writes, once it created one. */
  readonly upload: string | undefined;
}

/** The rest of the one commit, for bytes another process committed (`ClaimOptions.record`). */
export type RecordCommit = (descriptor: Descriptor) => Promise<void>;

/** Opens the committed blob through the local store (`ClaimOptions.openCommitted`). */
export type OpenCommitted = (range?: ByteRange) => Promise<Readable>;

export interface CommittedBlobOptions {
  readonly digest: ParsedDigest;
  /** The committed blob's size, from `driver.stat`. */
  readonly size: number;
  readonly record: RecordCommit;
  readonly openCommitted: OpenCommitted;
}

/**
 * A blob another replica committed while this one was deciding: read from
 * storage through the local store. The committing replica verified it;
 * what this process adds is the record (descriptor caches, repository links),
 * made before the source is handed out, so that a client's response never
 * ends before the blob is linked in its repository.
 */
export class CommittedBlob implements FillSource {
  readonly outcome: CacheOutcome = 'hit';
  readonly digest: ParsedDigest;
  readonly size: number;
  readonly done: Promise<Descriptor>;
  private readonly openCommitted: OpenCommitted;

  /** Records the committed blob in this process, then answers it as a source. */
  static async recorded(options: CommittedBlobOptions): Promise<CommittedBlob> {
    const descriptor: Descriptor = { digest: options.digest.digest, size: options.size, mediaType: OCTET_STREAM };
    await options.record(descriptor);
    return new CommittedBlob(options, descriptor);
  }

  private constructor(options: CommittedBlobOptions, descriptor: Descriptor) {
    this.openCommitted = options.openCommitted;
    this.digest = options.digest;
    this.size = options.size;
    this.done = Promise.resolve(descriptor);
  }

  reader(range?: ByteRange): Readable {
    return openedOnRead(() => this.openCommitted(range));
  }

  abort(): void {
    // Nothing runs: readers of a committed blob finish by themselves.
  }
}

/** The lease is looked at no more often than this (the committed blob is looked for at every poll). */
const LOOK_INTERVAL_MS = 100;

export interface ReplicaFollowerOptions {
  readonly digest: ParsedDigest;
  /** The storage the replicas share: the followed upload, the committed blob. */
  readonly driver: StorageDriver;
  readonly leases: FillLeases;
  readonly logger: Logger;
  readonly clock: Clock;
  /** How often to look for new bytes while none came. */
  readonly pollIntervalMs: number;
  readonly record: RecordCommit;
  readonly openCommitted: OpenCommitted;
  /**
   * Tries to become the fill's owner, after the previous one vanished:
   * resolves to our own fill, or undefined when another replica won the
   * lease or the blob is committed (the next look sees which).
   */
  readonly takeOver: (acquired: AcquireResult) => Promise<OwnFill | undefined>;
}

/** A file being followed: another replica's upload, our own fill's, or the committed blob. */
interface FollowedFile {
  /** The storage path (`uploadPath` or `blobDataPath`). */
  readonly path: string;
  /** The upload's name, when it is one. */
  readonly upload?: string;
  /** The replica whose lease covers this file, for another replica's fill. */
  readonly owner?: string;
  /** Our own fill, after a takeover. */
  readonly fill?: BlobFill;
  /** The upstream's Content-Length, as the file's writer announced it. */
  readonly size?: number | undefined;
}

/** A prefix readers may already have had from an earlier file, as its hash. */
interface PrefixCheck {
  readonly at: number;
  readonly hex: string;
}

/**
 * Follows a fill running in another replica by reading its upload as it
 * grows: it serves the bytes as they land, like the clients of an in-process
 * fill, instead of waiting for the end. One per digest per process; every
 * request of this process for the digest reads through it.
 *
 * It hashes what it reads, lets its readers have only bytes it has hashed,
 * and releases the last byte only when its own hash matches the digest, the
 * committed blob is visible at its final path, and the commit is recorded in
 * this process (`record`: caches and links, or our own fill's commit after a
 * takeover). So a follower can never complete a wrong response, whatever
 * happened to the file it read (owner died, shared file system serving
 * stale pages), and a complete response means the blob is linked.
 *
 * When the owner dies its lease runs out (when its fill is cut off, or its
 * process shuts down, it lets the lease go); the follower takes the lease
 * over, fetches the blob itself, and goes on serving its readers from the
 * new upload. The bytes its readers already had came from the dead owner's
 * file: the new file must start with exactly those bytes (the hash of that
 * prefix must come out the same) before anything goes further.
 *
 * Every file it opens stays open while the follower runs or any reader
 * holds it, and a reader takes hold in the same synchronous step in which
 * `reader()` sees the files open; a reader that comes after they were let go
 * reads the committed blob through the driver. So no reader ever reads a
 * file closed under it.
 */
export class ReplicaFollower implements FillSource, GrowingSource {
  readonly outcome: CacheOutcome = 'coalesced';
  readonly digest: ParsedDigest;
  readonly done: Promise<Descriptor>;
  private source: FollowedFile;
  private file: FileReader;
  /** Every file opened, closed together once nothing reads any more. */
  private readonly files: FileReader[] = [];
  /** Bumped at each change of file, so a read that straddled one is not used. */
  private generation = 0;
  /** The hash of the current file from its start; its `bytes` are what readers may be given. */
  private readonly verifier: DigestVerifier;
  private checks: PrefixCheck[] = [];
  private expectedSize: number | undefined;
  private finalSize: number | undefined;
  private state: 'running' | 'verified' | 'failed' = 'running';
  private failure: Error | undefined;
  private aborted: Error | undefined;
  /** The fill this replica started when it took over, if it did. */
  private ownFill: BlobFill | undefined;
  /** The run loop holds one reference to the files; each reader holds one. */
  private refs = 1;
  private lastProgress: number;
  private lastLook = 0;
  private readonly buffer = Buffer.allocUnsafe(READ_CHUNK);
  private readonly signal = new ChangeSignal();

  /** Starts following the upload the owner published; undefined if it no longer exists. */
  static async follow(options: ReplicaFollowerOptions, published: PublishedFill): Promise<ReplicaFollower | undefined> {
    const source: FollowedFile = { path: uploadPath(published.upload), ...published };
    const file = await options.driver.openFile(source.path);
    return file && new ReplicaFollower(options, source, file);
  }

  private constructor(private readonly options: ReplicaFollowerOptions, source: FollowedFile, file: FileReader) {
    this.digest = options.digest;
    this.source = source;
    this.file = file;
    this.files.push(file);
    this.expectedSize = source.size;
    this.verifier = new DigestVerifier(this.digest);
    this.lastProgress = options.clock.now();
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
    // Verified, and every file let go: the bytes are in storage.
    if (this.refs === 0) return openedOnRead(() => this.options.openCommitted(range));
    return new GrowingReader(this, range?.start ?? 0, range?.end);
  }

  abort(reason: Error): void {
    if (this.state !== 'running') return;
    this.aborted = reason;
    this.ownFill?.abort(reason);
    this.notify();
  }

  /** @internal How far readers may read: all once verified, else hashed bytes short of the last one. */
  readableLimit(): number {
    if (this.state === 'verified') return this.finalSize!;
    const hashed = this.verifier.bytes;
    // Never the last hashed byte, whatever size was announced (it came from Redis, and may be too large).
    const limit = Math.min(hashed, this.expectedSize ?? Infinity) - 1;
    return Math.max(0, limit);
  }

  /** @internal Reads from the current file; `generation` tells the reader which one that was. */
  async readAt(buffer: Buffer, position: number): Promise<{ bytesRead: number; generation: number }> {
    const generation = this.generation;
    const bytesRead = await this.file.read(buffer, position);
    return { bytesRead, generation };
  }

  /** @internal */
  currentGeneration(): number {
    return this.generation;
  }

  /** @internal Resolves at the next hashed bytes, change of file, verification or failure. */
  waitForChange(): Promise<void> {
    return this.signal.wait();
  }

  /** @internal Called by a reader's constructor, in the same step as `reader()` saw the files open. */
  attach(): void {
    this.refs++;
  }

  /** @internal */
  detach(): void {
    this.release();
  }

  private notify(): void {
    this.signal.notify();
  }

  private release(): void {
    if (--this.refs > 0) return;
    for (const file of this.files) void file.close();
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
        if (!progressed) await this.options.clock.sleep(this.options.pollIntervalMs);
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

  /** Hashes what the current file has beyond what was hashed; true if there was anything. */
  private async pump(): Promise<boolean> {
    const available = await this.file.size();
    if (available <= this.verifier.bytes) return false;
    while (this.verifier.bytes < available) {
      const hashed = this.verifier.bytes;
      const check = this.checks[0];
      const until = Math.min(available, check?.at ?? Infinity, hashed + READ_CHUNK);
      const bytesRead = await this.file.read(this.buffer.subarray(0, until - hashed), hashed);
      if (bytesRead === 0) break;
      this.verifier.update(this.buffer.subarray(0, bytesRead));
      if (check && this.verifier.bytes === check.at) {
        if (this.verifier.prefixHex() !== check.hex) {
          throw new UpstreamUnavailable('the blob read from another replica changed when its fill was taken over');
        }
        this.checks.shift();
      }
      if (this.expectedSize !== undefined && this.verifier.bytes > this.expectedSize) {
        throw new UpstreamUnavailable('the fill being followed is longer than the upstream announced');
      }
      this.notify();
    }
    this.lastProgress = this.options.clock.now();
    return true;
  }

  /**
   * Decides what the state of the world means, once the bytes available are
   * hashed: done (verified, committed and recorded), keep going, switch to
   * another file, take the fill over, or fail.
   */
  private async inspect(progressed: boolean): Promise<Descriptor | undefined> {
    const { driver, leases, clock } = this.options;
    const digest = this.digest;
    const hashed = this.verifier.bytes;
    // Bytes are flowing and not all are there yet: nothing to decide until the next look is due.
    const short = this.expectedSize === undefined || hashed < this.expectedSize;
    if (progressed && short && clock.now() - this.lastLook < LOOK_INTERVAL_MS) return undefined;
    const finalPath = blobDataPath(digest.digest);
    const final = await driver.stat(finalPath);
    if (final) {
      // The size readers were promised came from Redis: a response must never end short of it.
      if (this.expectedSize !== undefined && final.size !== this.expectedSize) {
        throw new UpstreamUnavailable('the committed blob is not the size the fill being followed announced');
      }
      if (hashed === final.size && this.checks.length === 0) {
        if (!this.verifier.matches()) throw new UpstreamUnavailable('the blob read from another replica does not match its digest');
        const descriptor: Descriptor = { digest: digest.digest, size: final.size, mediaType: OCTET_STREAM };
        await this.completeCommit(descriptor);
        this.finalSize = final.size;
        return descriptor;
      }
      if (hashed > final.size) throw new UpstreamUnavailable('the fill being followed is longer than the committed blob');
      // Committed, and our file stopped short of it (its writer died and someone else finished): read the committed one.
      if (!progressed && final.id !== this.file.id) await this.switchTo({ path: finalPath });
      return undefined;
    }
    if (this.source.fill) {
      // Our own fill: it commits (and we see the blob above), or it fails.
      if (this.source.fill.failed) throw this.source.fill.failed;
      return undefined;
    }
    if (this.source.owner === undefined) {
      // Following the committed blob, and it is gone (removed under us).
      throw new UpstreamUnavailable('the committed blob vanished while it was being read');
    }
    if (clock.now() - this.lastLook < LOOK_INTERVAL_MS) return undefined;
    this.lastLook = clock.now();
    const state = await leases.look(digest.digest);
    if (!state) {
      // Redis is away: the owner cannot be seen. A file that stops growing for a lease's life is a dead fill.
      if (clock.now() - this.lastProgress > leases.ttlMs) await this.takeOver('unavailable');
      return undefined;
    }
    if (state.owner === this.source.owner) return undefined;
    const info = state.fill;
    if (info && 'failed' in info && info.owner === this.source.owner) throw info.failed;
    if (state.owner === undefined) {
      await this.takeOver(await leases.acquire(digest.digest));
    } else if (info && 'upload' in info && info.owner === state.owner) {
      // Another replica took the fill over: follow its upload instead.
      await this.switchTo({ path: uploadPath(info.upload), ...info });
    }
    return undefined;
  }

  /**
   * The commit of the blob we verified is complete in this process before
   * the last byte goes out: our own fill's commit has returned, or `record`
   * has (for a commit by another replica, or one of ours still under way;
   * recording twice links the same repositories twice, which is harmless).
   */
  private async completeCommit(descriptor: Descriptor): Promise<void> {
    const own = this.ownFill;
    if (own && !own.isRunning && !own.failed) return;
    await this.options.record(descriptor);
  }

  /** The owner let the lease go without a commit: it died. Fetch ourselves, and read on from our own upload. */
  private async takeOver(acquired: AcquireResult): Promise<void> {
    const dead = this.source;
    const taken = await this.options.takeOver(acquired);
    if (!taken) return;
    this.ownFill = taken.fill;
    this.options.logger.warn(
      { digest: this.digest.digest, previousOwner: dead.owner, leased: acquired === 'owned' },
      'took over a fill whose replica stopped renewing its lease',
    );
    const switched = taken.upload !== undefined
      && await this.switchTo({ path: uploadPath(taken.upload), upload: taken.upload, fill: taken.fill, size: taken.fill.size });
    // Our fill finished before we could open its upload: its commit is what we read next.
    if (!switched) this.source = { ...this.source, fill: taken.fill };
    // A lapsed lease says the writer is gone: its upload would otherwise wait for a restart's sweep.
    if (acquired === 'owned' && dead.upload) await this.options.driver.delete(uploadPath(dead.upload)).catch(() => undefined);
  }

  /**
   * Reads on from another file. Readers may have had up to `hashed` bytes of
   * the current one, so the new file must hash to the same value over that
   * prefix: it is hashed again from its start and checked there.
   */
  private async switchTo(next: FollowedFile): Promise<boolean> {
    const file = await this.options.driver.openFile(next.path);
    if (!file) return false;
    this.files.push(file);
    if (this.verifier.bytes > 0) {
      // Pending checks are all further along than `hashed`: they stay, after this one.
      this.checks = [{ at: this.verifier.bytes, hex: this.verifier.prefixHex() }, ...this.checks];
    }
    this.verifier.reset();
    this.source = next;
    this.file = file;
    this.generation++;
    this.expectedSize ??= next.size;
    this.lastProgress = this.options.clock.now();
    this.notify();
    return true;
  }
}
