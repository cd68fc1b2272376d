import type { Logger } from 'pino';
import type { Clock } from '../../registry/clock.js';
import type { ParsedDigest } from '../../registry/digest.js';
import { UpstreamUnavailable } from '../../registry/errors.js';
import type { StorageDriver } from '../../storage/driver.js';
import { blobDataPath } from '../../storage/layout.js';
import type { BlobFill } from '../fill.js';
import type { ClaimOptions, FetchBlob, FillCoordinator, FillSource } from '../fillSource.js';
import { CommittedBlob, ReplicaFollower, type OwnFill, type ReplicaFollowerOptions } from './follower.js';
import type { AcquireResult, FillLeases } from './lease.js';
import { followOverHttp } from './remote.js';
import type { PeerServices } from './services.js';

/**
 * Replicas: several pullthrough processes on one storage root and one Redis
 * fetch a cold blob once between them (README "Replicas").
 *
 * The replica that wins the Redis lease fetches, into an upload of the
 * shared storage whose name it publishes under the lease. Every other
 * replica that is asked for the blob meanwhile follows that upload
 * (`ReplicaFollower`), or reads the blob once it is committed
 * (`CommittedBlob`). Either way the blob is recorded (caches, links) in the
 * following process before its clients have the last byte.
 */

/** What a `ReplicaCoordinator` works with. */
export interface ReplicaCoordinatorOptions {
  readonly leases: FillLeases;
  /** The storage the replicas share: uploads are created, followed and found committed through it. */
  readonly driver: StorageDriver;
  readonly logger: Logger;
  /** Lease renewals and the followers' polls. */
  readonly clock: Clock;
  /** How often a follower looks for new bytes while none came. Default 25 ms. */
  readonly pollIntervalMs?: number;
  /** With `peers`: followers that cannot open the owner's upload (S3) stream it from the owner's internal endpoint. */
  readonly peers?: PeerServices;
}

/** The result of trying to own a fill: our own fill, or someone else's work to follow. */
type Ownership =
  | ({ readonly kind: 'fetching' } & OwnFill)
  | { readonly kind: 'taken' }
  | { readonly kind: 'committed'; readonly size: number };

/**
 * Decides, per cold blob, whether this replica fetches it (and holds the
 * lease while it does) or follows the replica that does. One per process;
 * `ProxyBlobStore` asks it only for the first request of a digest in this
 * process, later ones join the same `FillSource`.
 */
export class ReplicaCoordinator implements FillCoordinator {
  private readonly pollIntervalMs: number;
  private stopping = false;

  constructor(private readonly options: ReplicaCoordinatorOptions) {
    this.pollIntervalMs = options.pollIntervalMs ?? 25;
  }

  /**
   * Shutdown has begun: fills this process gives up from now on (the grace
   * period ran out) let their lease go without a failure, so that the
   * replicas following them take over instead of failing their clients.
   */
  beginShutdown(): void {
    this.stopping = true;
  }

  /**
   * The source for a cold blob. `fetch` goes upstream (when this replica
   * wins the lease, or cannot ask Redis); `confirm` checks with an upstream
   * HEAD that the requesting repository has the blob, for when the bytes come
   * from a fetch made for another repository or another replica; `record`
   * finishes the commit here for bytes another replica committed.
   */
  async claim(digest: ParsedDigest, options: ClaimOptions): Promise<FillSource> {
    const owned = await this.own(digest, options.fetch, await this.options.leases.acquire(digest.digest));
    // Our own GET confirms the repository; anything else serves bytes fetched for someone else.
    if (owned.kind === 'fetching') return owned.fill;
    await options.confirm();
    if (owned.kind === 'committed') return this.committed(digest, owned.size, options);
    return this.awaitOwner(digest, options);
  }

  /**
   * With the lease acquired (or Redis unavailable), fetch, unless the blob
   * was committed between our storage lookup and the lease: the previous
   * owner commits before it lets go.
   */
  private async own(digest: ParsedDigest, fetch: FetchBlob, acquired: AcquireResult): Promise<Ownership> {
    if (acquired === 'taken') return { kind: 'taken' };
    const size = await this.committedSize(digest);
    if (size !== undefined) {
      if (acquired === 'owned') await this.options.leases.release(digest.digest);
      return { kind: 'committed', size };
    }
    return { kind: 'fetching', ...await this.fetchLeased(digest, fetch, acquired === 'owned') };
  }

