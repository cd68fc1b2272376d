/**
 * `/livez` and `/readyz` against real failures: storage that cannot be
 * written (its uploads directory, through which every write goes, replaced
 * by a file: root ignores permission bits, not that), a real Redis stopped,
 * and the upstream stopped, which must never make the mirror unready.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { FakeClock } from '../fixtures/clock.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { scrape } from '../fixtures/metrics.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startPrivateRedis } from '../fixtures/redis.js';
import { toolSkip } from '../fixtures/tools.js';
import { ask } from '../fixtures/upstreamAuth.js';

const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

interface ReadyAnswer {
  status: number;
  body: { status: string; failing: string[]; checks: Record<string, { ok: boolean; error?: string }> };
}

async function readyz(proxy: RunningProxy): Promise<ReadyAnswer> {
  const res = await request(`${proxy.adminUrl}/readyz`);
  return { status: res.statusCode, body: (await res.body.json()) as ReadyAnswer['body'] };
}

async function upstream(): Promise<FakeUpstream> {
  const fake = await startFakeUpstream();
  stops.push(() => fake.stop());
  fake.addImage('p/app', 'v1', makeImage({ layerSizes: [1024] }));
  return fake;
}

async function proxyOf(options: Parameters<typeof startProxy>[0]): Promise<RunningProxy> {
  const proxy = await startProxy(options);
  stops.push(() => proxy.stop());
  return proxy;
}

test('/livez answers 200 while the process can answer', async () => {
  const proxy = await proxyOf({ upstreams: [{ name: 'live.test', url: (await upstream()).url }] });
  const res = await request(`${proxy.adminUrl}/livez`);
  assert.equal(res.statusCode, 200);
  assert.deepEqual(await res.body.json(), { status: 'live' });
});

test('/readyz: storage that cannot be written is 503 naming storage; restored, 200 again', async () => {
  const clock = new FakeClock();
  const proxy = await proxyOf({ upstreams: [{ name: 'storage.test', url: (await upstream()).url }], clock });
  const ready = await readyz(proxy);
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  assert.deepEqual(ready.body.failing, []);
  assert.deepEqual(ready.body.checks['storage'], { ok: true });

  const uploads = join(proxy.root, '_uploads');
  await rename(uploads, `${uploads}.away`);
  await writeFile(uploads, 'not a directory');
  try {
    const cached = await readyz(proxy);
    assert.equal(cached.status, 200, 'the last verdict is reused for a moment');
    clock.advance(2000);
    const broken = await readyz(proxy);
    assert.equal(broken.status, 503);
    assert.equal(broken.body.status, 'unready');
    assert.deepEqual(broken.body.failing, ['storage']);
    assert.match(String(broken.body.checks['storage']!.error), /cannot write/);
  } finally {
    await rm(uploads);
    await rename(`${uploads}.away`, uploads);
  }
  clock.advance(2000);
  const restored = await readyz(proxy);
  assert.equal(restored.status, 200, JSON.stringify(restored.body));
});

test('/readyz: the upstream stopped is still 200, and cached content still pulls', async () => {
  const fake = await upstream();
  const proxy = await proxyOf({ upstreams: [{ name: 'gone.test', url: fake.url }] });
  assert.equal((await ask(proxy, '/v2/p/app/manifests/v1')).status, 200);
  await fake.stop();
  const ready = await readyz(proxy);
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  assert.deepEqual(Object.keys(ready.body.checks), ['storage'], 'upstreams are not a readiness check');
  const stale = await ask(proxy, '/v2/p/app/manifests/v1');
  assert.equal(stale.status, 200, 'served from the cache');
});

test('/readyz: Redis stopped is 503 naming Redis; the Redis metrics say so', { skip: toolSkip('redis-server') }, async () => {
  const redis = await startPrivateRedis();
  stops.push(() => redis.stop());
  const proxy = await proxyOf({
    upstreams: [{ name: 'redis.test', url: (await upstream()).url }],
    redis: { url: redis.url, keyPrefix: `probes-${process.pid}:` },
  });
  // Start-up does not wait for Redis; a first command does (one command timeout at most).
  assert.equal((await ask(proxy, '/v2/p/app/manifests/v1')).status, 200);
  const up = await readyz(proxy);
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.deepEqual(up.body.checks['redis'], { ok: true });
  assert.equal((await scrape(proxy.adminUrl)).sampleValue('pullthrough_redis_connected'), 1);

  await redis.stop();
  // The client learns of the closed connection from its socket: wait for that event (bounded), not for a time.
  let down = await readyz(proxy);
  for (let i = 0; down.status === 200 && i < 100; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    down = await readyz(proxy);
  }
  assert.equal(down.status, 503);
  assert.deepEqual(down.body.failing, ['redis']);
  assert.deepEqual(down.body.checks['storage'], { ok: true });
  // A pull still works (Redis trouble never fails a pull), and its failed commands are counted.
  assert.equal((await ask(proxy, '/v2/p/app/manifests/v1')).status, 200);
  const m = await scrape(proxy.adminUrl);
  assert.equal(m.sampleValue('pullthrough_redis_connected'), 0);
  assert.ok((m.sampleValue('pullthrough_redis_commands_failed_total') ?? 0) > 0);
});

test('the readiness probe leaves no file behind', async () => {
  const proxy = await proxyOf({ upstreams: [{ name: 'clean.test', url: (await upstream()).url }] });
  assert.equal((await readyz(proxy)).status, 200);
  assert.deepEqual(await readdir(join(proxy.root, '_uploads')), []);
});
