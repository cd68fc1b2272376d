/**
 * src/admin/promClient.ts loads prom-client's metric classes without its
 * index (push gateway, cluster, the default metrics with OpenTelemetry).
 * Held to the installed prom-client: the same classes the index exports,
 * and the process metrics arriving when asked for; a prom-client upgrade
 * that moves a module fails here first.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as slim from '../../src/admin/promClient.js';

const promIndex = createRequire(import.meta.url)('prom-client') as typeof import('prom-client');

test('every class is the one prom-client\'s index exports', () => {
  assert.equal(slim.Registry, promIndex.Registry);
  assert.equal(slim.Counter, promIndex.Counter);
  assert.equal(slim.Gauge, promIndex.Gauge);
  assert.equal(slim.Histogram, promIndex.Histogram);
});

test('collectDefaultMetrics puts the process metrics, prefixed, in the registry given and no other', async () => {
  const registry = new slim.Registry();
  const other = new slim.Registry();
  slim.collectDefaultMetrics({ register: registry, prefix: 'probe_' });
  const text = await registry.metrics();
  for (const series of ['probe_process_cpu_seconds_total', 'probe_nodejs_heap_size_total_bytes', 'probe_nodejs_eventloop_lag_seconds']) {
    assert.match(text, new RegExp(`^${series} `, 'm'));
  }
  assert.equal((await other.metrics()).trim(), '');
  assert.equal((await promIndex.register.metrics()).trim(), '', 'nothing in prom-client\'s global registry');
});
