/** Why a peer was not used for a blob. */
export type PeerFailure = 'gone' | 'slow' | 'wrong-bytes';

/** Reported by the peer parts (proxy/peers): bytes between nodes, and peers that failed. */
export interface PeerEvents {
  /** Blob bytes received from peers. */
  received(bytes: number): void;
  /** Blob bytes this process sent to peers over its internal endpoint. */
  served(bytes: number): void;
  /** A peer was skipped (`gone`, `slow`) or penalised (`wrong-bytes`). */
  failed(reason: PeerFailure): void;
}

const ignore = (): void => undefined;
export const NO_PEER_EVENTS: PeerEvents = { received: ignore, served: ignore, failed: ignore };
