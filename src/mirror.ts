import type { Logger } from 'pino';
import { CachedBlobStatter } from './cache/cachedStatter.js';
import { MemoryBlobDescriptorService } from './cache/memory.js';
import type { ResolvedConfig } from './config/load.js';
import { LocalBlobStore, StorageBlobStatter } from './storage/blobs.js';
import { listCachedRepositories } from './storage/catalog.js';
import { FilesystemDriver } from './storage/filesystem.js';
import { LocalManifestStore } from './storage/manifests.js';
import { LocalTagStore } from './storage/tags.js';
import { Evictor } from './storage/evictor.js';
import { UsageRecorder } from './storage/usage.js';
import { ConfigError } from './config/load.js';
import type { Digest } from './registry/digest.js';
import type { RepositoryRef } from './registry/services.js';
import type { UpstreamAuthorizer } from './upstream/auth/authorizer.js';
import { authorizerFor as challengeAuthorizerFor } from './upstream/auth/authorizerFor.js';
import { UpstreamClient } from './upstream/client.js';
import type { UpstreamSettings } from './config/load.js';
import { ProxyBlobStore } from './proxy/blobs.js';
import { ProxyManifestStore } from './proxy/manifests.js';
import { PinsFile } from './storage/pins.js';
import { UpstreamRouter, type ImageReference } from './routing/router.js';
import { ProxyTagService } from './proxy/tags.js';
// Types only: ioredis and the replica code load when Redis is configured (Mirror.create), not in every process.
import type { RedisServices } from './proxy/replicas/services.js';

export interface MirrorOptions {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  /** Builds the authorizer of one upstream; by default one that learns Bearer or Basic from the upstream's 401s. */
  readonly authorizerFor?: (upstream: UpstreamSettings, logger: Logger) => UpstreamAuthorizer;
  /** The Redis parts, when `redis` is configured; `Mirror.create` builds them. */
  readonly redis?: RedisServices;
}

/**
 * The composition root of the registry side: storage, descriptor caches,
 * upstream clients and the proxy services wrapped around them. The HTTP
 * layer gets one of these and nothing else.
 */
export class Mirror {
  readonly router: UpstreamRouter;
  readonly blobs: ProxyBlobStore;
  readonly manifests: ProxyManifestStore;
  readonly tags: ProxyTagService;
  readonly driver: FilesystemDriver;
  readonly evictor: Evictor;
  readonly usage: UsageRecorder;
  private readonly clients: Map<string, UpstreamClient>;
  /** Present when `redis` is configured: shared caches, and replicas on this root. */
  private readonly redis: RedisServices | undefined;

  /**
   * Builds a mirror, loading the Redis parts (ioredis, leases, replica
   * followers) only when `redis` is configured: a process without Redis does
   * not pay their memory.
   */
  static async create(options: Omit<MirrorOptions, 'redis'>): Promise<Mirror> {
    const { config, logger } = options;
    if (!config.redis) return new Mirror(options);
    const { RedisServices } = await import('./proxy/replicas/services.js');
    return new Mirror({ ...options, redis: new RedisServices(config.redis, config.storageRoot, logger) });
  }

