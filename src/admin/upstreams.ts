import type { Counter, CounterChild, Histogram, HistogramChild } from './promClient.js';
import type { FillEvents, UpstreamEvents, UpstreamRequestKind } from '../registry/telemetry.js';
import type { LastContact } from './health.js';

/** The metrics an upstream's activity is counted in; `PullthroughMetrics` owns them. */
export interface UpstreamMetricSet {
  readonly upstreamRequests: Counter<'upstream' | 'method' | 'status'>;
  readonly fetchedBytes: Counter<'upstream' | 'kind'>;
  readonly tokenFetches: Counter<'upstream' | 'result'>;
  readonly rateLimited: Counter<'upstream'>;
  readonly fillDuration: Histogram<'upstream' | 'result'>;
  readonly fillFirstByte: Histogram<'upstream'>;
}

/**
 * What one upstream's client and fills report, counted: the label children
 * are made once here, so an event costs prom-client's increment and nothing
 * else. Also tells `LastContact`, when it has one, whether the upstream answered.
 */
export class UpstreamActivity implements UpstreamEvents, FillEvents {
  private readonly fetchedBytes: Record<UpstreamRequestKind, CounterChild>;
  private readonly tokens: { readonly ok: CounterChild; readonly failed: CounterChild };
  private readonly limited: CounterChild;
  private readonly fills: { readonly ok: HistogramChild; readonly failed: HistogramChild };
  private readonly firstBytes: HistogramChild;
  /** Children by `<method> <status>`, made on first use: statuses are open-ended. */
  private readonly byStatus = new Map<string, CounterChild>();

  constructor(
    private readonly options: { readonly upstream: string; readonly metrics: UpstreamMetricSet; readonly contact?: LastContact },
  ) {
    const { upstream, metrics } = options;
    this.fetchedBytes = {
      manifest: zero(metrics.fetchedBytes.labels({ upstream, kind: 'manifest' })),
      blob: zero(metrics.fetchedBytes.labels({ upstream, kind: 'blob' })),
      tags: zero(metrics.fetchedBytes.labels({ upstream, kind: 'tags' })),
    };
    this.tokens = {
      ok: zero(metrics.tokenFetches.labels({ upstream, result: 'ok' })),
      failed: zero(metrics.tokenFetches.labels({ upstream, result: 'failed' })),
    };
    this.limited = zero(metrics.rateLimited.labels({ upstream }));
    this.fills = {
      ok: metrics.fillDuration.labels({ upstream, result: 'ok' }),
      failed: metrics.fillDuration.labels({ upstream, result: 'failed' }),
    };
    this.firstBytes = metrics.fillFirstByte.labels({ upstream });
  }

  responded(method: string, _kind: UpstreamRequestKind, status: number, message: string | undefined): void {
    this.statusChild(method, String(status)).inc();
    if (status === 429) this.limited.inc();
    if (status >= 500 || status === 429) {
      this.options.contact?.failed(`answered ${status}${message ? `: ${message}` : ''}`);
    } else {
      this.options.contact?.succeeded();
    }
  }

  unreachable(method: string, _kind: UpstreamRequestKind, reason: string): void {
    this.statusChild(method, 'unreachable').inc();
    this.options.contact?.failed(`unreachable (${reason})`);
  }

  fetched(kind: UpstreamRequestKind, bytes: number): void {
    this.fetchedBytes[kind].inc(bytes);
  }

  tokenFetched(ok: boolean): void {
    (ok ? this.tokens.ok : this.tokens.failed).inc();
  }

  firstByte(seconds: number): void {
    this.firstBytes.observe(seconds);
  }

  received(bytes: number): void {
    this.fetchedBytes.blob.inc(bytes);
  }

  finished(ok: boolean, seconds: number, reason: string | undefined): void {
    (ok ? this.fills.ok : this.fills.failed).observe(seconds);
    if (!ok && reason !== undefined) this.options.contact?.failed(`blob fill failed: ${reason}`);
  }

  private statusChild(method: string, status: string): CounterChild {
    const key = `${method} ${status}`;
    let child = this.byStatus.get(key);
    if (!child) {
      child = this.options.metrics.upstreamRequests.labels({ upstream: this.options.upstream, method, status });
      this.byStatus.set(key, child);
    }
    return child;
  }
}

/** A child whose series shows 0 from the start, so `rate()` sees its first increment. */
export function zero(child: CounterChild): CounterChild {
  child.inc(0);
  return child;
}
