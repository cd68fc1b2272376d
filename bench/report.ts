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
import { COST_PHASES, type Metric, type Recorder, type Target } from './results.js';
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
  /** What it is compared with (nginx's or Distribution's figure, or the fixed bound). */
  readonly against: string;
  readonly met: boolean | undefined;
}

/** The targets of issues 7 and 19 against the medians (the GET counts must hold in every round). */
export function checkTargets(rec: Recorder): TargetCheck[] {
  const med = (m: Metric, t: Target): number | undefined => rec.summary(m, t)?.median;
  const max = (m: Metric, t: Target): number | undefined => rec.summary(m, t)?.max;
  const known = (v: number | undefined): v is number => v !== undefined && Number.isFinite(v);
  const checks: TargetCheck[] = [];
  const bound = (target: string, m: Metric, op: '<=' | '>=', limit: number, worst = false): void => {
    const v = worst ? max(m, 'pullthrough') : med(m, 'pullthrough');
    checks.push({ target, pullthrough: fmt(v), against: `${op === '<=' ? '≤' : '≥'} ${limit}`, met: known(v) ? (op === '<=' ? v <= limit : v >= limit) : undefined });
  };
  const relative = (target: string, m: Metric, other: Target, op: '<=' | '>=', factor: number): void => {
    const r = ratio(med(m, 'pullthrough'), med(m, other));
    checks.push({
      target, pullthrough: `${fmt(r)}× (${fmt(med(m, 'pullthrough'))})`, against: `${op === '<=' ? '≤' : '≥'} ${factor}× ${other} (${fmt(med(m, other))})`,
      met: Number.isFinite(r) ? (op === '<=' ? r <= factor : r >= factor) : undefined,
    });
  };
  // Issue 19: as lean as nginx where verification allows.
  bound('cold fill, proxy CPU-s per GB', 'coldPullCpuPerGB', '<=', 2);
  bound('warm pull, proxy CPU-s per GB', 'warmPullCpuPerGB', '<=', 0.5);
  bound('cold pull ÷ direct pull', 'coldPullVsDirect', '>=', 0.9);
  relative('manifest HEAD by fresh tag, req/s', 'headTagRps', 'nginx', '>=', 0.5);
  relative('manifest GET by digest, req/s', 'getDigestRps', 'nginx', '>=', 0.5);
  relative('cached big blob, 4 connections, MB/s', 'cached4MBps', 'nginx', '>=', 0.8);
  relative('cached big blob, 1 connection, MB/s', 'cached1MBps', 'nginx', '>=', 1);
  relative('peak RSS over the whole bench', 'peakRssMiB', 'distribution', '<=', 1.5);
  bound('idle RSS after start, MiB', 'idleRssMiB', '<=', 60);
  // Issue 7: one fetch per blob, ahead of Distribution.
  bound('upstream GETs per blob, cold pull (worst round)', 'blobGetsPerBlob', '<=', 1, true);
  bound('upstream GETs for simultaneous cold clients (worst round)', 'concurrentUpstreamGets', '<=', 1, true);
  bound('upstream GETs of a layer, 50 clients on a cold image', 'scaleColdUpstreamGets', '<=', 1, true);
  relative('manifest GET by digest vs Distribution', 'getDigestRps', 'distribution', '>=', 5);
  relative('manifest HEAD by fresh tag vs Distribution', 'headTagRps', 'distribution', '>=', 20);
  relative('cached blob, 1 connection, vs Distribution', 'cached1MBps', 'distribution', '>=', 1);
  relative('cached blob, 4 connections, vs Distribution', 'cached4MBps', 'distribution', '>=', 1);
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
  /** Shown as value × scale (µs per request as CPU-s per 1,000 requests). */
  readonly scale?: number;
}

