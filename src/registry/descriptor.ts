import type { Digest } from './digest.js';

/** What layers exchange about a piece of content: the OCI descriptor's core. */
export interface Descriptor {
  readonly digest: Digest;
  readonly size: number;
  readonly mediaType: string;
}

/** Blobs whose media type nobody told us. */
export const OCTET_STREAM = 'application/octet-stream';
