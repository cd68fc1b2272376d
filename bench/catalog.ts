/**
 * The large-catalog phase: `catalogTags` tags (default 20,000) across
 * `catalogRepos` repositories (default 2,000), every one a manifest of its
 * own. They are written straight into the upstream's storage in
 * Distribution's filesystem layout (pushing 20,000 manifests over HTTP would
 * take minutes), and likewise into pullthrough's and Distribution's own
 * storage (nginx pulls every tag once), so each proxy has the whole catalog
 * cached. Then:
 *
 * - start-up time: the proxy started on that storage, timed from spawn to
 *   the first answer of `/v2/`;
 * - manifest GET by tag, req/s: autocannon, every request a random tag of
 *   the catalog (pullthrough's tags are fresh for a minute, nginx's for 60 s).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import autocannon from 'autocannon';
import { Pool } from '../src/upstream/undici.js';
import type { Digest } from '../src/registry/digest.js';
import { encodeDescriptorRecord } from '../src/registry/descriptorRecord.js';
import { MEDIA_TYPES } from '../src/registry/mediaTypes.js';
import type { RepositoryName } from '../src/registry/names.js';
import { encodeTagRecord } from '../src/registry/tagRecord.js';
import { blobDataPath, manifestRevisionPath, tagPath } from '../src/storage/layout.js';
import type { RunningRegistry } from '../test/fixtures/registry.js';
import { tempDir } from '../test/fixtures/tools.js';
import type { BenchContext } from './phases.js';
import { phaseCost, proxyOrder, samplePeakRss, startProxy, step } from './phases.js';
import type { ProxyProcess } from './processes.js';
import { fmt } from './stats.js';
import { MANIFEST_ACCEPT } from './workload.js';

export interface CatalogEntry {
  readonly repository: string;
  readonly tag: string;
  readonly manifest: Buffer;
  readonly hex: string;
}

export interface CatalogWorkload {
  readonly entries: readonly CatalogEntry[];
  /** `/v2/<repo>/manifests/<tag>` of every tag. */
  readonly paths: readonly string[];
  readonly config: Buffer;
  readonly layer: Buffer;
}


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

async function put(path: string, content: string | Buffer): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, content);
}

/** The catalog: every tag a manifest of its own (one config and one small layer shared by all). */
export function makeCatalog(ctx: Pick<BenchContext, 'options'>): CatalogWorkload {
  const { catalogTags, catalogRepos } = ctx.options;
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const layer = randomBytes(1024);
  const perRepo = Math.ceil(catalogTags / catalogRepos);
  const entries: CatalogEntry[] = [];
  for (let r = 0; r < catalogRepos; r++) {
    for (let t = 0; t < perRepo && entries.length < catalogTags; t++) {
      const repository = `catalog/r${r}`;
      const tag = `t${t}`;
      const manifest = Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociManifest,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha256(config)}`, size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${sha256(layer)}`, size: layer.length }],
        annotations: { 'org.opencontainers.image.ref.name': `${repository}:${tag}` },
      }));
      entries.push({ repository, tag, manifest, hex: sha256(manifest) });
    }
  }
  return { entries, paths: entries.map((e) => `/v2/${e.repository}/manifests/${e.tag}`), config, layer };
}

