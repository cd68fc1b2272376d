/**
 * The measurements themselves, each against one base URL (a proxy or the
 * upstream directly), each bounded: skopeo runs under a timeout, every
 * undici request has header and body timeouts, autocannon runs for a fixed
 * number of seconds.
 */
import { readdir, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { Client } from '../src/upstream/undici.js';
import type { AccessLogEntry, RunningRegistry } from '../test/fixtures/registry.js';
import type { SeededImage } from '../test/fixtures/seed.js';
import { verifyDirLayout } from '../test/fixtures/skopeo.js';
import { removeTempDir, runCommand, tempDir } from '../test/fixtures/tools.js';
import { mbPerSecond } from './stats.js';
import type { BlobRef } from './workload.js';

const CLIENT_TIMEOUTS = { headersTimeout: 60_000, bodyTimeout: 60_000, connectTimeout: 10_000 };

// ---------------------------------------------------------------- pulls

export interface PullResult {
  readonly ms: number;
  /** Bytes skopeo wrote (manifests, configs, layers). */
  readonly bytes: number;
  readonly mbps: number;
}

/**
 * `skopeo copy --all --preserve-digests` of every image, one after the
 * other, into fresh `dir:` layouts; timed from the first start to the last
 * exit. Afterwards (untimed) every file is checked against its digest and
 * the top manifest against the seeded one.
 */
export async function pullAll(host: string, images: readonly SeededImage[]): Promise<PullResult> {
  const outs: string[] = [];
  try {
    for (const image of images) outs.push(await tempDir(`bench-pull-${image.kind}`));
    const started = performance.now();
    for (const [i, image] of images.entries()) {
      await runCommand('skopeo', [
        'copy', '--quiet', '--src-tls-verify=false', '--all', '--preserve-digests',
        `docker://${host}/${image.repository}:${image.tag}`, `dir:${outs[i]}`,
      ], { timeoutMs: 300_000 });
    }
    const ms = performance.now() - started;
    let bytes = 0;
    for (const [i, image] of images.entries()) {
      const pulled = await verifyDirLayout(outs[i]!);
      if (pulled.manifestDigest !== image.digest) {
        throw new Error(`pull of ${image.repository} from ${host}: manifest ${pulled.manifestDigest}, expected ${image.digest}`);
      }
      for (const name of await readdir(outs[i]!)) bytes += (await stat(join(outs[i]!, name))).size;
    }
    return { ms, bytes, mbps: mbPerSecond(bytes, ms) };
  } finally {
    await Promise.all(outs.map((dir) => removeTempDir(dir)));
  }
}

// ---------------------------------------------------------------- blobs over undici

interface BlobGet {
  readonly status: number;
  readonly bytes: number;
  /** From sending to the response headers. */
  readonly headersMs: number;
  /** From sending to the first body byte. */
  readonly firstByteMs: number;
  /** From sending to the last body byte. */
  readonly totalMs: number;
}

async function getBlob(client: Client, blob: BlobRef, origin = performance.now()): Promise<BlobGet> {
  const { statusCode, body } = await client.request({ path: `/v2/${blob.repository}/blobs/${blob.digest}`, method: 'GET' });
  const headersMs = performance.now() - origin;
  let bytes = 0;
  let firstByteMs = Number.NaN;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    if (bytes === 0) firstByteMs = performance.now() - origin;
    bytes += chunk.length;
  }
  return { status: statusCode, bytes, headersMs, firstByteMs, totalMs: performance.now() - origin };
}

function check(get: BlobGet, blob: BlobRef, where: string): void {
  if (get.status !== 200 || get.bytes !== blob.size) {
    throw new Error(`GET ${blob.digest.slice(0, 19)} from ${where}: status ${get.status}, ${get.bytes} of ${blob.size} bytes`);
  }
}

export interface TtfbResult {
  readonly headersMs: number;
  readonly firstByteMs: number;
  readonly totalMs: number;
}

