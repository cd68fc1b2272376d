import type { Logger } from 'pino';
import { Admin } from './admin/admin.js';
import { reportedHealth } from './admin/health.js';
import { PullthroughMetrics, type MetricSources } from './admin/metrics.js';
import { ReadinessProbe } from './admin/probes.js';
import { StatusReporter } from './admin/status.js';
import { CachedBlobStatter } from './cache/cachedStatter.js';
import { CachedTagRecords } from './cache/cachedTags.js';
import { MemoryBlobDescriptorService, MemoryManifestBodies, MemoryTagRecords } from './cache/memory.js';
import { ConfigError, type ResolvedConfig, type UpstreamSettings } from './config/settings.js';
import { ReadRules } from './http/auth/rules.js';
import { ProxyBlobStore } from './proxy/blobs.js';
import { StorageSpace } from './proxy/storageSpace.js';
import { ProxyManifestStore } from './proxy/manifests.js';
import { ProxyReferrersService } from './proxy/referrers.js';
import { ProxyTagService } from './proxy/tags.js';
import { systemClock, type Clock } from './registry/clock.js';
import type { Digest } from './registry/digest.js';
import { UpstreamRouter } from './routing/router.js';
import { LocalBlobStore, StorageBlobStatter } from './storage/blobs.js';
import { CachedCatalog } from './storage/catalog.js';
import type { StorageDriver } from './storage/driver.js';
import type { BlobDescriptorService, BlobStatter } from './registry/services.js';
import { Evictor } from './storage/evictor.js';
import { FilesystemDriver } from './storage/filesystem.js';
import { isS3Driver } from './storage/s3/kind.js';
import { LocalManifestStore, StorageRevisionStatter } from './storage/manifests.js';
import { PinSet, type PinRule } from './storage/pins.js';
import { LocalReferrersStore } from './storage/referrers.js';
import { LocalTagStore } from './storage/tags.js';
import { sweepUploads } from './storage/uploads.js';
import { UsageRecorder, type SizeLedger, type UseTimes } from './storage/usage.js';
import { BucketUsageRecord } from './storage/usageRecord.js';
import { RedisSizeLedger, RedisUseTimes } from './cache/redisUsage.js';
import type { UpstreamAuthorizer } from './upstream/auth/authorizer.js';
import { authorizerFor as challengeAuthorizerFor } from './upstream/auth/authorizerFor.js';
import { UpstreamClient } from './upstream/client.js';
import type { RequestEvents, UpstreamEvents } from './registry/telemetry.js';
// Types only: ioredis and the replica code load when Redis is configured (Mirror.create), not in every process.
import type { RedisServices } from './proxy/replicas/services.js';
import type { FastifyPluginAsync } from 'fastify';
import type { HeldBlobs } from './registry/heldBlobs.js';
import { LocalHeldBlobs } from './proxy/peers/held.js';
import { PeerMetrics } from './admin/peerMetrics.js';
import { internalRoutes } from './http/routes/internal.js';

export interface MirrorOptions {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  /** The time every policy reads; tests pass a fake one. */
  readonly clock?: Clock;
  /** Builds the authorizer of one upstream; by default one that learns Bearer or Basic from the upstream's 401s. */
  readonly authorizerFor?: (upstream: UpstreamSettings, logger: Logger, clock: Clock, events: UpstreamEvents) => UpstreamAuthorizer;
  /** The version the status page and `pullthrough_build_info` show. */
  readonly version?: string;
  /** The Redis parts, when `redis` is configured; `Mirror.create` builds them. */
  readonly redis?: RedisServices;
  /** The peer metrics, with `peers`: made with the Redis parts, registered with the others here. */
  readonly peerMetrics?: PeerMetrics;
}

/**
 * The composition root: storage, descriptor caches, upstream clients and
 * the proxy services wrapped around them, built from the configuration. The
 * HTTP layer, warm and the commands get one of these.
 */
