import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Clock, Timer } from '../../registry/clock.js';
import { DigestMismatch, type Digest, type ParsedDigest } from '../../registry/digest.js';
import { UpstreamUnavailable } from '../../registry/errors.js';
import { NO_PEER_EVENTS, type PeerEvents } from '../../registry/peerTelemetry.js';
import type { Upload } from '../../storage/driver.js';
import type { BlobFill } from '../fill.js';
import type { ClaimOptions, FillCoordinator, FillSource } from '../fillSource.js';
import type { FillLeases } from '../replicas/lease.js';
import { failureKind, PeerUnavailable, type PeerClient } from './client.js';
import type { PeerDirectory, RegisteredPeer } from './directory.js';

/**
 * Peers: node-local instances with their own storage, sharing a Redis
 * (README "Node-local cache for a cluster"). For a blob missing here:
 *
 * 1. a peer that holds it committed (its "has" record) sends it;
 * 2. else the Redis lease decides who fetches it from the upstream: the
 *    owner fetches, and every other instance streams the owner's fill in
 *    progress over its internal endpoint;
 * 3. a peer that is gone or slow is skipped and the next one (or the
 *    upstream) is used, resuming where the bytes stopped; a peer whose bytes
 *    do not match the digest is not asked again for `penaltyMs`.
 *
 * Whatever the source, the bytes go through a fill of this process: hashed,
 * committed here only when the digest and size match, and never given to a
 * client in full before that.
 */
export interface PeerCoordinatorOptions {
  /** Blob fill leases: the same keys replicas use. */
  readonly leases: FillLeases;
  readonly directory: PeerDirectory;
  readonly client: PeerClient;
  /** A new upload in this instance's storage, for the blob it will hold. */
  readonly createUpload: (forDigest: Digest) => Promise<Upload>;
  /** `peers.penalty`. */
  readonly penaltyMs: number;
  readonly logger: Logger;
  /** The penalties and the waits for an owner (the injected clock). */
  readonly clock: Clock;
  readonly events?: PeerEvents;
  /** How often to look at a lease while its owner has not published its fill. Default 25 ms. */
  readonly pollIntervalMs?: number;
}

/** A body on its way, and where it comes from. */
interface Source {
  readonly body: Readable;
  /** Where the body starts in the blob (a resumed range). */
  readonly start: number;
  /** The whole blob's size, when the sender stated it. */
  readonly size: number | undefined;
  /** The sending peer; undefined for the upstream. */
  readonly peer: RegisteredPeer | undefined;
}

/** What one fill of a blob has learnt about peers so far. */
class Attempt {
  /** Bytes handed to the fill: a new source resumes here. */
  offset = 0;
  /** Peers not to ask again for this blob (gone, slow, did not have it). */
  readonly skipped = new Set<string>();
  /** Those of them that timed out: a slow lease owner is still working, so waiting for its lease to lapse would not help. */
  readonly slow = new Set<string>();
  /** Peers whose bytes went into the fill, penalised if it does not match its digest. */
  readonly contributors = new Map<string, RegisteredPeer>();
}

type Found = { readonly kind: 'peer'; readonly source: Source } | { readonly kind: 'own' } | { readonly kind: 'unleased' };

export class PeerCoordinator implements FillCoordinator {
  /** Peer id → until when it is not asked (on the injected clock). */
  private readonly penalties = new Map<string, number>();
  private readonly pollIntervalMs: number;
  private readonly events: PeerEvents;
  private stopping = false;

  constructor(private readonly options: PeerCoordinatorOptions) {
    this.pollIntervalMs = options.pollIntervalMs ?? 25;
    this.events = options.events ?? NO_PEER_EVENTS;
  }

  beginShutdown(): void {
    this.stopping = true;
  }

  async claim(digest: ParsedDigest, options: ClaimOptions): Promise<FillSource> {
    const attempt = new Attempt();
    const found = await this.find(digest, attempt);
    if (found.kind !== 'peer') return this.fetchUpstream(digest, options, found.kind === 'own');
    try {
      // Bytes fetched for another repository: the upstream says whether this one may have them.
      await options.confirm();
    } catch (err) {
      found.source.body.destroy();
      throw err;
    }
    return this.fromPeers(digest, options, found.source, attempt);
  }

