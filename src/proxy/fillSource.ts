import type { Readable } from 'node:stream';
import type { Descriptor } from '../registry/descriptor.js';
import type { ParsedDigest } from '../registry/digest.js';
import type { ByteRange, CacheOutcome } from '../registry/services.js';
import type { Upload } from '../storage/driver.js';
import type { FillEvents } from '../registry/telemetry.js';
import type { BlobFill } from './fill.js';

/**
 * What requests read while a cold blob is on its way: a fill of this
 * process, another replica's fill being followed, or a blob another process
 * has just committed.
 */
export interface FillSource {
  readonly digest: ParsedDigest;
  /** The size, when the upstream stated it or the blob is complete. */
  readonly size: number | undefined;
  /** Bytes received so far, when this source fetches them itself (the status page's progress bar). */
  readonly written?: number;
  /** Resolves when the blob is committed and recorded; rejects when the fill failed. */
  readonly done: Promise<Descriptor>;
  /** How the request that found this source was served; a fill of our own (no value) is a miss. */
  readonly outcome?: CacheOutcome;
  /** The bytes, whole or a range; the stream errors (never ends early) if the fill fails. */
  reader(range?: ByteRange): Readable;
  /** Stops following or fetching (shutdown); readers see an error. */
  abort(reason: Error): void;
}

/** Makes the upload a fill writes, once the upstream said how long the blob is. */
export type UploadFactory = (expectedSize: number | undefined) => Promise<Upload>;

/**
 * Fetches the blob from the upstream into an upload from `createUpload`,
 * resolving once the upstream answered; rejects with its error
 * (BLOB_UNKNOWN for a 404...). The fill commits through the one storage
 * commit, with every repository that asked for the blob meanwhile.
 */
export type FetchBlob = (createUpload: UploadFactory) => Promise<BlobFill>;

/** A blob's body on its way from somewhere (the upstream, a peer), with the size its sender stated. */
export interface BlobBody {
  readonly size: number | undefined;
  readonly body: Readable;
}

export interface ClaimOptions {
  /** Goes upstream: when this process is to fetch. */
  readonly fetch: FetchBlob;
  /** The upstream GET alone (BLOB_UNKNOWN on a 404): a body for `fill`, when bytes are spliced from several senders. */
  readonly open: () => Promise<BlobBody>;
  /**
   * A fill of this process over any body (a peer's), hashed, verified and
   * committed like an upstream fill; `events` are where its bytes are
   * counted (the upstream's fill metrics by default).
   */
  readonly fill: (body: BlobBody, createUpload?: UploadFactory, events?: FillEvents) => Promise<BlobFill>;
  /** Checks with an upstream HEAD that the requesting repository has the blob, for bytes fetched for someone else. */
  readonly confirm: () => Promise<void>;
  /**
   * The rest of the one commit, for bytes another process committed: the
   * cache tiers learn of the blob and every waiting repository is linked. A
   * source that follows another's fill calls it, and lets its readers have
   * the last byte only after it returned.
   */
  readonly record: (descriptor: Descriptor) => Promise<void>;
  /**
   * Opens the committed blob through the local store (so the read counts for
   * eviction: last use, in use), for a reader that comes after a source let
   * go of the files it followed.
   */
  readonly openCommitted: (range?: ByteRange) => Promise<Readable>;
  /**
   * A fill of this process from bytes that come from elsewhere than this
   * process's upstream GET (another replica's internal fill endpoint, with
   * storage that cannot be read while it grows): hashed, verified and
   * committed like an upstream body. Its upload spools locally.
   */
  readonly fillFrom?: (source: BlobBody) => Promise<BlobFill>;
  /** The upstream GET of the blob, its body only: a follower that takes over from a dead owner reads it. */
  readonly upstreamBody?: () => Promise<BlobBody>;
}

/** A blob's bytes as they arrive, and its size when the sender stated it. */
export interface BlobBody {
  readonly body: Readable;
  readonly size: number | undefined;
}

/**
 * Decides, per cold blob, whether this process fetches it or follows
 * another process that does (replicas on one storage root and one Redis).
 * `ProxyBlobStore` asks it only for the first request of a digest in this
 * process; later ones join the same `FillSource`.
 */
export interface FillCoordinator {
  claim(digest: ParsedDigest, options: ClaimOptions): Promise<FillSource>;
  /** Shutdown has begun: fills given up from now on hand over to other processes instead of failing. */
  beginShutdown(): void;
}
