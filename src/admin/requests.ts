import type { Counter, Histogram } from 'prom-client';
import type { RepositoryRef } from '../registry/services.js';
import type { FailedRequest, RequestEvents, RequestKind, RequestOutcome } from '../registry/telemetry.js';
import { zero } from './upstreams.js';

export const REQUEST_KINDS: readonly RequestKind[] = ['manifest', 'blob', 'tags', 'catalog'];
export const OUTCOMES: readonly RequestOutcome[] = ['hit', 'miss', 'coalesced', 'stale', 'error'];
const METHODS = ['GET', 'HEAD'] as const;
type CountedMethod = (typeof METHODS)[number];

/** The metrics requests are counted in; `PullthroughMetrics` owns them. */
export interface RequestMetricSet {
  readonly requests: Counter<'upstream' | 'kind' | 'method' | 'outcome'>;
  readonly servedBytes: Counter<'upstream' | 'kind'>;
  readonly duration: Histogram<'upstream' | 'kind' | 'outcome'>;
}

type ByOutcome<T> = Record<RequestOutcome, T>;

/** The label children of one upstream (or of requests with none: the catalog), made once. */
interface Cells {
  readonly requests: Record<RequestKind, Record<CountedMethod, ByOutcome<Counter.Internal>>>;
  readonly served: Record<RequestKind, Counter.Internal>;
  readonly duration: Record<RequestKind, ByOutcome<Histogram.Internal<string>>>;
}

/** How many distinct images "most pulled" remembers; past it, the least pulled make room. */
const MAX_PULLED_IMAGES = 1000;
/** How many failed requests the status page lists. */
const RECENT_ERRORS = 20;

/** An image and how often it was pulled since start. */
export interface PulledImage {
  readonly upstream: string;
  readonly repository: string;
  readonly tag: string;
  readonly pulls: number;
}

/**
 * What the HTTP layer reports, counted. The hot path (a cached manifest or
 * blob) costs a few map lookups and prom-client's increments on children
 * made at start: no label objects, no strings built per request.
 */
export class RequestActivity implements RequestEvents {
  private readonly cells = new Map<string, Cells>();
  private readonly withoutUpstream: Cells;
  /** upstream → repository → tag → pulls: nested, so counting a pull builds no key string. */
  private readonly pulls = new Map<string, Map<string, Map<string, number>>>();
  private pulledImages = 0;
  private readonly errors: FailedRequest[] = [];

  constructor(private readonly options: { readonly metrics: RequestMetricSet; readonly upstreams: readonly string[] }) {
    for (const upstream of options.upstreams) this.cells.set(upstream, this.makeCells(upstream));
    this.withoutUpstream = this.makeCells(undefined);
  }

  served(kind: RequestKind, method: string, outcome: RequestOutcome, repository: RepositoryRef | undefined, bytes: number, seconds: number): void {
    const cells = repository === undefined ? this.withoutUpstream : this.cells.get(repository.upstream);
    if (cells === undefined) return;
    cells.requests[kind][method === 'HEAD' ? 'HEAD' : 'GET'][outcome].inc();
    if (bytes > 0) cells.served[kind].inc(bytes);
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
    const { requests, servedBytes, duration } = this.options.metrics;
    // The catalog has no upstream; the other kinds always have one.
    const kinds: readonly RequestKind[] = REQUEST_KINDS.filter((k) => (k === 'catalog') === (upstream === undefined));
    const base = upstream === undefined ? {} : { upstream };
    const perKind = <T>(make: (kind: RequestKind) => T): Record<RequestKind, T> =>
      Object.fromEntries(REQUEST_KINDS.map((kind) => [kind, make(kind)])) as Record<RequestKind, T>;
    const perOutcome = <T>(make: (outcome: RequestOutcome) => T): ByOutcome<T> =>
      Object.fromEntries(OUTCOMES.map((outcome) => [outcome, make(outcome)])) as ByOutcome<T>;
    // Series that can happen show 0 from the start (the catalog answers GET only).
    const counted = (kind: RequestKind, child: Counter.Internal, method = 'GET'): Counter.Internal =>
      (kinds.includes(kind) && (method === 'GET' || kind !== 'catalog') ? zero(child) : child);
    return {
      requests: perKind((kind) => ({
        GET: perOutcome((outcome) => counted(kind, requests.labels({ ...base, kind, method: 'GET', outcome }))),
        HEAD: perOutcome((outcome) => counted(kind, requests.labels({ ...base, kind, method: 'HEAD', outcome }), 'HEAD')),
      })),
      served: perKind((kind) => counted(kind, servedBytes.labels({ ...base, kind }))),
      duration: perKind((kind) => perOutcome((outcome) => duration.labels({ ...base, kind, outcome }))),
    };
  }
}
