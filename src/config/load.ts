import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import ms from 'ms';
import { pointerOf, schemaAt } from './keys.js';
import { applyOverrides, environmentOverrides, parseValue, type ConfigOverride } from './overrides.js';
import { addSchemaErrors, ConfigProblems } from './problems.js';
import { resolveAuth, resolveTls } from './access.js';
import type { Config, PeersConfig, RedisConfig, S3Config, UpstreamConfig } from './schema.js';
import {
  ConfigError, type PeersSettings, type RedisSettings, type ResolvedConfig, type S3Settings, type ServerLimits, type StorageSettings, type UpstreamCredentials, type UpstreamHealthSettings, type UpstreamSettings,
} from './settings.js';
import { loadConfigSchema } from './validator.js';

export { ConfigError, type RedisSettings, type ResolvedConfig, type S3Settings, type StorageSettings, type UpstreamSettings } from './settings.js';

/** The embedded default, shipped beside package.json. */
export const DEFAULT_CONFIG_PATH = new URL('../../../proxy.config.json', import.meta.url);

const { schema: SCHEMA, validate } = await loadConfigSchema();

const SIZE_UNITS: Record<string, number> = {
  B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40,
};

/** `"20GiB"` → bytes; a number is already bytes. The schema has checked the form. */
export function sizeBytes(value: string | number): number {
  if (typeof value === 'number') return value;
  const match = /^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)$/.exec(value);
  const unit = match ? SIZE_UNITS[match[2]!] : undefined;
  if (!match || unit === undefined) throw new ConfigError(`invalid size: ${value}`);
  return Math.floor(Number(match[1]) * unit);
}

function resolveStorage(storage: Config['storage'], problems: ConfigProblems): StorageSettings {
  if (storage.lowWatermark > storage.highWatermark) problems.add('/storage/lowWatermark', 'must not exceed highWatermark');
  return {
    maxBytes: storage.maxSize === undefined ? undefined : sizeBytes(storage.maxSize),
    highWatermark: storage.highWatermark,
    lowWatermark: storage.lowWatermark,
    maxIdleMs: storage.maxIdle === undefined ? undefined : durationMs(storage.maxIdle),
    evictionIntervalMs: durationMs(storage.evictionInterval),
    evictionGraceMs: durationMs(storage.evictionGrace),
    usageFlushIntervalMs: durationMs(storage.usageFlushInterval),
    umask: parseInt(storage.umask, 8),
  };
}

export function durationMs(value: string): number {
  const parsed = ms(value as ms.StringValue);
  if (typeof parsed !== 'number' || !Number.isFinite(parsed)) throw new ConfigError(`invalid duration: ${value}`);
  return parsed;
}

/** A configuration document and what is set from outside it. */
export interface ConfigInput {
  /** The parsed file; not changed. */
  readonly document: unknown;
  /** Names the file in messages. */
  readonly source: string;
  /** Where `passwordEnv` secrets are read. */
  readonly env: NodeJS.ProcessEnv;
  /** Environment variables and flags, applied over the document. */
  readonly overrides?: readonly ConfigOverride[];
  /** Problems found before validation, in words (a variable that names no key). */
  readonly problems?: readonly string[];
}

/** The configuration in effect: the document as validated (defaults applied, overrides in), and resolved. */
export interface EffectiveConfig {
  readonly document: Config;
  readonly config: ResolvedConfig;
}

/**
 * Applies the overrides to a copy of the document, validates it against the
 * schema and resolves it. Every problem found is reported at once, each
 * naming its key path and, when a variable or flag set it, that too.
 */
export function resolveEffective(input: ConfigInput): EffectiveConfig {
  const copy: unknown = structuredClone(input.document);
  const applied = copy !== null && typeof copy === 'object' && !Array.isArray(copy)
    ? applyOverrides(copy as Record<string, unknown>, input.overrides ?? [])
    : { origins: new Map<string, string>(), problems: [] };
  const problems = new ConfigProblems(input.source, applied.origins);
  for (const line of [...(input.problems ?? []), ...applied.problems]) problems.addLine(line);
  if (!validate(copy)) addSchemaErrors(problems, SCHEMA, copy, validate.errors ?? []);
  problems.throwIfAny();
  const document = copy as Config;
  const config = resolveDocument(document, input.env, problems);
  problems.throwIfAny();
  return { document, config };
}

