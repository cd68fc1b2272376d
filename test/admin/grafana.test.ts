/**
 * deploy/grafana-dashboard.json: importable (a datasource input), with the
 * panels the README promises, and every series its queries name is one
 * pullthrough exports: checked against a live scrape, so renaming a metric
 * without the dashboard fails here.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startFakeUpstream } from '../fixtures/fakeUpstream.js';
import { scrape } from '../fixtures/metrics.js';
import { startProxy } from '../fixtures/proxy.js';
import { findRedis } from '../fixtures/redis.js';

interface Panel {
  readonly title: string;
  readonly type: string;
  readonly targets?: readonly { readonly expr: string }[];
}
interface Dashboard {
  readonly __inputs: readonly { readonly name: string; readonly pluginId: string }[];
  readonly panels: readonly Panel[];
}

const dashboard = JSON.parse(readFileSync(new URL('../../../deploy/grafana-dashboard.json', import.meta.url), 'utf8')) as Dashboard;
const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

test('the dashboard has the promised panels and asks for its Prometheus at import', () => {
  assert.deepEqual(dashboard.__inputs.map((i) => [i.name, i.pluginId]), [['DS_PROMETHEUS', 'prometheus']]);
  const titles = dashboard.panels.map((p) => p.title.toLowerCase()).join('\n');
  for (const topic of ['hit ratio', 'egress saved', 'upstream up', 'rate limit', 'fill', 'latency', 'disk']) {
    assert.ok(titles.includes(topic), `a panel about ${topic}`);
  }
});

test('every series the dashboard queries is one pullthrough exports', async () => {
  const redis = await findRedis();
  const fake = await startFakeUpstream();
  stops.push(() => fake.stop());
  // With Redis, so that its series exist too.
  const proxy = await startProxy({
    upstreams: [{ name: 'grafana.test', url: fake.url }],
    ...(redis.url ? { redis: { url: redis.url, keyPrefix: `grafana-${process.pid}:` } } : {}),
  });
  stops.push(() => proxy.stop());
  const m = await scrape(proxy.adminUrl);
  const exported = new Set(m.families.map((f) => f.name));
  const histograms = new Set(m.families.filter((f) => f.type === 'HISTOGRAM').map((f) => f.name));
  const queried = new Set(dashboard.panels.flatMap((p) => p.targets ?? []).flatMap((t) => t.expr.match(/\bpullthrough_[a-z0-9_]+/g) ?? []));
  assert.ok(queried.size >= 15, `${queried.size} series queried`);
  const unknown = [...queried].filter((name) => {
    const family = name.replace(/_(bucket|count|sum)$/, '');
    return !(exported.has(name) || (family !== name && histograms.has(family)));
  });
  if (!redis.url) unknown.splice(0, unknown.length, ...unknown.filter((n) => !n.startsWith('pullthrough_redis_')));
  assert.deepEqual(unknown, []);
});