export class Mirror {
  readonly clock: Clock;
  readonly router: UpstreamRouter;
  readonly driver: StorageDriver;
  readonly localBlobs: LocalBlobStore;
  readonly localManifests: LocalManifestStore;
  readonly localTags: LocalTagStore;
  readonly blobs: ProxyBlobStore;
  readonly manifests: ProxyManifestStore;
  readonly tags: ProxyTagService;
  readonly localReferrers: LocalReferrersStore;
  readonly referrers: ProxyReferrersService;
  readonly evictor: Evictor;
  readonly usage: UsageRecorder;
  /** Every metric of the process; the layers report to its sinks. */
  readonly metrics: PullthroughMetrics;
  /** What the HTTP layer reports each answered request to. */
  readonly requestEvents: RequestEvents;
  /** The operator's endpoints: metrics, probes, status page. */
  readonly admin: Admin;
  /** What the internal fill endpoint serves: committed blobs and this process's fills in progress. */
  readonly held: HeldBlobs;
  private readonly clients: Map<string, UpstreamClient>;
  private readonly cachedCatalog: CachedCatalog;
  /** Present when `redis` is configured: shared caches, and replicas on this root. */
  private readonly redis: RedisServices | undefined;

  /**
   * Builds a mirror, loading the Redis parts (ioredis, leases, replica
   * followers) only when `redis` is configured: a process without Redis does
   * not pay their memory.
   */
  static async create(options: Omit<MirrorOptions, 'redis'>): Promise<Mirror> {
    const { config, logger } = options;
    const driver = await storageDriverFor(config);
    if (!config.redis) return new Mirror(options, driver);
    const { RedisServices } = await import('./proxy/replicas/services.js');
    const peerMetrics = config.peers ? new PeerMetrics() : undefined;
    const redis = new RedisServices({
      settings: config.redis, driver, logger, clock: options.clock ?? systemClock,
      ...(config.peers ? { peers: config.peers, peerEvents: peerMetrics } : {}),
    });
    return new Mirror({ ...options, redis, ...(peerMetrics ? { peerMetrics } : {}) }, driver);
  }

