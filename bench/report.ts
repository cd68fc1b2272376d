/**
 * The side-by-side table, the targets of issue 7 and whether each is met,
 * the machine the run happened on, and the profile findings, as markdown.
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism, loadavg, release, totalmem } from 'node:os';
import { relative } from 'node:path';
import { runCommand } from '../test/fixtures/tools.js';
import type { BenchOptions } from './options.js';
import type { ProfileSummary } from './profile.js';
import type { Metric, Recorder, Target } from './results.js';
import { fmt, ratio } from './stats.js';

export interface Machine {
  readonly nproc: number;
  readonly memoryGiB: number;
  readonly cpuModel: string;
  readonly node: string;
  readonly kernel: string;
  readonly dockerRegistry: string;
  readonly skopeo: string;
  readonly tmpFilesystem: string;
  /** 1-minute load average when the bench started and when it ended: other work on the same cores. */
  loadAverage: { start: number; end?: number };
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await runCommand(cmd, args, { timeoutMs: 10_000, allowFailure: true });
    return stdout.trim().split('\n')[0] ?? '';
  } catch {
    return 'unknown';
  }
}

export async function describeMachine(): Promise<Machine> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown';
  const nprocText = await firstLine('nproc', []);
  return {
    nproc: Number(nprocText) || availableParallelism(),
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    cpuModel: model,
    node: process.version,
    kernel: release(),
    dockerRegistry: await firstLine('docker-registry', ['--version']),
    skopeo: await firstLine('skopeo', ['--version']),
    tmpFilesystem: await firstLine('stat', ['-f', '-c', '%T', '/tmp']),
    loadAverage: { start: loadavg()[0]! },
  };
}

export interface TargetCheck {
  readonly target: string;
  readonly pullthrough: string;
  readonly distribution: string;
  readonly met: boolean | undefined;
}

/** The issue's targets against the medians (the GET counts must hold in every round). */
export function checkTargets(rec: Recorder): TargetCheck[] {
  const med = (m: Metric, t: Target): number | undefined => rec.summary(m, t)?.median;
  const max = (m: Metric, t: Target): number | undefined => rec.summary(m, t)?.max;
  const vs = (m: Metric): number => ratio(med(m, 'pullthrough'), med(m, 'distribution'));
  const known = (v: number | undefined): v is number => v !== undefined && Number.isFinite(v);
  const checks: TargetCheck[] = [];
  const add = (target: string, pt: string, dist: string, met: boolean | undefined): void => {
    checks.push({ target, pullthrough: pt, distribution: dist, met });
  };
  const coldPt = med('coldPullVsDirect', 'pullthrough');
  add('cold pull ≥ 0.95× the direct pull', `${fmt(coldPt)}×`, `${fmt(med('coldPullVsDirect', 'distribution'))}×`,
    known(coldPt) ? coldPt >= 0.95 : undefined);
  const getsPt = max('blobGetsPerBlob', 'pullthrough');
  add('1 upstream GET per blob (cold pull; worst round)', fmt(getsPt), fmt(max('blobGetsPerBlob', 'distribution')),
    known(getsPt) ? getsPt <= 1 : undefined);
  const concPt = max('concurrentUpstreamGets', 'pullthrough');
  add('1 upstream GET for 8 concurrent clients (worst round)', fmt(concPt, 0), fmt(max('concurrentUpstreamGets', 'distribution'), 0),
    known(concPt) ? concPt <= 1 : undefined);
  const digest = vs('getDigestRps');
  add('manifest by digest ≥ 5× Distribution (req/s)', `${fmt(digest)}×`, '1×', Number.isFinite(digest) ? digest >= 5 : undefined);
  const tag = vs('headTagRps');
  add('manifest by fresh tag ≥ 20× Distribution (req/s)', `${fmt(tag)}×`, '1×', Number.isFinite(tag) ? tag >= 20 : undefined);
  const c1 = vs('cached1MBps');
  add('cached blob MB/s ≥ 1× Distribution, 1 connection', `${fmt(c1)}×`, '1×', Number.isFinite(c1) ? c1 >= 1 : undefined);
  const c4 = vs('cached4MBps');
  add('cached blob MB/s ≥ 1× Distribution, 4 connections', `${fmt(c4)}×`, '1×', Number.isFinite(c4) ? c4 >= 1 : undefined);
  const rss = vs('peakRssMiB');
  add('peak RSS ≤ 1.5× Distribution', `${fmt(rss)}×`, '1×', Number.isFinite(rss) ? rss <= 1.5 : undefined);
  return checks;
}