  /**
   * Fetches, holding the lease if we have it: renewed while the fill runs,
   * the upload's name published as soon as it exists, released after the
   * commit, or marked failed with the error. Without the lease (Redis away)
   * the fetch just runs: at worst twice.
   */
  private async fetchLeased(digest: ParsedDigest, fetch: FetchBlob, leased: boolean): Promise<OwnFill> {
    const { leases, driver, logger } = this.options;
    const d = digest.digest;
    // Another replica took over (we were too slow to renew): our fill goes on; a verified commit is still right.
    const renewal = leased
      ? leases.hold(d, () => logger.warn({ digest: d }, 'lost the lease of a running fill; finishing it anyway'))
      : undefined;
    let upload: string | undefined;
    let fill: BlobFill;
    try {
      fill = await fetch(async (expectedSize) => {
        const created = await driver.createUpload(d);
        upload = created.name;
        if (leased) await leases.publish(d, created.name, expectedSize);
        return created;
      });
    } catch (err) {
      renewal?.cancel();
      if (leased) await leases.fail(d, err);
      throw err;
    }
    void fill.done.then(
      async () => {
        renewal?.cancel();
        if (leased) await leases.release(d);
      },
      async (err: unknown) => {
        renewal?.cancel();
        if (!leased) return;
        // Cut off mid-way (connection lost, shutdown, abandoned by our clients): let a follower take
        // over. A verdict (404, digest mismatch, 429) is passed on: fetching again would not change it.
        if (this.stopping || err instanceof UpstreamUnavailable) await leases.release(d);
        else await leases.fail(d, err);
      },
    );
    return { fill, upload };
  }

  /**
   * Waits for the lease's owner to publish its upload, then follows it; or
   * finds the blob committed, or the owner's failure, or the lease lapsed
   * (its owner died before it published) and fetches itself.
   */
  private async awaitOwner(digest: ParsedDigest, options: ClaimOptions): Promise<FillSource> {
    const { leases, clock } = this.options;
    let owner: string | undefined;
    for (;;) {
      const size = await this.committedSize(digest);
      if (size !== undefined) return this.committed(digest, size, options);
      const state = await leases.look(digest.digest);
      // Redis stopped answering: the owner cannot be seen. Fetching costs at worst a second download.
      if (!state) return (await this.fetchLeased(digest, options.fetch, false)).fill;
      owner = state.owner ?? owner;
      const info = state.fill;
      if (info && 'failed' in info && state.owner === undefined && (owner === undefined || info.owner === owner)) {
        throw info.failed;
      }
      if (state.owner !== undefined && info && 'upload' in info && info.owner === state.owner) {
        const follower = await ReplicaFollower.follow(this.followerOptions(digest, options), info)
          ?? await this.followOverHttp(digest, state.owner, options);
        if (follower) return follower;
        // The upload is gone already: committed or failed, which a later round sees.
        await clock.sleep(this.pollIntervalMs);
        continue;
      }
      if (state.owner === undefined) {
        const owned = await this.own(digest, options.fetch, await leases.acquire(digest.digest));
        if (owned.kind === 'fetching') return owned.fill;
        if (owned.kind === 'committed') return this.committed(digest, owned.size, options);
        continue;
      }
      await clock.sleep(this.pollIntervalMs);
    }
  }

  /** With peers configured: the owner's fill over its internal endpoint (storage that cannot be read while it grows). */
  private async followOverHttp(digest: ParsedDigest, owner: string, options: ClaimOptions): Promise<BlobFill | undefined> {
    const { peers, leases, logger, clock } = this.options;
    if (!peers) return undefined;
    return followOverHttp({ digest, owner, peers, leases, claim: options, logger, clock, pollIntervalMs: this.pollIntervalMs });
  }

    /** A blob another replica committed: recorded here before it is handed out. */
  private committed(digest: ParsedDigest, size: number, options: ClaimOptions): Promise<CommittedBlob> {
    return CommittedBlob.recorded({ digest, size, record: options.record, openCommitted: options.openCommitted });
  }

  private followerOptions(digest: ParsedDigest, options: ClaimOptions): ReplicaFollowerOptions {
    const { driver, leases, logger, clock } = this.options;
    return {
      digest,
      driver,
      leases,
      logger,
      clock,
      pollIntervalMs: this.pollIntervalMs,
      record: options.record,
      openCommitted: options.openCommitted,
      takeOver: async (acquired) => {
        const owned = await this.own(digest, options.fetch, acquired);
        return owned.kind === 'fetching' ? owned : undefined;
      },
    };
  }

  /** The size of the committed blob, or undefined when it is not (yet) in storage. */
  private async committedSize(digest: ParsedDigest): Promise<number | undefined> {
    const info = await this.options.driver.stat(blobDataPath(digest.digest));
    return info && !info.isDirectory ? info.size : undefined;
  }
}