  constructor(private readonly options: MirrorOptions, driver: StorageDriver = filesystemDriverFor(options.config)) {
    const { config, logger } = options;
    const clock = this.clock = options.clock ?? systemClock;
    this.driver = driver;
    this.router = new UpstreamRouter(config.upstreams, config.defaultUpstream);
    this.metrics = new PullthroughMetrics({
      upstreams: config.upstreams.map((u) => u.name),
      version: options.version ?? 'unknown',
      redis: config.redis !== undefined,
      sources: this.metricSources(),
      logger,
      now: () => clock.now(),
      // Asked when scraped: the clients exist by then.
      health: { health: (upstream) => reportedHealth(this.clients.get(upstream)?.health.state) },
    });
    this.requestEvents = this.metrics.requests;
    const authorizerFor = options.authorizerFor ?? ((u, l, c, e) => challengeAuthorizerFor(u, l, undefined, c, e));
    this.clients = new Map(config.upstreams.map((u) => [u.name, new UpstreamClient(u, {
      authorizer: authorizerFor(u, logger.child({ upstream: u.name }), clock, this.metrics.upstream(u.name)),
      logger: logger.child({ upstream: u.name }),
      clock,
      events: this.metrics.upstream(u.name),
    })]));
    const upstreams = (name: string): UpstreamClient => {
      const client = this.clients.get(name);
      if (!client) throw new Error(`no upstream named ${name}`);
      return client;
    };
    if (config.redis && !options.redis) throw new Error('redis is configured: build the mirror with Mirror.create');
    this.redis = options.redis;
    const peers = this.redis?.peers;
    // Reads marked in Redis keep a blob from another replica's eviction. That matters only where the
    // replicas share storage: peers on node-local roots each evict their own copy (and would pay a
    // Redis round trip per cached read for nothing).
    const sharedReaders = this.redis && (!peers || config.s3) ? this.redis.readers : undefined;
    options.peerMetrics?.register(this.metrics.registry);
    // One caching pattern for blobs, manifest revisions and tags: memory → Redis (when configured) → storage.
    const memory = new MemoryBlobDescriptorService(config.cache.memoryEntries);
    const tiered = (storage: BlobStatter): BlobDescriptorService => new CachedBlobStatter(memory, this.redis ? this.redis.behind(storage) : storage);
    const descriptors = tiered(new StorageBlobStatter(this.driver));
    this.localTags = new LocalTagStore(this.driver);
    const tagRecords = new CachedTagRecords(
      new MemoryTagRecords(config.cache.memoryEntries),
      this.redis?.tags ? new CachedTagRecords(this.redis.tags, this.localTags) : this.localTags,
    );
    const objectUsage = config.s3 ? usageStoresFor(this.driver, this.redis) : undefined;
    this.usage = new UsageRecorder({
      driver: this.driver, intervalMs: config.storage.usageFlushIntervalMs, clock, logger: logger.child({ component: 'usage' }),
      ...(objectUsage ? { times: objectUsage.times } : {}),
    });
    this.localBlobs = new LocalBlobStore({
      driver: this.driver,
      descriptors,
      usage: this.usage,
      onCommitted: (d) => {
        this.evictor.added(d.size);
        void peers?.directory.announce(d.digest, true);
      },
      onRemoved: (_, bytes) => this.evictor.removed(bytes),
      onReleased: (digest) => {
        this.evictor.released(digest);
        // A blob read here is in use: its "has" record lives on (refreshed at most once a minute).
        void peers?.directory.announce(digest);
      },
      onReverified: (digest, outcome, reason) => {
        if (outcome === 'removed') {
          logger.error({ digest, reason }, 'a cached blob could not be read back intact: removed, the next request fills it again');
          void peers?.directory.withdraw(digest);
        } else logger.warn({ digest, reason }, 'a read of a cached blob failed; the blob hashes right and stays');
      },
      ...redirectsOf(this.driver, config),
      ...(sharedReaders ? { sharedReaders } : {}),
    });
    const space = new StorageSpace({ clock, logger: logger.child({ component: 'storage' }), onFull: () => this.evictor.trigger() });
    this.blobs = new ProxyBlobStore({
      local: this.localBlobs, upstreams, logger, clock, space, ...(this.redis ? { coordinator: this.redis.replicas } : {}),
      onReleased: (digest) => this.evictor.released(digest),
      fillEvents: (upstream) => this.metrics.upstream(upstream),
      // Where access rules restrict anything, an upstream's HEAD is no proof that it has a blob cached from
      // elsewhere: it must serve the same bytes before the blob is linked (README "Security", cross-upstream access).
      ...(restrictsAccess(config) ? { confirmByContent: () => true } : {}),
    });
    this.localManifests = new LocalManifestStore({
      driver: this.driver,
      revisions: tiered(new StorageRevisionStatter(this.driver)),
      bodies: new MemoryManifestBodies(config.cache.manifestMemoryBytes),
      usage: this.usage,
      onStored: (bytes) => this.evictor.added(bytes),
    });
    const pins = new PinSet({
      driver: this.driver,
      configured: config.pins.map((pin, i) => this.configuredPin(pin, i)),
      parse: (pin) => this.pinRule(pin),
      logger,
    });
    this.evictor = new Evictor({
      driver: this.driver,
      policy: {
        maxBytes: config.storage.maxBytes,
        highWatermark: config.storage.highWatermark,
        lowWatermark: config.storage.lowWatermark,
        maxIdleMs: config.storage.maxIdleMs,
        graceMs: config.storage.evictionGraceMs,
        isPinned: (repository, tags, digest) => pins.matches(repository, tags, digest),
        inUse: (digest) => this.blobs.isFilling(digest) || this.localBlobs.isReading(digest),
        ...(sharedReaders ? { inUseElsewhere: (digest: Digest) => sharedReaders.inUseElsewhere(digest) } : {}),
        prepare: () => pins.refresh(),
      },
      usage: this.usage,
      hooks: {
        blobRemoved: async (digest, repositories) => {
          await peers?.directory.withdraw(digest);
          await this.localBlobs.evicted(digest, repositories);
        },
        manifestRemoved: (repository, digest) => this.localManifests.evicted(repository, digest),
      },
      logger: logger.child({ component: 'eviction' }),
      intervalMs: config.storage.evictionIntervalMs,
      clock,
      events: this.metrics.eviction,
      ...(objectUsage ? { ledger: objectUsage.ledger } : {}),
    });
    this.manifests = new ProxyManifestStore({
      local: this.localManifests, upstreams, ...(this.redis?.manifests ? { coordinator: this.redis.manifests } : {}),
    });
    this.tags = new ProxyTagService({ records: tagRecords, local: this.localTags, manifests: this.manifests, upstreams, logger, clock });
    this.localReferrers = new LocalReferrersStore(this.driver);
    this.referrers = new ProxyReferrersService({
      local: this.localReferrers, tags: this.tags, manifests: this.manifests, upstreams, logger, clock,
    });
    this.held = new LocalHeldBlobs({
      local: this.localBlobs, fills: this.blobs, onServed: (digest) => void peers?.directory.announce(digest),
    });
    this.cachedCatalog = new CachedCatalog({ driver: this.driver, clock, maxAgeMs: CATALOG_MAX_AGE_MS });
    this.admin = this.buildAdmin();
  }