export function sizeText(bytes: number): string {
  if (bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MiB`;
  if (bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} B`;
}

interface Row {
  readonly label: string;
  readonly metric: Metric;
  /** Show pullthrough ÷ Distribution. */
  readonly ratio: boolean;
  readonly digits?: number;
  readonly target?: string;
  /** Text for the upstream column when it is not a measured value. */
  readonly upstreamText?: string;
}

function rows(options: BenchOptions): Row[] {
  const big = sizeText(options.bigSize);
  const n = options.concurrentClients;
  return [
    { label: 'Cold pull, MB/s (skopeo copy --all, every image)', metric: 'coldPullMBps', ratio: true },
    { label: 'Cold pull ÷ direct pull from the upstream', metric: 'coldPullVsDirect', ratio: false, target: '≥ 0.95×', upstreamText: '1' },
    { label: 'Warm pull, MB/s', metric: 'warmPullMBps', ratio: true },
    { label: 'Upstream blob GETs per unique blob, cold pull', metric: 'blobGetsPerBlob', ratio: false, target: '1' },
    { label: `${n} simultaneous cold GETs of one ${big} blob: upstream GETs`, metric: 'concurrentUpstreamGets', ratio: false, digits: 0, target: '1' },
    { label: `… aggregate MB/s`, metric: 'concurrentMBps', ratio: true },
    { label: `… slowest client, ms`, metric: 'concurrentSlowestMs', ratio: true },
    { label: `Cold blob (${sizeText(options.ttfbSize)}) time to first byte, ms`, metric: 'ttfbMs', ratio: true },
    { label: '… ÷ the upstream\'s own time to first byte', metric: 'ttfbVsUpstream', ratio: false, upstreamText: '1' },
    { label: `Manifest HEAD by tag, req/s (${options.connections} connections)`, metric: 'headTagRps', ratio: true, target: '≥ 20×' },
    { label: '… upstream requests per client request', metric: 'upstreamPerHeadTag', ratio: false },
    { label: `Manifest GET by digest, req/s (${options.connections} connections)`, metric: 'getDigestRps', ratio: true, target: '≥ 5×' },
    { label: '… upstream requests per client request', metric: 'upstreamPerGetDigest', ratio: false },
    { label: `Cached ${big} blob, 1 connection, MB/s`, metric: 'cached1MBps', ratio: true, target: '≥ 1×' },
    { label: `Cached ${big} blob, 4 connections, MB/s`, metric: 'cached4MBps', ratio: true, target: '≥ 1×' },
    { label: 'Peak RSS of the proxy process, MiB (VmHWM)', metric: 'peakRssMiB', ratio: true, digits: 0, target: '≤ 1.5×' },
    { label: 'Proxy CPU per GB, cold pull, s', metric: 'coldPullCpuPerGB', ratio: true },
    { label: 'Proxy CPU per GB, warm pull, s', metric: 'warmPullCpuPerGB', ratio: true },
    { label: `Proxy CPU per GB, cached ${big} blob, s`, metric: 'cachedCpuPerGB', ratio: true },
    { label: 'Proxy CPU per manifest HEAD by tag, µs', metric: 'headTagCpuUs', ratio: true },
    { label: 'Proxy CPU per manifest GET by digest, µs', metric: 'getDigestCpuUs', ratio: true },
  ];
}

export function renderTable(rec: Recorder, options: BenchOptions): string {
  const lines = [
    '| Figure | pullthrough | Distribution 2.8 (proxy) | pullthrough ÷ Distribution | upstream direct | target |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const row of rows(options)) {
    const pt = rec.summary(row.metric, 'pullthrough')?.median;
    const dist = rec.summary(row.metric, 'distribution')?.median;
    const up = rec.summary(row.metric, 'upstream')?.median;
    const cell = (v: number | undefined): string => fmt(v, row.digits);
    lines.push(`| ${row.label} | ${cell(pt)} | ${cell(dist)} | ${row.ratio ? `${fmt(ratio(pt, dist))}×` : ''} | ${up !== undefined ? cell(up) : row.upstreamText ?? ''} | ${row.target ?? ''} |`);
  }
  return lines.join('\n');
}

export function renderTargets(checks: readonly TargetCheck[]): string {
  const lines = ['| Target | pullthrough | Distribution | met |', '| --- | ---: | ---: | --- |'];
  for (const c of checks) {
    lines.push(`| ${c.target} | ${c.pullthrough} | ${c.distribution} | ${c.met === undefined ? 'not measured' : c.met ? 'yes' : 'no'} |`);
  }
  return lines.join('\n');
}

/** min–max of every figure, with the number of samples, for judging the noise. */
export function renderSpread(rec: Recorder, options: BenchOptions): string {
  const lines = ['| Figure | pullthrough | Distribution | upstream direct |', '| --- | --- | --- | --- |'];
  for (const row of rows(options)) {
    const cell = (t: Target): string => {
      const s = rec.summary(row.metric, t);
      return s ? `${fmt(s.median, row.digits)} [${fmt(s.min, row.digits)}–${fmt(s.max, row.digits)}] n=${s.n}` : '';
    };
    lines.push(`| ${row.label} | ${cell('pullthrough')} | ${cell('distribution')} | ${cell('upstream')} |`);
  }
  return lines.join('\n');
}

export function renderMachine(m: Machine): string {
  return [
    `- CPU: ${m.cpuModel}, \`nproc\` ${m.nproc}`,
    `- memory: ${m.memoryGiB} GiB`,
    `- node ${m.node}, Linux ${m.kernel}, /tmp on ${m.tmpFilesystem}`,
    `- ${m.dockerRegistry}; ${m.skopeo}`,
    `- 1-minute load average: ${fmt(m.loadAverage.start)} at the start, ${fmt(m.loadAverage.end)} at the end${
      Math.max(m.loadAverage.start, m.loadAverage.end ?? 0) > m.nproc ? ' (other work shared these cores: throughput figures are noisy; the CPU-per-work rows much less so)' : ''}`,
  ].join('\n');
}

export function renderProfiles(profiles: readonly ProfileSummary[], limit = 10): string {
  const out: string[] = [];
  for (const p of profiles) {
    out.push(`### Profile: ${p.workload}`, '');
    out.push(`\`${relative(process.cwd(), p.file)}\`: ${fmt(p.sampledMs / 1000)} s sampled (start-up and warm-up left out), ${fmt(p.idlePct)} % idle, ${fmt(p.busyMs / 1000)} s busy. Each sample counts for one sampling interval; (native) frames are syscalls and other C++ bindings.`);
    for (const note of p.notes) out.push(`${note}`);
    out.push('', 'Busy time by area:', '', '| area | ms | % of busy |', '| --- | ---: | ---: |');
    for (const c of p.categories.slice(0, limit)) out.push(`| ${c.category} | ${fmt(c.ms)} | ${fmt(c.pct)} |`);
    out.push('', 'Functions by self time:', '', '| function | location | area | ms | % of busy |', '| --- | --- | --- | ---: | ---: |');
    for (const h of p.topSelf.slice(0, limit)) out.push(`| ${h.function} | ${h.location} | ${h.category} | ${fmt(h.ms)} | ${fmt(h.pct)} |`);
    out.push('', 'pullthrough functions by inclusive time:', '', '| function | location | ms | % of busy |', '| --- | --- | ---: | ---: |');
    for (const h of p.topProject.slice(0, limit)) out.push(`| ${h.function} | ${h.location} | ${fmt(h.ms)} | ${fmt(h.pct)} |`);
    out.push('');
  }
  return out.join('\n');
}
