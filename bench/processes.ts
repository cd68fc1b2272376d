/**
 * The two proxies under test, each a child process on a free loopback port
 * with its own empty storage root:
 *
 * - pullthrough: `node dist/src/cli.js serve --config <generated json>`, log
 *   level `warn` so per-request logging stays out of the numbers, tags fresh
 *   for `tagMaxAge` 1m;
 * - Distribution 2.8 (`docker-registry`) in proxy mode, from the test
 *   fixture's own config (`registryConfig`) with its logging quieted the same
 *   way (level warn, no access log), so neither side pays for log lines.
 *
 * Both are registered with the fixtures' `trackChildProcess`, so they are
 * killed if the bench exits early; `stop()` ends them with SIGTERM (SIGKILL
 * after a grace period) and waits for the exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { resolveConfig } from '../src/config/load.js';
import { parseDigest, type Digest } from '../src/registry/digest.js';
import { blobDataPath } from '../src/storage/layout.js';
import { freePort, waitForHttp } from '../test/fixtures/net.js';
import { registryConfig } from '../test/fixtures/registry.js';
import { isOnPath, removeTempDir, tempDir, trackChildProcess } from '../test/fixtures/tools.js';

export type ProxyKind = 'pullthrough' | 'distribution' | 'nginx';

export const PROXY_KINDS: readonly ProxyKind[] = ['pullthrough', 'distribution', 'nginx'];

export interface ProxyProcess {
  readonly kind: ProxyKind;
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  readonly pid: number;
  /** `performance.now()` when the process was spawned: profile samples are timed from about then. */
  readonly spawnedAt: number;
  /** The storage root, `<dir>/storage`. */
  readonly root: string;
  /** Its temp directory (config and storage), removed by `dispose`. */
  readonly dir: string;
  /** Where this proxy keeps the bytes of a committed blob; undefined when its cache files are not named by digest (nginx). */
  blobPath(digest: string): string | undefined;
  /** Peak resident set size so far (`VmHWM`), in KiB, summed over the proxy's processes; undefined once gone. */
  peakRssKiB(): Promise<number | undefined>;
  /** Resident set size now (`VmRSS`), in KiB, summed over the proxy's processes. */
  rssKiB(): Promise<number | undefined>;
  /** CPU seconds (user + system, all threads, all of its processes) used so far. */
  cpuSeconds(): Promise<number>;
  /** Output captured from the process (the tail), for error messages. */
  output(): string;
  /** SIGTERM, SIGKILL after `graceMs`; resolves once exited. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** Stops, then removes its temp directory. */
  dispose(): Promise<void>;
}

export interface PullthroughOptions {
  /** The upstream as the config names it. */
  readonly upstreamName: string;
  readonly upstreamUrl: string;
  /** Write a V8 CPU profile into this directory when the process exits (`node --cpu-prof`). */
  readonly cpuProfDir?: string;
  /** Reuse this temp dir (its `storage/` root and config) instead of a fresh one: a restart on a warm cache. */
  readonly reuseDir?: string;
  /** Extra flags for `node`. */
  readonly nodeFlags?: readonly string[];
  /** Default `warn`, to keep per-request logging out of the numbers; `info` logs each request (diagnostics). */
  readonly logLevel?: 'warn' | 'info' | 'debug';
}

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

/** Clock ticks per second of /proc/<pid>/stat times (`getconf CLK_TCK`: 100 on Linux). */
const CLOCK_TICKS = 100;

