import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from './promClient.js';
import type { RateLimitState } from '../upstream/rateLimit.js';
import type { FillProgress } from '../proxy/blobs.js';
import type { EvictionEvents } from '../registry/telemetry.js';
import { LastContact, type UpstreamHealth, type UpstreamHealthSource } from './health.js';
import { RequestActivity } from './requests.js';
import { UpstreamActivity } from './upstreams.js';

/** Every series this process exports starts with this. */
export const METRIC_PREFIX = 'pullthrough_';

/** What the gauges read when Prometheus scrapes (nothing of this is counted on the hot path). */
export interface MetricSources {
  fills(): readonly FillProgress[];
  storage(): { readonly usedBytes: number | undefined; readonly maxBytes: number | undefined };
  rateLimit(upstream: string): RateLimitState | undefined;
  /** undefined when Redis is not configured. */
  redis(): { readonly connected: boolean; readonly failedCommands: number } | undefined;
}

export interface PullthroughMetricsOptions {
  /** The configured upstreams' names: their label children are made at start. */
  readonly upstreams: readonly string[];
  readonly version: string;
  /** Whether Redis is configured (its series exist only then). */
  readonly redis: boolean;
  readonly sources: MetricSources;
  /** Health transitions are logged here. */
  readonly logger: Logger;
  readonly now: () => number;
  /** Where upstream health comes from; by default each upstream's last contact. */
  readonly health?: UpstreamHealthSource;
}

const FILL_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
const FIRST_BYTE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Every metric of the process, in one prom-client registry of its own (no
 * global state), with the sinks each layer reports to. README "Operating
 * it" lists the names and what each means.
 */
export class PullthroughMetrics {
  readonly registry = new Registry();
  /** What the HTTP layer reports to. */
  readonly requests: RequestActivity;
  readonly eviction: EvictionEvents;
  /** Health of each upstream, as the metrics and the status page show it. */
  readonly health: UpstreamHealthSource;
  private readonly upstreams = new Map<string, UpstreamActivity>();
  private readonly contacts = new Map<string, LastContact>();
  private processMetrics = false;

  constructor(private readonly options: PullthroughMetricsOptions) {
    const registers = [this.registry];
    const { sources } = options;
    new Gauge({ name: 'pullthrough_build_info', help: 'Always 1; the version is a label.', labelNames: ['version'], registers })
      .set({ version: options.version }, 1);

    this.requests = new RequestActivity({ upstreams: options.upstreams, registers });

    const upstreamMetrics = {
      upstreamRequests: new Counter({
        name: 'pullthrough_upstream_requests_total', help: 'Requests to upstreams by method and status ("unreachable" when none came).',
        labelNames: ['upstream', 'method', 'status'], registers,
      }),
      fetchedBytes: new Counter({
        name: 'pullthrough_upstream_fetched_bytes_total', help: 'Body bytes received from upstreams, by kind.', labelNames: ['upstream', 'kind'], registers,
      }),
      tokenFetches: new Counter({
        name: 'pullthrough_upstream_token_fetches_total', help: 'Exchanges with upstream token services.', labelNames: ['upstream', 'result'], registers,
      }),
      rateLimited: new Counter({
        name: 'pullthrough_upstream_rate_limited_total', help: 'Upstream 429 answers.', labelNames: ['upstream'], registers,
      }),
      fillDuration: new Histogram({
        name: 'pullthrough_fill_duration_seconds', help: 'Blob fills, from the upstream GET to the commit (or the failure).',
        labelNames: ['upstream', 'result'], buckets: FILL_BUCKETS, registers,
      }),
      fillFirstByte: new Histogram({
        name: 'pullthrough_fill_first_byte_seconds', help: 'Blob fills, from the upstream GET to its first body byte.',
        labelNames: ['upstream'], buckets: FIRST_BYTE_BUCKETS, registers,
      }),
    };
    for (const upstream of options.upstreams) {
      // A health source of its own logs its transitions: the last contact is then neither kept nor logged.
      const contact = options.health ? undefined : new LastContact({ upstream, logger: options.logger, now: options.now });
      if (contact) this.contacts.set(upstream, contact);
      this.upstreams.set(upstream, new UpstreamActivity({ upstream, metrics: upstreamMetrics, ...(contact ? { contact } : {}) }));
    }
    this.health = options.health ?? { health: (upstream) => this.lastContact(upstream) };
    this.upstreamGauges(registers);

    new Gauge({
      name: 'pullthrough_fills_in_progress', help: 'Blob fills running now.', labelNames: ['upstream'], registers,
      collect() {
        this.reset();
        for (const upstream of options.upstreams) this.set({ upstream }, 0);
        for (const fill of sources.fills()) this.inc({ upstream: fill.repository.upstream });
      },
    });
    this.storageMetrics(registers);
    this.eviction = this.evictionMetrics(registers);
    if (options.redis) this.redisMetrics(registers);
  }

