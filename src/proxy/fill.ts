import type { FileHandle } from 'node:fs/promises';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDigester, type ParsedDigest } from '../registry/digest.js';
import type { Descriptor } from '../registry/descriptor.js';
import { OCTET_STREAM } from '../registry/descriptor.js';
import { RegistryError, UpstreamUnavailable } from '../registry/errors.js';
import type { ByteRange } from '../registry/services.js';
import type { Upload } from '../storage/driver.js';
import { ChangeSignal, GrowingReader, type GrowingSource } from './growingReader.js';

/** Bytes buffered between the upstream socket and the temp file. */
const SINK_BUFFER = 1024 * 1024;

export class DigestMismatch extends RegistryError {
  constructor(expected: string, actual: string) {
    super('UPSTREAM_INVALID', 'upstream sent bytes that do not match the digest', { expected, actual });
  }
}

export interface BlobFillOptions {
  readonly digest: ParsedDigest;
  /** The upstream's Content-Length, when it sent one. */
  readonly expectedSize: number | undefined;
  readonly body: Readable;
  readonly upload: Upload;
  /** Moves the verified temp file to its final place (Upload.commit with the blob's path). */
  readonly commit: (upload: Upload) => Promise<void>;
  /** How long the fill goes on once no reader is left. */
  readonly detachedTimeoutMs: number;
}

type FillState = 'running' | 'committed' | 'failed';

/**
 * One upstream fetch of one blob into a temp file, hashed as it is written,
 * and committed only if its size and digest match.
 *
 * Every client of the fill, the first one included, is a reader of the temp
 * file: the fill runs at the upstream's pace whatever the clients do, a
 * client that leaves does not stop it, and a client that arrives late reads
 * what is already written and follows the rest. Readers never see the last
 * byte before the fill is verified, so a fill that turns out wrong can only
 * ever give its clients an aborted response, never a complete wrong one.
 */
export class BlobFill implements GrowingSource {
  readonly digest: ParsedDigest;
  private state: FillState = 'running';
  private failure: Error | undefined;
  private bytesWritten = 0;
  private committedSize: number | undefined;
  private readers = 0;
  /** The fill holds one reference to the temp file's handle until retired; each reader holds one. */
  private handleRefs = 1;
  private retired = false;
  private detachTimer: NodeJS.Timeout | undefined;
  private readonly signal = new ChangeSignal();
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

  /** Stops the fill (shutdown, detached timeout); readers see an error. */
  abort(reason: Error): void {
    if (this.state === 'running') this.options.body.destroy(reason);
  }

  /** A stream of the fill's bytes, whole or a range; it errors if the fill fails. */
  reader(range?: ByteRange): Readable {
    if (this.failure) throw this.failure;
    return new GrowingReader(this, range?.start ?? 0, range?.end);
  }

  private notify(): void {
    this.signal.notify();
  }

  /** Resolves at the next write, commit or failure. */
  waitForChange(): Promise<void> {
    return this.signal.wait();
  }

  /** How far a reader may read now: all of it once verified, else all but the last byte. */
  readableLimit(): number {
    if (this.state === 'committed') return this.committedSize!;
    return Math.max(0, this.bytesWritten - 1);
  }

  /** @internal */
  readAt(buffer: Buffer, position: number): Promise<{ bytesRead: number }> {
    return this.options.upload.handle.read(buffer, 0, buffer.length, position);
  }

  /** @internal */
  attach(): void {
    this.readers++;
    this.handleRefs++;
    if (this.detachTimer) clearTimeout(this.detachTimer);
    this.detachTimer = undefined;
  }

  /** @internal */
  detach(): void {
    this.readers--;
    if (this.readers === 0) this.armDetachTimer();
    this.release();
  }

  private armDetachTimer(): void {
    if (this.state !== 'running' || this.options.detachedTimeoutMs <= 0) return;
    this.detachTimer = setTimeout(() => {
      this.abort(new UpstreamUnavailable('blob fill abandoned: no client for the detached-fill timeout'));
    }, this.options.detachedTimeoutMs);
    this.detachTimer.unref();
  }

  /**
   * The store no longer hands this fill to new requests. Until then the fill
   * keeps its temp file open, even after it finished: a request can join a
   * committed fill in the moment before the store has linked the blob and
   * let go of it, and must still be able to read.
   */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    this.release();
  }

  private release(): void {
    if (--this.handleRefs === 0) void this.options.upload.close();
  }

  private async run(): Promise<Descriptor> {
    const { body, upload, expectedSize } = this.options;
    const hash = createDigester(this.digest.algorithm);
    const handle = upload.handle;
    const sink = new Writable({
      highWaterMark: SINK_BUFFER,
      writev: (chunks, callback) => {
        const buffers = chunks.map((c) => c.chunk as Buffer);
        const length = buffers.reduce((n, b) => n + b.length, 0);
        if (expectedSize !== undefined && this.bytesWritten + length > expectedSize) {
          callback(new UpstreamUnavailable('upstream sent more bytes than it announced'));
          return;
        }
        for (const b of buffers) hash.update(b);
        writeAll(handle, buffers, this.bytesWritten).then(() => {
          this.bytesWritten += length;
          this.notify();
          callback();
        }, callback);
      },
    });
    try {
      await pipeline(body, sink);
      if (expectedSize !== undefined && this.bytesWritten !== expectedSize) {
        throw new UpstreamUnavailable(`upstream sent ${this.bytesWritten} of ${expectedSize} bytes`);
      }
      const actual = `${this.digest.algorithm}:${hash.digest('hex')}`;
      if (actual !== this.digest.digest) throw new DigestMismatch(this.digest.digest, actual);
      await this.options.commit(upload);
      this.committedSize = this.bytesWritten;
      this.state = 'committed';
      return { digest: this.digest.digest, size: this.bytesWritten, mediaType: OCTET_STREAM };
    } catch (err) {
      this.state = 'failed';
      this.failure = err instanceof RegistryError ? err
        : new UpstreamUnavailable(`upstream broke off the blob (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      body.destroy();
      await upload.discard();
      throw this.failure;
    } finally {
      if (this.detachTimer) clearTimeout(this.detachTimer);
      this.notify();
    }
  }
}

/** Writes every byte of `buffers` at `position` (positional writes: readers read concurrently). */
async function writeAll(handle: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let pending = buffers;
  let at = position;
  while (pending.length > 0) {
    const { bytesWritten } = await handle.writev(pending, at);
    at += bytesWritten;
    pending = skipBytes(pending, bytesWritten);
  }
}

function skipBytes(buffers: Buffer[], count: number): Buffer[] {
  let left = count;
  const rest: Buffer[] = [];
  for (const b of buffers) {
    if (left >= b.length) {
      left -= b.length;
    } else {
      rest.push(left > 0 ? b.subarray(left) : b);
      left = 0;
    }
  }
  return rest;
}
