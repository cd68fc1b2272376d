import { Counter, Histogram, type HistogramChild, type Registry } from './promClient.js';
import type { RepositoryRef } from '../registry/services.js';
import type { FailedRequest, RequestEvents, RequestKind, RequestOutcome } from '../registry/telemetry.js';

export const REQUEST_KINDS: readonly RequestKind[] = ['manifest', 'blob', 'tags', 'referrers', 'catalog'];
export const OUTCOMES: readonly RequestOutcome[] = ['hit', 'miss', 'coalesced', 'stale', 'error'];
type CountedMethod = 'GET' | 'HEAD';

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * One counter series kept as a plain number: the hot path adds to it, and
 * prom-client reads it when it is scraped (the counter's `collect`), so a
 * cached pull pays an addition instead of prom-client's label hashing.
 */
class CountedSeries {
  value = 0;
  constructor(readonly labels: Partial<Record<string, string>>) {}
}

type ByOutcome<T> = Record<RequestOutcome, T>;

/** The series of one upstream (or of requests with none: the catalog), made once. */
interface Cells {
  readonly requests: Record<RequestKind, Record<CountedMethod, ByOutcome<CountedSeries>>>;
  readonly served: Record<RequestKind, CountedSeries>;
  readonly duration: Record<RequestKind, ByOutcome<HistogramChild>>;
}

/** An image and how often it was pulled since start. */
export interface PulledImage {
  readonly upstream: string;
  readonly repository: string;
  readonly tag: string;
  readonly pulls: number;
}

/** How many distinct images "most pulled" remembers; past it, the least pulled make room. */
const MAX_PULLED_IMAGES = 1000;
/** How many failed requests the status page lists. */
const RECENT_ERRORS = 20;

/**
 * What the HTTP layer reports, counted in `pullthrough_requests_total`,
 * `pullthrough_served_bytes_total` and `pullthrough_request_duration_seconds`.
 * The hot path (a cached manifest or blob) costs a map lookup, two additions
 * and one prom-client observation on a histogram child made at start: no
 * label objects, no strings built per request.
 */
export class RequestActivity implements RequestEvents {
  private readonly cells = new Map<string, Cells>();
  private readonly withoutUpstream: Cells;
  private readonly requestSeries: CountedSeries[] = [];
  private readonly servedSeries: CountedSeries[] = [];
  private readonly duration: Histogram<'upstream' | 'kind' | 'outcome'>;
  /** upstream → repository → tag → pulls: nested, so counting a pull builds no key string. */
  private readonly pulls = new Map<string, Map<string, Map<string, number>>>();
  private pulledImages = 0;
  private readonly errors: FailedRequest[] = [];

  constructor(options: { readonly registers: Registry[]; readonly upstreams: readonly string[] }) {
    const { registers } = options;
    const exported = (series: readonly CountedSeries[]) => function collect(this: Counter<string>): void {
      this.reset();
      for (const s of series) this.inc(s.labels, s.value);
    };
    new Counter({
      name: 'pullthrough_requests_total', help: 'Registry requests answered, by kind, method and outcome (hit, miss, coalesced, stale, error).',
      labelNames: ['upstream', 'kind', 'method', 'outcome'], registers, collect: exported(this.requestSeries),
    });
    new Counter({
      name: 'pullthrough_served_bytes_total', help: 'Body bytes delivered to clients.', labelNames: ['upstream', 'kind'], registers,
      collect: exported(this.servedSeries),
    });
    this.duration = new Histogram({
      name: 'pullthrough_request_duration_seconds', help: 'From request to the last byte of the answer.',
      labelNames: ['upstream', 'kind', 'outcome'], buckets: LATENCY_BUCKETS, registers,
    });
    for (const upstream of options.upstreams) this.cells.set(upstream, this.makeCells(upstream));
    this.withoutUpstream = this.makeCells(undefined);
  }

  served(kind: RequestKind, method: string, outcome: RequestOutcome, repository: RepositoryRef | undefined, bytes: number, seconds: number): void {
    const cells = repository === undefined ? this.withoutUpstream : this.cells.get(repository.upstream);
    if (cells === undefined) return;
    cells.requests[kind][method === 'HEAD' ? 'HEAD' : 'GET'][outcome].value++;
    cells.served[kind].value += bytes;
    cells.duration[kind][outcome].observe(seconds);
  }

  pulled(repository: RepositoryRef, tag: string): void {
    let names = this.pulls.get(repository.upstream);
    if (!names) this.pulls.set(repository.upstream, (names = new Map()));
    let tags = names.get(repository.name);
    if (!tags) names.set(repository.name, (tags = new Map()));
    const pulls = tags.get(tag);
    if (pulls !== undefined) {
      tags.set(tag, pulls + 1);
      return;
    }
    if (this.pulledImages >= MAX_PULLED_IMAGES) this.forgetLeastPulled();
    tags.set(tag, 1);
    this.pulledImages++;
  }

  failed(request: FailedRequest): void {
    this.errors.push(request);
    if (this.errors.length > RECENT_ERRORS) this.errors.shift();
  }

  /** The most pulled images since start, most first. */
  mostPulled(limit: number): PulledImage[] {
    return this.allPulled().sort((a, b) => b.pulls - a.pulls || a.repository.localeCompare(b.repository)).slice(0, limit);
  }

  /** The latest failed requests, newest first. */
  recentErrors(): FailedRequest[] {
    return [...this.errors].reverse();
  }

  private allPulled(): PulledImage[] {
    const all: PulledImage[] = [];
    for (const [upstream, names] of this.pulls) {
      for (const [repository, tags] of names) for (const [tag, pulls] of tags) all.push({ upstream, repository, tag, pulls });
    }
    return all;
  }

  /** Makes room: the images pulled least often go (all of them that share the lowest count). */
  private forgetLeastPulled(): void {
    const all = this.allPulled();
    const least = Math.min(...all.map((i) => i.pulls));
    for (const image of all) {
      if (image.pulls !== least) continue;
      const names = this.pulls.get(image.upstream)!;
      const tags = names.get(image.repository)!;
      tags.delete(image.tag);
      if (tags.size === 0) names.delete(image.repository);
      this.pulledImages--;
    }
  }

  private makeCells(upstream: string | undefined): Cells {
    // The catalog has no upstream; the other kinds always have one. Only series that can happen are exported.
    const kinds: readonly RequestKind[] = REQUEST_KINDS.filter((k) => (k === 'catalog') === (upstream === undefined));
    const base: Record<string, string> = upstream === undefined ? {} : { upstream };
    const perKind = <T>(make: (kind: RequestKind) => T): Record<RequestKind, T> =>
      Object.fromEntries(REQUEST_KINDS.map((kind) => [kind, make(kind)])) as Record<RequestKind, T>;
    const perOutcome = <T>(make: (outcome: RequestOutcome) => T): ByOutcome<T> =>
      Object.fromEntries(OUTCOMES.map((outcome) => [outcome, make(outcome)])) as ByOutcome<T>;
    const series = (list: CountedSeries[], kind: RequestKind, labels: Record<string, string>, exported = true): CountedSeries => {
      const made = new CountedSeries(labels);
      if (exported && kinds.includes(kind)) list.push(made);
      return made;
    };
    return {
      requests: perKind((kind) => ({
        GET: perOutcome((outcome) => series(this.requestSeries, kind, { ...base, kind, method: 'GET', outcome })),
        // The catalog answers GET only.
        HEAD: perOutcome((outcome) => series(this.requestSeries, kind, { ...base, kind, method: 'HEAD', outcome }, kind !== 'catalog')),
      })),
      served: perKind((kind) => series(this.servedSeries, kind, { ...base, kind })),
      duration: perKind((kind) => perOutcome((outcome) => this.duration.labels({ ...base, kind, outcome }))),
    };
  }
}
