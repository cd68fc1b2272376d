import type { Logger } from 'pino';
import { CachedBlobStatter } from '../../cache/cachedStatter.js';
import { RedisConnection } from '../../cache/redis.js';
import { RedisBlobDescriptorService } from '../../cache/redisDescriptors.js';
import { RedisTagRecords } from '../../cache/redisTags.js';
import type { RedisSettings } from '../../config/settings.js';
import type { Clock } from '../../registry/clock.js';
import type { StorageDriver } from '../../storage/driver.js';
import type { BlobDescriptorService, BlobStatter } from '../../registry/services.js';
import { FillLeases } from './lease.js';
import { ReplicaCoordinator } from './coordinator.js';
import { MANIFEST_FETCH_KEYS, ReplicaManifestCoordinator } from './manifestLeases.js';
import type { ManifestFetchCoordinator } from '../manifests.js';
import type { FillCoordinator } from '../fillSource.js';
import type { TagRecordService } from '../../registry/services.js';

export interface RedisServicesOptions {
  readonly settings: RedisSettings;
  /** The storage the replicas share. */
  readonly driver: StorageDriver;
  readonly logger: Logger;
  readonly clock: Clock;
}

/**
 * What Redis adds to a mirror, built in one place so the composition root
 * stays a list of parts: the shared descriptor tier, the shared tag records,
 * and the fill and manifest coordinators of replicas. All of them share one connection.
 */
export class RedisServices {
  readonly connection: RedisConnection;
  /** The Redis tag tier, between memory and storage. */
  readonly tags: TagRecordService;
  readonly replicas: FillCoordinator;
  /** One upstream GET of a manifest across replicas. */
  readonly manifests: ManifestFetchCoordinator;
  private readonly descriptors: RedisBlobDescriptorService;

  constructor(options: RedisServicesOptions) {
    const { settings, driver, logger, clock } = options;
    this.connection = new RedisConnection(settings, logger.child({ component: 'redis' }));
    this.descriptors = new RedisBlobDescriptorService(this.connection);
    this.tags = new RedisTagRecords(this.connection);
    this.replicas = new ReplicaCoordinator({
      leases: new FillLeases({ redis: this.connection, clock }),
      driver,
      logger: logger.child({ component: 'replicas' }),
      clock,
    });
    this.manifests = new ReplicaManifestCoordinator({
      leases: new FillLeases({ redis: this.connection, clock, keyspace: MANIFEST_FETCH_KEYS }),
      clock,
    });
  }

  /** The Redis tier between the in-process cache and `storage`: memory → Redis → storage once `memory` wraps it. */
  behind(storage: BlobStatter): BlobDescriptorService {
    return new CachedBlobStatter(this.descriptors, storage);
  }

  /** Before fills are drained: fills cut by shutdown hand over to other replicas instead of failing. */
  beginShutdown(): void {
    this.replicas.beginShutdown();
  }

  close(): Promise<void> {
    return this.connection.close();
  }
}