/** Writes the catalog in Distribution's filesystem layout under `root` (a docker-registry reads the files on each request). */
export async function writeDistributionLayout(root: string, catalog: CatalogWorkload): Promise<void> {
  const v2 = join(root, 'docker', 'registry', 'v2');
  const blob = (hex: string): string => join(v2, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  const link = (path: string, hex: string): Promise<void> => put(join(path, 'link'), `sha256:${hex}`);
  const shared = [sha256(catalog.config), sha256(catalog.layer)];
  await put(blob(shared[0]!), catalog.config);
  await put(blob(shared[1]!), catalog.layer);
  await eachLimited([...new Set(catalog.entries.map((e) => e.repository))], 16, async (repo) => {
    for (const hex of shared) await link(join(v2, 'repositories', repo, '_layers', 'sha256', hex), hex);
  });
  await eachLimited(catalog.entries, 32, async ({ repository, tag, manifest, hex }) => {
    await put(blob(hex), manifest);
    const manifests = join(v2, 'repositories', repository, '_manifests');
    await link(join(manifests, 'revisions', 'sha256', hex), hex);
    await link(join(manifests, 'tags', tag, 'current'), hex);
    await link(join(manifests, 'tags', tag, 'index', 'sha256', hex), hex);
  });
}

/**
 * Writes the catalog into pullthrough's storage layout, as its own stores
 * would after a pull of every tag (manifest bytes, revision record, tag
 * record fetched now): warming 20,000 tags over HTTP would take minutes.
 */
export async function writePullthroughLayout(root: string, upstream: string, catalog: CatalogWorkload): Promise<void> {
  const fetchedAt = Date.now();
  await eachLimited(catalog.entries, 32, async ({ repository, tag, manifest, hex }) => {
    const digest = `sha256:${hex}` as Digest;
    const ref = { upstream, name: repository as RepositoryName };
    const descriptor = { digest, size: manifest.length, mediaType: MEDIA_TYPES.ociManifest };
    await put(join(root, blobDataPath(digest)), manifest);
    await put(join(root, manifestRevisionPath(ref, digest)), encodeDescriptorRecord(descriptor));
    await put(join(root, tagPath(ref, tag)), encodeTagRecord({ descriptor, fetchedAt }));
  });
}

export async function seedCatalog(upstream: RunningRegistry, ctx: Pick<BenchContext, 'options'>): Promise<CatalogWorkload> {
  const catalog = makeCatalog(ctx);
  await writeDistributionLayout(upstream.root, catalog);
  return catalog;
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

/**
 * The proxy on a cache holding the whole catalog, timed from spawn to its
 * first /v2/ answer: pullthrough's and Distribution's storage is written
 * directly; nginx's cache files have a binary header of its own, so nginx
 * pulls every tag once and is then restarted.
 */
async function startOnCatalog(ctx: BenchContext, kind: ProxyProcess['kind'], catalog: CatalogWorkload): Promise<{ proxy: ProxyProcess; startupMs: number; warmMs: number }> {
  let warmMs = 0;
  let dir: string;
  if (kind === 'nginx') {
    const first = await startProxy(ctx, kind);
    const started = performance.now();
    await warmCatalog(first.url, catalog.paths);
    warmMs = performance.now() - started;
    await first.stop();
    dir = first.dir;
  } else {
    dir = await tempDir(`bench-catalog-${kind}`);
    const root = join(dir, 'storage');
    if (kind === 'pullthrough') await writePullthroughLayout(root, ctx.upstreamName, catalog);
    else await writeDistributionLayout(root, catalog);
  }
  const spawned = performance.now();
  const proxy = await startProxy(ctx, kind, dir);
  return { proxy, startupMs: performance.now() - spawned, warmMs };
}

async function catalogOne(ctx: BenchContext, proxy: ProxyProcess, catalog: CatalogWorkload, startupMs: number, warmMs: number): Promise<void> {
  const { options, rec } = ctx;
  rec.add('catalogStartupMs', proxy.kind, startupMs);
  // One untimed second: the JIT, and every connection open.
  await randomTagRps(proxy.url, catalog.paths, options.connections, 1);
  await ctx.upstream.clearRequests();
  const cpu0 = await proxy.cpuSeconds();
  const run = await randomTagRps(proxy.url, catalog.paths, options.connections, options.rpsSeconds);
  const cpu = await phaseCost(ctx, proxy, 'catalog', cpu0);
  const upstreamRequests = (await ctx.upstream.settledRequests()).length;
  await ctx.upstream.clearRequests();
  if (run.non2xx > 0) throw new Error(`${run.non2xx} of ${run.requests} catalog GETs were not 2xx`);
  rec.add('catalogUpstreamPerRequest', proxy.kind, upstreamRequests / Math.max(1, run.requests));
  rec.add('catalogTagRps', proxy.kind, run.rps);
  rec.add('catalogCpuUs', proxy.kind, (cpu * 1e6) / Math.max(1, run.requests));
  rec.detail({ phase: 'catalog', target: proxy.kind, tags: catalog.paths.length, warmMs, startupMs, ...run, cpuSeconds: cpu, upstreamRequests });
  ctx.log(`  catalog of ${catalog.paths.length} tags: start-up ${fmt(startupMs)} ms, ${fmt(run.rps)} req/s by random tag, ${fmt(upstreamRequests / Math.max(1, run.requests))} upstream requests per request`);
}

export async function catalogRounds(ctx: BenchContext, catalog: CatalogWorkload): Promise<void> {
  for (const kind of proxyOrder(ctx, 1)) {
    ctx.log(`large catalog: ${kind}`);
    let proxy: ProxyProcess | undefined;
    try {
      await step(ctx, 'catalog', kind, undefined, async () => {
        const started = await startOnCatalog(ctx, kind, catalog);
        proxy = started.proxy;
        await catalogOne(ctx, proxy, catalog, started.startupMs, started.warmMs);
        await samplePeakRss(ctx, proxy, 'catalog');
      }, () => proxy);
    } finally {
      await proxy?.dispose();
    }
  }
}