  constructor(private readonly options: MirrorOptions) {
    const { config, logger } = options;
    this.driver = new FilesystemDriver(config.storageRoot);
    this.router = new UpstreamRouter(config.upstreams, config.defaultUpstream);
    const authorizerFor = options.authorizerFor ?? challengeAuthorizerFor;
    this.clients = new Map(config.upstreams.map((u) => [u.name, new UpstreamClient(u, {
      authorizer: authorizerFor(u, logger.child({ upstream: u.name })),
      logger: logger.child({ upstream: u.name }),
    })]));
    const upstreams = (name: string): UpstreamClient => {
      const client = this.clients.get(name);
      if (!client) throw new Error(`no upstream named ${name}`);
      return client;
    };
    if (config.redis && !options.redis) throw new Error('redis is configured: build the mirror with Mirror.create');
    this.redis = options.redis;
    const storageStatter = new StorageBlobStatter(this.driver);
    const descriptors = new CachedBlobStatter(
      new MemoryBlobDescriptorService(config.cache.memoryEntries),
      this.redis ? this.redis.behind(storageStatter) : storageStatter,
    );
    this.usage = new UsageRecorder(config.storageRoot, config.storage.usageFlushIntervalMs);
    const localBlobs = new LocalBlobStore(this.driver, descriptors, {
      usage: this.usage,
      onCommitted: (d) => this.evictor.added(d.size),
    });
    this.blobs = new ProxyBlobStore(localBlobs, this.driver, upstreams, logger, this.redis?.replicas);
    const localManifests = new LocalManifestStore(this.driver, {
      memoryEntries: config.cache.memoryEntries,
      memoryBytes: config.cache.manifestMemoryBytes,
      usage: this.usage,
    });
    const pins = config.pins.map((pin, i) => parsePin(this.router, pin, i));
    // `warm --pin` writes <root>/pins.json: pins that need no configuration edit, merged with these.
    const storedPins = new PinsFile(config.storageRoot, (pin) => this.router.parseReference(pin), logger);
    this.evictor = new Evictor(this.driver, {
      maxBytes: config.storage.maxBytes,
      highWatermark: config.storage.highWatermark,
      lowWatermark: config.storage.lowWatermark,
      maxIdleMs: config.storage.maxIdleMs,
      graceMs: config.storage.evictionGraceMs,
      isPinned: (repository, tags, digest) => pins.some((p) => pinMatches(p, repository, tags, digest))
        || storedPins.matches(repository, tags, digest),
      inUse: (digest) => this.blobs.isFilling(digest) || localBlobs.isReading(digest),
    }, this.usage, {
      blobRemoved: (digest, repositories) => localBlobs.evicted(digest, repositories),
      manifestRemoved: (repository, digest) => localManifests.evicted(repository, digest),
    }, logger.child({ component: 'eviction' }), config.storage.evictionIntervalMs);
    this.manifests = new ProxyManifestStore(localManifests, upstreams);
    this.tags = new ProxyTagService({
      local: new LocalTagStore(this.driver),
      ...(this.redis ? { shared: this.redis.tags } : {}),
      manifests: this.manifests,
      upstreams,
      logger,
      memoryEntries: config.cache.memoryEntries,
    });
  }

  /** Prepares storage; never contacts an upstream and never walks the tree. */
  async start(): Promise<void> {
    await this.driver.init();
    // Other replicas may be filling into _uploads right now: only what nobody has written for a while is dead.
    const removed = await this.driver.sweepUploads(this.redis ? uploadSweepAgeMs(this.options.config.upstreams) : 0);
    if (removed > 0) this.options.logger.info({ removed }, 'removed temp files of interrupted fills');
    this.usage.start();
    this.evictor.start();
  }

  /** The client of a configured upstream (rate-limit readings, tests). */
  upstream(name: string): UpstreamClient | undefined {
    return this.clients.get(name);
  }

  catalog(): Promise<string[]> {
    return listCachedRepositories(this.driver);
  }

  /** Lets running fills finish (aborting them after `graceMs`), then closes upstream pools. */
  async close(graceMs: number): Promise<void> {
    this.redis?.beginShutdown();
    await this.blobs.drain(graceMs);
    await this.evictor.stop();
    await this.usage.stop();
    await Promise.all([...this.clients.values()].map((c) => c.close()));
    await this.redis?.close();
  }
}

/** A pin from the configuration, parsed like an image reference. */
function parsePin(router: UpstreamRouter, pin: string, index: number): ImageReference {
  try {
    return router.parseReference(pin);
  } catch (err) {
    throw new ConfigError(`invalid configuration:\n/pins/${index}: ${(err as Error).message} (${pin})`);
  }
}

/** A pin without tag or digest keeps the whole repository. */
function pinMatches(pin: ImageReference, repository: RepositoryRef, tags: readonly string[], digest: Digest): boolean {
  const r = pin.route.repository;
  if (r.upstream !== repository.upstream || r.name !== repository.name) return false;
  if (pin.digest) return pin.digest === digest;
  if (pin.tag) return tags.includes(pin.tag);
  return true;
}

/**
 * How old a temp file in `_uploads` must be before start-up removes it when
 * replicas share the storage root: a live fill writes at least once per
 * body-idle timeout (or fails), so twice the longest one means nobody is
 * writing it any more. Without replicas every temp file at start-up is dead.
 */
export function uploadSweepAgeMs(upstreams: readonly UpstreamSettings[]): number {
  return 2 * Math.max(...upstreams.map((u) => u.timeouts.bodyIdleMs));
}