/** Validates a parsed JSON document and resolves it; `source` names it in errors. */
export function resolveConfig(document: unknown, source: string, env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  return resolveEffective({ document, source, env }).config;
}

function resolveDocument(config: Config, env: NodeJS.ProcessEnv, problems: ConfigProblems): ResolvedConfig {
  const upstreams = config.upstreams.map((u, i) => resolveUpstream(u, i, config, env, problems));
  checkUniqueNames(upstreams, problems);
  const defaultUpstream = config.defaultUpstream ?? upstreams[0]!.name;
  if (!upstreams.some((u) => u.name === defaultUpstream)) {
    problems.add('/defaultUpstream', `names no upstream (${defaultUpstream}); the upstreams are ${upstreams.map((u) => u.name).join(', ')}`);
  }
  return {
    listen: { host: config.listen.host, port: config.listen.port, tls: resolveTls(config.listen.tls) },
    auth: resolveAuth(config.auth, upstreams),
    storageRoot: resolve(config.storage.root),
    storage: resolveStorage(config.storage, problems),
    s3: resolveS3Storage(config.storage, env, problems),
    pins: config.pins,
    logLevel: config.log.level,
    cache: { ...config.cache },
    upstreams,
    defaultUpstream,
    shutdownGraceMs: durationMs(config.shutdownGrace),
    limits: resolveLimits(config.limits, problems),
    redis: config.redis && resolveRedis(config.redis, env, problems),
    peers: config.peers && resolvePeers(config, config.peers, env, problems),
    admin: config.admin && { listen: { host: config.admin.listen.host, port: config.admin.listen.port }, tls: resolveTls(config.admin.tls) },
  };
}

/** S3's limits on a multipart part (the last one may be smaller). */
const MIN_PART_BYTES = 5 * 2 ** 20;
const MAX_PART_BYTES = 5 * 2 ** 30;

function resolveS3Storage(storage: Config['storage'], env: NodeJS.ProcessEnv, problems: ConfigProblems): S3Settings | undefined {
  if (storage.driver !== 's3') {
    if (storage.s3) problems.add('/storage/s3', 'is set, but storage.driver is not "s3"');
    return undefined;
  }
  const s3 = storage.s3;
  if (!s3) {
    problems.add('/storage/s3', 'is required with storage.driver "s3" (at least its bucket)');
    return undefined;
  }
  const partSizeBytes = sizeBytes(s3.partSize);
  if (partSizeBytes < MIN_PART_BYTES || partSizeBytes > MAX_PART_BYTES) problems.add('/storage/s3/partSize', 'must be between 5MiB and 5GiB (S3\'s part size limits)');
  const redirectExpiryMs = durationMs(s3.redirectExpiry);
  if (redirectExpiryMs < 1000 || redirectExpiryMs > 7 * 24 * 3600 * 1000) problems.add('/storage/s3/redirectExpiry', 'must be between 1s and 7d (presigned URL limits)');
  return {
    bucket: s3.bucket,
    prefix: s3.prefix,
    region: s3.region,
    endpoint: s3.endpoint,
    forcePathStyle: s3.forcePathStyle,
    credentials: resolveS3Credentials(s3, env, problems),
    partSizeBytes,
    redirect: s3.redirect,
    redirectExpiryMs,
    abandonedUploadAgeMs: durationMs(s3.abandonedUploadAge),
  };
}

