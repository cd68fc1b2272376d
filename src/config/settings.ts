/**
 * The configuration as the rest of the program sees it: defaults applied,
 * durations and sizes parsed, secrets resolved. This module imports nothing
 * of ours, so every layer may depend on it without a cycle; `load.ts` builds
 * these from the schema.
 */

/** Credentials configured for one upstream, with the secret already resolved. */
export interface UpstreamCredentials {
  readonly username: string;
  readonly password: string;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Per-upstream settings after defaults are applied and durations parsed. */
export interface UpstreamSettings {
  readonly name: string;
  readonly url: URL;
  readonly aliases: readonly string[];
  readonly dockerHub: boolean;
  readonly credentials: UpstreamCredentials | undefined;
  readonly trustedRealms: readonly string[];
  /** Hosts that redirects and token realms may point at although they are not public (see upstream/egress.ts). */
  readonly allowedRedirectHosts: readonly string[];
  readonly allowPrivateRedirects: boolean;
  /** The largest blob a fill accepts. */
  readonly maxBlobBytes: number;
  readonly timeouts: { readonly connectMs: number; readonly headersMs: number; readonly bodyIdleMs: number };
  readonly tagMaxAgeMs: number;
  readonly detachedFillTimeoutMs: number;
  readonly offline: boolean;
  readonly notFoundTtlMs: number;
  /** Infinity when unlimited. */
  readonly maxStaleMs: number;
}

export interface StorageSettings {
  readonly maxBytes: number | undefined;
  readonly highWatermark: number;
  readonly lowWatermark: number;
  readonly maxIdleMs: number | undefined;
  readonly evictionIntervalMs: number;
  readonly evictionGraceMs: number;
  readonly usageFlushIntervalMs: number;
  /** Permission bits withheld from files and directories written under the root. */
  readonly umask: number;
}

export interface ResolvedConfig {
  readonly listen: { readonly host: string; readonly port: number };
  readonly storageRoot: string;
  readonly storage: StorageSettings;
  readonly pins: readonly string[];
  readonly logLevel: string;
  readonly cache: { readonly memoryEntries: number; readonly manifestMemoryBytes: number };
  readonly upstreams: readonly UpstreamSettings[];
  readonly defaultUpstream: string;
  readonly shutdownGraceMs: number;
  /** Undefined when no `redis` key is configured: memory and storage only, one process per storage root. */
  readonly redis: RedisSettings | undefined;
}

/** The `redis` block with defaults applied and durations parsed. */
export interface RedisSettings {
  readonly url: string;
  /** From `passwordEnv`: sent with AUTH, instead of a password in the URL. */
  readonly password?: string;
  readonly keyPrefix: string;
  readonly commandTimeoutMs: number;
  readonly keyTtlMs: number;
  readonly leaseTtlMs: number;
}
