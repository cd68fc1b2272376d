import type { Readable } from 'node:stream';
import type { Descriptor } from './descriptor.js';
import type { Digest } from './digest.js';
import type { RepositoryName, Tag } from './names.js';
import type { ReferrerDescriptor } from './referrers.js';

/**
 * The interfaces that carry the design (ARCHITECTURE.md). A local store, a
 * cached store and a proxy store implement the same interface; wrappers hold
 * the thing they wrap, so callers never know which one they got.
 */

/** A repository of one upstream: cached content is namespaced by upstream. */
export interface RepositoryRef {
  /** The configured upstream's name, e.g. `docker.io`. */
  readonly upstream: string;
  /** The name as the upstream knows it (Docker Hub's `library/` already applied). */
  readonly name: RepositoryName;
}

/**
 * The one in-process key of a repository, and of something in it (a tag, a
 * digest): names hold no NUL, so the parts cannot run into each other. Every
 * memory cache, single-flight and in-flight map keys by these.
 */
export function repositoryKey(r: RepositoryRef): string {
  return `${r.upstream}\0${r.name}`;
}

export function repositoryItemKey(r: RepositoryRef, item: string): string {
  return `${r.upstream}\0${r.name}\0${item}`;
}

/**
 * Where a descriptor lookup applies: the blob exists at all (`global`), it is
 * linked into one repository (`repository`), or it is a manifest revision of
 * one repository (`manifest`: the descriptor carries the manifest's media
 * type). One descriptor service, tiered memory → Redis → storage, answers
 * all three.
 */
export type Scope =
  | { readonly kind: 'global' }
  | { readonly kind: 'repository'; readonly repository: RepositoryRef }
  | { readonly kind: 'manifest'; readonly repository: RepositoryRef };

export const GLOBAL_SCOPE: Scope = { kind: 'global' };
export function repositoryScope(repository: RepositoryRef): Scope {
  return { kind: 'repository', repository };
}
export function manifestScope(repository: RepositoryRef): Scope {
  return { kind: 'manifest', repository };
}

/**
 * Cheap metadata about a blob. `undefined` means "not known here": the
 * caller may look elsewhere. Never reads content.
 */
export interface BlobStatter {
  stat(scope: Scope, digest: Digest): Promise<Descriptor | undefined>;
}

/**
 * A statter that can be told about descriptors and told to forget them. A
 * cache of this kind may answer `undefined` for something that exists (it
 * forgot), but never a descriptor for something that was cleared.
 */
export interface BlobDescriptorService extends BlobStatter {
  setDescriptor(scope: Scope, digest: Digest, descriptor: Descriptor): Promise<void>;
  clear(scope: Scope, digest: Digest): Promise<void>;
}

/** How a request was served, for logs and metrics. */
export type CacheOutcome = 'hit' | 'miss' | 'coalesced';

/** What a HEAD found: a descriptor, and how it was found; without `cache`, in the cache (a hit). */
export interface StatResult extends Descriptor {
  readonly cache?: CacheOutcome;
}

/** An inclusive byte range, already checked against the blob's size. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** Picks the range to serve from a blob of `size` bytes (undefined: all of it); may throw, e.g. RANGE_INVALID. */
export type RangeChooser = (size: number) => ByteRange | undefined;

/** A blob's bytes on their way out, with what a response needs to announce them. */
export interface OpenedBlob {
  readonly stream: Readable;
  /**
   * The blob's whole size: of the open file for a stored blob, of the
   * verified fill or the upstream's Content-Length for a fill; never taken
   * from a cached descriptor (Redis is shared, and only a hint). Undefined
   * only while a fill streams from an upstream that did not state a length.
   */
  readonly size: number | undefined;
  /** The range `stream` reads, when the chooser picked one. */
  readonly range: ByteRange | undefined;
}

/**
 * A blob ready to be read; nothing is opened until `open`. A stream from
 * `open` ends only after every byte it promised was delivered; when the
 * bytes turn out wrong (upstream cut off, digest mismatch) it errors instead
 * of ending.
 */