/** An access key with exactly one source of its secret, or none of the four (the SDK's default chain). */
function resolveS3Credentials(s3: S3Config, env: NodeJS.ProcessEnv, problems: ConfigProblems): S3Settings['credentials'] {
  const where = '/storage/s3';
  const sources = [s3.secretAccessKey, s3.secretAccessKeyFile, s3.secretAccessKeyEnv].filter((s) => s !== undefined);
  if (s3.accessKeyId === undefined) {
    if (sources.length > 0) problems.add(`${where}/accessKeyId`, 'is required with a secretAccessKey, secretAccessKeyFile or secretAccessKeyEnv');
    return undefined;
  }
  if (sources.length !== 1) {
    problems.add(where, `give exactly one of secretAccessKey, secretAccessKeyFile, secretAccessKeyEnv with accessKeyId (${sources.length} given)`);
    return undefined;
  }
  const secret = readSecret({ value: s3.secretAccessKey, file: s3.secretAccessKeyFile, env: s3.secretAccessKeyEnv },
    { file: `${where}/secretAccessKeyFile`, env: `${where}/secretAccessKeyEnv` }, env, problems);
  return secret === undefined ? undefined : { accessKeyId: s3.accessKeyId, secretAccessKey: secret };
}

/** A secret given inline, in a file (one trailing newline dropped) or in an environment variable; undefined after a problem. */
function readSecret(
  source: { value: string | undefined; file: string | undefined; env: string | undefined },
  keys: { file: string; env: string }, env: NodeJS.ProcessEnv, problems: ConfigProblems,
): string | undefined {
  if (source.value !== undefined) return source.value;
  if (source.file !== undefined) {
    try {
      return readFileSync(source.file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      problems.add(keys.file, `cannot read ${source.file} (${fileErrorWords(err)})`);
      return undefined;
    }
  }
  const value = env[source.env!];
  if (value === undefined) problems.add(keys.env, `environment variable ${source.env} is not set`);
  return value;
}

function resolveRedis(r: RedisConfig, env: NodeJS.ProcessEnv, problems: ConfigProblems): RedisSettings {
  const leaseTtlMs = durationMs(r.leaseTtl);
  // The lease is renewed every third of its life; below this, renewals would race the expiry.
  if (leaseTtlMs < 300) problems.add('/redis/leaseTtl', 'must be at least 300ms');
  const keyTtlMs = durationMs(r.keyTtl);
  if (keyTtlMs < 1000) problems.add('/redis/keyTtl', 'must be at least 1s');
  const commandTimeoutMs = durationMs(r.commandTimeout);
  if (commandTimeoutMs < 1) problems.add('/redis/commandTimeout', 'must be more than 0');
  const password = r.passwordEnv === undefined ? undefined : env[r.passwordEnv];
  if (r.passwordEnv !== undefined && !password) problems.add('/redis/passwordEnv', `environment variable ${r.passwordEnv} is not set`);
  return { url: r.url, keyPrefix: r.keyPrefix, commandTimeoutMs, keyTtlMs, leaseTtlMs, ...(password ? { password } : {}) };
}

function resolvePeers(config: Config, p: PeersConfig, env: NodeJS.ProcessEnv, problems: ConfigProblems): PeersSettings | undefined {
  // Redis is where peers meet: who holds which blob, who is filling it.
  if (!config.redis) problems.add('/peers', 'needs redis: peers find one another through it');
  const secret = resolveSecret('/peers', p.secretFile, p.secretEnv, env, problems);
  if (secret === undefined) return undefined;
  if (secret.length < 16) problems.add('/peers', 'the secret must be at least 16 characters');
  return {
    advertise: new URL(p.advertise).origin,
    secret,
    connectTimeoutMs: positiveDuration(p.timeouts.connect, '/peers/timeouts/connect'),
    firstByteTimeoutMs: positiveDuration(p.timeouts.firstByte, '/peers/timeouts/firstByte'),
    idleTimeoutMs: positiveDuration(p.timeouts.idle, '/peers/timeouts/idle'),
    penaltyMs: durationMs(p.penalty),
  };
}

/** A secret from a file (its trailing newline dropped) or an environment variable: exactly one of them. */
function resolveSecret(
  where: string, file: string | undefined, variable: string | undefined, env: NodeJS.ProcessEnv, problems: ConfigProblems,
): string | undefined {
  if ((file === undefined) === (variable === undefined)) {
    problems.add(where, 'give exactly one of secretFile, secretEnv');
    return undefined;
  }
  if (file !== undefined) {
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      problems.add(`${where}/secretFile`, `cannot read ${file} (${fileErrorWords(err)})`);
      return undefined;
    }
  }
  const value = env[variable!];
  if (value === undefined) problems.add(`${where}/secretEnv`, `environment variable ${variable} is not set`);
  return value;
}

