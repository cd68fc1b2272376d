import { Type, type Static } from '@sinclair/typebox';

/**
 * The configuration schema: the one place that says which keys exist, their
 * types and their defaults. `Config` is derived from it, so the type and the
 * validation can never disagree. README "Configuration" documents each key.
 */

/*
 * `expected` says a pattern in words: configuration errors quote it (keys.ts
 * reads it wherever the schema is spread), so nobody is shown a bare regex.
 */

/** `"512MiB"`, `"20GiB"`, `"500MB"`, `"1TB"`: binary (KiB, MiB, GiB, TiB) or decimal (KB, MB, GB, TB) units. */
export const Size = Type.String({
  pattern: '^[0-9]+(\\.[0-9]+)?\\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$',
  expected: 'a size: a whole number of bytes, or a number and a unit, B, KB, MB, GB, TB, KiB, MiB, GiB or TiB ("500MB", "20GiB")',
});

/** `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"7d"`. */
export const Duration = Type.String({
  pattern: '^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$',
  expected: 'a duration: a number and a unit, ms, s, m, h or d, with no space between ("500ms", "10s", "5m", "1h", "7d")',
});

const Timeouts = Type.Object({
  /** TCP+TLS connect to the upstream. */
  connect: Type.Optional(Duration),
  /** From request sent to response headers received (a hung upstream). */
  headers: Type.Optional(Duration),
  /** Longest silence between two chunks of a response body. */
  bodyIdle: Type.Optional(Duration),
}, { additionalProperties: false });

/** When an upstream counts as down, and how long it stays down before a probe asks again. */
const Health = Type.Object({
  /** Failed requests in a row (connection error, 5xx) that mark the upstream down; one timeout does it at once. */
  failures: Type.Optional(Type.Integer({ minimum: 1 })),
  /** The first down window; each failed probe doubles it. */
  backoff: Type.Optional(Duration),
  /** The longest down window. */
  maxBackoff: Type.Optional(Duration),
}, { additionalProperties: false });

const Credentials = Type.Object({
  username: Type.String({ minLength: 1 }),
  password: Type.Optional(Type.String()),
  passwordFile: Type.Optional(Type.String({ minLength: 1 })),
  passwordEnv: Type.Optional(Type.String({ minLength: 1 })),
}, { additionalProperties: false });

/**
 * What pullthrough reads from an upstream at most: a registry it does not
 * control must not make it buffer without bound. Each limit is per upstream.
 */
const UpstreamLimits = {
  /** A manifest (and a referrers list) larger than this is refused, by its Content-Length before any byte is read. */
  maxManifestSize: Type.Optional(Type.Union([Size, Type.Integer({ minimum: 1 })], { expected: Size.expected as string })),
  /** A token service's answer larger than this is refused. */
  maxTokenResponseSize: Type.Optional(Type.Union([Size, Type.Integer({ minimum: 1 })], { expected: Size.expected as string })),
  /** Of an upstream's error body only this much is read for its message; the rest is discarded. */
  maxErrorBodySize: Type.Optional(Type.Union([Size, Type.Integer({ minimum: 1 })], { expected: Size.expected as string })),
  /** Redirects followed for one blob request (a CDN is one). */
  maxRedirects: Type.Optional(Type.Integer({ minimum: 0, maximum: 20 })),
  /** Blob fills from this upstream at once (its blob connections); more wait in the fill queue. */
  maxConcurrentFills: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
  /** Fills that may wait for one of those; one more is answered 503 with Retry-After at once. */
  fillQueue: Type.Optional(Type.Integer({ minimum: 0 })),
};

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
  /** Revalidating a tag that has a record must answer within this, else the record is served stale and the upstream is down. */
  revalidateTimeout: Type.Optional(Duration),
  /** A record older than tagMaxAge by at most this is served at once while one background HEAD refreshes it. Off by default. */
  staleWhileRevalidate: Type.Optional(Duration),
  health: Type.Optional(Health),
  ...UpstreamLimits,
  /** The largest blob a fill accepts (announced or not); a longer body is cut and nothing is stored. */
  maxBlobSize: Type.Optional(Type.Union([Size, Type.Integer({ minimum: 1 })])),
};

