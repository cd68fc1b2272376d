import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Clock } from '../../registry/clock.js';
import type { ParsedDigest } from '../../registry/digest.js';
import type { BlobFill } from '../fill.js';
import type { BlobBody, ClaimOptions } from '../fillSource.js';
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
 * When the owner breaks off (it died), the lease runs out; this replica
 * takes it over, GETs the blob from the upstream and goes on from the byte
 * its fill has, skipping what came before. Nothing of the two sources is
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

/** The owner's body; if it breaks off, the upstream's from the same byte on (after taking the lease over). */
async function* resumingBody(options: RemoteFollowOptions, first: BlobBody, takeover: Takeover): AsyncGenerator<Buffer> {
  let passed = 0;
  try {
    for await (const chunk of first.body) {
      passed += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
    return;
  } catch (err) {
    options.logger.warn({ digest: options.digest.digest, passed, err: (err as Error).message },
      'the owner of a fill broke off; taking it over once its lease lapses');
  }
  const rest = await takeOver(options, takeover);
  let skip = passed;
  for await (const c of rest.body) {
    const chunk = c as Buffer;
    if (skip >= chunk.length) {
      skip -= chunk.length;
      continue;
    }
    yield skip > 0 ? chunk.subarray(skip) : chunk;
    skip = 0;
  }
}

/**
 * Waits for the dead owner's lease to lapse, acquires it and GETs the blob
 * upstream, holding the lease until the fill is over. The name it publishes
 * is a fresh upload name: followers over HTTP need only see that the owner's
 * fill runs, and ask its endpoint, which serves this process's fill by digest.
 */
async function takeOver(options: RemoteFollowOptions, takeover: Takeover): Promise<BlobBody> {
  const { leases, digest, clock } = options;
  const d = digest.digest;
  for (;;) {
    const acquired = await leases.acquire(d);
    if (acquired === 'taken') {
      await clock.sleep(options.pollIntervalMs);
      continue;
    }
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
}
