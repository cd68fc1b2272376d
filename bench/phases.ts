/**
 * The three phases of the bench:
 *
 * 1. cold/warm rounds: each proxy started fresh on an empty storage root,
 *    then cold pull, warm pull, cold time to first byte, N simultaneous
 *    cold GETs of the big blob, cached big blob over 1 and 4 connections,
 *    peak RSS; the upstream measured directly in the same round;
 * 2. requests per second: manifest HEAD by (fresh) tag and GET by digest;
 * 3. pullthrough under `node --cpu-prof` for the manifest, cached-blob and
 *    cold-pull workloads.
 *
 * Targets are visited in alternating order each round (upstream,
 * pullthrough, Distribution; then the reverse). A failing step is recorded
 * and the bench goes on.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { RunningRegistry } from '../test/fixtures/registry.js';
import type { BenchOptions } from './options.js';
import {
  blobThroughput, concurrentGets, countRequests, pullAll, quietRequests, requestsPerSecond, timeToFirstByte, waitForFiles,
  warmRequests, type RpsResult,
} from './measure.js';
import { startDistribution, startNginx, startPullthrough, type ProxyKind, type ProxyProcess } from './processes.js';
import { findProfile, summarizeProfile, type ProfileSummary } from './profile.js';
import type { CostPhase, Recorder, Target } from './results.js';
import { fmt, median } from './stats.js';
import { MANIFEST_ACCEPT, type Workload } from './workload.js';

export interface BenchContext {
  readonly options: BenchOptions;
  readonly upstream: RunningRegistry;
  /** The upstream's name in pullthrough's config (`127.0.0.1:PORT`). */
  readonly upstreamName: string;
  readonly workload: Workload;
  readonly rec: Recorder;
  readonly log: (message: string) => void;
  /** Peak RSS (KiB) of every proxy process, at its end. */
  readonly peakRss: Record<ProxyKind, number[]>;
  /** The proxies measured in this run (nginx only when installed). */
  readonly kinds: readonly ProxyKind[];
}

/** Upstream first, then the proxies; reversed every other round. Only the proxies this run measures. */
export function roundOrder(ctx: BenchContext, round: number): Target[] {
  const order: Target[] = ['upstream', ...ctx.kinds];
  return round % 2 === 0 ? order : order.reverse();
}

/** The proxies in visiting order for a round. */
export function proxyOrder(ctx: BenchContext, round: number): ProxyKind[] {
  return roundOrder(ctx, round).filter((t): t is ProxyKind => t !== 'upstream');
}

/** Records a phase's proxy CPU seconds (since `cpu0`) and the proxy's resident set at its end. */
export async function phaseCost(ctx: BenchContext, proxy: ProxyProcess, phase: CostPhase, cpu0: number): Promise<number> {
  const cpu = (await proxy.cpuSeconds()) - cpu0;
  ctx.rec.add(`cpuS.${phase}`, proxy.kind, cpu);
  const rss = await proxy.rssKiB();
  if (rss !== undefined) ctx.rec.add(`rssMiB.${phase}`, proxy.kind, rss / 1024);
  return cpu;
}

/**
 * Runs one step; a failure is recorded (and logged) instead of thrown, with
 * the tail of the proxy's own output when there is one.
 */
export async function step<T>(
  ctx: BenchContext, phase: string, target: Target | 'profile', round: number | undefined, fn: () => Promise<T>,
  proxy?: () => ProxyProcess | undefined,
): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    const output = proxy?.()?.output().trim().slice(-2000);
    const message = (err instanceof Error ? err.message : String(err)) + (output ? `\n${proxy!()!.kind} output:\n${output}` : '');
    ctx.rec.fail({ phase, target, round, message });
    ctx.log(`ERROR ${phase} (${target}${round === undefined ? '' : `, round ${round + 1}`}): ${message.split('\n')[0]}`);
    return undefined;
  }
}

function pullthroughOptions(ctx: BenchContext): { upstreamName: string; upstreamUrl: string; nodeFlags: readonly string[] } {
  return { upstreamName: ctx.upstreamName, upstreamUrl: ctx.upstream.url, nodeFlags: ctx.options.pullthroughNodeFlags };
}

