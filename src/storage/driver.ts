import type { Readable } from 'node:stream';
import type { FileHandle } from 'node:fs/promises';

/**
 * The storage driver: a small file system of paths relative to the storage
 * root. Paths are built only by `layout.ts` from validated names and digests.
 *
 * Promises:
 * - `putContent` and `Upload.commit` are atomic: a reader sees the old
 *   content, the new content, or nothing; never a part.
 * - Reads of a missing path answer `undefined`, not an error.
 */
export interface StorageDriver {
  getContent(path: string): Promise<Buffer | undefined>;
  putContent(path: string, content: Uint8Array | string): Promise<void>;
  stat(path: string): Promise<FileInfo | undefined>;
  /** Opens a file for streaming; undefined when it does not exist. */
  openReader(path: string, range?: { start: number; end: number }): Promise<Readable | undefined>;
  /** The names of a directory's entries; empty when it does not exist. */
  list(path: string): Promise<string[]>;
  /** Removes a file or a directory tree; missing is fine. */
  delete(path: string): Promise<void>;
  /** A new temp file for an in-flight write, on the same file system as the final paths. */
  createUpload(): Promise<Upload>;
}

export interface FileInfo {
  readonly size: number;
  readonly modifiedMs: number;
  readonly isDirectory: boolean;
}

/**
 * A temp file being filled. Readers may read what is written so far through
 * `handle` (positional reads), also after `commit` renamed it.
 */
export interface Upload {
  readonly handle: FileHandle;
  /** fsync, then rename into `path` (parents created). */
  commit(path: string): Promise<void>;
  /** Removes the temp file; the handle stays open for readers until `close`. */
  discard(): Promise<void>;
  close(): Promise<void>;
}
