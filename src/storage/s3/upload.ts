import { constants, createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, PutObjectCommand, UploadPartCommand,
  type CompletedPart, type S3Client,
} from '@aws-sdk/client-s3';
import type { Upload } from '../driver.js';
import { writeAllAt } from '../filesystem.js';
import { storageFailure } from './client.js';

export interface S3UploadOptions {
  readonly name: string;
  readonly client: S3Client;
  readonly bucket: string;
  /** The bucket key of a storage path. */
  readonly keyOf: (path: string) => string;
  /** The local spool file, open for reading and writing. */
  readonly spoolPath: string;
  readonly handle: FileHandle;
  /**
   * Where the bytes are meant to go: given, the parts go up to S3 while the
   * bytes arrive, as a multipart upload under that key, completed by the
   * commit. Absent: everything goes up at the commit.
   */
  readonly destination: string | undefined;
  readonly partSizeBytes: number;
}

/** A multipart upload under one key, and how far its parts have been queued. */
interface Multipart {
  readonly key: string;
  readonly uploadId: Promise<string>;
  readonly parts: CompletedPart[];
  /** Bytes of the spool handed to parts so far. */
  queued: number;
}

/**
 * An upload of the S3 driver. Every byte first lands in a local spool file,
 * which is what readers in this process read while the upload grows (an S3
 * object cannot be read before it is complete). With a `destination`, each
 * full part of the spool goes up to S3 in the background as a multipart
 * upload under the final key; nothing is visible under that key until
 * `commit` completes the upload (atomic, as S3 makes an object appear
 * whole). A fill calls `commit` only once the digest and size matched;
 * `discard` aborts the multipart upload, so no parts are left behind.
 *
 * Memory: no part is held in memory; each is streamed from the spool.
 */
export class S3Upload implements Upload {
  readonly name: string;
  private size = 0;
  /** The spool holds every byte below this: parts may be cut from it. */
  private contiguous = 0;
  private multipart: Multipart | undefined;
  /** Parts go up one at a time, in order. */
  private queue: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private streaming: boolean;
  private closed = false;
  private gone = false;

  constructor(private readonly options: S3UploadOptions) {
    this.name = options.name;
    this.streaming = options.destination !== undefined;
  }

  async write(chunks: readonly Buffer[], position: number): Promise<void> {
    const at = await writeAllAt(this.options.handle, chunks, position);
    this.size = Math.max(this.size, at);
    // A write still under way when the fill failed must not start a multipart upload after the discard aborted it.
    if (!this.streaming || this.gone) return;
    // Parts are cut from bytes written in order; a write elsewhere (never a fill's) sends it all at the commit instead.
    if (position !== this.contiguous) {
      this.stopStreaming();
      return;
    }
    this.contiguous = at;
    this.queueFullParts(this.options.destination!);
  }

  async read(buffer: Buffer, position: number): Promise<number> {
    if (!this.closed) return (await this.options.handle.read(buffer, 0, buffer.length, position)).bytesRead;
    const handle = await open(this.options.spoolPath, constants.O_RDONLY);
    try {
      return (await handle.read(buffer, 0, buffer.length, position)).bytesRead;
    } finally {
      await handle.close();
    }
  }

  async commit(path: string): Promise<void> {
    const key = this.options.keyOf(path);
    try {
      if (this.streaming && path === this.options.destination) await this.completeStreamed(key);
      else await this.sendWhole(path, key);
    } catch (err) {
      await this.abortMultipart();
      throw storageFailure('upload', key, err);
    }
    this.gone = true;
    // Readers holding the handle keep reading the unlinked spool until close.
    await unlink(this.options.spoolPath).catch(() => undefined);
  }

  async discard(): Promise<void> {
    if (this.gone) return;
    this.gone = true;
    await this.abortMultipart();
    await unlink(this.options.spoolPath).catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.options.handle.close().catch(() => undefined);
  }

