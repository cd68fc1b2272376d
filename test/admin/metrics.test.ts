/**
 * `/metrics` after real pulls: skopeo pulls through pullthrough from a real
 * `docker-registry`, once cold and once warm, and the counters equal what
 * the pulls did, request by request and byte by byte. The rate-limit
 * gauges, 429s and upstream health come from a fake upstream, which is what
 * can send those headers and faults on demand.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { FakeClock } from '../fixtures/clock.js';
import { startFakeUpstream, tooManyRequests, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { scrape, type Scrape } from '../fixtures/metrics.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { tempDir, toolSkip, until } from '../fixtures/tools.js';
import { ask, startBearerUpstream, type BearerUpstream } from '../fixtures/upstreamAuth.js';

const skip = toolSkip('docker-registry', 'skopeo');
const UPSTREAM = 'registry.test';

let registry: RunningRegistry | undefined;
let images: SeededImage[] = [];
const stops: (() => Promise<void>)[] = [];

before(async () => {
  if (skip) return;
  registry = await startRegistry();
  stops.push(() => registry!.stop());
  images = await seedImages(registry.host, { layerSize: 96 * 1024, kinds: ['oci-image', 'oci-index'] });
});

after(async () => {
  for (const stop of stops.reverse()) await stop();
});

async function proxyOf(options: Parameters<typeof startProxy>[0]): Promise<RunningProxy> {
  const proxy = await startProxy(options);
  stops.push(() => proxy.stop());
  return proxy;
}

/** A fake upstream named `name`, and a proxy in front of it (with extra proxy options). */
async function behindFake(name: string, options: Partial<Parameters<typeof startProxy>[0]> = {}): Promise<{ fake: FakeUpstream; proxy: RunningProxy }> {
  const fake = await startFakeUpstream();
  stops.push(() => fake.stop());
  const proxy = await proxyOf({ ...options, upstreams: [{ name, url: fake.url }] });
  return { fake, proxy };
}

/** What one skopeo pull received: every file it wrote but its `version` marker, by kind. */
async function pulledBytes(dir: string): Promise<{ manifests: number; blobs: number; manifestCount: number; blobCount: number }> {
  const seen = { manifests: 0, blobs: 0, manifestCount: 0, blobCount: 0 };
  for (const name of await readdir(dir)) {
    const size = (await stat(join(dir, name))).size;
    if (name === 'manifest.json' || name.endsWith('.manifest.json')) {
      seen.manifests += size;
      seen.manifestCount++;
    } else if (/^[a-f0-9]{64}$/.test(name)) {
      seen.blobs += size;
      seen.blobCount++;
    }
  }
  return seen;
}