  /** True while `peer` is serving its penalty for wrong bytes. */
  isPenalised(id: string): boolean {
    const until = this.penalties.get(id);
    if (until === undefined) return false;
    if (this.options.clock.now() < until) return true;
    this.penalties.delete(id);
    return false;
  }

  /**
   * The next source of the blob from `attempt.offset`: a holder, the lease
   * owner's fill, or the word to fetch from the upstream (with the lease, or
   * without when Redis is away or the owner is too slow to follow).
   */
  private async find(digest: ParsedDigest, attempt: Attempt): Promise<Found> {
    const { leases, directory, clock } = this.options;
    const d = digest.digest;
    for (;;) {
      for (const peer of await directory.holders(d)) {
        if (attempt.skipped.has(peer.id) || this.isPenalised(peer.id)) continue;
        const source = await this.ask(peer, digest, attempt);
        if (source) return { kind: 'peer', source };
      }
      const state = await leases.look(d);
      if (!state) return { kind: 'unleased' };
      const owner = state.owner;
      if (owner === undefined) {
        // The owner's verdict (404, digest mismatch upstream) is ours too.
        if (state.fill && 'failed' in state.fill) throw state.fill.failed;
        const acquired = await leases.acquire(d);
        if (acquired === 'owned') return { kind: 'own' };
        if (acquired === 'unavailable') return { kind: 'unleased' };
        continue;
      }
      if (attempt.slow.has(owner)) return { kind: 'unleased' };
      const info = state.fill;
      if (owner !== leases.owner && !attempt.skipped.has(owner) && info && 'upload' in info && info.owner === owner) {
        const peer = await directory.peer(owner);
        if (peer && this.isPenalised(peer.id)) return { kind: 'unleased' };
        if (peer) {
          const source = await this.ask(peer, digest, attempt);
          if (source) return { kind: 'peer', source };
          continue;
        }
      }
      // Not published yet, or its owner is gone and its lease not yet lapsed: look again shortly.
      await clock.sleep(this.pollIntervalMs);
    }
  }

  /** The blob from `peer` from `attempt.offset`, or undefined (skipped from now on) when it has none or cannot be reached. */
  private async ask(peer: RegisteredPeer, digest: ParsedDigest, attempt: Attempt): Promise<Source | undefined> {
    try {
      const blob = await this.options.client.fetch(peer, digest.digest, attempt.offset);
      if (blob) return { body: blob.body, start: blob.start, size: blob.size, peer };
      attempt.skipped.add(peer.id);
    } catch (err) {
      if (!(err instanceof PeerUnavailable)) throw err;
      this.skip(peer, err.kind, attempt, err.message);
    }
    return undefined;
  }

  private skip(peer: RegisteredPeer, kind: 'gone' | 'slow', attempt: Attempt, reason: string): void {
    attempt.skipped.add(peer.id);
    if (kind === 'slow') attempt.slow.add(peer.id);
    this.events.failed(kind);
    this.options.logger.info({ peer: peer.origin, reason }, `skipping a ${kind} peer`);
  }

  /** This instance fetches from the upstream: holding the lease (its fill published for the others), or without one. */
  private async fetchUpstream(digest: ParsedDigest, options: ClaimOptions, leased: boolean): Promise<BlobFill> {
    const { leases } = this.options;
    const d = digest.digest;
    const renewal = leased ? this.hold(d) : undefined;
    let fill: BlobFill;
    try {
      fill = await options.fetch(async (size) => {
        const upload = await this.options.createUpload(d);
        // Published once the upstream answered: a peer that dials us now finds the fill running.
        if (leased) await leases.publish(d, upload.name, size);
        return upload;
      });
    } catch (err) {
      await this.letGo(d, renewal, err);
      throw err;
    }
    if (renewal) void fill.done.then(() => this.letGo(d, renewal), (err: unknown) => this.letGo(d, renewal, err));
    return fill;
  }

