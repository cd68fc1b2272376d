import type { Readable } from 'node:stream';
import type { Digest } from '../../registry/digest.js';
import type { HeldBlob, HeldBlobs } from '../../registry/heldBlobs.js';
import type { LocalBlobStore } from '../../storage/blobs.js';
import type { FillSource } from '../fillSource.js';

/** The fills of this process (`ProxyBlobStore`), by digest. */
export interface FillsInProgress {
  /** The source of a running fill of `digest` in this process, once it has bytes to read; undefined when there is none. */
  inProgress(digest: Digest): Promise<FillSource | undefined>;
}

export interface LocalHeldBlobsOptions {
  readonly local: LocalBlobStore;
  readonly fills: FillsInProgress;
  /** Told of each blob handed out (a peer used it: its "has" record is refreshed). */
  readonly onServed?: (digest: Digest) => void;
}

/**
 * What this process holds, for the internal endpoint: a committed blob from
 * storage (by digest alone: the peer asking checked its repository with the
 * upstream itself), else a fill in progress read through its `FillSource`,
 * which is this process's upload (or an object store driver's local spool):
 * the same reader every local client of the fill gets, so a peer never has
 * the last byte of a fill before it is verified.
 */
export class LocalHeldBlobs implements HeldBlobs {
  constructor(private readonly options: LocalHeldBlobsOptions) {}

  async find(digest: Digest): Promise<HeldBlob | undefined> {
    const { local, fills, onServed } = this.options;
    const committed = await local.statGlobal(digest);
    if (committed) {
      const size = committed.size;
      return {
        digest, size, state: 'committed',
        open: (start) => {
          onServed?.(digest);
          return local.open(digest, undefined, start > 0 ? { start, end: size - 1 } : undefined);
        },
      };
    }
    const fill = await fills.inProgress(digest);
    if (!fill) return undefined;
    return {
      digest, size: fill.size, state: 'filling',
      open: async (start): Promise<Readable> => fill.reader(start > 0 && fill.size !== undefined ? { start, end: fill.size - 1 } : undefined),
    };
  }
}
