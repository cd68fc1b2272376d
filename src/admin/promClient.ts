/**
 * The parts of prom-client the mirror uses, loaded from prom-client's own
 * modules rather than its index, as `upstream/undici.ts` does for undici.
 * The index also loads the push gateway client, the cluster aggregator and
 * the default process metrics with @opentelemetry/api (about 70 modules,
 * ten times what the metric classes take to load) in every process that
 * builds a mirror, although only a listener serving `/metrics` collects
 * process metrics: those are loaded when it asks (`collectDefaultMetrics`).
 * test/admin/promClient.test.ts checks that these are the index's very
 * objects. Import prom-client through this module only.
 */
import { createRequire } from 'node:module';
import type * as Prometheus from 'prom-client';

const load = createRequire(import.meta.url);

export const Registry: typeof Prometheus.Registry = load('prom-client/lib/registry.js');
export type Registry = Prometheus.Registry;
export const Counter: typeof Prometheus.Counter = load('prom-client/lib/counter.js');
export type Counter<T extends string = string> = Prometheus.Counter<T>;
export const Gauge: typeof Prometheus.Gauge = load('prom-client/lib/gauge.js');
export type Gauge<T extends string = string> = Prometheus.Gauge<T>;
export const Histogram: typeof Prometheus.Histogram = load('prom-client/lib/histogram.js');
export type Histogram<T extends string = string> = Prometheus.Histogram<T>;
export type { MetricValue } from 'prom-client';
/** A counter's and a histogram's series of one set of label values. */
export type CounterChild = Prometheus.Counter.Internal;
export type HistogramChild<T extends string = string> = Prometheus.Histogram.Internal<T>;

/** prom-client's `collectDefaultMetrics`, loaded at this call (it brings @opentelemetry/api). */
export function collectDefaultMetrics(config: Prometheus.DefaultMetricsCollectorConfiguration<Prometheus.RegistryContentType>): void {
  (load('prom-client/lib/defaultMetrics.js') as typeof Prometheus.collectDefaultMetrics)(config);
}
