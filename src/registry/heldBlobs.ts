import { createHmac, timingSafeEqual } from 'node:crypto';
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

/**
 * The request header that proves the caller knows the shared secret
 * (`peers.secretFile` / `peers.secretEnv`) without sending it:
 * `<unix seconds>.<hex HMAC-SHA256(secret, "<digest>\n<unix seconds>")>`. A
 * token is good for one digest and `PEER_TOKEN_WINDOW_MS` either side of its
 * time, so an address that is not a peer (a Redis record gone wrong) learns
 * nothing it could use for anything else.
 */
export const PEER_AUTH_HEADER = 'pullthrough-peer-auth';

/** How far a token's time may be from the server's clock (clock skew between nodes included). */
export const PEER_TOKEN_WINDOW_MS = 5 * 60_000;

/** The token for `digest` at `nowMs`. */
export function peerToken(secret: string, digest: string, nowMs: number): string {
  const seconds = Math.floor(nowMs / 1000);
  return `${seconds}.${createHmac('sha256', secret).update(`${digest}\n${seconds}`).digest('hex')}`;
}

/** True when `token` was made with `secret` for `digest`, within `windowMs` of `nowMs`; compared in constant time. */
export function verifyPeerToken(secret: string, digest: string, token: string | undefined, nowMs: number, windowMs = PEER_TOKEN_WINDOW_MS): boolean {
  const match = token === undefined ? null : /^(\d{1,12})\.([0-9a-f]{64})$/.exec(token);
  if (!match) return false;
  const seconds = Number(match[1]);
  if (Math.abs(nowMs - seconds * 1000) > windowMs) return false;
  const expected = createHmac('sha256', secret).update(`${digest}\n${seconds}`).digest();
  return timingSafeEqual(Buffer.from(match[2]!, 'hex'), expected);
}

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