/** A proxy on a fresh storage root, or on `reuseDir`'s (a restart on a warm cache). */
export function startProxy(ctx: BenchContext, kind: ProxyKind, reuseDir?: string): Promise<ProxyProcess> {
  if (kind === 'pullthrough') return startPullthrough({ ...pullthroughOptions(ctx), ...(reuseDir ? { reuseDir } : {}) });
  if (kind === 'nginx') return startNginx(ctx.upstream.url, reuseDir ? { reuseDir } : {});
  return startDistribution(ctx.upstream.url, reuseDir ? { reuseDir } : {});
}

/** Waits for the proxy to have committed these blobs, where its files say so (nginx's do not name digests). */
function waitForBlobs(proxy: ProxyProcess, digests: readonly string[]): Promise<void> {
  return waitForFiles(digests.map((d) => proxy.blobPath(d)).filter((p): p is string => p !== undefined));
}

export async function samplePeakRss(ctx: BenchContext, proxy: ProxyProcess, phase: string): Promise<void> {
  const kib = await proxy.peakRssKiB();
  if (kib === undefined) return;
  ctx.peakRss[proxy.kind].push(kib);
  ctx.rec.detail({ phase, target: proxy.kind, measure: 'peakRssKiB', value: kib });
}

// ---------------------------------------------------------------- phase 1

export async function coldWarmRounds(ctx: BenchContext): Promise<void> {
  const { options, rec } = ctx;
  for (let round = 0; round < options.rounds; round++) {
    const coldMbps: Partial<Record<Target, number>> = {};
    const ttfbMs: Partial<Record<Target, number>> = {};
    for (const target of roundOrder(ctx, round)) {
      ctx.log(`cold/warm round ${round + 1}/${options.rounds}: ${target}`);
      if (target === 'upstream') await directRound(ctx, round, coldMbps, ttfbMs);
      else await proxyRound(ctx, target, round, coldMbps, ttfbMs);
    }
    for (const kind of ctx.kinds) {
      if (coldMbps[kind] !== undefined && coldMbps.upstream !== undefined) rec.add('coldPullVsDirect', kind, coldMbps[kind]! / coldMbps.upstream);
      if (ttfbMs[kind] !== undefined && ttfbMs.upstream !== undefined) rec.add('ttfbVsUpstream', kind, ttfbMs[kind]! / ttfbMs.upstream);
    }
  }
}

async function ttfbSamples(ctx: BenchContext, url: string, target: Target, round: number): Promise<number | undefined> {
  const firstBytes: number[] = [];
  for (const blob of ctx.workload.ttfb) {
    const t = await timeToFirstByte(url, blob);
    ctx.rec.add('ttfbMs', target, t.firstByteMs);
    ctx.rec.detail({ phase: 'ttfb', target, round, digest: blob.digest, ...t });
    firstBytes.push(t.firstByteMs);
  }
  return firstBytes.length > 0 ? median(firstBytes) : undefined;
}

async function cachedBlob(ctx: BenchContext, url: string, target: Target, round: number, proxy?: ProxyProcess): Promise<void> {
  const { options, rec, workload } = ctx;
  const of = (): ProxyProcess | undefined => proxy;
  const cpu0 = await proxy?.cpuSeconds();
  const one = await step(ctx, 'cached blob, 1 connection', target, round, () => blobThroughput(url, workload.big, 1, options.blobReads), of);
  if (one) {
    rec.add('cached1MBps', target, one.mbps);
    rec.detail({ phase: 'cached1', target, round, ...one });
  }
  const four = await step(ctx, 'cached blob, 4 connections', target, round, () => blobThroughput(url, workload.big, 4, options.blobReads), of);
  if (four) {
    rec.add('cached4MBps', target, four.mbps);
    rec.detail({ phase: 'cached4', target, round, ...four });
  }
  if (proxy && cpu0 !== undefined && one && four) {
    // Every GET counts, the untimed first ones too: (reads + 1) per connection, 1 + 4 connections.
    const gigabytes = (workload.big.size * (options.blobReads + 1) * 5) / 1e9;
    rec.add('cachedCpuPerGB', target, (await phaseCost(ctx, proxy, 'blob', cpu0)) / gigabytes);
  }
  ctx.log(`  cached blob: ${fmt(one?.mbps)} MB/s (1 conn), ${fmt(four?.mbps)} MB/s (4 conns)`);
}

