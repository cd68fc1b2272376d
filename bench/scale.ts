/**
 * The scale phase: many clients at once, as a CI fleet pulls.
 *
 * 1. Hot: `scaleClients` clients (default 200), each on its own connection,
 *    each pulling its own mix of `scaleImages` cached images (manifest by
 *    tag, then config and layers). p50/p99 of the manifest GETs, aggregate
 *    MB/s, proxy CPU per GB.
 * 2. Cold: `scaleColdClients` clients (default 50) pulling one image no
 *    proxy has seen, all at once: manifest latency, aggregate MB/s and
 *    upstream GETs of its layer.
 *
 * Each proxy starts on an empty storage root, and the hot images are pulled
 * through it once (untimed) first.
 */
import { performance } from 'node:perf_hooks';
import { Client } from '../src/upstream/undici.js';
import type { SeededImage } from '../test/fixtures/seed.js';
import { seedImages } from '../test/fixtures/seed.js';
import type { RunningRegistry } from '../test/fixtures/registry.js';
import { countRequests, quietRequests } from './measure.js';
import type { BenchContext } from './phases.js';
import { phaseCost, proxyOrder, samplePeakRss, startProxy, step } from './phases.js';
import type { ProxyProcess } from './processes.js';
import { fmt, mbPerSecond, percentile } from './stats.js';
import { MANIFEST_ACCEPT } from './workload.js';

const TIMEOUTS = { headersTimeout: 120_000, bodyTimeout: 120_000, connectTimeout: 20_000 };

export interface ScaleWorkload {
  readonly hot: readonly SeededImage[];
  readonly cold: SeededImage;
}

export async function seedScaleWorkload(upstream: RunningRegistry, ctx: Pick<BenchContext, 'options'>): Promise<ScaleWorkload> {
  const { options } = ctx;
  const hot = await Promise.all(Array.from({ length: options.scaleImages }, (_, i) => seedImages(upstream.host, {
    layerSize: options.scaleLayerSize, layers: 2, kinds: ['oci-image'], repositoryPrefix: `scale${i}`,
  })));
  const [cold] = await seedImages(upstream.host, {
    layerSize: options.scaleColdSize, layers: 1, kinds: ['oci-image'], repositoryPrefix: 'scalecold',
  });
  return { hot: hot.map((images) => images[0]!), cold: cold! };
}

interface PullStats {
  manifestMs: number[];
  bytes: number;
}

async function readAll(body: AsyncIterable<Buffer>): Promise<number> {
  let bytes = 0;
  for await (const chunk of body) bytes += chunk.length;
  return bytes;
}

/** One image as a client pulls it: the manifest by tag (timed), then every blob, one after the other. */
async function pullImage(client: Client, image: SeededImage, stats: PullStats): Promise<void> {
  const started = performance.now();
  const res = await client.request({ path: `/v2/${image.repository}/manifests/${image.tag}`, method: 'GET', headers: { accept: MANIFEST_ACCEPT } });
  const manifestBytes = await readAll(res.body as AsyncIterable<Buffer>);
  stats.manifestMs.push(performance.now() - started);
  if (res.statusCode !== 200) throw new Error(`GET manifest ${image.repository}:${image.tag}: ${res.statusCode}`);
  stats.bytes += manifestBytes;
  for (const digest of image.blobDigests) {
    const blob = await client.request({ path: `/v2/${image.repository}/blobs/${digest}`, method: 'GET' });
    const bytes = await readAll(blob.body as AsyncIterable<Buffer>);
    if (blob.statusCode !== 200) throw new Error(`GET blob ${digest.slice(0, 19)}: ${blob.statusCode}`);
    stats.bytes += bytes;
  }
}

/** Client i's mix: `perClient` of the images, starting at i and striding by a step that depends on i. */
export function mixOf(i: number, images: number, perClient: number): number[] {
  const step = 1 + (i % Math.max(1, images - 1));
  return Array.from({ length: Math.min(perClient, images) }, (_, k) => (i + k * step) % images);
}

interface FleetResult {
  readonly wallMs: number;
  readonly bytes: number;
  readonly p50: number;
  readonly p99: number;
}

