import { constants } from 'node:fs';
import { access, mkdir, open, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand, DeleteObjectsCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListMultipartUploadsCommand,
  ListObjectsV2Command, PutObjectCommand, type ListObjectsV2CommandOutput, type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { FileInfo, FileReader, OpenedReader, RangeChooser, StorageDriver, Upload } from '../driver.js';
import type { Digest } from '../../registry/digest.js';
import { UPLOADS_DIR, blobDataPath, newUploadName } from '../layout.js';
import { createS3Client, isNotFound, storageFailure, type S3ClientSettings, type S3RequestListener } from './client.js';
import { S3Upload } from './upload.js';
import { S3_DRIVER_KIND } from './kind.js';

export interface S3StorageDriverOptions {
  readonly bucket: string;
  /** Empty, or key path components without leading or trailing `/`. */
  readonly prefix: string;
  readonly client: S3ClientSettings;
  /** The local directory of spool files (fills in progress); `_uploads` below it. */
  readonly spoolRoot: string;
  readonly partSizeBytes: number;
  /** With other processes on the bucket, incomplete multipart uploads younger than this are theirs. */
  readonly abandonedUploadAgeMs: number;
  /** Told of every S3 request (metrics, tests). */
  readonly onRequest?: S3RequestListener;
}

/** S3 deletes at most this many keys per DeleteObjects. */
const DELETE_BATCH = 1000;

/**
 * The S3 driver: every storage path is one key, `<prefix>/<path>`, in one
 * bucket, so the bucket holds the same logical layout as the filesystem
 * driver's root (layout.ts). Directories exist only as key prefixes.
 *
 * What each operation costs in S3 requests:
 * - `getContent`, `putContent`, `stat`, `openReader`: one (GetObject,
 *   PutObject, HeadObject, GetObject with a Range for a range);
 * - `list`: one ListObjectsV2 per 1000 entries;
 * - `delete`: one ListObjectsV2 (the keys below the path) and one
 *   DeleteObjects per 1000 keys;
 * - a committed upload: one PutObject up to `partSizeBytes`, else
 *   CreateMultipartUpload, one UploadPart per part, CompleteMultipartUpload;
 * - `touch`: none. Objects cannot be touched, and LastModified is the write
 *   time: the `UsageRecorder` sends uses to a `UseTimes` instead (Redis: one
 *   pipelined HSET per flush; without Redis the usage record object
 *   `_pullthrough/usage.json`: one GetObject and one PutObject per flush),
 *   and eviction reads them back once per run. The size total lives beside
 *   them (`SizeLedger`), so a start-up lists nothing to learn the size.
 *
 * Uploads spool locally (see `S3Upload`). Another process cannot open an
 * upload of this one (`openFile` of an upload path is undefined): replicas
 * follow a fill over the owner's internal fill endpoint instead.
 */
export class S3StorageDriver implements StorageDriver {
  /** What `isS3Driver` (kind.ts) asks, so that a caller need not load this module (and the AWS SDK) to tell. */
  readonly kind = S3_DRIVER_KIND;
  readonly client: S3Client;
  readonly bucket: string;
  /** S3 requests sent so far, by command (`GetObject`, ...): what each operation costs, for tests and the operator. */
  readonly requests = new Map<string, number>();
  /** ListObjectsV2 requests by the storage path listed (`blobs/sha256/`, ...): which walks an operation made (tests, the operator). */
  readonly listings = new Map<string, number>();
  private readonly prefix: string;
  private readonly spoolDir: string;

  constructor(private readonly options: S3StorageDriverOptions) {
    this.client = createS3Client(options.client, (command) => {
      this.requests.set(command, (this.requests.get(command) ?? 0) + 1);
      options.onRequest?.(command);
    });
    this.bucket = options.bucket;
    this.prefix = options.prefix ? `${options.prefix}/` : '';
    this.spoolDir = join(options.spoolRoot, UPLOADS_DIR);
  }

  /** The bucket key of a storage path. */
  key(path: string): string {
    return `${this.prefix}${path}`;
  }

  /** What this driver is, for messages (`s3://bucket/prefix`). */
  get description(): string {
    return `s3://${this.bucket}/${this.prefix}`;
  }

  async init(): Promise<void> {
    await mkdir(this.spoolDir, { recursive: true });
    await access(this.spoolDir, constants.W_OK);
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      // A missing bucket or refused credentials are configuration errors; the store being away is not (readiness says so).
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || status === 403 || status === 400) {
        throw new Error(`S3 bucket ${this.bucket} ${status === 404 ? 'does not exist' : `refused access (HTTP ${status})`}: check storage.s3.bucket, its endpoint and credentials`);
      }
    }
  }

  async getContent(path: string): Promise<Buffer | undefined> {
    const key = this.key(path);
    try {
      const result = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return Buffer.from(await result.Body!.transformToByteArray());
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw storageFailure('GetObject', key, err);
    }
  }

  async putContent(path: string, content: Uint8Array | string): Promise<void> {
    const key = this.key(path);
    const body = typeof content === 'string' ? Buffer.from(content) : content;
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length }));
    } catch (err) {
      throw storageFailure('PutObject', key, err);
    }
  }

  async stat(path: string): Promise<FileInfo | undefined> {
    const key = this.key(path);
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { size: head.ContentLength ?? 0, modifiedMs: head.LastModified?.getTime() ?? 0, isDirectory: false, id: head.ETag ?? key };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw storageFailure('HeadObject', key, err);
    }
  }

  /**
   * One GetObject. The range is asked for as the chooser picks it from a
   * blob of unbounded size; S3's answer tells the true size, and only when
   * the range for that size differs (a suffix range, a start past the end) is
   * a second request made.
   */
  async openReader(path: string, chooseRange?: RangeChooser): Promise<OpenedReader | undefined> {
    const guess = chooseRange?.(Number.MAX_SAFE_INTEGER);
    const first = await this.getObject(path, guess);
    if (first === 'invalid range' || (first && chooseRange)) {
      const size = first === 'invalid range' ? (await this.stat(path))?.size : first.size;
      if (size === undefined) return undefined;
      let range;
      try {
        range = chooseRange!(size);
      } catch (err) {
        if (first !== 'invalid range') first.stream.destroy();
        throw err;
      }
      if (first !== 'invalid range' && sameRange(first.range, range)) return { ...first, range };
      if (first !== 'invalid range') first.stream.destroy();
      const second = await this.getObject(path, range);
      return second === 'invalid range' ? undefined : second && { ...second, range };
    }
    return first;
  }

  private async getObject(path: string, range: { start: number; end: number } | undefined): Promise<OpenedReader | 'invalid range' | undefined> {
    const key = this.key(path);
    try {
      const result = await this.client.send(new GetObjectCommand({
        Bucket: this.bucket, Key: key, ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
      }));
      const served = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(result.ContentRange ?? '');
      const size = served ? Number(served[3]) : result.ContentLength ?? 0;
      return { stream: result.Body as Readable, size, range: served ? { start: Number(served[1]), end: Number(served[2]) } : undefined };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 416) return 'invalid range';
      throw storageFailure('GetObject', key, err);
    }
  }

  /**
   * A complete object, read by ranged GETs of the version first seen
   * (If-Match its ETag). An upload is never in the bucket while it grows:
   * undefined for upload paths.
   */
  async openFile(path: string): Promise<FileReader | undefined> {
    if (path.startsWith(`${UPLOADS_DIR}/`)) return undefined;
    const info = await this.stat(path);
    if (!info) return undefined;
    const key = this.key(path);
    return {
      id: info.id,
      read: async (buffer, position) => {
        if (position >= info.size || buffer.length === 0) return 0;
        const end = Math.min(info.size, position + buffer.length) - 1;
        try {
          const result = await this.client.send(new GetObjectCommand({
            Bucket: this.bucket, Key: key, Range: `bytes=${position}-${end}`, IfMatch: info.id,
          }));
          const bytes = await result.Body!.transformToByteArray();
          buffer.set(bytes);
          return bytes.length;
        } catch (err) {
          throw storageFailure('GetObject', key, err);
        }
      },
      size: async () => info.size,
      close: async () => undefined,
    };
  }

  async list(path: string): Promise<string[]> {
    const prefix = `${this.key(path)}/`;
    const names: string[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.listPage(prefix, '/', token);
        for (const p of page.CommonPrefixes ?? []) names.push(p.Prefix!.slice(prefix.length, -1));
        for (const o of page.Contents ?? []) names.push(o.Key!.slice(prefix.length));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw storageFailure('ListObjectsV2', prefix, err);
    }
    return names;
  }

  /** The key itself and every key below it, in batches. */
  async delete(path: string): Promise<void> {
    const key = this.key(path);
    await this.deleteKeys([key, ...await this.keysBelow(`${key}/`)]);
  }

  /**
   * Removes many files (not directories) in batched DeleteObjects: eviction
   * removes thousands of small records at once without a request for each.
   */
  async deleteFiles(paths: Iterable<string>): Promise<void> {
    await this.deleteKeys([...paths].map((p) => this.key(p)));
  }

  async touch(): Promise<void> {
    // Objects cannot be touched: last-use times live in Redis or in the usage record (UseTimes, see UsageRecorder).
  }

  /** Given the digest of a fill, its parts go up under the blob's key while the bytes arrive. */
  async createUpload(forDigest?: Digest): Promise<Upload> {
    const name = newUploadName(forDigest);
    const spoolPath = join(this.spoolDir, name);
    let handle;
    try {
      handle = await open(spoolPath, 'w+', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // The spool directory was removed under us (a tmp cleaner): make it again.
      await mkdir(this.spoolDir, { recursive: true });
      handle = await open(spoolPath, 'w+', 0o600);
    }
    return new S3Upload({
      name,
      client: this.client,
      bucket: this.bucket,
      keyOf: (p) => this.key(p),
      spoolPath,
      handle,
      destination: forDigest ? blobDataPath(forDigest) : undefined,
      partSizeBytes: this.options.partSizeBytes,
    });
  }

  /**
   * Local spool files untouched for `olderThanMs`; incomplete multipart
   * uploads under the prefix (all when `olderThanMs` is 0, else those begun
   * `abandonedUploadAgeMs` ago: a live fill of another replica may run
   * long); readiness probe objects a crash left.
   */
  async sweepUploads(olderThanMs: number, now: number): Promise<number> {
    let removed = 0;
    for (const name of await readdir(this.spoolDir).catch(() => [] as string[])) {
      const path = join(this.spoolDir, name);
      const info = await stat(path).catch(() => undefined);
      if (info && (olderThanMs === 0 || now - info.mtimeMs >= olderThanMs)) {
        await unlink(path).catch(() => undefined);
        removed++;
      }
    }
    const multipartAge = olderThanMs === 0 ? 0 : this.options.abandonedUploadAgeMs;
    removed += await this.abortMultipartUploads(multipartAge, now);
    const probes = await this.keysBelow(this.key(`${UPLOADS_DIR}/`), (modifiedMs) => now - modifiedMs >= multipartAge);
    await this.deleteKeys(probes);
    return removed + probes.length;
  }

  /** A presigned GET of a file's object, valid for `expiresInMs`: redirects send clients there. */
  presignedUrl(path: string, expiresInMs: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.key(path) }),
      { expiresIn: Math.max(1, Math.floor(expiresInMs / 1000)) });
  }

  /** Incomplete multipart uploads (every one under the prefix) begun at least `ageMs` ago, aborted. */
  async abortMultipartUploads(ageMs: number, now: number): Promise<number> {
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    try {
      do {
        const page = await this.client.send(new ListMultipartUploadsCommand({
          Bucket: this.bucket, ...(this.prefix ? { Prefix: this.prefix } : {}),
          ...(keyMarker ? { KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker } : {}),
        }));
        for (const u of page.Uploads ?? []) {
          // Age 0 means every one: the store's Initiated time has whole seconds and may lie ahead of `now`.
          if (ageMs > 0 && now - (u.Initiated?.getTime() ?? 0) < ageMs) continue;
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: u.Key!, UploadId: u.UploadId! }));
          aborted++;
        }
        keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
        uploadIdMarker = page.NextUploadIdMarker;
      } while (keyMarker);
    } catch (err) {
      throw storageFailure('ListMultipartUploads', this.prefix, err);
    }
    return aborted;
  }

  /** Every key below `prefix` (no delimiter), optionally only those whose LastModified passes `keep`. */
  private async keysBelow(prefix: string, keep?: (modifiedMs: number) => boolean): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    try {
      do {
        const page = await this.listPage(prefix, undefined, token);
        for (const o of page.Contents ?? []) if (!keep || keep(o.LastModified?.getTime() ?? 0)) keys.push(o.Key!);
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw storageFailure('ListObjectsV2', prefix, err);
    }
    return keys;
  }

  private listPage(prefix: string, delimiter: string | undefined, token: string | undefined): Promise<ListObjectsV2CommandOutput> {
    const path = prefix.slice(this.prefix.length);
    this.listings.set(path, (this.listings.get(path) ?? 0) + 1);
    return this.client.send(new ListObjectsV2Command({
      Bucket: this.bucket, Prefix: prefix, ...(delimiter ? { Delimiter: delimiter } : {}), ...(token ? { ContinuationToken: token } : {}),
    }));
  }

  private async deleteKeys(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      try {
        const result = await this.client.send(new DeleteObjectsCommand({
          Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }));
        const failed = (result.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
        if (failed.length > 0) throw Object.assign(new Error(`${failed.length} keys not deleted (${failed[0]!.Code})`), { name: failed[0]!.Code });
      } catch (err) {
        throw storageFailure('DeleteObjects', batch[0]!, err);
      }
    }
  }
}

/** Two ranges (or two "whole file"s) that read the same bytes. */
function sameRange(a: { start: number; end: number } | undefined, b: { start: number; end: number } | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.start === b.start && a.end === b.end);
}