  /** The last part (what is left, possibly nothing), then CompleteMultipartUpload; a PutObject if it never needed parts. */
  private async completeStreamed(key: string): Promise<void> {
    if (!this.multipart) {
      await this.putObject(key);
      return;
    }
    const multipart = this.multipart;
    if (this.size > multipart.queued) this.queuePart(multipart, multipart.queued, this.size);
    await this.queue;
    if (this.failure) throw this.failure;
    await this.options.client.send(new CompleteMultipartUploadCommand({
      Bucket: this.options.bucket, Key: key, UploadId: await multipart.uploadId, MultipartUpload: { Parts: multipart.parts },
    }));
    this.multipart = undefined;
  }

  /** All of the spool to `key`: one PutObject up to a part's size, else a multipart upload of its own. */
  private async sendWhole(path: string, key: string): Promise<void> {
    this.stopStreaming();
    await this.abortMultipart();
    if (this.size <= this.options.partSizeBytes) {
      await this.putObject(key);
      return;
    }
    this.failure = undefined;
    this.streaming = true;
    this.contiguous = this.size;
    const multipart = this.startMultipart(key);
    this.queueFullParts(path);
    await this.completeStreamed(multipart.key);
  }

  private async putObject(key: string): Promise<void> {
    await this.options.client.send(new PutObjectCommand({
      Bucket: this.options.bucket, Key: key, ContentLength: this.size, Body: this.spoolStream(0, this.size),
    }));
  }

  /** Queues every full part of the spool not yet queued, starting the multipart upload at the first. */
  private queueFullParts(path: string): void {
    const { partSizeBytes } = this.options;
    while (this.contiguous - (this.multipart?.queued ?? 0) >= partSizeBytes) {
      const multipart = this.multipart ?? this.startMultipart(this.options.keyOf(path));
      this.queuePart(multipart, multipart.queued, multipart.queued + partSizeBytes);
    }
  }

  private startMultipart(key: string): Multipart {
    const uploadId = this.options.client.send(new CreateMultipartUploadCommand({ Bucket: this.options.bucket, Key: key }))
      .then((r) => r.UploadId!);
    uploadId.catch(() => undefined);
    this.multipart = { key, uploadId, parts: [], queued: 0 };
    return this.multipart;
  }

  private queuePart(multipart: Multipart, start: number, end: number): void {
    multipart.queued = end;
    const partNumber = multipart.parts.length + 1;
    const placeholder: CompletedPart = { PartNumber: partNumber };
    multipart.parts.push(placeholder);
    this.queue = this.queue.then(async () => {
      if (this.failure) return;
      try {
        const result = await this.options.client.send(new UploadPartCommand({
          Bucket: this.options.bucket, Key: multipart.key, UploadId: await multipart.uploadId, PartNumber: partNumber,
          ContentLength: end - start, Body: this.spoolStream(start, end),
        }));
        placeholder.ETag = result.ETag;
      } catch (err) {
        this.failure = err as Error;
      }
    });
  }

  /** Stops sending parts while bytes arrive: the commit sends everything. */
  private stopStreaming(): void {
    this.streaming = false;
  }

  /** Aborts the multipart upload, if one was started, once its queued parts are done; no parts are left behind. */
  private async abortMultipart(): Promise<void> {
    const multipart = this.multipart;
    if (!multipart) return;
    this.multipart = undefined;
    await this.queue;
    const uploadId = await multipart.uploadId.catch(() => undefined);
    if (uploadId === undefined) return;
    await this.options.client.send(new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: multipart.key, UploadId: uploadId }))
      .catch(() => undefined);
  }

  /** Bytes `[start, end)` of the spool, read by path (the upload's own handle may be closed by then). */
  private spoolStream(start: number, end: number): Readable | Buffer {
    if (end <= start) return Buffer.alloc(0);
    return createReadStream(this.options.spoolPath, { start, end: end - 1 });
  }
}