async function directRound(
  ctx: BenchContext, round: number, coldMbps: Partial<Record<Target, number>>, ttfbMs: Partial<Record<Target, number>>,
): Promise<void> {
  const { upstream, workload, rec, options } = ctx;
  const pull = await step(ctx, 'direct pull', 'upstream', round, () => pullAll(upstream.host, workload.images));
  if (pull) {
    rec.add('coldPullMBps', 'upstream', pull.mbps);
    rec.detail({ phase: 'cold pull', target: 'upstream', round, ...pull });
    coldMbps.upstream = pull.mbps;
    ctx.log(`  direct pull: ${fmt(pull.mbps)} MB/s (${fmt(pull.bytes / 1e6)} MB in ${fmt(pull.ms)} ms)`);
  }
  const ttfb = await step(ctx, 'time to first byte', 'upstream', round, () => ttfbSamples(ctx, upstream.url, 'upstream', round));
  if (ttfb !== undefined) ttfbMs.upstream = ttfb;
  const conc = await step(ctx, 'concurrent GETs', 'upstream', round, () => concurrentGets(upstream.url, workload.big, options.concurrentClients));
  if (conc) {
    rec.add('concurrentMBps', 'upstream', conc.aggregateMbps);
    rec.add('concurrentSlowestMs', 'upstream', conc.slowestMs);
    rec.detail({ phase: 'concurrent', target: 'upstream', round, ...conc });
  }
  await cachedBlob(ctx, upstream.url, 'upstream', round);
  await upstream.clearRequests();
}