/** Scrapes until `requests` GETs have been counted (a few event-loop turns at most), or 10 s have passed. */
async function settledScrape(proxy: RunningProxy, requests: number): Promise<Scrape> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const m = await scrape(proxy.adminUrl);
    if (m.value('pullthrough_requests_total', { method: 'GET' }) >= requests || Date.now() > deadline) return m;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('after a cold and a warm skopeo pull, hits, misses and bytes served and fetched are what the pulls did', { skip }, async () => {
  const proxy = await proxyOf({
    upstreams: [{ name: UPSTREAM, url: registry!.url }],
    storage: { maxSize: '1GiB', evictionInterval: '1h' },
  });
  const pulled = { manifests: 0, blobs: 0, manifestCount: 0, blobCount: 0 };
  for (const round of ['cold', 'warm']) {
    for (const image of images) {
      const dir = await tempDir(`metrics-${round}`);
      await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, dir);
      const bytes = await pulledBytes(dir);
      if (round === 'cold') {
        pulled.manifests += bytes.manifests;
        pulled.blobs += bytes.blobs;
        pulled.manifestCount += bytes.manifestCount;
        pulled.blobCount += bytes.blobCount;
      }
    }
  }
  // Every image's blobs are its own (random layers): the cold round fetches each once, the warm one none.
  const blobCount = images.reduce((n, i) => n + i.blobDigests.length, 0);
  const manifestCount = images.reduce((n, i) => n + 1 + i.childDigests.length, 0);
  assert.equal(pulled.blobCount, blobCount);
  assert.equal(pulled.manifestCount, manifestCount);

  // skopeo may exit on its last byte a moment before our side of that response has finished (and been counted).
  const m = await settledScrape(proxy, 2 * (blobCount + manifestCount));
  const requests = (kind: string, outcome: string): number => m.value('pullthrough_requests_total', { upstream: UPSTREAM, kind, outcome, method: 'GET' });
  assert.equal(requests('manifest', 'miss'), manifestCount, 'cold: every manifest was a miss');
  assert.equal(requests('manifest', 'hit'), manifestCount, 'warm: every manifest was a hit');
  assert.equal(requests('blob', 'miss'), blobCount, 'cold: every blob was a miss');
  assert.equal(requests('blob', 'hit'), blobCount, 'warm: every blob was a hit');
  for (const outcome of ['coalesced', 'stale', 'error']) {
    assert.equal(m.value('pullthrough_requests_total', { upstream: UPSTREAM, outcome }), 0, outcome);
  }

  const served = (kind: string): number | undefined => m.sampleValue('pullthrough_served_bytes_total', { upstream: UPSTREAM, kind });
  const fetched = (kind: string): number | undefined => m.sampleValue('pullthrough_upstream_fetched_bytes_total', { upstream: UPSTREAM, kind });
  assert.equal(served('manifest'), 2 * pulled.manifests, 'both pulls received every manifest byte from us');
  assert.equal(served('blob'), 2 * pulled.blobs);
  assert.equal(fetched('manifest'), pulled.manifests, 'each manifest came from the upstream once');
  assert.equal(fetched('blob'), pulled.blobs, 'each blob came from the upstream once');

  // Each cold blob was one fill; the storage size is what they committed and the manifest bodies stored beside them
  // in blobs/ (what an eviction run measures), against maxSize.
  assert.equal(m.count('pullthrough_fill_duration_seconds', { upstream: UPSTREAM, result: 'ok' }), blobCount);
  assert.equal(m.count('pullthrough_fill_duration_seconds', { upstream: UPSTREAM, result: 'failed' }), 0);
  assert.equal(m.count('pullthrough_fill_first_byte_seconds', { upstream: UPSTREAM }), blobCount);
  assert.equal(m.sampleValue('pullthrough_fills_in_progress', { upstream: UPSTREAM }), 0);
  assert.equal(m.sampleValue('pullthrough_storage_used_bytes'), pulled.blobs + pulled.manifests);
  assert.equal(m.sampleValue('pullthrough_storage_max_bytes'), 1024 ** 3);
  assert.equal(m.count('pullthrough_request_duration_seconds', { upstream: UPSTREAM, kind: 'blob' }), 2 * blobCount);

  // Upstream requests by method and status: the manifest and blob GETs of the cold round, and HEADs of the tags.
  assert.equal(m.value('pullthrough_upstream_requests_total', { upstream: UPSTREAM, method: 'GET', status: '200' }), manifestCount + blobCount);
  assert.equal(m.value('pullthrough_upstream_requests_total', { upstream: UPSTREAM, method: 'HEAD', status: '200' }), 2 * images.length,
    'one tag HEAD per pull (tagMaxAge 0s)');
  assert.equal(m.sampleValue('pullthrough_upstream_up', { upstream: UPSTREAM }), 1);
  assert.ok((m.sampleValue('pullthrough_upstream_last_success_timestamp_seconds', { upstream: UPSTREAM }) ?? 0) * 1000 > Date.now() - 600_000);
  assert.equal(m.sampleValue('pullthrough_upstream_last_failure_timestamp_seconds', { upstream: UPSTREAM }), undefined);
});

test('every series starts with pullthrough_, and the process metrics are there', { skip }, async () => {
  const proxy = await proxyOf({ upstreams: [{ name: UPSTREAM, url: registry!.url }] });
  const m = await scrape(proxy.adminUrl);
  assert.ok(m.families.length > 20);
  assert.deepEqual(m.families.map((f) => f.name).filter((name) => !name.startsWith('pullthrough_')), []);
  for (const name of ['pullthrough_process_cpu_seconds_total', 'pullthrough_process_resident_memory_bytes',
    'pullthrough_nodejs_eventloop_lag_seconds', 'pullthrough_nodejs_gc_duration_seconds', 'pullthrough_build_info']) {
    assert.ok(m.family(name), `${name} is exported`);
  }
  assert.equal(m.family('pullthrough_redis_connected'), undefined, 'no Redis series without Redis');
});