  /**
   * A fill of this instance over bytes from peers, resuming from the next
   * source where one breaks off. Taking the lease over from a dead owner
   * makes this fill the one the others follow.
   */
  private async fromPeers(digest: ParsedDigest, options: ClaimOptions, first: Source, attempt: Attempt): Promise<BlobFill> {
    const { leases, logger } = this.options;
    const d = digest.digest;
    let renewal: Timer | undefined;
    let upload: string | undefined;
    const next = async (failed: Source, err: unknown): Promise<Source> => {
      // The upstream broke off: that is this fill's failure, as for any fill.
      if (!failed.peer) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      this.skip(failed.peer, err instanceof PeerUnavailable ? err.kind : failureKind(code), attempt, code ?? (err as Error).message);
      const found = await this.find(digest, attempt);
      if (found.kind === 'peer') return found.source;
      if (found.kind === 'own') {
        renewal = this.hold(d);
        if (upload) await leases.publish(d, upload, first.size);
        logger.warn({ digest: d, previousOwner: failed.peer.origin }, 'took over a fill whose peer went away');
      }
      const fetched = await options.open();
      return { body: fetched.body, start: 0, size: fetched.size, peer: undefined };
    };
    const body = Readable.from(splice(first, next, attempt, this.events), { objectMode: false });
    const fill = await options.fill({ size: first.size, body }, async () => {
      const created = await this.options.createUpload(d);
      upload = created.name;
      return created;
    }, { firstByte: () => undefined, received: () => undefined, finished: () => undefined });
    void fill.done.then(
      () => renewal && this.letGo(d, renewal),
      (err: unknown) => {
        const lied = err instanceof DigestMismatch && attempt.contributors.size > 0;
        if (lied) this.penalise(attempt, d);
        // Wrong bytes from a peer are no verdict on the blob: the lease goes, and the next fetch may well succeed.
        return renewal && this.letGo(d, renewal, lied ? undefined : err);
      },
    );
    return fill;
  }

  /** Every peer whose bytes went into a fill that does not match its digest sits out its penalty. */
  private penalise(attempt: Attempt, digest: string): void {
    for (const peer of attempt.contributors.values()) {
      this.penalties.set(peer.id, this.options.clock.now() + this.options.penaltyMs);
      this.events.failed('wrong-bytes');
      this.options.logger.warn({ peer: peer.origin, digest, penaltyMs: this.options.penaltyMs },
        'a peer sent bytes that do not match the digest: not asking it again for the penalty');
    }
  }

  private hold(digest: string): Timer {
    return this.options.leases.hold(digest, () => this.options.logger.warn({ digest }, 'lost the lease of a running fill; finishing it anyway'));
  }

  /** After our fill: the lease goes (a commit, or a cut-off another may take over), or records the upstream's verdict. */
  private async letGo(digest: string, renewal: Timer | undefined, err?: unknown): Promise<void> {
    if (!renewal) return;
    renewal.cancel();
    const { leases } = this.options;
    if (err === undefined || this.stopping || err instanceof UpstreamUnavailable) await leases.release(digest);
    else await leases.fail(digest, err);
  }
}

/**
 * The bytes of a blob from one source after another: when a source breaks
 * off, `next` gives the one to go on with, and what it sends before the
 * offset reached so far is skipped (a source that could not resume sends
 * from the start). Any mix is verified as a whole by the fill it feeds.
 */
async function* splice(
  first: Source, next: (failed: Source, err: unknown) => Promise<Source>, attempt: Attempt, events: PeerEvents,
): AsyncGenerator<Buffer> {
  let source = first;
  for (;;) {
    let skip = attempt.offset - source.start;
    try {
      if (skip < 0) throw new UpstreamUnavailable('a peer answered from past the bytes asked for');
      for await (const chunk of source.body as AsyncIterable<Buffer>) {
        if (skip >= chunk.length) {
          skip -= chunk.length;
          continue;
        }
        const part = skip > 0 ? chunk.subarray(skip) : chunk;
        skip = 0;
        attempt.offset += part.length;
        if (source.peer) {
          attempt.contributors.set(source.peer.id, source.peer);
          events.received(part.length);
        }
        yield part;
      }
      if (skip > 0) throw new UpstreamUnavailable('the source ended before the bytes already received');
      return;
    } catch (err) {
      source.body.destroy();
      source = await next(source, err);
    }
  }
}