function rows(options: BenchOptions): Row[] {
  const big = sizeText(options.bigSize);
  const n = options.concurrentClients;
  const phaseRows = COST_PHASES.flatMap((phase): Row[] => [
    { label: `Proxy CPU-s, ${phase} phase`, metric: `cpuS.${phase}`, ratio: true },
    { label: `Proxy RSS at the end of the ${phase} phase, MiB`, metric: `rssMiB.${phase}`, ratio: true, digits: 0 },
  ]);
  return [
    { label: 'Cold pull, MB/s (skopeo copy --all, every image)', metric: 'coldPullMBps', ratio: true },
    { label: 'Cold pull ÷ direct pull from the upstream', metric: 'coldPullVsDirect', ratio: false, target: '≥ 0.9', upstreamText: '1' },
    { label: 'Warm pull, MB/s', metric: 'warmPullMBps', ratio: true },
    { label: 'Upstream blob GETs per unique blob, cold pull', metric: 'blobGetsPerBlob', ratio: false, target: '1' },
    { label: `${n} simultaneous cold GETs of one ${big} blob: upstream GETs`, metric: 'concurrentUpstreamGets', ratio: false, digits: 0, target: '1' },
    { label: `… aggregate MB/s`, metric: 'concurrentMBps', ratio: true },
    { label: `… slowest client, ms`, metric: 'concurrentSlowestMs', ratio: true },
    { label: `Cold blob (${sizeText(options.ttfbSize)}) time to first byte, ms`, metric: 'ttfbMs', ratio: true },
    { label: '… ÷ the upstream\'s own time to first byte', metric: 'ttfbVsUpstream', ratio: false, upstreamText: '1' },
    { label: `Manifest HEAD by fresh tag, req/s (${options.connections} connections)`, metric: 'headTagRps', ratio: true, target: '≥ 0.5× nginx' },
    { label: '… upstream requests per client request', metric: 'upstreamPerHeadTag', ratio: false },
    { label: `Manifest GET by digest, req/s (${options.connections} connections)`, metric: 'getDigestRps', ratio: true, target: '≥ 0.5× nginx' },
    { label: '… upstream requests per client request', metric: 'upstreamPerGetDigest', ratio: false },
    { label: `Cached ${big} blob, 1 connection, MB/s`, metric: 'cached1MBps', ratio: true, target: '≥ 1× nginx' },
    { label: `Cached ${big} blob, 4 connections, MB/s`, metric: 'cached4MBps', ratio: true, target: '≥ 0.8× nginx' },
    { label: `Scale: ${options.scaleClients} clients × 3 of ${options.scaleImages} cached images, manifest GET p50, ms`, metric: 'scaleManifestP50Ms', ratio: true },
    { label: '… manifest GET p99, ms', metric: 'scaleManifestP99Ms', ratio: true },
    { label: '… aggregate MB/s', metric: 'scaleMBps', ratio: true },
    { label: '… proxy CPU-s per GB', metric: 'scaleCpuPerGB', ratio: true },
    { label: `Scale: ${options.scaleColdClients} clients × one cold image, manifest GET p50, ms`, metric: 'scaleColdManifestP50Ms', ratio: true },
    { label: '… manifest GET p99, ms', metric: 'scaleColdManifestP99Ms', ratio: true },
    { label: '… aggregate MB/s', metric: 'scaleColdMBps', ratio: true },
    { label: '… upstream GETs of its layer', metric: 'scaleColdUpstreamGets', ratio: false, digits: 0, target: '1' },
    { label: `Large catalog (${options.catalogTags.toLocaleString('en-US')} tags, ${options.catalogRepos.toLocaleString('en-US')} repositories): GET by random tag, req/s`, metric: 'catalogTagRps', ratio: true },
    { label: '… upstream requests per client request', metric: 'catalogUpstreamPerRequest', ratio: false },
    { label: '… proxy CPU-s per 1,000 requests', metric: 'catalogCpuUs', ratio: true, scale: 1e-3 },
    { label: '… start-up on that cache, ms (spawn to first /v2/ answer)', metric: 'catalogStartupMs', ratio: true, digits: 0 },
    { label: 'Idle RSS after start, MiB', metric: 'idleRssMiB', ratio: true, digits: 0, target: '≤ 60' },
    { label: 'Peak RSS over the whole bench, MiB (VmHWM)', metric: 'peakRssMiB', ratio: true, digits: 0, target: '≤ 1.5× Distribution' },
    { label: 'Proxy CPU-s per GB, cold pull', metric: 'coldPullCpuPerGB', ratio: true, target: '≤ 2' },
    { label: 'Proxy CPU-s per GB, warm pull', metric: 'warmPullCpuPerGB', ratio: true, target: '≤ 0.5' },
    { label: `Proxy CPU-s per GB, cached ${big} blob`, metric: 'cachedCpuPerGB', ratio: true },
    { label: 'Proxy CPU-s per 1,000 manifest HEADs by tag', metric: 'headTagCpuUs', ratio: true, scale: 1e-3 },
    { label: 'Proxy CPU-s per 1,000 manifest GETs by digest', metric: 'getDigestCpuUs', ratio: true, scale: 1e-3 },
    ...phaseRows,
  ];
}

/** The proxies a table shows: those with any figure. */
function columns(rec: Recorder): Target[] {
  const all: Target[] = ['pullthrough', 'distribution', 'nginx'];
  return all.filter((t) => Object.values(rec.summaries()).some((byTarget) => byTarget?.[t] !== undefined));
}

