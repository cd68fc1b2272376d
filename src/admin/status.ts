import type { MetricValue } from './promClient.js';
import type { FailedRequest } from '../registry/telemetry.js';
import type { MetricSources, PullthroughMetrics } from './metrics.js';

/**
 * The document of `GET /status.json` (README "Operating it" documents it):
 * what the status page shows, from the same counters Prometheus scrapes.
 * Times are ISO 8601 strings; sizes are bytes; unknown values are null.
 */
export interface StatusDocument {
  readonly version: string;
  readonly startedAt: string;
  readonly uptimeSeconds: number;
  readonly storage: { readonly usedBytes: number | null; readonly maxBytes: number | null };
  /** Manifest and blob requests since start. */
  readonly requests: OutcomeCounts;
  readonly bytes: { readonly served: number; readonly fetched: number; readonly saved: number };
  readonly upstreams: readonly UpstreamStatus[];
  readonly fills: readonly FillStatus[];
  readonly mostPulled: readonly { readonly image: string; readonly pulls: number }[];
  readonly lastErrors: readonly ErrorStatus[];
  readonly redis: { readonly connected: boolean } | null;
}

export interface OutcomeCounts {
  readonly hit: number;
  readonly miss: number;
  readonly coalesced: number;
  readonly stale: number;
  readonly error: number;
  /** (hit + stale) / (hit + stale + miss + coalesced): the share answered without fetching; null before any. */
  readonly hitRatio: number | null;
}

export interface UpstreamStatus {
  readonly name: string;
  readonly offline: boolean;
  readonly health: {
    readonly state: 'up' | 'down' | 'unknown';
    readonly lastSuccess: string | null;
    readonly lastFailure: string | null;
    readonly lastError: string | null;
  };
  readonly requests: OutcomeCounts;
  readonly rateLimit: { readonly limit: number; readonly remaining: number; readonly windowSeconds: number | null } | null;
}

export interface FillStatus {
  readonly digest: string;
  /** `<upstream>/<repository>` that asked first. */
  readonly repository: string;
  readonly receivedBytes: number | null;
  readonly sizeBytes: number | null;
  readonly startedAt: string;
}

export interface ErrorStatus {
  readonly at: string;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly code: string | null;
  readonly message: string | null;
  readonly upstream: string | null;
}

export interface StatusReporterOptions {
  readonly metrics: PullthroughMetrics;
  readonly sources: MetricSources;
  readonly upstreams: readonly { readonly name: string; readonly offline: boolean }[];
  readonly version: string;
  readonly startedAt: number;
  readonly now: () => number;
}

const MOST_PULLED = 10;
const CONTENT_KINDS = new Set(['manifest', 'blob']);

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

/** Builds the status document from the metrics and the live sources (fills, storage, rate limits). */
export class StatusReporter {
  constructor(private readonly options: StatusReporterOptions) {}

  async status(): Promise<StatusDocument> {
    const { metrics, sources, now } = this.options;
    const requests = await this.values('pullthrough_requests_total');
    const served = sum(await this.values('pullthrough_served_bytes_total'));
    const fetched = sum(await this.values('pullthrough_upstream_fetched_bytes_total'));
    const storage = sources.storage();
    const redis = sources.redis();
    return {
      version: this.options.version,
      startedAt: new Date(this.options.startedAt).toISOString(),
      uptimeSeconds: Math.max(0, Math.round((now() - this.options.startedAt) / 1000)),
      storage: { usedBytes: storage.usedBytes ?? null, maxBytes: storage.maxBytes ?? null },
      requests: outcomes(requests),
      bytes: { served, fetched, saved: Math.max(0, served - fetched) },
      upstreams: this.options.upstreams.map(({ name, offline }) => {
        const health = metrics.health.health(name);
        const rate = sources.rateLimit(name);
        return {
          name,
          offline,
          health: {
            state: health.state,
            lastSuccess: iso(health.lastSuccessAt),
            lastFailure: iso(health.lastFailureAt),
            lastError: health.lastError ?? null,
          },
          requests: outcomes(requests.filter((v) => v.labels['upstream'] === name)),
          rateLimit: rate ? { limit: rate.limit, remaining: rate.remaining, windowSeconds: rate.windowSeconds ?? null } : null,
        };
      }),
      fills: sources.fills().map((f) => ({
        digest: f.digest,
        repository: `${f.repository.upstream}/${f.repository.name}`,
        receivedBytes: f.receivedBytes ?? null,
        sizeBytes: f.sizeBytes ?? null,
        startedAt: new Date(f.startedAt).toISOString(),
      })),
      mostPulled: metrics.requests.mostPulled(MOST_PULLED).map((p) => ({ image: `${p.upstream}/${p.repository}:${p.tag}`, pulls: p.pulls })),
      lastErrors: metrics.requests.recentErrors().map(errorStatus),
      redis: redis === undefined ? null : { connected: redis.connected },
    };
  }

  private async values(name: string): Promise<MetricValue<string>[]> {
    const metric = this.options.metrics.registry.getSingleMetric(name);
    return metric ? (await metric.get()).values : [];
  }
}

function sum(values: readonly MetricValue<string>[]): number {
  return values.reduce((n, v) => n + v.value, 0);
}

/** Outcome counts of manifest and blob requests. */
function outcomes(values: readonly MetricValue<string>[]): OutcomeCounts {
  const count = (outcome: string): number =>
    sum(values.filter((v) => v.labels['outcome'] === outcome && CONTENT_KINDS.has(String(v.labels['kind']))));
  const [hit, miss, coalesced, stale, error] = ['hit', 'miss', 'coalesced', 'stale', 'error'].map(count) as [number, number, number, number, number];
  const answered = hit + stale + miss + coalesced;
  return { hit, miss, coalesced, stale, error, hitRatio: answered === 0 ? null : (hit + stale) / answered };
}

function errorStatus(e: FailedRequest): ErrorStatus {
  return {
    at: new Date(e.at).toISOString(),
    method: e.method,
    path: e.path,
    status: e.status,
    code: e.code ?? null,
    message: e.message ?? null,
    upstream: e.upstream ?? null,
  };
}