const Upstream = Type.Object({
  /** The registry host as clients name it: `docker.io`, `ghcr.io`, `registry.corp:5000`. */
  name: Type.String({
    pattern: '^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$',
    expected: 'a registry host as clients write it: lower case, an optional port, no scheme ("docker.io", "registry.corp:5000")',
  }),
  /** Where pullthrough connects: `https://registry-1.docker.io`. */
  url: Type.String({
    pattern: '^https?://[^/?#]+/?$',
    expected: 'a URL of a scheme (http:// or https://) and a host with an optional port, and no path: pullthrough adds /v2/ itself ("https://registry-1.docker.io", "http://127.0.0.1:5000")',
  }),
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
  url: Type.String({ pattern: '^rediss?://', expected: 'a redis:// or rediss:// URL ("redis://redis:6379")' }),
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

/**
 * `storage.s3`: an S3 bucket (or an S3-compatible store: Ceph RGW, Swift,
 * MinIO, R2) holding blobs and records, for `storage.driver: "s3"`.
 */
const S3 = Type.Object({
  bucket: Type.String({
    pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$',
    expected: 'an S3 bucket name: 3 to 63 lower-case letters, digits, dots and hyphens ("pullthrough-cache")',
  }),
  /** Keys start with this (`<prefix>/blobs/...`); empty: at the bucket's top. */
  prefix: Type.String({
    pattern: '^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$',
    expected: 'key path components joined by "/", without leading or trailing "/" ("mirrors/pullthrough")',
    default: '',
  }),
  region: Type.String({ minLength: 1, default: 'us-east-1' }),
  /** For S3-compatible stores: `https://s3.corp:9000`; absent: AWS's endpoint of the region. */
  endpoint: Type.Optional(Type.String({ pattern: '^https?://[^/?#]+/?$', expected: 'an http:// or https:// URL of a host and optional port, no path ("https://minio.corp:9000")' })),
  /** Path-style URLs (`<endpoint>/<bucket>/<key>`): what most S3-compatible stores need. */
  forcePathStyle: Type.Boolean({ default: false }),
  /** Absent: the AWS SDK's default chain (environment, shared files, instance or pod role). */
  accessKeyId: Type.Optional(Type.String({ minLength: 1 })),
  secretAccessKey: Type.Optional(Type.String({ minLength: 1 })),
  secretAccessKeyFile: Type.Optional(Type.String({ minLength: 1 })),
  secretAccessKeyEnv: Type.Optional(Type.String({ minLength: 1 })),
  /** Multipart part size of fills: at least 5MiB (S3's minimum), at most 5GiB. */
  partSize: Type.Union([Size, Type.Integer({ minimum: 1 })], { expected: Size.expected as string, default: '8MiB' }),
  /** Cached blob GETs answer 307 to a presigned URL of the object: the bytes flow from the store. Clients must reach it. */
  redirect: Type.Boolean({ default: false }),
  /** How long a redirect's presigned URL is valid. */
  redirectExpiry: Type.String({ ...Duration, default: '5m' }),
  /** Incomplete multipart uploads older than this are aborted at start-up and by `pullthrough gc` when replicas share the bucket (alone: all of them). */
  abandonedUploadAge: Type.String({ ...Duration, default: '1h' }),
}, { additionalProperties: false });

/**
 * Peers: node-local instances, each with its own storage, that share Redis
 * and fetch blobs from one another over the internal fill endpoint before
 * going to the upstream (README "Node-local cache for a cluster").
 */
const Peers = Type.Object({
  /** The URL other instances dial for this one's internal endpoint: `http://<pod-ip>:<port>`. */
  advertise: Type.String({
    pattern: '^https?://[^/?#]+/?$',
    expected: 'a URL of a scheme (http:// or https://) and a host with an optional port, and no path ("http://10.0.0.7:5000")',
  }),
  /** A file holding the shared secret of the internal endpoint (one of secretFile, secretEnv). */
  secretFile: Type.Optional(Type.String({ minLength: 1 })),
  /** An environment variable holding the shared secret. */
  secretEnv: Type.Optional(Type.String({ minLength: 1 })),
  timeouts: Type.Object({
    /** TCP connect to a peer. */
    connect: Type.String({ ...Duration, default: '1s' }),
    /** From request sent to response headers from a peer. */
    firstByte: Type.String({ ...Duration, default: '2s' }),
    /** Longest silence between two chunks of a peer's body (a fill in progress waits on its upstream). */
    idle: Type.String({ ...Duration, default: '10s' }),
  }, { additionalProperties: false, default: {} }),
  /** How long a peer that sent wrong bytes is not asked again. */
  penalty: Type.String({ ...Duration, default: '5m' }),
}, { additionalProperties: false });

/**
 * HTTPS for a listener (the registry's; the admin listener takes the same
 * block). The files are re-read when they change.
 */
export const Tls = Type.Object({
  /** PEM certificate; a chain (leaf first) is sent whole. */
  certFile: Type.String({ minLength: 1 }),
  /** PEM private key of the certificate. */
  keyFile: Type.String({ minLength: 1 }),
  /** PEM CA certificates that sign client certificates (mutual TLS). */
  clientCaFile: Type.Optional(Type.String({ minLength: 1 })),
  /** `require`: no verified client certificate, no handshake. `request`: a verified one is an identity (its CN). */
  clientAuth: Type.Optional(Type.Union([Type.Literal('require'), Type.Literal('request')])),
}, { additionalProperties: false });

/** One read rule: who (users, `anonymous`, `CN=<name>`, `*`) may (or, with `access: "none"`, may not) pull what. */
const AccessRule = Type.Object({
  users: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
  /** `<upstream>/<repository glob>`: `*` within one path component, `**` across any number; the upstream `*` is any upstream. */
  repositories: Type.Array(Type.String({
    pattern: '^[^/]+/.+$',
    expected: 'an <upstream>/<repository glob> pattern ("docker.io/**", "registry.corp:5000/team/*", "*/library/alpine")',
  }), { minItems: 1 }),
  access: Type.Union([Type.Literal('pull'), Type.Literal('none')], { default: 'pull' }),
}, { additionalProperties: false });

/** Client authentication and read rules. Absent: every client may pull everything. */
const Auth = Type.Object({
  /** Users in an Apache htpasswd file of bcrypt entries (`htpasswd -B`), re-read when it changes. */
  htpasswd: Type.Optional(Type.Object({
    file: Type.String({ minLength: 1 }),
    realm: Type.String({ minLength: 1, pattern: '^[^"\\\\\\r\\n]*$', default: 'pullthrough' }),
  }, { additionalProperties: false })),
  /** Ordered: the first rule naming the client and matching the repository decides. Default: authenticated clients pull everything. */
  rules: Type.Optional(Type.Array(AccessRule)),
}, { additionalProperties: false });

/** `admin.listen`: where /metrics, /livez, /readyz and the status page listen instead of the registry port. */
const Admin = Type.Object({
  listen: Type.Object({
    host: Type.String({ default: '127.0.0.1' }),
    port: Type.Integer({ minimum: 0, maximum: 65535 }),
  }, { additionalProperties: false }),
  /** HTTPS for the admin listener: the same block as `listen.tls`. */
  tls: Type.Optional(Tls),
}, { additionalProperties: false });

export const ConfigSchema = Type.Object({
  listen: Type.Object({
    host: Type.String({ default: '0.0.0.0' }),
    port: Type.Integer({ minimum: 0, maximum: 65535 }),
    tls: Type.Optional(Tls),
  }, { additionalProperties: false }),
  auth: Type.Optional(Auth),
  storage: Type.Object({
    /** `filesystem`: blobs and records under `root`. `s3`: in the bucket of `storage.s3`, with `root` for local spools only. */
    driver: Type.Union([Type.Literal('filesystem'), Type.Literal('s3')], { default: 'filesystem' }),
    /** Relative paths are resolved against the working directory. With `s3`, fills in progress are spooled here. */
    root: Type.String({ minLength: 1 }),
    /** The bucket and how to reach it, for `driver: "s3"`. */
    s3: Type.Optional(S3),
    /** Size cap of the cached blobs: `"20GiB"`, `"500MB"`, or bytes. None by default. */
    maxSize: Type.Optional(Type.Union([Size, Type.Integer({ minimum: 1 })], { expected: Size.expected as string })),
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
    // Each timeout has its own default, so setting one (in the file or a variable) keeps the others.
    timeouts: Type.Object({
      connect: Type.String({ ...Duration, default: '5s' }),
      headers: Type.String({ ...Duration, default: '10s' }),
      bodyIdle: Type.String({ ...Duration, default: '30s' }),
    }, { additionalProperties: false, default: {} }),
    tagMaxAge: Type.String({ ...Duration, default: '1m' }),
    detachedFillTimeout: Type.String({ ...Duration, default: '10m' }),
    offline: Type.Boolean({ default: false }),
    notFoundTtl: Type.String({ ...Duration, default: '10s' }),
    maxStale: Type.Optional(Duration),
    revalidateTimeout: Type.String({ ...Duration, default: '3s' }),
    staleWhileRevalidate: Type.Optional(Duration),
    health: Type.Object({
      failures: Type.Integer({ minimum: 1, default: 3 }),
      backoff: Type.String({ ...Duration, default: '5s' }),
      maxBackoff: Type.String({ ...Duration, default: '1m' }),
    }, { additionalProperties: false, default: {} }),
    // As Distribution: 4 MiB is the spec's suggested minimum a registry accepts.
    maxManifestSize: Type.Union([Size, Type.Integer({ minimum: 1 })], { default: '4MiB', expected: Size.expected as string }),
    maxTokenResponseSize: Type.Union([Size, Type.Integer({ minimum: 1 })], { default: '1MiB', expected: Size.expected as string }),
    maxErrorBodySize: Type.Union([Size, Type.Integer({ minimum: 1 })], { default: '4KiB', expected: Size.expected as string }),
    maxRedirects: Type.Integer({ minimum: 0, maximum: 20, default: 5 }),
    maxConcurrentFills: Type.Integer({ minimum: 1, maximum: 1024, default: 32 }),
    fillQueue: Type.Integer({ minimum: 0, default: 256 }),
    maxBlobSize: Type.Union([Size, Type.Integer({ minimum: 1 })], { default: '20GiB' }),
  }, { additionalProperties: false, default: {} }),
  /** What the registry listener accepts from clients (README "Limits" says what a client sees at each). */
  limits: Type.Object({
    /** Request line and headers together larger than this: 431. */
    headerSize: Type.Union([Size, Type.Integer({ minimum: 1024 })], { default: '16KiB', expected: Size.expected as string }),
    /** A client that has not sent its whole request head within this is answered 408 and cut (slowloris). */
    headersTimeout: Type.String({ ...Duration, default: '20s' }),
    /** The whole request (head and any body) must have arrived within this; the response is not bounded by it. */
    requestTimeout: Type.String({ ...Duration, default: '1m' }),
    /** A connection on which no byte moves either way for this long is closed: a stalled reader, a dead peer. A response still moving is never cut. */
    idleTimeout: Type.String({ ...Duration, default: '2m' }),
    /** An idle keep-alive connection is closed after this. */
    keepAliveTimeout: Type.String({ ...Duration, default: '72s' }),
    /** Connections open at once; one more is closed at once. */
    maxConnections: Type.Integer({ minimum: 1, default: 4096 }),
    /** The most entries one page of tags/list or _catalog holds, whatever `n` asks for. */
    maxPageSize: Type.Integer({ minimum: 1, default: 10000 }),
  }, { additionalProperties: false, default: {} }),
  /** How long SIGTERM waits for running responses and fills. */
  shutdownGrace: Type.String({ ...Duration, default: '30s' }),
  /** Optional shared memory of several replicas: descriptor and tag cache, fill leases. */
  redis: Type.Optional(Redis),
  /** The operator's endpoints (metrics, probes, status page) on an address of their own; absent: on the registry listener. */
  admin: Type.Optional(Admin),
  /** Node-local instances that share blobs with one another through Redis; needs `redis`. */
  peers: Type.Optional(Peers),
}, { additionalProperties: false });

export type Config = Static<typeof ConfigSchema>;
export type UpstreamConfig = Static<typeof Upstream>;
export type RedisConfig = Static<typeof Redis>;
export type S3Config = Static<typeof S3>;
export type AuthConfig = Static<typeof Auth>;
export type PeersConfig = Static<typeof Peers>;
