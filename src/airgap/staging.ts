import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import { DigestVerifier, type Digest, type ParsedDigest } from '../registry/digest.js';
import type { Upload } from '../storage/driver.js';
import { BundleError } from './bundle.js';
import {
  INDEX_FILE, LAYOUT_FILE, MAX_INDEX_BYTES, MAX_LAYOUT_FILE_BYTES, blobEntryName, checkLayoutFile, classifyEntry,
} from './ociLayout.js';

/** Bytes gathered before one write to an upload: fewer, larger writes than one per tar chunk. */
const WRITE_BATCH_BYTES = 1024 * 1024;

/** A blob of the bundle in an upload, verified against its name. */
export interface StagedBlob {
  readonly digest: Digest;
  readonly size: number;
  readonly upload: Upload;
}

/** A driver operation failed while staging: that is the storage's trouble, not a truncated bundle. */
class StorageFailure extends Error {
  constructor(readonly failure: unknown) {
    super('storage failed while staging the bundle');
  }
}

/**
 * The blobs of one bundle, each in an upload of its own (on the same
 * storage as the final paths) until the import commits it. Nothing of it is
 * visible under a final name; `release` discards every upload the import
 * did not commit, and closes them all, so a refused bundle leaves storage
 * as it was. Used by one import at a time.
 */
export class StagedBlobs {
  private readonly staged = new Map<Digest, StagedBlob>();
  /** Every upload created, also those whose blob was refused half way. */
  private readonly uploads: Upload[] = [];
  private readonly committed = new Set<Upload>();
  private readonly bodies = new Map<Digest, Buffer>();

  constructor(private readonly createUpload: () => Promise<Upload>) {}

  get(digest: Digest): StagedBlob | undefined {
    return this.staged.get(digest);
  }

  has(digest: Digest): boolean {
    return this.staged.has(digest);
  }

  /**
   * Streams one tar entry into a new upload, hashing as it writes; refuses
   * it (`BundleError`) when the bytes do not hash to the entry's name.
   */
  async stage(entry: AsyncIterable<unknown>, digest: ParsedDigest): Promise<void> {
    const upload = await storageStep(() => this.createUpload());
    this.uploads.push(upload);
    const verifier = new DigestVerifier(digest);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let written = 0;
    const flush = async (): Promise<void> => {
      const chunks = pending;
      pending = [];
      pendingBytes = 0;
      await storageStep(() => upload.write(chunks, written));
      written += chunks.reduce((n, c) => n + c.length, 0);
    };
    for await (const data of entry) {
      const chunk = data as Buffer;
      verifier.update(chunk);
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (pendingBytes >= WRITE_BATCH_BYTES) await flush();
    }
    if (pendingBytes > 0) await flush();
    if (!verifier.matches()) {
      throw new BundleError(`the bundle is corrupt: ${blobEntryName(digest.digest)} does not match its digest (it hashes to ${verifier.current()})`);
    }
    // Verified and durable: let go of its file handle, so a bundle of thousands of blobs holds none open.
    await storageStep(() => upload.close());
    this.staged.set(digest.digest, { digest: digest.digest, size: written, upload });
  }

  /** A staged blob's bytes, whole (a manifest: the caller bounds the size); read from the upload once. */
  async read(digest: Digest): Promise<Buffer> {
    const cached = this.bodies.get(digest);
    if (cached) return cached;
    const blob = this.staged.get(digest);
    if (!blob) throw new Error(`${digest} is not staged`);
    const body = Buffer.alloc(blob.size);
    let at = 0;
    while (at < blob.size) {
      const n = await blob.upload.read(body.subarray(at), at);
      if (n === 0) throw new Error(`the staged copy of ${digest} is shorter than what was written`);
      at += n;
    }
    this.bodies.set(digest, body);
    return body;
  }

  /** The upload of `digest` went to the one commit, which owns it now. */
  markCommitted(digest: Digest): void {
    const blob = this.staged.get(digest);
    if (blob) this.committed.add(blob.upload);
  }

  /**
   * Discards every upload not committed and closes them all. Best effort:
   * an upload that cannot be removed now is an old upload to the next
   * sweep, and must not hide what the import itself reports.
   */
  async release(): Promise<void> {
    for (const upload of this.uploads) {
      if (!this.committed.has(upload)) await upload.discard().catch(() => undefined);
      await upload.close().catch(() => undefined);
    }
    this.uploads.length = 0;
    this.staged.clear();
    this.bodies.clear();
  }
}

async function storageStep<T>(step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    throw new StorageFailure(err);
  }
}

/**
 * Streams an OCI layout tar: each `blobs/<alg>/<hex>` into `staged`
 * (refused at once when it does not hash to its name), `oci-layout` checked,
 * and `index.json` kept. A tar cut short, or anything that is not a tar, is
 * refused; so is an entry that climbs out of the layout. Resolves with the
 * bytes of `index.json`. `input` is read to its end, or destroyed on a
 * refusal.
 */
export async function readLayout(input: Readable, staged: StagedBlobs): Promise<Buffer> {
  let index: Buffer | undefined;
  let layout: Buffer | undefined;
  const extract = tar.extract();
  const feeding = pipeline(input, extract);
  feeding.catch(() => undefined);
  try {
    for await (const entry of extract) {
      const what = classifyEntry(entry.header);
      if (what.kind === 'index') {
        index = await readSmall(entry, MAX_INDEX_BYTES, INDEX_FILE);
      } else if (what.kind === 'layout') {
        layout = await readSmall(entry, MAX_LAYOUT_FILE_BYTES, LAYOUT_FILE);
      } else if (what.kind === 'blob' && !staged.has(what.digest.digest)) {
        await staged.stage(entry, what.digest);
      } else {
        entry.resume();
      }
    }
    await feeding;
  } catch (err) {
    input.destroy();
    if (err instanceof StorageFailure) throw err.failure;
    if (err instanceof BundleError) throw err;
    throw new BundleError(`the bundle is truncated or not a tar archive (${(err as Error).message})`);
  }
  if (!layout) throw new BundleError(`the bundle is not an OCI image layout: it has no ${LAYOUT_FILE} file`);
  checkLayoutFile(layout);
  if (!index) throw new BundleError(`the bundle has no ${INDEX_FILE}: it is truncated or not an OCI image layout`);
  return index;
}

async function readSmall(entry: AsyncIterable<unknown>, limit: number, name: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const data of entry) {
    const chunk = data as Buffer;
    size += chunk.length;
    if (size > limit) throw new BundleError(`${name} in the bundle is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