export interface BlobHandle {
  readonly digest: Digest;
  readonly cache: CacheOutcome;
  /**
   * Opens the blob. `range`, when given, is called with the blob's true size
   * (waiting for it, for a fill that has not stated one) and picks the range
   * to read; when it throws, nothing stays open.
   */
  open(range?: RangeChooser): Promise<OpenedBlob>;
  /**
   * Set when the bytes may be fetched from the storage itself: a short-lived
   * URL a client is redirected to (S3 with `redirect`), so they do not flow
   * through this process.
   */
  readonly redirect?: () => Promise<string>;
}

/** Blobs of a repository. */
export interface BlobStore {
  /** A HEAD: the descriptor when the blob is available to this repository. */
  stat(repository: RepositoryRef, digest: Digest): Promise<StatResult | undefined>;
  /** A GET: throws BLOB_UNKNOWN when the blob is not available to this repository. */
  get(repository: RepositoryRef, digest: Digest): Promise<BlobHandle>;
}

/** A manifest exactly as its upstream served it. */
export interface Manifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly body: Buffer;
}

export interface ManifestResult {
  readonly manifest: Manifest;
  readonly cache: CacheOutcome;
}

/** Manifests of a repository, by digest. Bodies are never re-serialised. */
export interface ManifestService {
  /** The descriptor without the body (HEAD); undefined when unknown. */
  stat(repository: RepositoryRef, digest: Digest, accept: readonly string[]): Promise<StatResult | undefined>;
  /** Throws MANIFEST_UNKNOWN when not available. */
  get(repository: RepositoryRef, digest: Digest, accept: readonly string[]): Promise<ManifestResult>;
}

/** A tag's record: what it pointed to and when that was learned from the upstream. */
export interface TagRecord {
  readonly descriptor: Descriptor;
  readonly fetchedAt: number;
}

/**
 * Tag records, the tag counterpart of `BlobDescriptorService`: memory, Redis
 * and storage are each one, and `CachedTagRecords` composes a faster tier in
 * front of a slower one. `get` answers `undefined` for "not known here";
 * a tier never throws for trouble of its own (Redis away is a miss).
 */
export interface TagRecordService {
  /**
   * The newest record this tier (and those behind it) knows. With `goodEnough`,
   * a tier that holds a record failing it (a stale one) asks the tiers behind
   * it as well, and the newest of their answers wins.
   */
  get(repository: RepositoryRef, tag: Tag, goodEnough?: (record: TagRecord) => boolean): Promise<TagRecord | undefined>;
  put(repository: RepositoryRef, tag: Tag, record: TagRecord): Promise<void>;
}

export interface TagResolution {
  readonly descriptor: Descriptor;
  readonly cache: CacheOutcome;
  /** True when the upstream could not be asked and an older record answered. */
  readonly stale: boolean;
}

/** Tags of a repository. */
export interface TagService {
  /** Throws MANIFEST_UNKNOWN when the tag is unknown. */
  resolve(repository: RepositoryRef, tag: Tag, accept: readonly string[]): Promise<TagResolution>;
  /** All tags, sorted; throws NAME_UNKNOWN when the repository is unknown. */
  list(repository: RepositoryRef): Promise<readonly string[]>;
}

export interface ReferrersResult {
  /** Every referrer of the subject, in the upstream's order; filtering is the caller's. */
  readonly referrers: readonly ReferrerDescriptor[];
  readonly cache: CacheOutcome;
  /** True when the upstream could not be asked and an older list answered. */
  readonly stale: boolean;
}

/**
 * The referrers of a manifest (OCI 1.1): the manifests in the repository
 * whose `subject` is that digest. "None" is an empty list, never an error,
 * whether or not the subject exists.
 */
export interface ReferrersService {
  list(repository: RepositoryRef, subject: Digest): Promise<ReferrersResult>;
}