async function proxyRound(
  ctx: BenchContext, kind: ProxyKind, round: number,
  coldMbps: Partial<Record<Target, number>>, ttfbMs: Partial<Record<Target, number>>,
): Promise<void> {
  const { upstream, workload, rec, options } = ctx;
  const proxy = await step(ctx, 'start', kind, round, () => startProxy(ctx, kind));
  if (!proxy) return;
  try {
    const idle = await proxy.rssKiB();
    if (idle !== undefined) rec.add('idleRssMiB', kind, idle / 1024);
    await upstream.clearRequests();
    const of = (): ProxyProcess => proxy;
    const pull = await step(ctx, 'cold pull', kind, round, async () => {
      const cpu0 = await proxy.cpuSeconds();
      const result = await pullAll(proxy.host, workload.images);
      await waitForBlobs(proxy, workload.uniqueBlobs);
      const counts = countRequests(await quietRequests(upstream), new Set(workload.uniqueBlobs));
      // Includes Distribution's background second fetch, which is part of what its cold pull costs.
      const cpuSeconds = await phaseCost(ctx, proxy, 'cold', cpu0);
      return { ...result, upstream: counts, cpuSeconds };
    }, of);
    if (pull) {
      const perBlob = pull.upstream.blobGets / workload.uniqueBlobs.length;
      rec.add('coldPullMBps', kind, pull.mbps);
      rec.add('blobGetsPerBlob', kind, perBlob);
      rec.add('coldPullCpuPerGB', kind, pull.cpuSeconds / (pull.bytes / 1e9));
      rec.detail({ phase: 'cold pull', target: kind, round, ...pull });
      coldMbps[kind] = pull.mbps;
      ctx.log(`  cold pull: ${fmt(pull.mbps)} MB/s, ${fmt(perBlob)} upstream GETs per blob`);
    }
    const warm = await step(ctx, 'warm pull', kind, round, async () => {
      const cpu0 = await proxy.cpuSeconds();
      const result = await pullAll(proxy.host, workload.images);
      return { ...result, cpuSeconds: await phaseCost(ctx, proxy, 'warm', cpu0) };
    }, of);
    if (warm) {
      rec.add('warmPullMBps', kind, warm.mbps);
      rec.add('warmPullCpuPerGB', kind, warm.cpuSeconds / (warm.bytes / 1e9));
      rec.detail({ phase: 'warm pull', target: kind, round, ...warm });
      ctx.log(`  warm pull: ${fmt(warm.mbps)} MB/s`);
    }
    const ttfb = await step(ctx, 'time to first byte', kind, round, async () => {
      const value = await ttfbSamples(ctx, proxy.url, kind, round);
      await waitForBlobs(proxy, workload.ttfb.map((b) => b.digest));
      return value;
    }, of);
    if (ttfb !== undefined) {
      ttfbMs[kind] = ttfb;
      ctx.log(`  cold time to first byte: ${fmt(ttfb)} ms`);
    }
    const conc = await step(ctx, 'concurrent cold GETs', kind, round, async () => {
      await upstream.clearRequests();
      const cpu0 = await proxy.cpuSeconds();
      const result = await concurrentGets(proxy.url, workload.big, options.concurrentClients);
      await waitForBlobs(proxy, [workload.big.digest]);
      const counts = countRequests(await quietRequests(upstream), new Set([workload.big.digest]));
      await phaseCost(ctx, proxy, 'concurrent', cpu0);
      return { ...result, upstreamGets: counts.blobGets };
    }, of);
    if (conc) {
      rec.add('concurrentUpstreamGets', kind, conc.upstreamGets);
      rec.add('concurrentMBps', kind, conc.aggregateMbps);
      rec.add('concurrentSlowestMs', kind, conc.slowestMs);
      rec.detail({ phase: 'concurrent', target: kind, round, ...conc });
      ctx.log(`  ${options.concurrentClients} cold GETs: ${conc.upstreamGets} upstream GETs, ${fmt(conc.aggregateMbps)} MB/s, slowest ${fmt(conc.slowestMs)} ms`);
    }
    await cachedBlob(ctx, proxy.url, kind, round, proxy);
    await samplePeakRss(ctx, proxy, 'cold/warm');
  } finally {
    await proxy.dispose();
    await upstream.clearRequests();
  }
}

// ---------------------------------------------------------------- phase 2

function manifestPaths(ctx: BenchContext): { tag: string; digest: string } {
  const m = ctx.workload.manifest;
  return { tag: `/v2/${m.repository}/manifests/${m.tag}`, digest: `/v2/${m.repository}/manifests/${m.digest}` };
}

const ACCEPT = { accept: MANIFEST_ACCEPT };

/** One autocannon run after a warm-up (which also makes pullthrough's tag record fresh). */
async function rpsRun(
  ctx: BenchContext, proxy: ProxyProcess, path: string, method: 'GET' | 'HEAD',
): Promise<{ rps: RpsResult; upstreamPerRequest: number; cpuUsPerRequest: number }> {
  const { options, upstream } = ctx;
  await warmRequests(proxy.url, path, method, ACCEPT);
  await upstream.clearRequests();
  const cpu0 = await proxy.cpuSeconds();
  const rps = await requestsPerSecond(`${proxy.url}${path}`, method, ACCEPT, options.connections, options.rpsSeconds);
  const cpuSeconds = (await proxy.cpuSeconds()) - cpu0;
  const upstreamRequests = (await upstream.settledRequests()).length;
  await upstream.clearRequests();
  if (rps.non2xx > 0 || rps.errors > 0) throw new Error(`${method} ${path}: ${rps.non2xx} non-2xx answers, ${rps.errors} errors`);
  const requests = Math.max(1, rps.requests);
  return { rps, upstreamPerRequest: upstreamRequests / requests, cpuUsPerRequest: (cpuSeconds * 1e6) / requests };
}