  /**
   * The routes beside the registry API on its listener: the operator's
   * endpoints (unless `admin.listen` gives them their own), and the internal
   * fill endpoint with `peers`.
   */
  plugins(): FastifyPluginAsync[] {
    const { config } = this.options;
    return [
      ...(config.admin ? [] : [this.admin.routes]),
      ...(config.peers ? [internalRoutes({ held: this.held, secret: config.peers.secret, now: () => this.clock.now(), ...(this.options.peerMetrics ? { events: this.options.peerMetrics } : {}) })] : []),
    ];
  }

  /** What the metrics and the status page read when asked: fills, storage size, rate limits, Redis. */
  private metricSources(): MetricSources {
    return {
      fills: () => this.blobs.fillsInProgress(),
      storage: () => ({ usedBytes: this.evictor.usedBytes, maxBytes: this.evictor.maxBytes }),
      rateLimit: (upstream) => this.clients.get(upstream)?.rateLimit.latest,
      redis: () => this.redis && { connected: this.redis.connection.ready, failedCommands: this.redis.connection.failedCommands },
    };
  }

  private buildAdmin(): Admin {
    const { config } = this.options;
    const clock = this.clock;
    const connection = this.redis?.connection;
    return new Admin({
      metrics: this.metrics,
      readiness: new ReadinessProbe({
        driver: this.driver, clock, ...(connection ? { redis: { get connected() { return connection.ready; } } } : {}),
      }),
      status: new StatusReporter({
        metrics: this.metrics,
        sources: this.metricSources(),
        upstreams: config.upstreams.map((u) => ({ name: u.name, offline: u.offline })),
        version: this.options.version ?? 'unknown',
        startedAt: clock.now(),
        now: () => clock.now(),
      }),
    });
  }

  /** Prepares storage; never contacts an upstream and never walks the tree. */
  async start(): Promise<void> {
    await this.driver.init();
    const removed = await this.sweepUploads(false);
    if (removed > 0) this.options.logger.info({ removed }, 'removed temp files of interrupted fills');
    this.usage.start();
    this.evictor.start();
    await this.redis?.start();
  }

  /**
   * Removes uploads of interrupted fills. Other replicas (with Redis), or the
   * server beside `pullthrough gc`, may be filling right now: then only what
   * nobody has written for a while is dead (with S3, incomplete multipart
   * uploads older than `storage.s3.abandonedUploadAge`).
   */
  sweepUploads(besideOthers: boolean): Promise<number> {
    const shared = besideOthers || this.redis !== undefined;
    return sweepUploads(this.driver, shared ? uploadSweepAgeMs(this.options.config.upstreams) : 0, this.clock.now());
  }

  /** The client of a configured upstream (rate-limit readings, tests). */
  upstream(name: string): UpstreamClient | undefined {
    return this.clients.get(name);
  }