/** User + system CPU seconds of a live process (all its threads), from /proc/<pid>/stat. */
export async function readCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** A `/proc/<pid>/status` field in KiB (`VmHWM`, `VmRSS`). */
async function readStatusKiB(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+)\\s+kB$`, 'm').exec(status);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** `VmHWM` of a live process in KiB, from /proc. */
export function readPeakRssKiB(pid: number): Promise<number | undefined> {
  return readStatusKiB(pid, 'VmHWM');
}

/** A process and its children (nginx: master, worker, cache manager and loader), from /proc/<pid>/task/<pid>/children. */
async function processTree(pid: number): Promise<number[]> {
  const children = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  const kids = children.trim().split(/\s+/).filter(Boolean).map(Number);
  const below = await Promise.all(kids.map((kid) => processTree(kid)));
  return [pid, ...below.flat()];
}

/** Sums a per-process reading over the tree; undefined when the root is gone. */
async function overTree(pid: number, read: (pid: number) => Promise<number | undefined>): Promise<number | undefined> {
  const values = await Promise.all((await processTree(pid)).map((p) => read(p)));
  if (values[0] === undefined) return undefined;
  return values.reduce<number>((sum, v) => sum + (v ?? 0), 0);
}

interface Spawned {
  readonly child: ChildProcess;
  readonly spawnedAt: number;
  readonly output: () => string;
  readonly stop: (graceMs?: number) => Promise<void>;
}

/** Spawns a server, keeps the tail of its output, and waits until `readyUrl` answers HTTP. */
async function spawnServer(cmd: string, args: string[], env: NodeJS.ProcessEnv, readyUrl: string, label: string): Promise<Spawned> {
  const spawnedAt = performance.now();
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  trackChildProcess(child);
  let text = '';
  const keep = (chunk: Buffer): void => {
    text += chunk.toString('utf8');
    if (text.length > 64 * 1024) text = text.slice(-32 * 1024);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  const abort = new AbortController();
  const early = new Promise<never>((_, reject) => {
    child.once('error', (err) => reject(new Error(`${label} failed to start: ${err.message}`)));
    child.once('exit', (code, signal) => reject(new Error(`${label} exited during start-up (code ${code}, signal ${signal}):\n${text}`)));
  });
  early.catch(() => abort.abort());
  try {
    await Promise.race([waitForHttp(readyUrl, { timeoutMs: 20_000, signal: abort.signal }), early]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const stop = async (graceMs = 10_000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  return { child, spawnedAt, output: () => text, stop };
}

/** The configuration document pullthrough is started with (validated here, so a schema change fails loudly). */
export function pullthroughConfig(options: PullthroughOptions, root: string, port: number): Record<string, unknown> {
  const document = {
    listen: { host: '127.0.0.1', port },
    storage: { driver: 'filesystem', root },
    log: { level: options.logLevel ?? 'warn' },
    upstreams: [{ name: options.upstreamName, url: options.upstreamUrl }],
    upstreamDefaults: { tagMaxAge: '1m' },
    shutdownGrace: '10s',
  };
  resolveConfig(document, 'the bench configuration', {});
  return document;
}

export async function startPullthrough(options: PullthroughOptions): Promise<ProxyProcess> {
  const dir = options.reuseDir ?? (await tempDir('bench-pullthrough'));
  const root = join(dir, 'storage');
  const port = await freePort();
  const configPath = join(dir, 'config.json');
  await writeFile(configPath, JSON.stringify(pullthroughConfig(options, root, port), null, 2));
  const nodeFlags = [...(options.nodeFlags ?? []), ...(options.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir] : [])];
  const url = `http://127.0.0.1:${port}`;
  const spawned = await spawnServer(process.execPath, [...nodeFlags, CLI, 'serve', '--config', configPath], process.env,
    `${url}/v2/`, 'pullthrough');
  return describe('pullthrough', port, root, dir, spawned, (digest) => join(root, blobDataPath(digest as Digest)));
}

/** This environment without `REGISTRY_*` variables (docker-registry reads them as config overrides). */
function registryEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('REGISTRY_')) env[key] = value;
  return env;
}

/**
 * The fixture's proxy-mode config.yml with logging quieted (level warn,
 * access log off) and, unless `descriptorCache` is false, the in-memory blob
 * descriptor cache that Debian's shipped /etc/docker/registry/config.yml
 * turns on: Distribution as it is normally run.
 */
export function distributionConfig(upstreamUrl: string, root: string, port: number, descriptorCache = true): string {
  const text = registryConfig({ proxyRemoteUrl: upstreamUrl }, root, port);
  let edited = text.replace(/^ {2}level: info$/m, '  level: warn').replace(/^ {4}disabled: false$/m, '    disabled: true');
  if (descriptorCache) edited = edited.replace(/^storage:$/m, 'storage:\n  cache:\n    blobdescriptor: inmemory');
  if (!/level: warn/.test(edited) || !/disabled: true/.test(edited) || !/remoteurl:/.test(edited)
    || (descriptorCache && !/blobdescriptor: inmemory/.test(edited))) {
    throw new Error(`unexpected docker-registry config from the fixture:\n${text}`);
  }
  return edited;
}