export async function requestRateRounds(ctx: BenchContext): Promise<void> {
  const { options, rec } = ctx;
  const paths = manifestPaths(ctx);
  const proxies = new Map<ProxyKind, ProxyProcess>();
  try {
    for (const kind of ctx.kinds) {
      const proxy = await step(ctx, 'start', kind, undefined, () => startProxy(ctx, kind));
      if (!proxy) continue;
      // The manifest is fetched once (by tag, then by digest), so every timed request is served from the cache.
      const warmed = await step(ctx, 'warm manifests', kind, undefined, async () => {
        await warmRequests(proxy.url, paths.tag, 'GET', ACCEPT, 1);
        await warmRequests(proxy.url, paths.digest, 'GET', ACCEPT, 1);
        return true;
      }, () => proxy);
      if (warmed) proxies.set(kind, proxy);
      else await proxy.dispose();
    }
    // One untimed second of each load first: pullthrough's JIT compiles the hot path, both reach steady state.
    for (const [kind, proxy] of proxies) {
      await step(ctx, 'warm-up load', kind, undefined, async () => {
        for (const [path, method] of [[paths.tag, 'HEAD'], [paths.digest, 'GET']] as const) {
          await warmRequests(proxy.url, path, method, ACCEPT, 1);
          await requestsPerSecond(`${proxy.url}${path}`, method, ACCEPT, options.connections, 1);
        }
        await ctx.upstream.clearRequests();
      });
    }
    // The upstream itself is not measured here: its access log (how requests are counted) would weigh on it.
    const cpuAtStart = new Map<ProxyKind, number>();
    for (const [kind, proxy] of proxies) cpuAtStart.set(kind, await proxy.cpuSeconds());
    for (let round = 0; round < options.rpsRounds; round++) {
      for (const target of proxyOrder(ctx, round)) {
        const proxy = proxies.get(target);
        if (!proxy) continue;
        const of = (): ProxyProcess => proxy;
        const tag = await step(ctx, 'manifest HEAD by tag', target, round, () => rpsRun(ctx, proxy, paths.tag, 'HEAD'), of);
        if (tag) {
          rec.add('headTagRps', target, tag.rps.rps);
          rec.add('upstreamPerHeadTag', target, tag.upstreamPerRequest);
          rec.add('headTagCpuUs', target, tag.cpuUsPerRequest);
          rec.detail({ phase: 'HEAD by tag', target, round, ...tag.rps, upstreamPerRequest: tag.upstreamPerRequest, cpuUsPerRequest: tag.cpuUsPerRequest });
        }
        const digest = await step(ctx, 'manifest GET by digest', target, round, () => rpsRun(ctx, proxy, paths.digest, 'GET'), of);
        if (digest) {
          rec.add('getDigestRps', target, digest.rps.rps);
          rec.add('upstreamPerGetDigest', target, digest.upstreamPerRequest);
          rec.add('getDigestCpuUs', target, digest.cpuUsPerRequest);
          rec.detail({ phase: 'GET by digest', target, round, ...digest.rps, upstreamPerRequest: digest.upstreamPerRequest, cpuUsPerRequest: digest.cpuUsPerRequest });
        }
        ctx.log(`requests/s round ${round + 1}/${options.rpsRounds}, ${target}: HEAD by tag ${fmt(tag?.rps.rps)}, GET by digest ${fmt(digest?.rps.rps)}`);
      }
    }
    for (const [kind, proxy] of proxies) await phaseCost(ctx, proxy, 'manifest', cpuAtStart.get(kind)!);
    for (const proxy of proxies.values()) await samplePeakRss(ctx, proxy, 'requests/s');
  } finally {
    for (const proxy of proxies.values()) await proxy.dispose();
  }
}

// ---------------------------------------------------------------- phase 3

async function freshProfileDir(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const name of await readdir(dir)) if (name.endsWith('.cpuprofile')) await rm(join(dir, name), { force: true });
  return dir;
}