/** One GET of a blob on a new connection: time to headers and to the first body byte. The body is read to the end. */
export async function timeToFirstByte(url: string, blob: BlobRef): Promise<TtfbResult> {
  const client = new Client(url, CLIENT_TIMEOUTS);
  try {
    const get = await getBlob(client, blob);
    check(get, blob, url);
    return { headersMs: get.headersMs, firstByteMs: get.firstByteMs, totalMs: get.totalMs };
  } finally {
    await client.close();
  }
}

export interface ConcurrentResult {
  readonly clients: number;
  /** From the common start to the last client's last byte. */
  readonly wallMs: number;
  readonly slowestMs: number;
  readonly fastestMs: number;
  /** All clients' bytes over the wall time. */
  readonly aggregateMbps: number;
}

/** `clients` GETs of one blob at the same moment, each on its own connection. */
export async function concurrentGets(url: string, blob: BlobRef, clients: number): Promise<ConcurrentResult> {
  const pool = Array.from({ length: clients }, () => new Client(url, CLIENT_TIMEOUTS));
  try {
    // Connect first, so the GETs leave together.
    await Promise.all(pool.map(async (client) => {
      const res = await client.request({ path: '/v2/', method: 'GET' });
      await res.body.dump();
    }));
    const origin = performance.now();
    const gets = await Promise.all(pool.map((client) => getBlob(client, blob, origin)));
    const wallMs = performance.now() - origin;
    for (const get of gets) check(get, blob, url);
    const times = gets.map((g) => g.totalMs);
    return {
      clients,
      wallMs,
      slowestMs: Math.max(...times),
      fastestMs: Math.min(...times),
      aggregateMbps: mbPerSecond(blob.size * clients, wallMs),
    };
  } finally {
    await Promise.all(pool.map((client) => client.close()));
  }
}

export interface ThroughputResult {
  readonly connections: number;
  readonly reads: number;
  readonly ms: number;
  readonly mbps: number;
}

/**
 * `connections` workers, each on its own keep-alive connection, each reading
 * the blob `reads` times in a row after one untimed read; aggregate MB/s
 * over the wall time of the timed reads.
 */
export async function blobThroughput(url: string, blob: BlobRef, connections: number, reads: number): Promise<ThroughputResult> {
  const pool = Array.from({ length: connections }, () => new Client(url, CLIENT_TIMEOUTS));
  try {
    await Promise.all(pool.map(async (client) => check(await getBlob(client, blob), blob, url)));
    const origin = performance.now();
    await Promise.all(pool.map(async (client) => {
      for (let i = 0; i < reads; i++) check(await getBlob(client, blob), blob, url);
    }));
    const ms = performance.now() - origin;
    return { connections, reads, ms, mbps: mbPerSecond(blob.size * reads * connections, ms) };
  } finally {
    await Promise.all(pool.map((client) => client.close()));
  }
}

// ---------------------------------------------------------------- requests per second

export interface RpsResult {
  readonly rps: number;
  readonly requests: number;
  readonly seconds: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
}

// autocannon 9 parses answers with http-parser-js and never tells it that an
// answer to HEAD has no body: a HEAD answer with a Content-Length (every
// registry sends one) leaves its parser waiting for bytes that never come.
// For HEAD runs each autocannon client's headers-complete handler is wrapped
// to return 1 ("skip the body"), as node's own http client does.
const requireHere = createRequire(import.meta.url);
const { HTTPParser } = createRequire(requireHere.resolve('autocannon'))('http-parser-js') as { HTTPParser: { kOnHeadersComplete: number } };

function headAnswersHaveNoBody(client: unknown): void {
  const parser = (client as { parser: Record<number, unknown> }).parser;
  let handler: ((info: unknown) => unknown) | undefined;
  Object.defineProperty(parser, HTTPParser.kOnHeadersComplete, {
    configurable: true,
    get: () => (info: unknown) => {
      handler?.(info);
      return 1;
    },
    set: (fn: (info: unknown) => unknown) => {
      handler = fn;
    },
  });
}

