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
  /** `message` holds them all; each problem on its own, for `config check` (none when the message is the one problem). */
  constructor(message: string, readonly problems: readonly string[] = []) {
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
  /** The deadline of revalidating a tag that has a record (the request path waits at most this). */
  readonly revalidateTimeoutMs: number;
  /** How long past tagMaxAge a record is served at once while a background HEAD refreshes it; 0: off. */
  readonly staleWhileRevalidateMs: number;
  readonly health: UpstreamHealthSettings;
  readonly limits: UpstreamLimitSettings;
  /** Blob fills at once, and how many may wait for one (`maxConcurrentFills`, `fillQueue`). */
  readonly fills: { readonly concurrent: number; readonly queue: number };
}

/** What is read from an upstream at most (`maxManifestSize` and its siblings). */
export interface UpstreamLimitSettings {
  readonly manifestBytes: number;
  readonly tokenResponseBytes: number;
  readonly errorBodyBytes: number;
  readonly redirects: number;
}

/** The `limits` block: what the registry listener accepts from clients. */
export interface ServerLimits {
  readonly headerBytes: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxPageSize: number;
}

/** When an upstream counts as down (`src/upstream/health.ts`). */
export interface UpstreamHealthSettings {
  /** Failed requests in a row that mark it down (a timeout marks it down at once). */
  readonly failures: number;
  /** The first down window; doubled by each failed probe up to `maxBackoffMs`. */
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
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

/** `listen.tls`: paths as configured (resolved against the working directory). */
export interface TlsSettings {
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCaFile: string | undefined;
  /** Undefined without a `clientCaFile`: no client certificate is asked for. */
  readonly clientAuth: 'require' | 'request' | undefined;
}

/**
 * Who a read rule names: a user of the htpasswd file, a client
 * certificate's common name, any authenticated client, or nobody at all.
 */
export type RuleSubject =
  | { readonly kind: 'user'; readonly name: string }
  | { readonly kind: 'certificate'; readonly commonName: string }
  | { readonly kind: 'authenticated' }
  | { readonly kind: 'anonymous' };

/** A repository pattern: an upstream (undefined: any) and a glob over the repository name. */
export interface RepositoryPattern {
  readonly upstream: string | undefined;
  readonly repository: string;
}

export interface AccessRuleSettings {
  readonly subjects: readonly RuleSubject[];
  readonly repositories: readonly RepositoryPattern[];
  readonly access: 'pull' | 'none';
}

/** The `auth` block: users and the ordered read rules (the default rule appended when none is configured). */
export interface AuthSettings {
  readonly htpasswd: { readonly file: string; readonly realm: string } | undefined;
  readonly rules: readonly AccessRuleSettings[];
}

export interface ResolvedConfig {
  readonly listen: { readonly host: string; readonly port: number; readonly tls: TlsSettings | undefined };
  /** Undefined when no `auth` key is configured: every client may pull everything. */
  readonly auth: AuthSettings | undefined;
  /** The filesystem driver's root; with S3, the directory of local fill spools. */
  readonly storageRoot: string;
  readonly storage: StorageSettings;
  /** Set for `storage.driver: "s3"`: blobs and records live in this bucket. */
  readonly s3: S3Settings | undefined;
  readonly pins: readonly string[];
  readonly logLevel: string;
  readonly cache: { readonly memoryEntries: number; readonly manifestMemoryBytes: number };
  readonly upstreams: readonly UpstreamSettings[];
  readonly defaultUpstream: string;
  readonly shutdownGraceMs: number;
  readonly limits: ServerLimits;
  /** Undefined when no `redis` key is configured: memory and storage only, one process per storage root. */
  readonly redis: RedisSettings | undefined;
  /** Undefined when no `peers` key is configured: no internal endpoint, no peer fetches. */
  readonly peers: PeersSettings | undefined;
  /** Undefined when no `admin` key is configured: the operator's endpoints are on the registry listener. */
  readonly admin: { readonly listen: { readonly host: string; readonly port: number }; readonly tls: TlsSettings | undefined } | undefined;
}

/** The `peers` block with the secret read and durations parsed. */
export interface PeersSettings {
  /** This instance's internal endpoint as peers dial it (an origin: scheme, host, port). */
  readonly advertise: string;
  /** The shared secret every peer sends and checks. */
  readonly secret: string;
  readonly connectTimeoutMs: number;
  readonly firstByteTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly penaltyMs: number;
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

/** `storage.s3` with defaults applied, sizes and durations parsed, the secret resolved. */
export interface S3Settings {
  readonly bucket: string;
  /** Empty, or key path components without leading or trailing `/`. */
  readonly prefix: string;
  readonly region: string;
  readonly endpoint: string | undefined;
  readonly forcePathStyle: boolean;
  /** Undefined: the AWS SDK's default credential chain. */
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string } | undefined;
  readonly partSizeBytes: number;
  readonly redirect: boolean;
  readonly redirectExpiryMs: number;
  readonly abandonedUploadAgeMs: number;
}
