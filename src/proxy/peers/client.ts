import type { Readable } from 'node:stream';
import { Agent, request } from '../../upstream/undici.js';
import type { PeersSettings } from '../../config/settings.js';
import type { Digest } from '../../registry/digest.js';
import type { Clock } from '../../registry/clock.js';
import { HELD_STATE_HEADER, INTERNAL_BLOBS_PATH, PEER_AUTH_HEADER, peerToken } from '../../registry/heldBlobs.js';
import type { RegisteredPeer } from './directory.js';

/** A peer's answer: the blob's bytes from `start`. */
export interface PeerBlob {
  /** Where the body starts in the blob (0 unless a resumed range was honoured). */
  readonly start: number;
  /** The whole blob's size, when the peer knows it. */
  readonly size: number | undefined;
  readonly state: 'committed' | 'filling';
  /** The caller consumes or destroys it; it errors when the peer breaks off, hangs past the idle timeout, or its fill fails. */
  readonly body: Readable;
}

/** A peer that could not be used: refused, timed out, answered an error. The next peer or the upstream is asked. */
export class PeerUnavailable extends Error {
  /** `slow`: it timed out (it may still be working); `gone`: refused, reset, or an answer we cannot use. */
  readonly kind: 'gone' | 'slow';

  constructor(readonly peer: RegisteredPeer, reason: string) {
    super(`peer ${peer.origin} unavailable: ${reason}`);
    this.name = 'PeerUnavailable';
    this.kind = failureKind(reason);
  }
}

/** undici's timeouts (connect, headers, body) mean slow; anything else means gone. */
export function failureKind(code: string | undefined): 'gone' | 'slow' {
  return code !== undefined && /TIMEOUT/i.test(code) ? 'slow' : 'gone';
}

/**
 * The client of other processes' internal fill endpoints. It dials only a
 * `RegisteredPeer` (an address read from Redis, never from a request), with
 * a token made with the shared secret (never the secret itself), and bounds every exchange: connect, first byte (the
 * response headers) and the silence between two body chunks.
 */
export class PeerClient {
  private readonly dispatcher: Agent;

  constructor(private readonly settings: PeersSettings, private readonly clock: Clock) {
    this.dispatcher = new Agent({
      connect: { timeout: settings.connectTimeoutMs },
      headersTimeout: settings.firstByteTimeoutMs,
      bodyTimeout: settings.idleTimeoutMs,
      keepAliveTimeout: 30_000,
      connections: 32,
    });
  }

  /**
   * The blob from `peer`, from byte `start`; undefined when the peer holds
   * neither the blob nor a fill of it. Rejects with `PeerUnavailable`.
   */
  async fetch(peer: RegisteredPeer, digest: Digest, start = 0, signal?: AbortSignal): Promise<PeerBlob | undefined> {
    let res;
    try {
      res = await request(`${peer.origin}${INTERNAL_BLOBS_PATH}${digest}`, {
        dispatcher: this.dispatcher,
        method: 'GET',
        headers: { [PEER_AUTH_HEADER]: peerToken(this.settings.secret, digest, this.clock.now()), ...(start > 0 ? { range: `bytes=${start}-` } : {}) },
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      throw new PeerUnavailable(peer, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
    }
    if (res.statusCode === 404) {
      await res.body.dump();
      return undefined;
    }
    if (res.statusCode !== 200 && res.statusCode !== 206) {
      await res.body.dump();
      throw new PeerUnavailable(peer, `answered ${res.statusCode}`);
    }
    const length = numberHeader(res.headers['content-length']);
    const from = res.statusCode === 206 ? rangeStart(res.headers['content-range']) : 0;
    if (from === undefined || (res.statusCode === 206 && from !== start)) {
      res.body.destroy();
      throw new PeerUnavailable(peer, 'answered a range that was not asked for');
    }
    return {
      start: from,
      size: length === undefined ? undefined : from + length,
      state: res.headers[HELD_STATE_HEADER] === 'committed' ? 'committed' : 'filling',
      body: res.body,
    };
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }
}

function numberHeader(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string' || !/^\d+$/.test(value)) return undefined;
  return Number(value);
}

function rangeStart(value: string | string[] | undefined): number | undefined {
  const match = typeof value === 'string' ? /^bytes (\d+)-\d+\/\d+$/.exec(value) : null;
  return match ? Number(match[1]) : undefined;
}