/** autocannon: `connections` keep-alive connections for `seconds`, no pipelining. */
export async function requestsPerSecond(
  url: string, method: 'GET' | 'HEAD', headers: Record<string, string>, connections: number, seconds: number,
): Promise<RpsResult> {
  const result = await autocannon({
    url, method, headers, connections, duration: seconds, timeout: 10,
    ...(method === 'HEAD' ? { setupClient: headAnswersHaveNoBody } : {}),
  });
  const requests = result['2xx'] + result.non2xx;
  return {
    rps: requests / result.duration,
    requests,
    seconds: result.duration,
    non2xx: result.non2xx,
    errors: result.errors,
    latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99,
  };
}

/** A few untimed requests: connections, caches, a fresh tag record. */
export async function warmRequests(url: string, path: string, method: 'GET' | 'HEAD', headers: Record<string, string>, count = 3): Promise<void> {
  const client = new Client(url, CLIENT_TIMEOUTS);
  try {
    for (let i = 0; i < count; i++) {
      const res = await client.request({ path, method, headers });
      await res.body.dump();
      if (res.statusCode !== 200) throw new Error(`${method} ${url}${path}: ${res.statusCode}`);
    }
  } finally {
    await client.close();
  }
}

// ---------------------------------------------------------------- the upstream's access log

export interface UpstreamCounts {
  readonly blobGets: number;
  readonly blobHeads: number;
  readonly manifestGets: number;
  readonly manifestHeads: number;
  readonly other: number;
  readonly total: number;
}

const REGISTRY_PATH = /^\/v2\/(.+)\/(blobs|manifests)\/([^/]+)$/;

/** Counts requests by kind; with `digests`, blob requests for those digests only. */
export function countRequests(entries: readonly AccessLogEntry[], digests?: ReadonlySet<string>): UpstreamCounts {
  let blobGets = 0, blobHeads = 0, manifestGets = 0, manifestHeads = 0, other = 0;
  for (const entry of entries) {
    const match = REGISTRY_PATH.exec(entry.path);
    if (match?.[2] === 'blobs' && (digests === undefined || digests.has(match[3]!))) {
      if (entry.method === 'GET') blobGets++;
      else if (entry.method === 'HEAD') blobHeads++;
      else other++;
    } else if (match?.[2] === 'manifests') {
      if (entry.method === 'GET') manifestGets++;
      else if (entry.method === 'HEAD') manifestHeads++;
      else other++;
    } else if (match?.[2] !== 'blobs') {
      other++;
    }
  }
  return { blobGets, blobHeads, manifestGets, manifestHeads, other, total: entries.length };
}

/** Resolves once every path exists (a proxy has committed those blobs); throws after `timeoutMs`. */
export async function waitForFiles(paths: readonly string[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let missing = [...paths];
  for (;;) {
    const present = await Promise.all(missing.map((p) => stat(p).then(() => true, () => false)));
    missing = missing.filter((_, i) => !present[i]);
    if (missing.length === 0) return;
    if (Date.now() > deadline) throw new Error(`blobs not stored within ${timeoutMs} ms: ${missing.join(', ')}`);
    await sleep(50);
  }
}

/**
 * The upstream's requests once it has gone quiet: the access log settled
 * twice in a row with no new line in between (a proxy may still be fetching
 * in the background when its client is done; Distribution does).
 */
export async function quietRequests(upstream: RunningRegistry, intervalMs = 300, timeoutMs = 30_000): Promise<AccessLogEntry[]> {
  const deadline = Date.now() + timeoutMs;
  let last = await upstream.settledRequests();
  for (;;) {
    await sleep(intervalMs);
    const now = await upstream.settledRequests();
    if (now.length === last.length || Date.now() > deadline) return now;
    last = now;
  }
}
