import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Clock } from '../../registry/clock.js';
import type { ParsedDigest } from '../../registry/digest.js';
import type { BlobFill } from '../fill.js';
import type { BlobBody, ClaimOptions } from '../fillSource.js';
import type { PeerBlob } from '../peers/client.js';
import type { PeerServices } from './services.js';
import type { FillLeases } from './lease.js';
import { newUploadName } from '../../storage/layout.js';

/**
 * Following another replica's fill over its internal fill endpoint: what
 * replicas do when the storage they share cannot be read while it grows
 * (S3: the owner's bytes are in its local spool until the commit).
 *
 * The owner's bytes feed a fill of this process (`ClaimOptions.fillFrom`),
 * which hashes them, lets its readers have the last byte only once the
 * digest matched, and commits through the one storage commit: the owner
 * committed the blob before it let its last byte go, so that commit finds
 * the object in place and only records it (caches, links) here.
 *
 * When the owner's body breaks off, the fill goes on from the byte it has:
 * from the committed object if the owner got that far, from the owner (or
 * whoever holds the lease now) with a Range, or, once the lease has lapsed
 * (the owner died), from the upstream after taking the lease over, skipping
 * what came before. Nothing of the two sources is
 * trusted: the fill's digest check covers every byte, so a follower can
 * never complete a wrong response.
 */
export interface RemoteFollowOptions {
  readonly digest: ParsedDigest;
  /** The lease owner whose fill is followed (its id is its peer registration). */
  readonly owner: string;
  readonly peers: PeerServices;
  readonly leases: FillLeases;
  readonly claim: ClaimOptions;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly pollIntervalMs: number;
}

/** A fill of this process fed by the owner's endpoint; undefined when the owner cannot serve it (a later look decides). */
export async function followOverHttp(options: RemoteFollowOptions): Promise<BlobFill | undefined> {
  const { claim, peers, digest } = options;
  if (!claim.fillFrom || !claim.upstreamBody) return undefined;
  const peer = await peers.directory.peer(options.owner);
  if (!peer) return undefined;
  let first;
  try {
    first = await peers.client.fetch(peer, digest.digest, 0);
  } catch (err) {
    options.logger.debug({ digest: digest.digest, err: (err as Error).message }, 'the fill\'s owner did not answer');
    return undefined;
  }
  if (!first) return undefined;
  const takeover: Takeover = { fill: undefined };
  const fill = await claim.fillFrom({ body: Readable.from(resumingBody(options, first, takeover)), size: first.size });
  takeover.fill = fill;
  return fill;
}

/** The fill fed by the body: set before any byte is read, so a takeover can hold the lease for its life. */
interface Takeover {
  fill: BlobFill | undefined;
}

/** Where the bytes go on from, after the body being read broke off. */
interface Resumed {
  readonly body: Readable;
  /** Bytes at the start of `body` that readers already have. */
  readonly skip: number;
  /** True when this replica took the lease over and `body` is the upstream's: nothing is left to fall back on. */
  readonly last: boolean;
}

/**
 * The owner's body; when it breaks off, the rest from wherever it now is:
 * the committed object, the owner (or a new one) again from the same byte,
 * or, once the lease is free, the upstream after taking the lease over.
 */
async function* resumingBody(options: RemoteFollowOptions, first: PeerBlob, takeover: Takeover): AsyncGenerator<Buffer> {
  let passed = 0;
  let source: Resumed = { body: first.body, skip: 0, last: false };
  for (;;) {
    let skip = source.skip;
    try {
      for await (const c of source.body) {
        let chunk = c as Buffer;
        if (skip >= chunk.length) {
          skip -= chunk.length;
          continue;
        }
        if (skip > 0) chunk = chunk.subarray(skip);
        skip = 0;
        passed += chunk.length;
        yield chunk;
      }
      return;
    } catch (err) {
      if (source.last) throw err;
      options.logger.warn({ digest: options.digest.digest, passed, err: (err as Error).message }, 'a followed fill broke off; resuming it');
    }
    source = await resume(options, passed, first.size, takeover);
  }
}

/** The rest of the blob from byte `passed`, from the first place that has it. */
async function resume(options: RemoteFollowOptions, passed: number, size: number | undefined, takeover: Takeover): Promise<Resumed> {
  const { leases, peers, digest, clock, claim } = options;
  for (;;) {
    if (size !== undefined) {
      const committed = await claim.openCommitted({ start: passed, end: size - 1 }).catch(() => undefined);
      if (committed) return { body: committed, skip: 0, last: false };
    }
    const state = await leases.look(digest.digest);
    if (state?.owner !== undefined) {
      const peer = await peers.directory.peer(state.owner);
      const blob = peer && await peers.client.fetch(peer, digest.digest, passed).catch(() => undefined);
      if (blob) return { body: blob.body, skip: passed - blob.start, last: false };
      await clock.sleep(options.pollIntervalMs);
      continue;
    }
    const body = await takeOver(options, takeover);
    if (body) return { body: body.body, skip: passed, last: true };
  }
}

/**
 * Acquires the lapsed lease (undefined when another replica was quicker) and
 * GETs the blob upstream, holding the lease until the fill is over. The name it publishes
 * is a fresh upload name: followers over HTTP need only see that the owner's
 * fill runs, and ask its endpoint, which serves this process's fill by digest.
 */
async function takeOver(options: RemoteFollowOptions, takeover: Takeover): Promise<BlobBody | undefined> {
  const { leases, digest } = options;
  const d = digest.digest;
  const acquired = await leases.acquire(d);
  // Another replica was quicker: the next look follows it.
  if (acquired === 'taken') return undefined;
  const owned = acquired === 'owned';
  const renewal = owned ? leases.hold(d, () => options.logger.warn({ digest: d }, 'lost the lease of a fill taken over')) : undefined;
  try {
    const body = await options.claim.upstreamBody!();
    if (owned) await leases.publish(d, newUploadName(), body.size);
    void takeover.fill?.done.catch(() => undefined).finally(() => {
      renewal?.cancel();
      if (owned) void leases.release(d);
    });
    return body;
  } catch (err) {
    renewal?.cancel();
    if (owned) await leases.fail(d, err);
    throw err;
  }
}
