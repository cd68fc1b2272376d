import { Type, type Static } from '@sinclair/typebox';

/**
 * The configuration schema: the one place that says which keys exist, their
 * types and their defaults. `Config` is derived from it, so the type and the
 * validation can never disagree. README "Configuration" documents each key.
 */

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
  /** Never contact the upstream: serve what is cached, answer misses with an "offline" error. */
  offline: Type.Optional(Type.Boolean()),
  /** How long an upstream 404 for a tag or manifest is remembered, so retry storms stay here. */
  notFoundTtl: Type.Optional(Duration),
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
  ...UpstreamPolicy,
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
  }, { additionalProperties: false }),
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
  }, { additionalProperties: false, default: {} }),
  /** How long SIGTERM waits for running responses and fills. */
  shutdownGrace: Type.String({ ...Duration, default: '30s' }),
}, { additionalProperties: false });

export type Config = Static<typeof ConfigSchema>;
export type UpstreamConfig = Static<typeof Upstream>;
export type CredentialsConfig = Static<typeof Credentials>;
