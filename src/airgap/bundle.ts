import type { StorageDriver } from '../storage/driver.js';
import type { LocalBlobStore } from '../storage/blobs.js';
import type { LocalManifestStore } from '../storage/manifests.js';
import type { LocalReferrersStore } from '../storage/referrers.js';
import type { LocalTagStore } from '../storage/tags.js';

/**
 * The air-gap bundle: cached images as ONE OCI image layout tar, and back.
 * What `pullthrough export` writes, standard tools read
 * (`skopeo inspect oci-archive:bundle.tar:<ref>`), and `pullthrough import`
 * loads into another storage root.
 *
 * - `ociLayout.ts`: the format (entry names, annotations, `index.json`);
 * - `export.ts`: storage to a tar stream;
 * - `staging.ts` and `import.ts`: a tar stream to storage, all or nothing.
 *
 * Neither side knows where the bundle file is: export writes a `Writable`,
 * import reads a `Readable`, and the command opens them. Everything under
 * the storage root goes through the stores and the driver below.
 */

/** The local stores a bundle is read from or written to (a `Mirror`'s, with no upstream behind them). */
export interface BundleStorage {
  readonly driver: StorageDriver;
  readonly manifests: LocalManifestStore;
  readonly tags: LocalTagStore;
  /** Export reads which referrers the cache knows; import records those a bundle carries. */
  readonly referrers: LocalReferrersStore;
  /** Imported blobs go in through its one commit, so every cache tier and the evictor learn of them. */
  readonly blobs: LocalBlobStore;
}

/** A refusal: the bundle (or the cache) is not what it must be; nothing was recorded. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BundleError';
  }
}
