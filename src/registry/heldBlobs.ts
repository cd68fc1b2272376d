import type { Readable } from 'node:stream';
import type { Digest } from './digest.js';

/**
 * The internal fill endpoint's vocabulary, shared by the side that serves it
 * (http/routes/internal.ts) and the side that dials it (proxy/peers/client.ts).
 *
 * The endpoint hands another pullthrough process the bytes of one blob that
 * this process holds: committed in its storage, or a fill of its own in
 * progress (read from the fill's local upload or spool while it grows). It
 * answers by digest only: never records, tags, manifests or paths.
 */

/** `GET <advertise>/_pullthrough/internal/blobs/<digest>`, with an optional `Range: bytes=<start>-`. */
export const INTERNAL_BLOBS_PATH = '/_pullthrough/internal/blobs/';

/** The request header that carries the shared secret (`peers.secretFile` / `peers.secretEnv`). */
export const PEER_SECRET_HEADER = 'pullthrough-peer-secret';

/** The response header that says which it was: `committed` or `filling`. */
export const HELD_STATE_HEADER = 'pullthrough-held';

/** A blob this process can hand out over the internal endpoint. */
export interface HeldBlob {
  readonly digest: Digest;
  /** The blob's whole size: always known once committed; while filling, when the upstream stated it. */
  readonly size: number | undefined;
  readonly state: 'committed' | 'filling';
  /**
   * The bytes from `start` (0 when `size` is unknown) to the end. A fill's
   * stream gives its last byte only once the fill is verified and committed,
   * and errors (never ends early) if the fill fails.
   */
  open(start: number): Promise<Readable>;
}

/** What the internal endpoint serves from. */
export interface HeldBlobs {
  /** The blob committed here, else this process's fill of it in progress, else undefined. Never starts a fill. */
  find(digest: Digest): Promise<HeldBlob | undefined>;
}