test('rate-limit gauges are what the upstream sent; 429s, upstream statuses and health are counted', async () => {
  const name = 'limits.test';
  const { fake, proxy } = await behindFake(name);
  fake.addImage('rl/app', 'v1', makeImage({ layerSizes: [2048] }));
  fake.addImage('rl/app', 'v2', makeImage({ layerSizes: [2048] }));
  fake.setRateLimit({ limit: 100, remaining: 42, window: 21600 });

  const first = await ask(proxy, '/v2/rl/app/manifests/v1');
  assert.equal(first.status, 200);
  let m = await scrape(proxy.adminUrl);
  assert.equal(m.sampleValue('pullthrough_upstream_ratelimit_limit', { upstream: name }), 100);
  assert.equal(m.sampleValue('pullthrough_upstream_ratelimit_remaining', { upstream: name }), 41, 'the one manifest GET spent one');
  assert.equal(m.sampleValue('pullthrough_upstream_rate_limited_total', { upstream: name }), 0);

  fake.addFault({ path: /\/manifests\//, method: 'GET' }, tooManyRequests({ retryAfter: 30, limit: 100 }));
  const limited = await ask(proxy, '/v2/rl/app/manifests/v2');
  assert.equal(limited.status, 429);
  m = await scrape(proxy.adminUrl);
  assert.equal(m.sampleValue('pullthrough_upstream_rate_limited_total', { upstream: name }), 1);
  assert.equal(m.sampleValue('pullthrough_upstream_requests_total', { upstream: name, method: 'GET', status: '429' }), 1);
  assert.equal(m.sampleValue('pullthrough_upstream_ratelimit_remaining', { upstream: name }), 0, 'the 429 said 0 remain');
  assert.equal(m.sampleValue('pullthrough_upstream_up', { upstream: name }), 1, 'a 429 is a back-off of its own, not a sign of a sick upstream');
  assert.equal(m.sampleValue('pullthrough_requests_total', { upstream: name, kind: 'manifest', method: 'GET', outcome: 'error' }), 1);
});

test('upstream health: 5xx answers in a row take the upstream down, the probe brings it back; each change is one log line', async () => {
  const name = 'health.test';
  const clock = new FakeClock();
  const { fake, proxy } = await behindFake(name, { clock, upstreamDefaults: { health: { failures: 2, backoff: '5s' } } });
  fake.addImage('h/app', 'v1', makeImage({ layerSizes: [1024] }));
  const fault = fake.addFault({ path: /\/manifests\// }, { status: { code: 503 } });
  assert.equal((await ask(proxy, '/v2/h/app/manifests/v1')).status, 503);
  let m = await scrape(proxy.adminUrl);
  assert.equal(m.sampleValue('pullthrough_upstream_up', { upstream: name }), 1, 'one 5xx is not enough to be down');
  assert.equal(m.sampleValue('pullthrough_upstream_requests_total', { upstream: name, method: 'HEAD', status: '503' }), 1);
  assert.equal((await ask(proxy, '/v2/h/app/manifests/v1')).status, 503);
  m = await scrape(proxy.adminUrl);
  assert.equal(m.sampleValue('pullthrough_upstream_up', { upstream: name }), 0, 'the second in a row is');
  assert.ok(m.sampleValue('pullthrough_upstream_last_failure_timestamp_seconds', { upstream: name }) !== undefined);
  fault.remove();
  await clock.advance(5000);
  await until('the probe to end the down state', async () => (await scrape(proxy.adminUrl)).sampleValue('pullthrough_upstream_up', { upstream: name }) === 1);
  assert.equal((await ask(proxy, '/v2/h/app/manifests/v1')).status, 200);
  const transitions = proxy.logs().filter((l) => l['upstream'] === name && /^upstream (is down|answers again)/.test(String(l['msg'])));
  assert.deepEqual(transitions.map((l) => String(l['msg']).split(':')[0]), ['upstream is down', 'upstream answers again']);
  assert.match(String(transitions[0]!['reason']), /answered 503/);
});

test('token fetches are counted per upstream', async () => {
  const bearer: BearerUpstream = await startBearerUpstream();
  stops.push(() => bearer.stop());
  const name = 'tokens.test';
  const proxy = await proxyOf({ upstreams: [{ name, url: bearer.fake.url }] });
  bearer.fake.addImage('t/one', 'v1', makeImage({ layerSizes: [1024] }));
  bearer.fake.addImage('t/two', 'v1', makeImage({ layerSizes: [1024] }));
  assert.equal((await ask(proxy, '/v2/t/one/manifests/v1')).status, 200);
  assert.equal((await ask(proxy, '/v2/t/two/manifests/v1')).status, 200);
  const m = await scrape(proxy.adminUrl);
  assert.equal(m.sampleValue('pullthrough_upstream_token_fetches_total', { upstream: name, result: 'ok' }), bearer.tokens.requests().length,
    'one per token the token service issued');
  assert.ok(bearer.tokens.requests().length >= 2, 'one token per repository scope');
  assert.equal(m.sampleValue('pullthrough_upstream_token_fetches_total', { upstream: name, result: 'failed' }), 0);
});

test('eviction runs, bytes evicted and blobs removed are counted', async () => {
  const { fake, proxy } = await behindFake('evict.test', {
    storage: { maxSize: 10_000, highWatermark: 0.9, lowWatermark: 0.5, evictionGrace: '0s', evictionInterval: '1h', usageFlushInterval: '1h' },
  });
  const blobs = [Buffer.alloc(6000, 1), Buffer.alloc(6000, 2)];
  const digests = blobs.map((b) => fake.addBlob(b));
  for (const digest of digests) {
    const res = await request(`${proxy.url}/v2/e/app/blobs/${digest}`);
    assert.equal(res.statusCode, 200);
    await res.body.arrayBuffer();
  }
  await proxy.mirror.evictor.idle();
  proxy.mirror.evictor.trigger();
  await proxy.mirror.evictor.idle();
  const runs = proxy.logs().filter((l) => l['msg'] === 'evicted');
  const freed = runs.reduce((n, l) => n + Number(l['freedBytes']), 0);
  const removed = runs.reduce((n, l) => n + Number(l['removedBlobs']), 0);
  assert.ok(removed >= 1, 'a blob over the cap went');
  const m = await scrape(proxy.adminUrl);
  assert.ok((m.sampleValue('pullthrough_eviction_runs_total') ?? 0) >= 2, 'the run at start and ours');
  assert.equal(m.sampleValue('pullthrough_evicted_bytes_total'), freed);
  assert.equal(m.sampleValue('pullthrough_evicted_blobs_total'), removed);
  assert.equal(m.sampleValue('pullthrough_storage_used_bytes'), 12_000 - freed);
});

test('admin.listen: the operator endpoints answer there, and 404 on the registry port', async () => {
  const { proxy } = await behindFake('admin.test', { admin: { listen: { host: '127.0.0.1', port: 0 } } });
  assert.notEqual(proxy.adminUrl, proxy.url);
  const m = await scrape(proxy.adminUrl);
  assert.ok(m.family('pullthrough_requests_total'));
  for (const path of ['/livez', '/readyz', '/status.json', '/']) {
    const res = await request(`${proxy.adminUrl}${path}`);
    await res.body.text();
    assert.equal(res.statusCode, 200, `${path} on the admin listener`);
  }
  for (const path of ['/metrics', '/livez', '/readyz', '/status.json', '/']) {
    const res = await request(`${proxy.url}${path}`);
    const body = await res.body.text();
    assert.equal(res.statusCode, 404, `${path} on the registry port`);
    assert.equal((JSON.parse(body) as { errors: { code: string }[] }).errors[0]!.code, 'NAME_UNKNOWN');
  }
  const registryApi = await request(`${proxy.url}/v2/`);
  await registryApi.body.text();
  assert.equal(registryApi.statusCode, 200, 'the registry API stays where it was');
});
