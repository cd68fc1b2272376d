import type { Readable } from 'node:stream';
import type { Digest } from '../registry/digest.js';

/**
 * The storage driver: a small file system of paths relative to the storage
 * root. Every byte and record under the root goes through it, and every path
 * is built by `layout.ts` from validated names and digests.
 *
 * Promises:
 * - `putContent` and `Upload.commit` are atomic: a reader sees the old
 *   content, the new content, or nothing; never a part.
 * - Reads of a missing path answer `undefined` (or an empty list), not an
 *   error.
 * - Any method may be called concurrently.
 *
 * The interface is shaped so that an object store can implement it. What an
 * S3 driver will find hard, and how the layers above cope:
 * - **Reading a file while it grows** (`openFile` on an upload another
 *   process is writing, `Upload.read`): objects cannot be read before they
 *   are complete. Readers in the same process read the fill's local spool
 *   (the upload), and other replicas stream from the owner over its internal
 *   fill endpoint instead of opening the upload here.
 * - **Rename** (`Upload.commit`): there is none; commit is "complete the
 *   multipart upload" under the final key, which is atomic in the same sense.
 * - **Modification times** (`touch`, `FileInfo.modifiedMs`): objects cannot
 *   be touched, and their modification time is their write time. Last-use
 *   times then live beside the storage (`UseTimes` in usage.ts: Redis, or
 *   one record object written per flush), and eviction takes the later of
 *   the two. The size total is kept the same way (`SizeLedger`), since a
 *   walk to learn it would list the whole bucket at every start.
 * - **Listing** (`list`): a prefix listing of keys, paged; directories exist
 *   only as prefixes, so `delete` of a directory removes every key below it.
 */
export interface StorageDriver {
  /** Prepares the root (creates it and the uploads directory); never walks the tree. */
  init(): Promise<void>;
  getContent(path: string): Promise<Buffer | undefined>;
  putContent(path: string, content: Uint8Array | string): Promise<void>;
  stat(path: string): Promise<FileInfo | undefined>;
  /**
   * Opens a file for streaming, whole or an inclusive byte range;
   * undefined when it does not exist. Its size is the open file's own
   * (fstat), and `range` picks the range from it: no cached descriptor ever
   * decides a Content-Length. When `range` throws (a range past the end),
   * the file is closed and the error passes on.
   */
  openReader(path: string, range?: RangeChooser): Promise<OpenedReader | undefined>;
  /**
   * Opens a file for positional reads, also while another writer makes it
   * grow (a replica's fill); undefined when it does not exist. The reader
   * keeps reading the same file after it is renamed or removed.
   */
  openFile(path: string): Promise<FileReader | undefined>;
  /** The names of a directory's entries; empty when it does not exist. */
  list(path: string): Promise<string[]>;
  /** Removes a file or a directory tree; missing is fine. */
  delete(path: string): Promise<void>;
  /**
   * Marks files as used at `timeMs` (eviction's last-use time); missing files
   * are skipped. A driver that cannot (S3) does nothing, and the mirror gives
   * the `UsageRecorder` a `UseTimes` instead.
   */
  touch(paths: Iterable<string>, timeMs: number): Promise<void>;
  /**
   * A new upload with a random name, on the same storage as the final paths;
   * for a fill, the name also carries the digest it is for (`newUploadName`).
   */
  createUpload(forDigest?: Digest): Promise<Upload>;
  /**
   * Removes uploads that died with their process: those untouched for
   * `olderThanMs` (0: all, when no other process shares the storage).
   * Drivers whose uploads are not files under `_uploads` (S3's multipart
   * uploads) implement it; for the others `sweepUploads` in uploads.ts
   * lists the directory. Resolves to the number removed.
   */
  sweepUploads?(olderThanMs: number, now: number): Promise<number>;
}

/** Picks the inclusive byte range to read from a file of `size` bytes; undefined for all of it. */
export type RangeChooser = (size: number) => { start: number; end: number } | undefined;

/** A file opened by `openReader`. */
export interface OpenedReader {
  readonly stream: Readable;
  /** The whole file's size, from the open file. */
  readonly size: number;
  /** The range `stream` reads, when one was picked. */
  readonly range: { readonly start: number; readonly end: number } | undefined;
}

export interface FileInfo {
  readonly size: number;
  readonly modifiedMs: number;
  readonly isDirectory: boolean;
  /** Names the file itself, not its path: two paths with the same id are the same file. */
  readonly id: string;
}

/** Positional reads of one file; see `StorageDriver.openFile`. */
export interface FileReader {
  /** The file's identity (as `FileInfo.id`) when it was opened. */
  readonly id: string;
  /** Reads up to `buffer.length` bytes at `position`; 0 at the current end. */
  read(buffer: Buffer, position: number): Promise<number>;
  /** The file's current size. */
  size(): Promise<number>;
  close(): Promise<void>;
}

/**
 * A file being written before it has a final name: a fill, a staged import.
 * Its `name` is what other processes on the same root are told, so that they
 * can `openFile(uploadPath(name))` it while it grows. Readers in this process
 * read what is written so far with `read`, also after `commit`.
 */
export interface Upload {
  readonly name: string;
  /** Writes every byte of `chunks` at `position` (positional, so readers may read at the same time). */
  write(chunks: readonly Buffer[], position: number): Promise<void>;
  /** Reads up to `buffer.length` bytes at `position`. */
  read(buffer: Buffer, position: number): Promise<number>;
  /** Makes the bytes durable, then puts them at `path` atomically (parents created). */
  commit(path: string): Promise<void>;
  /** Removes the upload; readers holding it may still read until `close`. */
  discard(): Promise<void>;
  /**
   * Releases the upload's handle. Before a commit, it first makes the bytes
   * durable: a closed upload can still be read and committed (a bundle
   * import stages thousands of blobs without holding a file open for each).
   */
  close(): Promise<void>;
}
