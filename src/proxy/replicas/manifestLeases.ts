import type { Clock } from '../../registry/clock.js';
import type { Digest } from '../../registry/digest.js';
import { UpstreamUnavailable } from '../../registry/errors.js';
import type { Manifest, RepositoryRef } from '../../registry/services.js';
import type { ManifestFetchCoordinator, OnceResult } from '../manifests.js';
import type { FillLeases, LeaseKeyspace } from './lease.js';

/** Manifest fetches: `manifest-lease:<upstream>/<repository>@<digest>`, and `manifest-fill:...` for a failure. */
export const MANIFEST_FETCH_KEYS: LeaseKeyspace = { lease: 'manifest-lease:', fill: 'manifest-fill:' };

export interface ReplicaManifestCoordinatorOptions {
  /** Leases in the `MANIFEST_FETCH_KEYS` keyspace. */
  readonly leases: FillLeases;
  /** The waiting replicas' polls. */
  readonly clock: Clock;
  /** How often a waiting replica looks in storage. Default 25 ms. */
  readonly pollIntervalMs?: number;
}

/**
 * Replicas on one storage root and one Redis fetch a manifest by digest once
 * between them (Docker Hub counts manifest GETs against the pull rate
 * limit). The replica that takes the Redis lease fetches and stores it; the
 * others poll the shared storage until it is there. The owner's verdict (a
 * 404, a manifest that does not match its digest, a 429) is theirs too; an
 * owner that could not reach the upstream, or died, lets the lease go, and
 * the next replica fetches. Without Redis every replica fetches for itself:
 * at worst once each, never wrong (every fetch is verified).
 */
export class ReplicaManifestCoordinator implements ManifestFetchCoordinator {
  private readonly pollIntervalMs: number;

  constructor(private readonly options: ReplicaManifestCoordinatorOptions) {
    this.pollIntervalMs = options.pollIntervalMs ?? 25;
  }

  async once(
    repository: RepositoryRef, digest: Digest, fetch: () => Promise<Manifest>, find: () => Promise<Manifest | undefined>,
  ): Promise<OnceResult> {
    const { leases, clock } = this.options;
    const id = `${repository.upstream}/${repository.name}@${digest}`;
    for (;;) {
      const acquired = await leases.acquire(id);
      if (acquired !== 'taken') return { manifest: await this.fetchHolding(id, acquired === 'owned', fetch), fetched: true };
      // Another replica is fetching it: its result lands in the shared storage.
      for (;;) {
        await clock.sleep(this.pollIntervalMs);
        const found = await find();
        if (found) return { manifest: found, fetched: false };
        const state = await leases.look(id);
        // Redis stopped answering: the owner cannot be seen. Fetching costs at worst a second GET.
        if (!state) return { manifest: await fetch(), fetched: true };
        if (state.owner !== undefined) continue;
        if (state.fill && 'failed' in state.fill) throw state.fill.failed;
        break;
      }
      // The lease is free: the owner stored it (found now), or gave up, or died; then the next one fetches.
      const found = await find();
      if (found) return { manifest: found, fetched: false };
    }
  }

  private async fetchHolding(id: string, leased: boolean, fetch: () => Promise<Manifest>): Promise<Manifest> {
    const { leases } = this.options;
    if (!leased) return fetch();
    // A manifest fetch is short; a lost lease means at worst one more fetch elsewhere, so nothing to do about it.
    const renewal = leases.hold(id, () => undefined);
    try {
      const manifest = await fetch();
      renewal.cancel();
      await leases.release(id);
      return manifest;
    } catch (err) {
      renewal.cancel();
      // Could not reach the upstream: let the next replica try. A verdict is passed on.
      if (err instanceof UpstreamUnavailable) await leases.release(id);
      else await leases.fail(id, err);
      throw err;
    }
  }
}
