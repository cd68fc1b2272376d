#!/usr/bin/env node
/**
 * `npm run bench`: pullthrough against Distribution 2.8 (`docker-registry`)
 * in proxy mode, side by side, on the same machine in the same run, with a
 * real `docker-registry` as the upstream of both. Prints the markdown table,
 * writes the JSON result (`.bench-results/latest.json`) and, for full runs,
 * `bench/RESULTS.md`. Exits non-zero only when the bench could not run (a
 * step failed); a missed target is a result, not a failure.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRegistry, type RunningRegistry } from '../test/fixtures/registry.js';
import { isOnPath } from '../test/fixtures/tools.js';
import { parseOptions, USAGE, type BenchOptions } from './options.js';
import { catalogRounds, seedCatalog } from './catalog.js';
import { coldWarmRounds, profilePullthrough, requestRateRounds, type BenchContext } from './phases.js';
import { nginxInstalled, type ProxyKind } from './processes.js';
import { scaleRounds, seedScaleWorkload } from './scale.js';
import type { ProfileSummary } from './profile.js';
import {
  checkTargets, describeMachine, medians, renderComparison, renderMachine, renderProfiles, renderSpread, renderTable, renderTargets, sizeText,
  type Machine,
} from './report.js';
import { Recorder } from './results.js';
import { fmt } from './stats.js';
import { seedWorkload, type Workload } from './workload.js';

const RESULTS_MD = fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url));
const BASELINE = fileURLToPath(new URL('../../bench/baseline.json', import.meta.url));
const started = Date.now();

function log(message: string): void {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${message}\n`);
}

function describeWorkload(options: BenchOptions, workload: Workload): string {
  return [
    `- 4 repositories (OCI image, docker schema2 image, OCI index and docker manifest list of 2 platforms each: 6 images), ${options.layers} layer(s) of ${sizeText(options.layerSize)} random content per image: ${workload.uniqueBlobs.length} unique blobs, ${fmt(workload.uniqueBlobBytes / 1e6)} MB.`,
    `- Big blob: one layer of ${sizeText(options.bigSize)} (${workload.big.size} bytes); ${options.concurrentClients} simultaneous cold clients; cached reads ${options.blobReads} per connection per round after one untimed read.`,
    `- Time to first byte: ${workload.ttfb.length} cold blobs of ${sizeText(options.ttfbSize)} per round, each on a new connection.`,
    `- Requests per second: autocannon, ${options.connections} connections, ${options.rpsSeconds} s per run after one untimed second, ${options.rpsRounds} rounds; manifest \`${workload.manifest.repository}\` (${workload.manifest.size} bytes), Accept with the 4 manifest types. Both proxies run for the whole phase, each on a cache warmed by one GET by tag and one by digest.`,
    ...(options.pullthroughNodeFlags.length > 0 ? [`- pullthrough's node flags: \`${options.pullthroughNodeFlags.join(' ')}\`.`] : []),
    `- Cold/warm rounds: ${options.rounds}; every round starts each proxy on a new empty storage root.`,
    `- Scale: ${options.scaleImages} cached images of 2 × ${sizeText(options.scaleLayerSize)} layers; ${options.scaleClients} clients, each on its own connection, each pulling its own mix of 3 of them (manifest by tag, then config and layers); then ${options.scaleColdClients} clients pulling one cold image of one ${sizeText(options.scaleColdSize)} layer at once. Every proxy starts on an empty root and has the hot images pulled through it once first.`,
    `- Large catalog: ${options.catalogTags.toLocaleString('en-US')} tags across ${options.catalogRepos.toLocaleString('en-US')} repositories, each tag a manifest of its own, written into the upstream's storage; each proxy GETs every tag once (32 at a time), is restarted on that cache (the start-up figure), then autocannon GETs random tags for ${options.rpsSeconds} s.`,
  ].join('\n');
}

const METHOD = `- Every figure is the median of its rounds; targets are visited in alternating order (upstream, pullthrough, Distribution; then the reverse).
- MB = 10^6 bytes. Pull MB/s = bytes skopeo wrote ÷ wall time of the \`skopeo copy --all --preserve-digests\` runs (one image after the other; every written file is verified against its digest afterwards, untimed).
- Upstream requests are counted from the upstream \`docker-registry\`'s access log, after both the proxy's storage holds every blob and the log has gone quiet (Distribution fetches a second copy in the background).
- pullthrough runs as \`node dist/src/cli.js serve\` with log level \`warn\` and \`tagMaxAge\` 1m (a tag resolved within the minute is served from its record: "fresh tag"); Distribution runs from the test fixture's proxy-mode config with log level \`warn\`, its access log off (so neither pays for per-request logging) and \`storage.cache.blobdescriptor: inmemory\` as in Debian's shipped config. The upstream keeps its access log (it is how requests are counted).
- Proxy CPU is the user + system time of the proxy process (all threads, /proc/<pid>/stat) over the measurement, per unit of work: unlike throughput it hardly moves when other processes share the cores.
- Peak RSS is the largest \`VmHWM\` (/proc/<pid>/status) of any proxy process over the bench, read just before it is stopped; for nginx the sum over its master, worker and cache processes (CPU too). Per-phase RSS is \`VmRSS\` at the end of the phase.
- nginx 1.22 (Debian \`nginx-light\`) runs with the bench's own configuration (\`nginxConfig\` in \`bench/processes.ts\`): one worker, \`proxy_cache\` with \`proxy_cache_lock\`, blobs and manifests by digest valid 30 days, manifests by tag 60 s (keyed with the Accept header), \`proxy_cache_use_stale\` on errors, \`sendfile\`, no access log.
- The load generator (undici, autocannon, skopeo) runs on the same cores as the proxies and the upstream.`;

interface BenchResult {
  readonly version: 1;
  readonly startedAt: string;
  readonly seconds: number;
  readonly mode: 'quick' | 'full';
  readonly options: Omit<BenchOptions, 'phases'> & { phases: string[] };
  readonly machine: Machine;
  readonly workload: Omit<Workload, 'images'> & { images: { repository: string; kind: string; digest: string; blobs: number }[] };
  readonly summaries: ReturnType<Recorder['summaries']>;
  readonly peakRssKiB: BenchContext['peakRss'];
  readonly targets: ReturnType<typeof checkTargets>;
  readonly profiles: readonly ProfileSummary[];
  readonly raw: Recorder['raw'];
  readonly errors: Recorder['errors'];
  readonly table: string;
}

function markdown(result: BenchResult, options: BenchOptions, rec: Recorder, workload: Workload): string {
  const errors = result.errors.length === 0 ? 'None.' : result.errors.map((e) => `- ${e.phase} (${e.target}${e.round === undefined ? '' : `, round ${e.round + 1}`}): ${e.message.split('\n')[0]}`).join('\n');
  return `# Benchmark results

Written by \`npm run bench\`${options.quick ? ' --quick' : ''} on ${result.startedAt} (took ${Math.round(result.seconds)} s). The bench overwrites this file; see \`bench/run.ts\`.

## Machine

${renderMachine(result.machine)}

## pullthrough, Distribution and nginx side by side

${result.table}

## Targets (issues 7 and 19)

${renderTargets(result.targets)}

## Workload

${describeWorkload(options, workload)}

## How the figures are taken

${METHOD}

## Spread: median [min–max] and number of samples

${renderSpread(rec, options)}

## Profiles of pullthrough (\`node --cpu-prof\`)

${result.profiles.length > 0 ? renderProfiles(result.profiles) : 'Not run.'}

## Errors

${errors}
`;
}

async function main(): Promise<number> {
  let options: BenchOptions | 'help';
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const missing = ['docker-registry', 'skopeo'].filter((tool) => !isOnPath(tool));
  if (!options.noNginx && !nginxInstalled()) missing.push('nginx (nginx-light; or --no-nginx)');
  if (missing.length > 0) {
    process.stderr.write(`bench: ${missing.join(', ')} not installed (apt-get install -y docker-registry skopeo)\n`);
    return 1;
  }
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: still running after ${options.maxMinutes} minutes; giving up\n`);
    process.exit(1);
  }, options.maxMinutes * 60_000);
  watchdog.unref();

  const opts = options;
  const startedAt = new Date().toISOString();
  const machine = await describeMachine();
  log(`${opts.quick ? 'quick' : 'full'} run on ${machine.cpuModel} (${machine.nproc} cores), node ${machine.node}`);
  let upstream: RunningRegistry | undefined;
  try {
    upstream = await startRegistry();
    log(`upstream docker-registry on ${upstream.host}; seeding images`);
    const workload = await seedWorkload(upstream, opts);
    await upstream.clearRequests();
    log(`seeded ${workload.uniqueBlobs.length} blobs (${fmt(workload.uniqueBlobBytes / 1e6)} MB), big blob ${workload.big.size} bytes`);

    const scale = opts.phases.has('scale') ? await seedScaleWorkload(upstream, { options: opts }) : undefined;
    const catalog = opts.phases.has('catalog') ? await seedCatalog(upstream, { options: opts }) : undefined;
    if (scale || catalog) log(`seeded${scale ? ` ${scale.hot.length + 1} scale images` : ''}${catalog ? ` a catalog of ${catalog.paths.length} tags` : ''}`);

    const rec = new Recorder();
    const kinds: ProxyKind[] = opts.noNginx ? ['pullthrough', 'distribution'] : ['pullthrough', 'distribution', 'nginx'];
    const ctx: BenchContext = {
      options: opts, upstream, upstreamName: upstream.host, workload, rec, log, peakRss: { pullthrough: [], distribution: [], nginx: [] }, kinds,
    };
    if (opts.phases.has('cold')) await coldWarmRounds(ctx);
    if (opts.phases.has('rps')) await requestRateRounds(ctx);
    if (scale) await scaleRounds(ctx, scale);
    if (catalog) await catalogRounds(ctx, catalog);
    for (const kind of kinds) {
      if (ctx.peakRss[kind].length > 0) rec.add('peakRssMiB', kind, Math.max(...ctx.peakRss[kind]) / 1024);
    }
    const outPath = resolve(opts.out);
    let profiles: ProfileSummary[] = [];
    if (opts.phases.has('profile')) {
      log('profiling pullthrough (node --cpu-prof)');
      profiles = await profilePullthrough(ctx, resolve(dirname(outPath), 'profiles'));
    }

    machine.loadAverage.end = loadavg()[0]!;
    const table = renderTable(rec, opts);
    const result: BenchResult = {
      version: 1,
      startedAt,
      seconds: (Date.now() - started) / 1000,
      mode: opts.quick ? 'quick' : 'full',
      options: { ...opts, phases: [...opts.phases] } as BenchResult['options'],
      machine,
      workload: {
        ...workload,
        images: workload.images.map((i) => ({ repository: i.repository, kind: i.kind, digest: i.digest, blobs: i.blobDigests.length })),
      },
      summaries: rec.summaries(),
      peakRssKiB: ctx.peakRss,
      targets: checkTargets(rec),
      profiles,
      raw: rec.raw,
      errors: rec.errors,
      table,
    };
    await mkdir(dirname(outPath), { recursive: true });
    await writeFile(outPath, JSON.stringify(result, null, 2) + '\n');
    if (opts.writeMarkdown) await writeFile(RESULTS_MD, markdown(result, opts, rec, workload));
    if (opts.saveBaseline) {
      await writeFile(BASELINE, JSON.stringify({
        version: 1, startedAt, mode: result.mode, machine, medians: medians(rec),
      }, null, 2) + '\n');
    }

    process.stdout.write(`\n## pullthrough vs Distribution 2.8 proxy and nginx (${opts.quick ? 'quick' : 'full'} run, ${Math.round(result.seconds)} s)\n\n`);
    process.stdout.write(`${renderMachine(machine)}\n\n${table}\n\n${renderTargets(result.targets)}\n\n`);
    if (opts.compare) {
      const baseline = await readFile(BASELINE, 'utf8').then((text) => JSON.parse(text) as { mode: string; startedAt: string; medians: Parameters<typeof renderComparison>[2] }, () => undefined);
      if (!baseline) process.stdout.write(`no baseline at ${BASELINE} (write one with --save-baseline)\n\n`);
      else {
        process.stdout.write(`### Against bench/baseline.json (${baseline.mode} run of ${baseline.startedAt}${baseline.mode !== result.mode ? `; this is a ${result.mode} run: sizes differ` : ''})\n\n`);
        process.stdout.write(`${renderComparison(rec, opts, baseline.medians)}\n\n`);
      }
    }
    for (const p of profiles) {
      process.stdout.write(`profile "${p.workload}": ${fmt(p.idlePct)} % idle; top self time: ${p.topSelf.slice(0, 5).map((h) => `${h.function} (${h.location}) ${fmt(h.pct)} %`).join('; ')}\n`);
    }
    process.stdout.write(`\nresults: ${outPath}${opts.writeMarkdown ? `, ${RESULTS_MD}` : ''}\n`);
    if (rec.errors.length > 0) {
      process.stderr.write(`bench: ${rec.errors.length} step(s) failed:\n${rec.errors.map((e) => `  ${e.phase} (${e.target}): ${e.message.split('\n')[0]}`).join('\n')}\n`);
      return 1;
    }
    return 0;
  } finally {
    await upstream?.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: could not run: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