const COLUMN_NAMES: Record<Target, string> = {
  pullthrough: 'pullthrough', distribution: 'Distribution 2.8 (proxy)', nginx: 'nginx (proxy_cache)', upstream: 'upstream direct',
};

export function renderTable(rec: Recorder, options: BenchOptions): string {
  const cols = columns(rec);
  const others = cols.filter((c) => c !== 'pullthrough');
  const lines = [
    `| Figure | ${cols.map((c) => COLUMN_NAMES[c]).join(' | ')} | ${others.map((c) => `pullthrough ÷ ${c}`).join(' | ')} | upstream direct | target |`,
    `| --- |${' ---: |'.repeat(cols.length + others.length + 1)} --- |`,
  ];
  for (const row of rows(options)) {
    const value = (t: Target): number | undefined => {
      const v = rec.summary(row.metric, t)?.median;
      return v === undefined ? undefined : v * (row.scale ?? 1);
    };
    const cell = (v: number | undefined): string => fmt(v, row.digits);
    const up = value('upstream');
    lines.push(`| ${row.label} | ${cols.map((c) => cell(value(c))).join(' | ')} | ${
      others.map((c) => (row.ratio ? `${fmt(ratio(value('pullthrough'), value(c)))}×` : '')).join(' | ')} | ${
      up !== undefined ? cell(up) : row.upstreamText ?? ''} | ${row.target ?? ''} |`);
  }
  return lines.join('\n');
}

/** Every figure's median, by metric and target: what bench/baseline.json keeps. */
export function medians(rec: Recorder): Record<string, Partial<Record<Target, number>>> {
  const out: Record<string, Partial<Record<Target, number>>> = {};
  for (const [metric, byTarget] of Object.entries(rec.summaries())) {
    out[metric] = Object.fromEntries(Object.entries(byTarget ?? {}).map(([t, s]) => [t, s!.median]));
  }
  return out;
}

/** The change of every figure of this run against a baseline's, in percent; a change of 10 % or more is marked. */
export function renderComparison(rec: Recorder, options: BenchOptions, baseline: Record<string, Partial<Record<Target, number>>>): string {
  const lines = ['| Figure | target | baseline | now | change |', '| --- | --- | ---: | ---: | ---: |'];
  for (const row of rows(options)) {
    for (const t of ['pullthrough', 'distribution', 'nginx', 'upstream'] as const) {
      const now = rec.summary(row.metric, t)?.median;
      const before = baseline[row.metric]?.[t];
      if (now === undefined && before === undefined) continue;
      const change = now !== undefined && before !== undefined && before !== 0 ? ((now - before) / Math.abs(before)) * 100 : Number.NaN;
      const mark = Number.isFinite(change) && Math.abs(change) >= 10 ? ' **' : '';
      const scaled = (v: number | undefined): number | undefined => (v === undefined ? undefined : v * (row.scale ?? 1));
      lines.push(`| ${row.label} | ${t} | ${fmt(scaled(before), row.digits)} | ${fmt(scaled(now), row.digits)} | ${Number.isFinite(change) ? `${change >= 0 ? '+' : ''}${change.toFixed(1)} %${mark}` : '—'} |`);
    }
  }
  return lines.join('\n');
}

export function renderTargets(checks: readonly TargetCheck[]): string {
  const lines = ['| Target | pullthrough | against | met |', '| --- | ---: | ---: | --- |'];
  for (const c of checks) {
    lines.push(`| ${c.target} | ${c.pullthrough} | ${c.against} | ${c.met === undefined ? 'not measured' : c.met ? 'yes' : 'no'} |`);
  }
  return lines.join('\n');
}

/** min–max of every figure, with the number of samples, for judging the noise. */
export function renderSpread(rec: Recorder, options: BenchOptions): string {
  const cols: Target[] = [...columns(rec), 'upstream'];
  const lines = [`| Figure | ${cols.map((c) => COLUMN_NAMES[c]).join(' | ')} |`, `| --- |${' --- |'.repeat(cols.length)}`];
  for (const row of rows(options)) {
    const k = row.scale ?? 1;
    const cell = (t: Target): string => {
      const s = rec.summary(row.metric, t);
      return s ? `${fmt(s.median * k, row.digits)} [${fmt(s.min * k, row.digits)}–${fmt(s.max * k, row.digits)}] n=${s.n}` : '';
    };
    lines.push(`| ${row.label} | ${cols.map(cell).join(' | ')} |`);
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
