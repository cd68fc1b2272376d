import { Type, type Static } from '@sinclair/typebox';

/**
 * The configuration schema: the one place that says which keys exist, their
 * types and their defaults. `Config` is derived from it, so the type and the
 * validation can never disagree. README "Configuration" documents each key.
 */

/** `"512MiB"`, `"20GiB"`, `"500MB"`, `"1TB"`: binary (KiB, MiB, GiB, TiB) or decimal (KB, MB, GB, TB) units. */
export const Size = Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?\\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$' });

/** `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"7d"`. */
export const Duration = Type.String({ pattern: '^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$' });

const Timeouts = Type.Object({
  /** TCP+TLS connect to the upstream. */
  connect: Type.Optional(Duration),
  /** From request sent to response headers received (a hung upstream). */
  headers: Type.Optional(Duration),
  /** Longest silence between two chunks of a response body. */
  bodyIdle: Type.Optional(Duration),
}, { additionalProperties: false });

const Credentials = Type.Object({
  username: Type.String({ minLength: 1 }),
  password: Type.Optional(Type.String()),
  passwordFile: Type.Optional(Type.String({ minLength: 1 })),
  passwordEnv: Type.Optional(Type.String({ minLength: 1 })),
}, { additionalProperties: false });

/** Settings an upstream may set for itself; `upstreamDefaults` sets them for all. */
const UpstreamPolicy = {
  timeouts: Type.Optional(Timeouts),
  /** A tag resolved within this age is served without asking the upstream. */
  tagMaxAge: Type.Optional(Duration),
  /** How long a fill may go on after its last client went away. */
  detachedFillTimeout: Type.Optional(Duration),
  /** When the upstream fails, a recorded tag older than this is not served stale. Unlimited by default. */
  maxStale: Type.Optional(Duration),
  /** Never contact the upstream: serve what is cached, answer misses with an "offline" error. */
  offline: Type.Optional(Type.Boolean()),
  /** How long an upstream 404 for a tag or manifest is remembered, so retry storms stay here. */
  notFoundTtl: Type.Optional(Duration),
  /** The largest blob a fill accepts (announced or not); a longer body is cut and nothing is stored. */
  maxBlobSize: Type.Optional(Type.Union([Size, Type.Integer({ minimum: 1 })])),
};

const Upstream = Type.Object({
  /** The registry host as clients name it: `docker.io`, `ghcr.io`, `registry.corp:5000`. */
  name: Type.String({ pattern: '^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$' }),
  /** Where pullthrough connects: `https://registry-1.docker.io`. */
  url: Type.String({ pattern: '^https?://[^/?#]+/?$' }),
  /** Other host names clients use for this registry (`?ns=` values and path prefixes). */
  aliases: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
  /** Docker Hub: one-component names mean `library/<name>`. Implied by a docker.io URL. */
  dockerHub: Type.Optional(Type.Boolean()),
  credentials: Type.Optional(Credentials),
  /** Token realms, besides the upstream's own registrable domain, trusted with credentials. */
  trustedRealms: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
  /** Hosts (`minio.corp`, `*.s3.corp`, `10.1.2.3`) that redirects and token realms may point at although they are not public. */
  allowedRedirectHosts: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
  /** Redirects and token realms may point at any address, private ones included. */
  allowPrivateRedirects: Type.Optional(Type.Boolean()),
  ...UpstreamPolicy,
}, { additionalProperties: false });

/**
 * Redis: a descriptor and tag tier shared by replicas, and the leases that
 * make one replica fetch a cold blob for all. Absent: memory and storage only.
 */
const Redis = Type.Object({
  /** `redis://[user:password@]host:6379[/db]` or `rediss://` for TLS. */
  url: Type.String({ pattern: '^rediss?://' }),
  /** An environment variable holding Redis' password (AUTH), so that it need not be in the file. */
  passwordEnv: Type.Optional(Type.String({ minLength: 1 })),
  /** Prepended to every key, so several mirrors (or tests) can share one Redis. */
  keyPrefix: Type.String({ default: 'pullthrough:' }),
  /** Longest wait for any one Redis command before falling through to storage. */
  commandTimeout: Type.String({ ...Duration, default: '150ms' }),
  /** How long descriptor and tag keys live in Redis (each write starts it again). */
  keyTtl: Type.String({ ...Duration, default: '24h' }),
  /** A fill's lease: renewed while it runs; when its replica dies, another takes over after this. */
  leaseTtl: Type.String({ ...Duration, default: '10s' }),
}, { additionalProperties: false });

