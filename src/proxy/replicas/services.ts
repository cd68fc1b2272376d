import type { Logger } from 'pino';
import { CachedBlobStatter } from '../../cache/cachedStatter.js';
import { RedisConnection } from '../../cache/redis.js';
import { RedisBlobDescriptorService } from '../../cache/redisDescriptors.js';
import { RedisTagRecords } from '../../cache/redisTags.js';
import type { PeersSettings, RedisSettings } from '../../config/settings.js';
import { PeerClient } from '../peers/client.js';
import { PeerDirectory } from '../peers/directory.js';
import { PeerCoordinator } from '../peers/coordinator.js';
import type { PeerEvents } from '../../registry/peerTelemetry.js';
import type { Clock } from '../../registry/clock.js';
import type { StorageDriver } from '../../storage/driver.js';
import type { BlobDescriptorService, BlobStatter } from '../../registry/services.js';
import { FillLeases } from './lease.js';
import { RedisReaders } from './readers.js';
import { ReplicaCoordinator } from './coordinator.js';
import { MANIFEST_FETCH_KEYS, ReplicaManifestCoordinator } from './manifestLeases.js';
import type { ManifestFetchCoordinator } from '../manifests.js';
import type { FillCoordinator } from '../fillSource.js';
import type { TagRecordService } from '../../registry/services.js';

export interface RedisServicesOptions {
  readonly settings: RedisSettings;
  /** With `peers`: the directory of peers in Redis, and the client of their internal endpoints. */
  readonly peers?: PeersSettings;
  /** Where the peer parts report (metrics). */
  readonly peerEvents?: PeerEvents;
  /** The storage the replicas share. */
  readonly driver: StorageDriver;
  readonly logger: Logger;
  readonly clock: Clock;
}

/** The parts of a peer: its entry in Redis, and the client it asks other peers with. */
export interface PeerServices {
  readonly directory: PeerDirectory;
  readonly client: PeerClient;
  readonly coordinator: PeerCoordinator;
}

/**
 * What Redis adds to a mirror, built in one place so the composition root
 * stays a list of parts: the shared descriptor tier, the shared tag records,
 * and the fill and manifest coordinators of replicas. All of them share one connection.
 *
 * With `peers`, each instance has storage of its own: what Redis shares is
 * who holds which blob and who is filling it, never descriptors, tags or
 * manifests (they would say a blob or manifest is here that is on another
 * node), so `behind` adds no tier, `tags` and `manifests` are absent, and
 * the fill coordinator is the peers' one.
 */
export class RedisServices {
  readonly connection: RedisConnection;
  /** The Redis tag tier, between memory and storage. */
  readonly tags: TagRecordService | undefined;
  readonly replicas: FillCoordinator;
  /** One upstream GET of a manifest across replicas (none for peers: manifests are per node). */
  readonly manifests: ManifestFetchCoordinator | undefined;
  /** Present with `peers`: who is there and holds what, and how to ask them. */
  readonly peers: PeerServices | undefined;
  /** The blobs each replica is reading, so that eviction on another keeps them. */
  readonly readers: RedisReaders;
  private readonly descriptors: RedisBlobDescriptorService;

  constructor(options: RedisServicesOptions) {
    const { settings, driver, logger, clock } = options;
    this.connection = new RedisConnection(settings, logger.child({ component: 'redis' }));
    this.descriptors = new RedisBlobDescriptorService(this.connection);
    const leases = new FillLeases({ redis: this.connection, clock });
    this.readers = new RedisReaders({ redis: this.connection, self: leases.owner, clock, ttlMs: settings.leaseTtlMs });
    this.peers = options.peers && this.peerServices(options, options.peers, leases);
    this.tags = this.peers ? undefined : new RedisTagRecords(this.connection);
    this.replicas = this.peers?.coordinator ?? new ReplicaCoordinator({
      leases,
      driver,
      ...(this.peers ? { peers: this.peers } : {}),
      logger: logger.child({ component: 'replicas' }),
      clock,
    });
    this.manifests = this.peers ? undefined : new ReplicaManifestCoordinator({
      leases: new FillLeases({ redis: this.connection, clock, keyspace: MANIFEST_FETCH_KEYS }),
      clock,
    });
  }

  private peerServices(options: RedisServicesOptions, settings: PeersSettings, leases: FillLeases): PeerServices {
    const { driver, logger, clock } = options;
    const directory = new PeerDirectory({ redis: this.connection, self: leases.owner, advertise: settings.advertise, clock });
    const client = new PeerClient(settings, clock);
    const coordinator = new PeerCoordinator({
      leases, directory, client, clock,
      createUpload: (digest) => driver.createUpload(digest),
      penaltyMs: settings.penaltyMs,
      logger: logger.child({ component: 'peers' }),
      ...(options.peerEvents ? { events: options.peerEvents } : {}),
    });
    return { directory, client, coordinator };
  }

  /** The Redis tier between the in-process cache and `storage`: memory → Redis → storage once `memory` wraps it. */
  behind(storage: BlobStatter): BlobDescriptorService | BlobStatter {
    return this.peers ? storage : new CachedBlobStatter(this.descriptors, storage);
  }

  /** Before fills are drained: fills cut by shutdown hand over to other replicas instead of failing. */
  beginShutdown(): void {
    this.replicas.beginShutdown();
  }

  /** Registers this process as a peer, when it is one. */
  async start(): Promise<void> {
    await this.peers?.directory.start();
  }

  async close(): Promise<void> {
    this.readers.stop();
    await this.peers?.directory.stop();
    await this.peers?.client.close();
    await this.connection.close();
  }
}
