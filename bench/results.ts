/** Samples as they are taken, per figure and target; summaries (medians) for the report. */
import { summarize, type Summary } from './stats.js';

export type Target = 'pullthrough' | 'distribution' | 'nginx' | 'upstream';

/** The phases whose proxy CPU seconds and RSS are recorded separately. */
export type CostPhase = 'cold' | 'warm' | 'concurrent' | 'blob' | 'manifest' | 'scale' | 'catalog';
export const COST_PHASES: readonly CostPhase[] = ['cold', 'warm', 'concurrent', 'blob', 'manifest', 'scale', 'catalog'];

export type Metric =
  | 'coldPullMBps'
  | 'coldPullVsDirect'
  | 'warmPullMBps'
  | 'blobGetsPerBlob'
  | 'concurrentUpstreamGets'
  | 'concurrentMBps'
  | 'concurrentSlowestMs'
  | 'ttfbMs'
  | 'ttfbVsUpstream'
  | 'headTagRps'
  | 'upstreamPerHeadTag'
  | 'getDigestRps'
  | 'upstreamPerGetDigest'
  | 'cached1MBps'
  | 'cached4MBps'
  | 'peakRssMiB'
  | 'coldPullCpuPerGB'
  | 'warmPullCpuPerGB'
  | 'cachedCpuPerGB'
  | 'headTagCpuUs'
  | 'getDigestCpuUs'
  | 'idleRssMiB'
  | 'scaleManifestP50Ms'
  | 'scaleManifestP99Ms'
  | 'scaleMBps'
  | 'scaleCpuPerGB'
  | 'scaleColdManifestP50Ms'
  | 'scaleColdManifestP99Ms'
  | 'scaleColdMBps'
  | 'scaleColdUpstreamGets'
  | 'catalogTagRps'
  | 'catalogCpuUs'
  | 'catalogUpstreamPerRequest'
  | 'catalogStartupMs'
  | `cpuS.${CostPhase}`
  | `rssMiB.${CostPhase}`;

export interface BenchError {
  readonly phase: string;
  readonly target: Target | 'setup' | 'profile';
  readonly round: number | undefined;
  readonly message: string;
}

export type Summaries = Partial<Record<Metric, Partial<Record<Target, Summary>>>>;

export class Recorder {
  private readonly samples = new Map<Metric, Map<Target, number[]>>();
  /** Every measurement's raw result, in the order taken. */
  readonly raw: Record<string, unknown>[] = [];
  readonly errors: BenchError[] = [];

  add(metric: Metric, target: Target, value: number): void {
    let byTarget = this.samples.get(metric);
    if (!byTarget) this.samples.set(metric, (byTarget = new Map()));
    let values = byTarget.get(target);
    if (!values) byTarget.set(target, (values = []));
    values.push(value);
  }

  detail(entry: Record<string, unknown>): void {
    this.raw.push(entry);
  }

  fail(error: BenchError): void {
    this.errors.push(error);
  }

  summary(metric: Metric, target: Target): Summary | undefined {
    const values = this.samples.get(metric)?.get(target);
    return values && summarize(values);
  }

  summaries(): Summaries {
    const out: Summaries = {};
    for (const [metric, byTarget] of this.samples) {
      const entry: Partial<Record<Target, Summary>> = {};
      for (const [target, values] of byTarget) {
        const s = summarize(values);
        if (s) entry[target] = s;
      }
      out[metric] = entry;
    }
    return out;
  }
}