function resolveUpstream(u: UpstreamConfig, index: number, config: Config, env: NodeJS.ProcessEnv, problems: ConfigProblems): UpstreamSettings {
  const defaults = config.upstreamDefaults;
  const url = new URL(u.url);
  const timeouts = { ...defaults.timeouts, ...u.timeouts };
  const staleWhileRevalidate = u.staleWhileRevalidate ?? defaults.staleWhileRevalidate;
  return {
    name: u.name,
    url,
    aliases: u.aliases ?? [],
    dockerHub: u.dockerHub ?? (u.name === 'docker.io' || url.hostname === 'docker.io' || url.hostname.endsWith('.docker.io')),
    credentials: resolveCredentials(u, index, env, problems),
    trustedRealms: u.trustedRealms ?? [],
    allowedRedirectHosts: u.allowedRedirectHosts ?? [],
    allowPrivateRedirects: u.allowPrivateRedirects ?? false,
    maxBlobBytes: sizeBytes(u.maxBlobSize ?? defaults.maxBlobSize),
    timeouts: {
      connectMs: durationMs(timeouts.connect),
      headersMs: durationMs(timeouts.headers),
      bodyIdleMs: durationMs(timeouts.bodyIdle),
    },
    tagMaxAgeMs: durationMs(u.tagMaxAge ?? defaults.tagMaxAge),
    detachedFillTimeoutMs: durationMs(u.detachedFillTimeout ?? defaults.detachedFillTimeout),
    offline: u.offline ?? defaults.offline,
    notFoundTtlMs: durationMs(u.notFoundTtl ?? defaults.notFoundTtl),
    maxStaleMs: (u.maxStale ?? defaults.maxStale) === undefined ? Infinity : durationMs((u.maxStale ?? defaults.maxStale)!),
    revalidateTimeoutMs: positiveDuration(u.revalidateTimeout ?? defaults.revalidateTimeout, `/upstreams/${index}/revalidateTimeout`),
    staleWhileRevalidateMs: staleWhileRevalidate === undefined ? 0 : durationMs(staleWhileRevalidate),
    health: resolveHealth({ ...defaults.health, ...u.health }, index),
    limits: {
      manifestBytes: sizeBytes(u.maxManifestSize ?? defaults.maxManifestSize),
      tokenResponseBytes: sizeBytes(u.maxTokenResponseSize ?? defaults.maxTokenResponseSize),
      errorBodyBytes: sizeBytes(u.maxErrorBodySize ?? defaults.maxErrorBodySize),
      redirects: u.maxRedirects ?? defaults.maxRedirects,
    },
    fills: { concurrent: u.maxConcurrentFills ?? defaults.maxConcurrentFills, queue: u.fillQueue ?? defaults.fillQueue },
  };
}

function resolveLimits(limits: Config['limits'], problems: ConfigProblems): ServerLimits {
  const resolved: ServerLimits = {
    headerBytes: sizeBytes(limits.headerSize),
    headersTimeoutMs: durationMs(limits.headersTimeout),
    requestTimeoutMs: durationMs(limits.requestTimeout),
    idleTimeoutMs: durationMs(limits.idleTimeout),
    keepAliveTimeoutMs: durationMs(limits.keepAliveTimeout),
    maxConnections: limits.maxConnections,
    maxPageSize: limits.maxPageSize,
  };
  // Zero would switch node's timers off: each limit must be one.
  for (const key of ['headersTimeout', 'requestTimeout', 'idleTimeout', 'keepAliveTimeout'] as const) {
    if (durationMs(limits[key]) <= 0) problems.add(`/limits/${key}`, 'must be more than 0');
  }
  // Node refuses a server whose head may take longer than its whole request.
  if (resolved.headersTimeoutMs > resolved.requestTimeoutMs) problems.add('/limits/headersTimeout', 'must not exceed requestTimeout');
  return resolved;
}