/** `clients` connections, each pulling its images; they connect first, then start together. */
async function fleet(url: string, clients: number, imagesOf: (i: number) => readonly SeededImage[]): Promise<FleetResult> {
  const pool = Array.from({ length: clients }, () => new Client(url, TIMEOUTS));
  const stats: PullStats = { manifestMs: [], bytes: 0 };
  try {
    await Promise.all(pool.map(async (client) => {
      const res = await client.request({ path: '/v2/', method: 'GET' });
      await res.body.dump();
    }));
    const origin = performance.now();
    await Promise.all(pool.map(async (client, i) => {
      for (const image of imagesOf(i)) await pullImage(client, image, stats);
    }));
    const wallMs = performance.now() - origin;
    return { wallMs, bytes: stats.bytes, p50: percentile(stats.manifestMs, 50), p99: percentile(stats.manifestMs, 99) };
  } finally {
    await Promise.all(pool.map((client) => client.close()));
  }
}

async function scaleOne(ctx: BenchContext, proxy: ProxyProcess, scale: ScaleWorkload): Promise<void> {
  const { options, rec, upstream } = ctx;
  // Untimed: every hot image once, so the hot run is served from the cache.
  await fleet(proxy.url, scale.hot.length, (i) => [scale.hot[i]!]);
  const perClient = Math.min(3, scale.hot.length);
  const cpu0 = await proxy.cpuSeconds();
  const hot = await fleet(proxy.url, options.scaleClients, (i) => mixOf(i, scale.hot.length, perClient).map((k) => scale.hot[k]!));
  const cpu = await phaseCost(ctx, proxy, 'scale', cpu0);
  rec.add('scaleManifestP50Ms', proxy.kind, hot.p50);
  rec.add('scaleManifestP99Ms', proxy.kind, hot.p99);
  rec.add('scaleMBps', proxy.kind, mbPerSecond(hot.bytes, hot.wallMs));
  rec.add('scaleCpuPerGB', proxy.kind, cpu / (hot.bytes / 1e9));
  rec.detail({ phase: 'scale hot', target: proxy.kind, clients: options.scaleClients, ...hot, cpuSeconds: cpu });
  ctx.log(`  scale, ${options.scaleClients} clients × ${perClient} cached images: manifest p50 ${fmt(hot.p50)} ms, p99 ${fmt(hot.p99)} ms, ${fmt(mbPerSecond(hot.bytes, hot.wallMs))} MB/s`);

  await upstream.clearRequests();
  const cold = await fleet(proxy.url, options.scaleColdClients, () => [scale.cold]);
  const layer = scale.cold.blobDigests[scale.cold.blobDigests.length - 1]!;
  const gets = countRequests(await quietRequests(upstream), new Set([layer])).blobGets;
  rec.add('scaleColdManifestP50Ms', proxy.kind, cold.p50);
  rec.add('scaleColdManifestP99Ms', proxy.kind, cold.p99);
  rec.add('scaleColdMBps', proxy.kind, mbPerSecond(cold.bytes, cold.wallMs));
  rec.add('scaleColdUpstreamGets', proxy.kind, gets);
  rec.detail({ phase: 'scale cold', target: proxy.kind, clients: options.scaleColdClients, ...cold, upstreamLayerGets: gets });
  ctx.log(`  scale, ${options.scaleColdClients} clients × 1 cold image: manifest p50 ${fmt(cold.p50)} ms, p99 ${fmt(cold.p99)} ms, ${fmt(mbPerSecond(cold.bytes, cold.wallMs))} MB/s, ${gets} upstream GETs of its layer`);
}

export async function scaleRounds(ctx: BenchContext, scale: ScaleWorkload): Promise<void> {
  for (const kind of proxyOrder(ctx, 0)) {
    ctx.log(`scale: ${kind}`);
    let proxy: ProxyProcess | undefined;
    try {
      await step(ctx, 'scale', kind, undefined, async () => {
        proxy = await startProxy(ctx, kind);
        await scaleOne(ctx, proxy, scale);
        await samplePeakRss(ctx, proxy, 'scale');
      }, () => proxy);
    } finally {
      await proxy?.dispose();
    }
  }
}
