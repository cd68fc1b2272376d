import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Clock, Timer } from '../registry/clock.js';
import { DigestVerifier, type ParsedDigest } from '../registry/digest.js';
import { OCTET_STREAM, type Descriptor } from '../registry/descriptor.js';
import { RegistryError, StorageUnavailable, UpstreamUnavailable } from '../registry/errors.js';
import type { ByteRange } from '../registry/services.js';
import { NO_FILL_EVENTS, type FillEvents } from '../registry/telemetry.js';
import type { Upload } from '../storage/driver.js';
import { ChangeSignal, GrowingReader, openedOnRead, type GrowingSource } from './growingReader.js';

/** Bytes buffered between the upstream socket and the upload. */
const SINK_BUFFER = 1024 * 1024;

/**
 * Bytes hashed and handed to readers before they are written to the upload
 * in one write: a write is a trip to node's thread pool (a wake-up, a
 * pwritev, a promise), and the upstream's chunks are 64 KiB or less, so
 * writing each batch the socket happened to deliver cost a trip per 64-128 KiB.
 */
const FILE_BATCH = 1024 * 1024;

/**
 * The last bytes received, kept as the upstream's own chunks for readers
 * that are caught up: they take them from memory instead of reading the file
 * back (issue 19, the cold path), also before the bytes are in the upload
 * (`FILE_BATCH`). Bounded per fill, but never dropping a chunk not yet
 * written; a reader further behind reads the file.
 */
const RECENT_BYTES = 2 * 1024 * 1024;

export interface BlobFillOptions {
  readonly digest: ParsedDigest;
  /** The upstream's Content-Length, when it sent one. */
  readonly expectedSize: number | undefined;
  readonly body: Readable;
  readonly upload: Upload;
  /**
   * The one storage commit of the verified upload (`LocalBlobStore.commit`:
   * bytes into place, every cache tier, every repository linked, the
   * evictor told). The fill is done only when it has returned.
   */
  readonly commit: (upload: Upload, descriptor: Descriptor) => Promise<void>;
  /** Opens the committed blob, for a reader that arrives after the fill has let go of its upload. */
  readonly openCommitted: (range?: ByteRange) => Promise<Readable>;
  /** How long the fill goes on once no reader is left. */
  readonly detachedTimeoutMs: number;
  /** The most bytes the fill accepts, announced or not (`maxBlobSize`): past it, the fill fails. */
  readonly maxSize: number;
  /** Called when the last reader leaves a running fill (the fill slots may cut it for a waiting one). */
  readonly onDetached?: () => void;
  readonly clock: Clock;
  /** Told of the first byte, every write and the end (metrics); times count from `requestedAt`. */
  readonly events?: FillEvents;
  /** `performance.now()` when the upstream GET was sent. */
  readonly requestedAt?: number;
}

type FillState = 'running' | 'committed' | 'failed';

/** The error of a blob longer than `maxBlobSize`. */
export function blobTooLarge(maxSize: number): RegistryError {
  return new RegistryError('UPSTREAM_INVALID', `the blob is larger than this mirror's maxBlobSize (${maxSize} bytes)`);
}

/**
 * One upstream fetch of one blob into an upload, hashed as it is written,
 * and committed only if its size and digest match.
 *
 * Every client of the fill, the first one included, is a reader of the
 * upload: the fill runs at the upstream's pace whatever the clients do, a
 * client that leaves does not stop it, and a client that arrives late reads
 * what is already written and follows the rest. Readers never see the last
 * byte before the fill is verified and committed, so a fill that turns out
 * wrong can only ever give its clients an aborted response, never a complete
 * wrong one.
 *
 * The upload stays open while the fill runs and while any reader holds it;
 * a reader takes hold in the same synchronous step in which it checks that
 * the upload is open. A reader that comes once the fill has settled and let
 * go reads the committed blob from storage instead. So no reader can ever
 * read an upload that was closed under it, whatever the fill does meanwhile:
 * commit, rename, close, or eviction of the committed blob (an open upload
 * keeps its bytes).
 */