export async function startDistribution(
  upstreamUrl: string, options: { descriptorCache?: boolean; reuseDir?: string } = {},
): Promise<ProxyProcess> {
  const dir = options.reuseDir ?? (await tempDir('bench-distribution'));
  const root = join(dir, 'storage');
  const port = await freePort();
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, distributionConfig(upstreamUrl, root, port, options.descriptorCache ?? true));
  const url = `http://127.0.0.1:${port}`;
  const spawned = await spawnServer('docker-registry', ['serve', configPath], registryEnv(), `${url}/v2/`, 'docker-registry (proxy mode)');
  return describe('distribution', port, root, dir, spawned, (digest) => {
    const { algorithm, hex } = parseDigest(digest);
    return join(root, 'docker', 'registry', 'v2', 'blobs', algorithm, hex.slice(0, 2), hex, 'data');
  });
}

function describe(
  kind: ProxyKind, port: number, root: string, dir: string, spawned: Spawned, blobPath: (d: string) => string | undefined,
): ProxyProcess {
  const pid = spawned.child.pid;
  if (pid === undefined) throw new Error(`${kind}: no pid`);
  return {
    kind,
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    pid,
    spawnedAt: spawned.spawnedAt,
    root,
    dir,
    blobPath,
    peakRssKiB: () => overTree(pid, (p) => readStatusKiB(p, 'VmHWM')),
    rssKiB: () => overTree(pid, (p) => readStatusKiB(p, 'VmRSS')),
    cpuSeconds: async () => (await overTree(pid, (p) => readCpuSeconds(p).catch(() => undefined))) ?? 0,
    output: spawned.output,
    stop: spawned.stop,
    dispose: async () => {
      await spawned.stop();
      await removeTempDir(dir);
    },
  };
}

/**
 * nginx as the caching mirror several popular Docker mirrors are built as:
 * `proxy_cache` with a cache lock (one upstream fetch per key), blobs and
 * manifests by digest cached 30 days, manifests by tag 60 s (keyed with the
 * Accept header, which picks the manifest type), stale answers on upstream
 * errors, sendfile for cached bytes. One worker, so it has the same one core
 * as pullthrough's event loop; the master and the cache manager and loader
 * are counted with it. No access log, like the other two.
 */
export function nginxConfig(upstreamUrl: string, dir: string, port: number): string {
  const upstream = new URL(upstreamUrl).host;
  const cached = (valid: string): string => `
      proxy_cache mirror;
      proxy_cache_valid 200 ${valid};
      proxy_pass http://upstream;`;
  return `# Written by the pullthrough bench (bench/processes.ts).
${process.getuid?.() === 0 ? 'user root;\n' : ''}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=mirror:32m max_size=20g inactive=30d use_temp_path=off;
  upstream upstream {
    server ${upstream};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port} reuseport backlog=4096;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host ${upstream};
    proxy_cache_lock on;
    proxy_cache_lock_timeout 300s;
    proxy_cache_lock_age 300s;
    proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
    proxy_cache_key $uri$is_args$args|$http_accept;
    proxy_read_timeout 300s;
    location ~ "^/v2/.+/blobs/sha256:[0-9a-f]{64}$" {
      proxy_cache_key $uri;${cached('30d')}
    }
    location ~ "^/v2/.+/manifests/sha256:[0-9a-f]{64}$" {${cached('30d')}
    }
    location ~ ^/v2/.+/manifests/[^/]+$ {${cached('60s')}
    }
    location / {
      proxy_pass http://upstream;
    }
  }
}
`;
}

export async function startNginx(upstreamUrl: string, options: { reuseDir?: string } = {}): Promise<ProxyProcess> {
  const dir = options.reuseDir ?? (await tempDir('bench-nginx'));
  const root = join(dir, 'cache');
  const port = await freePort();
  for (const sub of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(join(dir, 'tmp', sub), { recursive: true });
  const configPath = join(dir, 'nginx.conf');
  await writeFile(configPath, nginxConfig(upstreamUrl, dir, port));
  const url = `http://127.0.0.1:${port}`;
  // -e: nginx 1.22 opens its default error log before it reads the config.
  const spawned = await spawnServer(NGINX, ['-c', configPath, '-p', dir, '-e', join(dir, 'error.log')], process.env,
    `${url}/v2/`, 'nginx');
  // A cache file is named by the MD5 of its key, which holds the repository: not by digest.
  return describe('nginx', port, root, dir, spawned, () => undefined);
}

/** nginx from PATH, else Debian's /usr/sbin (not on a non-root PATH). */
export const NGINX = existsSync('/usr/sbin/nginx') && !isOnPath('nginx') ? '/usr/sbin/nginx' : 'nginx';

export function nginxInstalled(): boolean {
  return isOnPath('nginx') || existsSync('/usr/sbin/nginx');
}