/** pullthrough under `node --cpu-prof`, one process per workload so each profile shows one thing. */
export async function profilePullthrough(ctx: BenchContext, profileRoot: string): Promise<ProfileSummary[]> {
  const { options, workload } = ctx;
  const paths = manifestPaths(ctx);
  const summaries: ProfileSummary[] = [];
  const base = pullthroughOptions(ctx);
  /** The process being profiled: its output goes with any error. */
  let current: ProxyProcess | undefined;
  const of = (): ProxyProcess | undefined => current;

  const manifests = await step(ctx, 'profile: manifests', 'profile', undefined, async () => {
    const dir = await freshProfileDir(join(profileRoot, 'manifests'));
    const proxy = current = await startPullthrough({ ...base, cpuProfDir: dir });
    const notes: string[] = [];
    let skipMs = 0;
    try {
      await warmRequests(proxy.url, paths.tag, 'GET', ACCEPT, 1);
      await warmRequests(proxy.url, paths.digest, 'GET', ACCEPT, 1);
      skipMs = performance.now() - proxy.spawnedAt;
      const tag = await rpsRun(ctx, proxy, paths.tag, 'HEAD');
      const digest = await rpsRun(ctx, proxy, paths.digest, 'GET');
      notes.push(`Workload: autocannon ${options.connections} connections, ${options.rpsSeconds} s HEAD by tag (${fmt(tag.rps.rps)} req/s under the profiler), then ${options.rpsSeconds} s GET by digest (${fmt(digest.rps.rps)} req/s).`);
    } finally {
      await proxy.stop();
      await proxy.dispose();
    }
    return summarizeProfile(await findProfile(dir), 'manifest HEAD by tag + GET by digest', notes, { skipMs });
  }, of);
  if (manifests) summaries.push(manifests);

  const cached = await step(ctx, 'profile: cached blob', 'profile', undefined, async () => {
    const dir = await freshProfileDir(join(profileRoot, 'cached-blob'));
    // Fill the cache without the profiler, then restart on the same storage root with it.
    const filler = current = await startPullthrough(base);
    let proxy: ProxyProcess | undefined;
    const notes: string[] = [];
    let skipMs = 0;
    try {
      // One GET fills the cache; stopping the server drains the fill and its linking.
      await concurrentGets(filler.url, workload.big, 1);
      await waitForBlobs(filler, [workload.big.digest]);
      await filler.stop();
      proxy = current = await startPullthrough({ ...base, cpuProfDir: dir, reuseDir: filler.dir });
      const reads = Math.max(options.blobReads, options.quick ? 1 : 4);
      skipMs = performance.now() - proxy.spawnedAt;
      const one = await blobThroughput(proxy.url, workload.big, 1, reads);
      const four = await blobThroughput(proxy.url, workload.big, 4, reads);
      notes.push(`Workload: the cached big blob, ${reads + 1} GETs over 1 connection (${fmt(one.mbps)} MB/s under the profiler), then ${4 * (reads + 1)} over 4 (${fmt(four.mbps)} MB/s).`);
      await proxy.stop();
    } finally {
      await proxy?.stop();
      await filler.dispose();
    }
    return summarizeProfile(await findProfile(dir), 'cached blob, 1 then 4 connections', notes, { skipMs });
  }, of);
  if (cached) summaries.push(cached);

  const cold = await step(ctx, 'profile: cold pull', 'profile', undefined, async () => {
    const dir = await freshProfileDir(join(profileRoot, 'cold-pull'));
    const proxy = current = await startPullthrough({ ...base, cpuProfDir: dir });
    const notes: string[] = [];
    const skipMs = performance.now() - proxy.spawnedAt;
    try {
      const pull = await pullAll(proxy.host, workload.images);
      // --quick leaves out the concurrent GETs to stay within its time budget.
      const conc = options.quick ? undefined : await concurrentGets(proxy.url, workload.big, options.concurrentClients);
      notes.push(`Workload: skopeo cold pull of every image (${fmt(pull.mbps)} MB/s under the profiler)${
        conc ? `, then ${options.concurrentClients} simultaneous cold GETs of the big blob (${fmt(conc.aggregateMbps)} MB/s)` : ''}.`);
      await proxy.stop();
    } finally {
      await proxy.dispose();
    }
    return summarizeProfile(await findProfile(dir), options.quick ? 'cold pull' : 'cold pull + concurrent cold GETs', notes, { skipMs });
  }, of);
  if (cold) summaries.push(cold);
  return summaries;
}