  /** The cached repositories, from a walk at most `CATALOG_MAX_AGE_MS` old. */
  catalog(): Promise<string[]> {
    return this.cachedCatalog.list();
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

  /** A pin's text (`<upstream>/<repo>[:tag|@digest]`), read like an image reference. */
  pinRule(pin: string): PinRule {
    const ref = this.router.parseReference(pin);
    return { repository: ref.route.repository, tag: ref.tag, digest: ref.digest };
  }

  private configuredPin(pin: string, index: number): PinRule {
    try {
      return this.pinRule(pin);
    } catch (err) {
      throw new ConfigError(`invalid configuration:\n/pins/${index}: ${(err as Error).message} (${pin})`);
    }
  }
}

/**
 * Where S3 storage keeps last-use times and the size total, which objects
 * cannot carry (no mtime to touch) and a start-up should not learn by
 * listing the bucket: in Redis, shared by the replicas, when it is
 * configured; else in the usage record object of the bucket. The filesystem
 * driver needs neither: it touches mtimes, and a local walk is cheap.
 */
function usageStoresFor(driver: StorageDriver, redis: RedisServices | undefined): { times: UseTimes; ledger: SizeLedger } {
  if (redis && isS3Driver(driver)) {
    return { times: new RedisUseTimes(redis.connection, driver.description), ledger: new RedisSizeLedger(redis.connection, driver.description) };
  }
  const record = new BucketUsageRecord(driver);
  return { times: record, ledger: record };
}

/** With `storage.s3.redirect`: cached blob GETs send clients to a presigned URL of the object. */
function redirectsOf(driver: StorageDriver, config: ResolvedConfig): { redirectUrl?: (path: string) => Promise<string> } {
  const expiryMs = config.s3?.redirect ? config.s3.redirectExpiryMs : undefined;
  if (expiryMs === undefined || !(isS3Driver(driver))) return {};
  return { redirectUrl: (path) => driver.presignedUrl(path, expiryMs) };
}

/**
 * The configured storage: the S3 bucket of `storage.s3`, or the directory
 * `storage.root`. The S3 driver is loaded only here, when configured: it
 * brings the AWS SDK, which a process on the filesystem never needs.
 */
export async function storageDriverFor(config: ResolvedConfig): Promise<StorageDriver> {
  const s3 = config.s3;
  if (!s3) return filesystemDriverFor(config);
  const { S3StorageDriver } = await import('./storage/s3/driver.js');
  return new S3StorageDriver({
    bucket: s3.bucket,
    prefix: s3.prefix,
    client: { region: s3.region, endpoint: s3.endpoint, forcePathStyle: s3.forcePathStyle, credentials: s3.credentials },
    spoolRoot: config.storageRoot,
    partSizeBytes: s3.partSizeBytes,
    abandonedUploadAgeMs: s3.abandonedUploadAgeMs,
  });
}

/** The directory `storage.root`; a configuration with `storage.s3` needs `Mirror.create` (or a driver given). */
function filesystemDriverFor(config: ResolvedConfig): StorageDriver {
  if (config.s3) throw new Error('an S3 storage configuration needs Mirror.create, which loads the S3 driver');
  return new FilesystemDriver(config.storageRoot, { umask: config.storage.umask });
}

/** True when `auth` rules keep some client from some repository. */
function restrictsAccess(config: ResolvedConfig): boolean {
  return config.auth !== undefined && !new ReadRules(config.auth.rules).everyonePullsEverything();
}

/** How long one walk of `repositories/` answers `_catalog`. */
const CATALOG_MAX_AGE_MS = 5_000;

/**
 * How old an upload must be before start-up removes it when replicas share
 * the storage root: a live fill writes at least once per body-idle timeout
 * (or fails), so twice the longest one means nobody is writing it any more.
 * Without replicas every upload at start-up is dead.
 */
export function uploadSweepAgeMs(upstreams: readonly UpstreamSettings[]): number {
  return 2 * Math.max(...upstreams.map((u) => u.timeouts.bodyIdleMs));
}