function resolveHealth(health: Required<NonNullable<UpstreamConfig['health']>>, index: number): UpstreamHealthSettings {
  const backoffMs = positiveDuration(health.backoff, `/upstreams/${index}/health/backoff`);
  const maxBackoffMs = durationMs(health.maxBackoff);
  if (maxBackoffMs < backoffMs) throw new ConfigError(`invalid configuration:\n/upstreams/${index}/health/maxBackoff: must not be shorter than backoff`);
  return { failures: health.failures, backoffMs, maxBackoffMs };
}

/** A duration that must be more than zero (a zero deadline or window would make every request fail). */
function positiveDuration(value: string, path: string): number {
  const parsed = durationMs(value);
  if (parsed <= 0) throw new ConfigError(`invalid configuration:\n${path}: must be more than 0`);
  return parsed;
}

/** Secrets may come from the file, a file beside it, or the environment; exactly one source. */
function resolveCredentials(u: UpstreamConfig, index: number, env: NodeJS.ProcessEnv, problems: ConfigProblems): UpstreamCredentials | undefined {
  const c = u.credentials;
  if (!c) return undefined;
  const where = `/upstreams/${index}/credentials`;
  const sources = [c.password, c.passwordFile, c.passwordEnv].filter((s) => s !== undefined);
  if (sources.length !== 1) {
    problems.add(where, `give exactly one of password, passwordFile, passwordEnv (${sources.length} given)`);
    return undefined;
  }
  const password = readSecret({ value: c.password, file: c.passwordFile, env: c.passwordEnv },
    { file: `${where}/passwordFile`, env: `${where}/passwordEnv` }, env, problems);
  return password === undefined ? undefined : { username: c.username, password };
}

/** `ENOENT: no such file` and the like, without a stack. */
export function fileErrorWords(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  const words: Record<string, string> = {
    ENOENT: 'no such file', EACCES: `not readable by uid ${process.getuid?.() ?? '?'}`, EISDIR: 'a directory, not a file',
    ENOTDIR: 'a path component is not a directory',
  };
  return code ? `${code}: ${words[code] ?? 'cannot be read'}` : String(err);
}

function checkUniqueNames(upstreams: readonly UpstreamSettings[], problems: ConfigProblems): void {
  const seen = new Set<string>();
  for (const u of upstreams) {
    for (const name of [u.name, ...u.aliases]) {
      if (seen.has(name)) problems.add('/upstreams', `${name} names more than one upstream`);
      seen.add(name);
    }
  }
}

/**
 * The configuration in effect: `--config FILE`, else `PULLTHROUGH_CONFIG`,
 * else the embedded default; then every `PULLTHROUGH_<PATH>` variable of
 * `env`; then `flags` (the command line's shorthands, which win).
 */
export function loadEffective(path: string | undefined, env: NodeJS.ProcessEnv = process.env, flags: readonly ConfigOverride[] = []): EffectiveConfig {
  const source = path ?? env['PULLTHROUGH_CONFIG'] ?? DEFAULT_CONFIG_PATH;
  const name = source instanceof URL ? 'the embedded default configuration' : source;
  let text: string;
  try {
    text = readFileSync(source, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read configuration ${String(name)}: ${fileErrorWords(err)}`);
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`configuration ${String(name)} is not valid JSON: ${(err as Error).message}`);
  }
  const fromEnv = environmentOverrides(SCHEMA, env, document);
  // Flags come last: applied in order, a flag's value replaces the variable's.
  const overrides = [...fromEnv.overrides.filter((o) => !flags.some((f) => pointerOf(f.path) === pointerOf(o.path))), ...flags];
  return resolveEffective({ document, source: String(name), env, overrides, problems: fromEnv.problems });
}

/** `loadEffective`'s resolved configuration: what the commands run on. */
export function loadConfig(path: string | undefined, env: NodeJS.ProcessEnv = process.env, flags: readonly ConfigOverride[] = []): ResolvedConfig {
  return loadEffective(path, env, flags).config;
}

/** A command-line shorthand for a key (`serve --port 5001`): parsed by the key's schema type like a variable. */
export function keyOverride(origin: string, path: readonly string[], text: string): ConfigOverride {
  const schema = schemaAt(SCHEMA, path);
  if (!schema) throw new Error(`no key ${path.join('.')} in the schema`);
  return { origin, path, value: parseValue(schema, text) };
}