export class BlobFill implements GrowingSource {
  readonly digest: ParsedDigest;
  private state: FillState = 'running';
  private failure: Error | undefined;
  /** Bytes received and hashed: readers may have them (from `recent`) before they are in the upload. */
  private bytesWritten = 0;
  /** Bytes in the upload; `recent` keeps every chunk past them. */
  private fileBytes = 0;
  private committedSize: number | undefined;
  private readers = 0;
  private hadReader = false;
  private uploadOpen = true;
  private detachTimer: Timer | undefined;
  private readonly signal = new ChangeSignal();
  /** Chunks covering [recentStart, bytesWritten), oldest first, at most about RECENT_BYTES. */
  private recent: Buffer[] = [];
  private recentStart = 0;
  readonly done: Promise<Descriptor>;

  constructor(private readonly options: BlobFillOptions) {
    this.digest = options.digest;
    this.armDetachTimer();
    this.done = this.run();
    this.done.catch(() => undefined);
  }

  /** The size, if the upstream stated it or the fill has finished. */
  get size(): number | undefined {
    return this.committedSize ?? this.options.expectedSize;
  }

  get written(): number {
    return this.bytesWritten;
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  get isRunning(): boolean {
    return this.state === 'running';
  }

  /** Running, and every reader it had has left: it goes on only for the next pull. */
  get detached(): boolean {
    return this.state === 'running' && this.hadReader && this.readers === 0;
  }

  /** Stops the fill (shutdown, detached timeout); readers see an error. */
  abort(reason: Error): void {
    if (this.state === 'running') this.options.body.destroy(reason);
  }

  /** A stream of the fill's bytes, whole or a range; it errors if the fill fails. */
  reader(range?: ByteRange): Readable {
    if (this.failure) throw this.failure;
    if (this.uploadOpen) return new GrowingReader(this, range?.start ?? 0, range?.end);
    // Committed, and the upload is closed: the bytes are in storage now.
    return openedOnRead(() => this.options.openCommitted(range));
  }

  /** Resolves at the next write, commit or failure. */
  waitForChange(): Promise<void> {
    return this.signal.wait();
  }

  /** How far a reader may read now: all of it once committed, else all but the last byte. */
  readableLimit(): number {
    if (this.state === 'committed') return this.committedSize!;
    return Math.max(0, this.bytesWritten - 1);
  }

  /** @internal */
  async readAt(buffer: Buffer, position: number): Promise<{ bytesRead: number }> {
    return { bytesRead: await this.options.upload.read(buffer, position) };
  }

  /** @internal A view of received bytes still in memory; never past what `readableLimit` allows (the caller bounds `maxBytes` by it). */
  recentAt(position: number, maxBytes: number): Buffer | undefined {
    if (position < this.recentStart || maxBytes <= 0) return undefined;
    let offset = position - this.recentStart;
    for (const chunk of this.recent) {
      if (offset < chunk.length) return chunk.subarray(offset, offset + Math.min(maxBytes, chunk.length - offset));
      offset -= chunk.length;
    }
    return undefined;
  }

  /** Keeps what was just received for caught-up readers, dropping the oldest (written) beyond RECENT_BYTES. */
  private remember(buffers: readonly Buffer[]): void {
    let held = this.bytesWritten - this.recentStart;
    for (const b of buffers) {
      this.recent.push(b);
      held += b.length;
    }
    // Never a chunk not yet in the upload: a reader behind `recentStart` reads the file.
    while (this.recent.length > 1 && held - this.recent[0]!.length >= RECENT_BYTES && this.recentStart + this.recent[0]!.length <= this.fileBytes) {
      const dropped = this.recent.shift()!;
      held -= dropped.length;
      this.recentStart += dropped.length;
    }
  }

  /** @internal Called by a reader's constructor, in the same step as `reader()` saw the upload open. */
  attach(): void {
    this.readers++;
    this.hadReader = true;
    this.detachTimer?.cancel();
    this.detachTimer = undefined;
  }

  /** @internal */
  detach(): void {
    this.readers--;
    if (this.readers > 0) return;
    if (this.state === 'running') {
      this.armDetachTimer();
      this.options.onDetached?.();
    } else {
      this.closeUpload();
    }
  }

  private armDetachTimer(): void {
    if (this.state !== 'running' || this.options.detachedTimeoutMs <= 0) return;
    this.detachTimer = this.options.clock.setTimeout(() => {
      this.abort(new UpstreamUnavailable('blob fill abandoned: no client for the detached-fill timeout'));
    }, this.options.detachedTimeoutMs);
  }

  /** Once the fill has settled and no reader holds it: later readers go to storage. */
  private closeUpload(): void {
    if (!this.uploadOpen) return;
    this.uploadOpen = false;
    void this.options.upload.close();
  }

  private async run(): Promise<Descriptor> {
    const { body, upload, expectedSize, maxSize } = this.options;
    const events = this.options.events ?? NO_FILL_EVENTS;
    const requestedAt = this.options.requestedAt ?? performance.now();
    const seconds = (): number => (performance.now() - requestedAt) / 1000;
    const verifier = new DigestVerifier(this.digest);
    /** Chunks received and not yet in the upload (`FILE_BATCH`). */
    let unwritten: Buffer[] = [];
    const writeOut = async (): Promise<void> => {
      if (unwritten.length === 0) return;
      const batch = unwritten;
      const end = this.bytesWritten;
      unwritten = [];
      await upload.write(batch, this.fileBytes);
      this.fileBytes = end;
    };
    const sink = new Writable({
      highWaterMark: SINK_BUFFER,
      writev: (chunks, callback) => {
        const buffers = chunks.map((c) => c.chunk as Buffer);
        const length = buffers.reduce((n, b) => n + b.length, 0);
        if (expectedSize !== undefined && this.bytesWritten + length > expectedSize) {
          callback(new UpstreamUnavailable('upstream sent more bytes than it announced'));
          return;
        }
        // Without a Content-Length nothing else ends it: an endless body would fill the disk.
        if (this.bytesWritten + length > maxSize) {
          callback(blobTooLarge(maxSize));
          return;
        }
        for (const b of buffers) verifier.update(b);
        if (this.bytesWritten === 0) events.firstByte(seconds());
        this.remember(buffers);
        this.bytesWritten += length;
        events.received(length);
        this.signal.notify();
        unwritten.push(...buffers);
        if (this.bytesWritten - this.fileBytes < FILE_BATCH) {
          callback();
          return;
        }
        writeOut().then(() => callback(), (err: unknown) => callback(localFailure(err)));
      },
      final: (callback) => {
        writeOut().then(() => callback(), (err: unknown) => callback(localFailure(err)));
      },
    });
    try {
      await pipeline(body, sink);
      if (expectedSize !== undefined && this.bytesWritten !== expectedSize) {
        throw new UpstreamUnavailable(`upstream sent ${this.bytesWritten} of ${expectedSize} bytes`);
      }
      verifier.check();
      const descriptor: Descriptor = { digest: this.digest.digest, size: this.bytesWritten, mediaType: OCTET_STREAM };
      await this.options.commit(upload, descriptor).catch((err: unknown) => { throw localFailure(err); });
      this.committedSize = this.bytesWritten;
      this.state = 'committed';
      events.finished(true, seconds(), undefined);
      return descriptor;
    } catch (err) {
      this.state = 'failed';
      this.failure = err instanceof RegistryError ? err
        : new UpstreamUnavailable(`upstream broke off the blob (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      body.destroy();
      events.finished(false, seconds(), this.failure.message);
      await upload.discard();
      throw this.failure;
    } finally {
      // Settled: later reads go to the upload or the committed file.
      this.recent = [];
      this.recentStart = this.bytesWritten;
      this.detachTimer?.cancel();
      if (this.readers === 0) this.closeUpload();
      this.signal.notify();
    }
  }
}

/** A write or commit of ours that failed: the storage's fault, never the upstream's (a full disk is not "upstream broke off"). */
function localFailure(err: unknown): Error {
  if (err instanceof RegistryError) return err;
  return StorageUnavailable.from(err, 'the blob') ?? new RegistryError('UNKNOWN', `storing the blob failed (${(err as Error).message})`);
}
