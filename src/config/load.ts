import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import ms from 'ms';
import { ConfigSchema, type Config, type RedisConfig, type UpstreamConfig } from './schema.js';
import { ConfigError, type RedisSettings, type ResolvedConfig, type StorageSettings, type UpstreamCredentials, type UpstreamSettings } from './settings.js';

export { ConfigError, type RedisSettings, type ResolvedConfig, type StorageSettings, type UpstreamSettings } from './settings.js';

/** The embedded default, shipped beside package.json. */
export const DEFAULT_CONFIG_PATH = new URL('../../../proxy.config.json', import.meta.url);

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
const validate = ajv.compile<Config>(ConfigSchema);

/** One line per problem, each naming the key path, e.g. `/upstreams/0/url: must match ...`. */
function describe(errors: readonly ErrorObject[]): string {
  return errors.map((e) => {
    const path = e.instancePath || '/';
    if (e.keyword === 'additionalProperties') {
      return `${path === '/' ? '' : path}/${String(e.params['additionalProperty'])}: unknown key`;
    }
    if (e.keyword === 'required') {
      return `${path === '/' ? '' : path}/${String(e.params['missingProperty'])}: missing required key`;
    }
    return `${path}: ${e.message ?? 'invalid'}`;
  }).join('\n');
}

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

function resolveStorage(storage: Config['storage'], source: string): StorageSettings {
  if (storage.lowWatermark > storage.highWatermark) {
    throw new ConfigError(`invalid configuration in ${source}:\n/storage/lowWatermark: must not exceed highWatermark`);
  }
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

/** Validates a parsed JSON document and resolves it; `source` names it in errors. */
export function resolveConfig(document: unknown, source: string, env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  const copy: unknown = structuredClone(document);
  if (!validate(copy)) {
    throw new ConfigError(`invalid configuration in ${source}:\n${describe(validate.errors ?? [])}`);
  }
  const config = copy;
  const upstreams = config.upstreams.map((u, i) => resolveUpstream(u, i, config, env));
  checkUniqueNames(upstreams);
  const defaultUpstream = config.defaultUpstream ?? upstreams[0]!.name;
  if (!upstreams.some((u) => u.name === defaultUpstream)) {
    throw new ConfigError(`invalid configuration in ${source}:\n/defaultUpstream: names no upstream (${defaultUpstream})`);
  }
  return {
    listen: { host: config.listen.host, port: config.listen.port },
    storageRoot: resolve(config.storage.root),
    storage: resolveStorage(config.storage, source),
    pins: config.pins,
    logLevel: config.log.level,
    cache: { ...config.cache },
    upstreams,
    defaultUpstream,
    shutdownGraceMs: durationMs(config.shutdownGrace),
    redis: config.redis && resolveRedis(config.redis, env),
  };
}

function resolveRedis(r: RedisConfig, env: NodeJS.ProcessEnv): RedisSettings {
  const leaseTtlMs = durationMs(r.leaseTtl);
  // The lease is renewed every third of its life; below this, renewals would race the expiry.
  if (leaseTtlMs < 300) throw new ConfigError('invalid configuration:\n/redis/leaseTtl: must be at least 300ms');
  const keyTtlMs = durationMs(r.keyTtl);
  if (keyTtlMs < 1000) throw new ConfigError('invalid configuration:\n/redis/keyTtl: must be at least 1s');
  const commandTimeoutMs = durationMs(r.commandTimeout);
  if (commandTimeoutMs < 1) throw new ConfigError('invalid configuration:\n/redis/commandTimeout: must be more than 0');
  const password = r.passwordEnv === undefined ? undefined : env[r.passwordEnv];
  if (r.passwordEnv !== undefined && !password) {
    throw new ConfigError(`invalid configuration:\n/redis/passwordEnv: environment variable ${r.passwordEnv} is not set`);
  }
  return { url: r.url, keyPrefix: r.keyPrefix, commandTimeoutMs, keyTtlMs, leaseTtlMs, ...(password ? { password } : {}) };
}

function resolveUpstream(u: UpstreamConfig, index: number, config: Config, env: NodeJS.ProcessEnv): UpstreamSettings {
  const defaults = config.upstreamDefaults;
  const url = new URL(u.url);
  const timeouts = { ...defaults.timeouts, ...u.timeouts };
  return {
    name: u.name,
    url,
    aliases: u.aliases ?? [],
    dockerHub: u.dockerHub ?? (u.name === 'docker.io' || url.hostname === 'docker.io' || url.hostname.endsWith('.docker.io')),
    credentials: resolveCredentials(u, index, env),
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
  };
}

/** Secrets may come from the file, a file beside it, or the environment; exactly one source. */
function resolveCredentials(u: UpstreamConfig, index: number, env: NodeJS.ProcessEnv): UpstreamCredentials | undefined {
  const c = u.credentials;
  if (!c) return undefined;
  const where = `/upstreams/${index}/credentials`;
  const sources = [c.password, c.passwordFile, c.passwordEnv].filter((s) => s !== undefined);
  if (sources.length !== 1) {
    throw new ConfigError(`invalid configuration:\n${where}: give exactly one of password, passwordFile, passwordEnv`);
  }
  if (c.password !== undefined) return { username: c.username, password: c.password };
  if (c.passwordFile !== undefined) {
    try {
      return { username: c.username, password: readFileSync(c.passwordFile, 'utf8').replace(/\r?\n$/, '') };
    } catch (err) {
      throw new ConfigError(`invalid configuration:\n${where}/passwordFile: cannot read ${c.passwordFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  const value = env[c.passwordEnv!];
  if (value === undefined) {
    throw new ConfigError(`invalid configuration:\n${where}/passwordEnv: environment variable ${c.passwordEnv} is not set`);
  }
  return { username: c.username, password: value };
}

function checkUniqueNames(upstreams: readonly UpstreamSettings[]): void {
  const seen = new Set<string>();
  for (const u of upstreams) {
    for (const name of [u.name, ...u.aliases]) {
      if (seen.has(name)) throw new ConfigError(`invalid configuration:\n/upstreams: ${name} names more than one upstream`);
      seen.add(name);
    }
  }
}

/**
 * Loads the configuration: `--config FILE`, else `PULLTHROUGH_CONFIG`, else
 * the embedded default.
 */
export function loadConfig(path: string | undefined, env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  const source = path ?? env['PULLTHROUGH_CONFIG'] ?? DEFAULT_CONFIG_PATH;
  const name = source instanceof URL ? 'the embedded default configuration' : source;
  let text: string;
  try {
    text = readFileSync(source, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read configuration ${String(name)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`configuration ${String(name)} is not valid JSON: ${(err as Error).message}`);
  }
  return resolveConfig(document, String(name), env);
}
