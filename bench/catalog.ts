/**
 * The large-catalog phase: `catalogTags` tags (default 20,000) across
 * `catalogRepos` repositories (default 2,000), every one a manifest of its
 * own. They are written straight into the upstream's storage in
 * Distribution's filesystem layout (pushing 20,000 manifests over HTTP would
 * take minutes), then pulled once through each proxy (untimed), so each has
 * the whole catalog cached. Then:
 *
 * - start-up time: the proxy is stopped and started again on that storage,
 *   timed from spawn to the first answer of `/v2/`;
 * - manifest GET by tag, req/s: autocannon, every request a random tag of
 *   the catalog (pullthrough's tags are fresh for a minute, nginx's for 60 s).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { Pool } from 'undici';
import type { RunningRegistry } from '../test/fixtures/registry.js';
import type { BenchContext } from './phases.js';
import { phaseCost, proxyOrder, samplePeakRss, startProxy } from './phases.js';
import type { ProxyProcess } from './processes.js';
import { fmt } from './stats.js';
import { MANIFEST_ACCEPT } from './workload.js';

export interface CatalogWorkload {
  /** `/v2/<repo>/manifests/<tag>` of every tag. */
  readonly paths: readonly string[];
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Runs `fn` over `items` with at most `limit` at a time. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

async function link(path: string, digest: string): Promise<void> {
  await mkdir(path, { recursive: true });
  await writeFile(join(path, 'link'), digest);
}

/** Writes the catalog into a stopped-or-running docker-registry's filesystem storage (it reads the files on each request). */
export async function seedCatalog(upstream: RunningRegistry, ctx: Pick<BenchContext, 'options'>): Promise<CatalogWorkload> {
  const { catalogTags, catalogRepos } = ctx.options;
  const v2 = join(upstream.root, 'docker', 'registry', 'v2');
  const writeBlob = async (bytes: Buffer): Promise<string> => {
    const hex = sha256(bytes);
    const dir = join(v2, 'blobs', 'sha256', hex.slice(0, 2), hex);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'data'), bytes);
    return hex;
  };
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const layer = randomBytes(1024);
  const configHex = await writeBlob(config);
  const layerHex = await writeBlob(layer);
  const perRepo = Math.ceil(catalogTags / catalogRepos);
  const jobs: { repo: string; tag: string }[] = [];
  for (let r = 0; r < catalogRepos; r++) {
    for (let t = 0; t < perRepo && jobs.length < catalogTags; t++) jobs.push({ repo: `catalog/r${r}`, tag: `t${t}` });
  }
  const repos = [...new Set(jobs.map((j) => j.repo))];
  await eachLimited(repos, 16, async (repo) => {
    for (const hex of [configHex, layerHex]) await link(join(v2, 'repositories', repo, '_layers', 'sha256', hex), `sha256:${hex}`);
  });
  await eachLimited(jobs, 32, async ({ repo, tag }) => {
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configHex}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${layerHex}`, size: layer.length }],
      annotations: { 'org.opencontainers.image.ref.name': `${repo}:${tag}` },
    }));
    const hex = await writeBlob(manifest);
    const manifests = join(v2, 'repositories', repo, '_manifests');
    await link(join(manifests, 'revisions', 'sha256', hex), `sha256:${hex}`);
    await link(join(manifests, 'tags', tag, 'current'), `sha256:${hex}`);
    await link(join(manifests, 'tags', tag, 'index', 'sha256', hex), `sha256:${hex}`);
  });
  return { paths: jobs.map(({ repo, tag }) => `/v2/${repo}/manifests/${tag}`) };
}

/** Every path GET once through the proxy, 32 at a time. */
async function warmCatalog(url: string, paths: readonly string[]): Promise<void> {
  const pool = new Pool(url, { connections: 32, headersTimeout: 60_000, bodyTimeout: 60_000 });
  try {
    await eachLimited(paths, 32, async (path) => {
      const res = await pool.request({ path, method: 'GET', headers: { accept: MANIFEST_ACCEPT } });
      await res.body.dump();
      if (res.statusCode !== 200) throw new Error(`GET ${path}: ${res.statusCode}`);
    });
  } finally {
    await pool.close();
  }
}

/** autocannon for `seconds`, each request a random catalog tag. */
async function randomTagRps(url: string, paths: readonly string[], connections: number, seconds: number): Promise<{ rps: number; requests: number; non2xx: number }> {
  const result = await autocannon({
    url, connections, duration: seconds, timeout: 10,
    requests: [{
      method: 'GET',
      headers: { accept: MANIFEST_ACCEPT },
      setupRequest: (req: Record<string, unknown>) => ({ ...req, path: paths[Math.floor(Math.random() * paths.length)]! }),
    }],
  });
  const requests = result['2xx'] + result.non2xx;
  return { rps: requests / result.duration, requests, non2xx: result.non2xx };
}

async function catalogOne(ctx: BenchContext, first: ProxyProcess, catalog: CatalogWorkload): Promise<ProxyProcess> {
  const { options, rec } = ctx;
  const warmStarted = performance.now();
  await warmCatalog(first.url, catalog.paths);
  const warmMs = performance.now() - warmStarted;
  await first.stop();
  const restarted = performance.now();
  const proxy = await startProxy(ctx, first.kind, first.dir);
  const startupMs = performance.now() - restarted;
  rec.add('catalogStartupMs', proxy.kind, startupMs);
  // One untimed second: the JIT, and every connection open.
  await randomTagRps(proxy.url, catalog.paths, options.connections, 1);
  await ctx.upstream.clearRequests();
  const cpu0 = await proxy.cpuSeconds();
  const run = await randomTagRps(proxy.url, catalog.paths, options.connections, options.rpsSeconds);
  const cpu = await phaseCost(ctx, proxy, 'catalog', cpu0);
  const upstreamRequests = (await ctx.upstream.settledRequests()).length;
  await ctx.upstream.clearRequests();
  rec.add('catalogUpstreamPerRequest', proxy.kind, upstreamRequests / Math.max(1, run.requests));
  if (run.non2xx > 0) throw new Error(`${run.non2xx} of ${run.requests} catalog GETs were not 2xx`);
  rec.add('catalogTagRps', proxy.kind, run.rps);
  rec.add('catalogCpuUs', proxy.kind, (cpu * 1e6) / Math.max(1, run.requests));
  rec.detail({ phase: 'catalog', target: proxy.kind, tags: catalog.paths.length, warmMs, startupMs, ...run, cpuSeconds: cpu, upstreamRequests });
  ctx.log(`  catalog of ${catalog.paths.length} tags: warmed in ${fmt(warmMs / 1000)} s, restart ${fmt(startupMs)} ms, ${fmt(run.rps)} req/s by random tag`);
  return proxy;
}

export async function catalogRounds(ctx: BenchContext, catalog: CatalogWorkload): Promise<void> {
  for (const kind of proxyOrder(ctx, 1)) {
    ctx.log(`large catalog: ${kind}`);
    let first: ProxyProcess | undefined;
    let second: ProxyProcess | undefined;
    try {
      first = await startProxy(ctx, kind);
      second = await catalogOne(ctx, first, catalog);
      await samplePeakRss(ctx, second, 'catalog');
    } catch (err) {
      const output = (second ?? first)?.output().trim().slice(-2000);
      ctx.rec.fail({ phase: 'catalog', target: kind, round: undefined, message: `${(err as Error).message}${output ? `\n${output}` : ''}` });
      ctx.log(`ERROR catalog (${kind}): ${(err as Error).message.split('\n')[0]}`);
    } finally {
      await second?.stop();
      await first?.dispose();
    }
  }
}