export const ConfigSchema = Type.Object({
  listen: Type.Object({
    host: Type.String({ default: '0.0.0.0' }),
    port: Type.Integer({ minimum: 0, maximum: 65535 }),
  }, { additionalProperties: false }),
  storage: Type.Object({
    driver: Type.Literal('filesystem', { default: 'filesystem' }),
    /** Relative paths are resolved against the working directory. */
    root: Type.String({ minLength: 1 }),
    /** Size cap of the cached blobs: `"20GiB"`, `"500MB"`, or bytes. None by default. */
    maxSize: Type.Optional(Type.Union([Size, Type.Integer({ minimum: 1 })])),
    /** Eviction starts above maxSize × highWatermark and stops at maxSize × lowWatermark. */
    highWatermark: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.9 }),
    lowWatermark: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.8 }),
    /** Remove images not used for this long. None by default. */
    maxIdle: Type.Optional(Duration),
    /** How often eviction runs in the background (it also runs when a fill crosses the high watermark). */
    evictionInterval: Type.String({ ...Duration, default: '5m' }),
    /** Content used this recently is never evicted. */
    evictionGrace: Type.String({ ...Duration, default: '10m' }),
    /** How often the last-use times of cached content are written (batched, not per request). */
    usageFlushInterval: Type.String({ ...Duration, default: '30s' }),
    /** Permission bits withheld from what is written under the root (octal): `027` gives files 0640, directories 0750. */
    umask: Type.String({ pattern: '^0?[0-7]{3}$', default: '027' }),
  }, { additionalProperties: false }),
  /** Images never evicted: `<upstream>/<repo>`, `<upstream>/<repo>:<tag>` or `<upstream>/<repo>@<digest>`. */
  pins: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
  log: Type.Object({
    level: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
      { default: 'info' }),
  }, { additionalProperties: false, default: {} }),
  cache: Type.Object({
    /** Descriptors kept in the in-process LRU (global and per repository). */
    memoryEntries: Type.Integer({ minimum: 0, default: 100000 }),
    /** Bytes of manifest bodies kept in memory for the hot path. */
    manifestMemoryBytes: Type.Integer({ minimum: 0, default: 64 * 1024 * 1024 }),
  }, { additionalProperties: false, default: {} }),
  /** The upstream for requests that name no registry (dockerd's registry-mirrors). */
  defaultUpstream: Type.Optional(Type.String()),
  upstreams: Type.Array(Upstream, { minItems: 1 }),
  upstreamDefaults: Type.Object({
    timeouts: Type.Object({
      connect: Duration,
      headers: Duration,
      bodyIdle: Duration,
    }, { additionalProperties: false, default: { connect: '5s', headers: '10s', bodyIdle: '30s' } }),
    tagMaxAge: Type.String({ ...Duration, default: '1m' }),
    detachedFillTimeout: Type.String({ ...Duration, default: '10m' }),
    offline: Type.Boolean({ default: false }),
    notFoundTtl: Type.String({ ...Duration, default: '10s' }),
    maxStale: Type.Optional(Duration),
    maxBlobSize: Type.Union([Size, Type.Integer({ minimum: 1 })], { default: '20GiB' }),
  }, { additionalProperties: false, default: {} }),
  /** How long SIGTERM waits for running responses and fills. */
  shutdownGrace: Type.String({ ...Duration, default: '30s' }),
  /** Optional shared memory of several replicas: descriptor and tag cache, fill leases. */
  redis: Type.Optional(Redis),
}, { additionalProperties: false });

export type Config = Static<typeof ConfigSchema>;
export type UpstreamConfig = Static<typeof Upstream>;
export type RedisConfig = Static<typeof Redis>;