  /** The sink of one upstream's client and fills. */
  upstream(name: string): UpstreamActivity {
    const activity = this.upstreams.get(name);
    if (!activity) throw new Error(`no upstream named ${name}`);
    return activity;
  }

  /** Adds prom-client's process metrics (CPU, memory, event-loop lag, GC): only in a process that serves them. */
  collectProcessMetrics(): void {
    if (this.processMetrics) return;
    this.processMetrics = true;
    collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private lastContact(upstream: string): UpstreamHealth {
    const contact = this.contacts.get(upstream);
    return contact ? contact.health : { state: 'unknown', lastSuccessAt: undefined, lastFailureAt: undefined, lastError: undefined };
  }

  private upstreamGauges(registers: Registry[]): void {
    const { upstreams, sources } = this.options;
    const health = (): UpstreamHealthSource => this.health;
    new Gauge({
      name: 'pullthrough_upstream_up', help: '1 while the upstream answers, 0 while it fails; absent before any contact.',
      labelNames: ['upstream'], registers,
      collect() {
        this.reset();
        for (const upstream of upstreams) {
          const { state } = health().health(upstream);
          if (state !== 'unknown') this.set({ upstream }, state === 'up' ? 1 : 0);
        }
      },
    });
    const timestamp = (name: string, help: string, pick: (h: UpstreamHealth) => number | undefined): void => {
      new Gauge({
        name, help, labelNames: ['upstream'], registers,
        collect() {
          this.reset();
          for (const upstream of upstreams) {
            const at = pick(health().health(upstream));
            if (at !== undefined) this.set({ upstream }, at / 1000);
          }
        },
      });
    };
    timestamp('pullthrough_upstream_last_success_timestamp_seconds', 'When the upstream last answered (Unix time).', (h) => h.lastSuccessAt);
    timestamp('pullthrough_upstream_last_failure_timestamp_seconds', 'When the upstream last failed: unreachable, 5xx, 429, a broken fill (Unix time).',
      (h) => h.lastFailureAt);
    const rateLimit = (name: string, help: string, pick: (r: RateLimitState) => number): void => {
      new Gauge({
        name, help, labelNames: ['upstream'], registers,
        collect() {
          this.reset();
          for (const upstream of upstreams) {
            const reading = sources.rateLimit(upstream);
            if (reading) this.set({ upstream }, pick(reading));
          }
        },
      });
    };
    rateLimit('pullthrough_upstream_ratelimit_limit', 'The latest ratelimit-limit the upstream sent.', (r) => r.limit);
    rateLimit('pullthrough_upstream_ratelimit_remaining', 'The latest ratelimit-remaining the upstream sent.', (r) => r.remaining);
  }

  private storageMetrics(registers: Registry[]): void {
    const { sources } = this.options;
    new Gauge({
      name: 'pullthrough_storage_used_bytes', help: 'Bytes of all cached blobs (measured in the background after start, or on S3 read from the recorded total, then kept up to date).',
      registers,
      collect() {
        const used = sources.storage().usedBytes;
        if (used === undefined) this.reset();
        else this.set(used);
      },
    });
    new Gauge({
      name: 'pullthrough_storage_max_bytes', help: 'storage.maxSize in bytes; absent without one.', registers,
      collect() {
        const max = sources.storage().maxBytes;
        if (max === undefined) this.reset();
        else this.set(max);
      },
    });
  }

  private evictionMetrics(registers: Registry[]): EvictionEvents {
    const runs = new Counter({ name: 'pullthrough_eviction_runs_total', help: 'Eviction runs.', registers });
    const bytes = new Counter({ name: 'pullthrough_evicted_bytes_total', help: 'Bytes of blobs removed by eviction.', registers });
    const blobs = new Counter({ name: 'pullthrough_evicted_blobs_total', help: 'Blobs removed by eviction.', registers });
    for (const counter of [runs, bytes, blobs]) counter.inc(0);
    return {
      evicted: (run) => {
        runs.inc();
        bytes.inc(run.freedBytes);
        blobs.inc(run.removedBlobs);
      },
    };
  }

  private redisMetrics(registers: Registry[]): void {
    const { sources } = this.options;
    new Gauge({
      name: 'pullthrough_redis_connected', help: '1 while the Redis connection is up.', registers,
      collect() {
        this.set(sources.redis()?.connected ? 1 : 0);
      },
    });
    // The connection counts its failures itself (it is built before the metrics); read at each scrape.
    new Counter({
      name: 'pullthrough_redis_commands_failed_total', help: 'Redis commands that failed or timed out.', registers,
      collect() {
        this.reset();
        this.inc(sources.redis()?.failedCommands ?? 0);
      },
    });
  }
}
