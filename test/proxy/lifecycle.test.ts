import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { request } from '../../src/upstream/undici.js';
import { FakeClock } from '../fixtures/clock.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';

let fake: FakeUpstream;
const proxies: RunningProxy[] = [];

before(async () => {
  fake = await startFakeUpstream();
});

after(async () => {
  for (const p of proxies) await p.stop();
  await fake?.stop();
});

async function proxyWith(upstream: Record<string, unknown>, root?: string, clock?: FakeClock): Promise<RunningProxy> {
  const p = await startProxy({ upstreams: [{ name: 'fake.test', url: fake.url, ...upstream }], ...(root ? { root } : {}), clock });
  proxies.push(p);
  return p;
}

async function get(url: string, method: 'GET' | 'HEAD' = 'GET'): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  const res = await request(url, { method });
  return { status: res.statusCode, body: await res.body.text(), headers: res.headers };
}

test('an upstream 404 for a tag is remembered for notFoundTtl: a retry storm costs one upstream request', async () => {
  const proxy = await proxyWith({ notFoundTtl: '1m' });
  fake.clearRequests();
  for (let i = 0; i < 5; i++) {
    const res = await get(`${proxy.url}/v2/neg/app/manifests/missing`);
    assert.equal(res.status, 404);
    assert.equal(JSON.parse(res.body).errors[0].code, 'MANIFEST_UNKNOWN');
  }
  assert.equal(fake.requests({ path: '/v2/neg/app/manifests/missing' }).length, 1);
});

test('with notFoundTtl 0 every miss is asked again', async () => {
  const proxy = await proxyWith({ notFoundTtl: '0s' });
  fake.clearRequests();
  for (let i = 0; i < 3; i++) await get(`${proxy.url}/v2/neg/app/manifests/missing`);
  assert.equal(fake.requests({ path: '/v2/neg/app/manifests/missing' }).length, 3);
});

test('offline: cached content is served, a miss says it is not cached and the mirror is offline, the upstream sees nothing', async () => {
  const image = makeImage({ layerSizes: [10_000] });
  fake.addImage('off/app', 'v1', image);
  const online = await proxyWith({});
  for (const path of ['manifests/v1', `manifests/${image.digest}`, `blobs/${image.config.digest}`, `blobs/${image.layers[0]!.digest}`]) {
    assert.equal((await get(`${online.url}/v2/off/app/${path}`)).status, 200, path);
  }
  await online.stop();

  const offline = await proxyWith({ offline: true }, online.root);
  fake.clearRequests();
  const tag = await get(`${offline.url}/v2/off/app/manifests/v1`);
  assert.equal(tag.status, 200);
  assert.equal(tag.headers['docker-content-digest'], image.digest);
  assert.equal((await get(`${offline.url}/v2/off/app/blobs/${image.layers[0]!.digest}`)).status, 200);
  const miss = await get(`${offline.url}/v2/off/app/manifests/v2`);
  assert.equal(miss.status, 503);
  const error = JSON.parse(miss.body).errors[0];
  assert.equal(error.code, 'UNAVAILABLE');
  assert.match(error.message, /not cached.*offline/);
  const blobMiss = await get(`${offline.url}/v2/off/app/blobs/sha256:${'1'.repeat(64)}`);
  assert.equal(blobMiss.status, 503);
  assert.deepEqual(fake.requests(), [], 'an offline mirror never contacts its upstream');
});

// maxStale is measured on the mirror's clock: a fake one, moved past the window instead of sleeping.
test('maxStale bounds how old a tag served stale may be', async () => {
  const image = makeImage({ layerSizes: [1000] });
  fake.addImage('stale/app', 'v1', image);
  const clock = new FakeClock(Date.now());
  const proxy = await proxyWith({ maxStale: '2s' }, undefined, clock);
  assert.equal((await get(`${proxy.url}/v2/stale/app/manifests/v1`)).status, 200);
  const fault = fake.addFault({ path: '/v2/stale/app/manifests/v1' }, { status: { code: 500 } });
  try {
    const young = await get(`${proxy.url}/v2/stale/app/manifests/v1`);
    assert.equal(young.status, 200, 'a record younger than maxStale is served stale');
    assert.equal(young.headers['x-pullthrough-cache'], 'stale');
    await clock.advance(1_999);
    const older = await get(`${proxy.url}/v2/stale/app/manifests/v1`);
    assert.equal(older.status, 200, 'still within maxStale');
    assert.equal(older.headers['x-pullthrough-cache'], 'stale');
    await clock.advance(2);
    const old = await get(`${proxy.url}/v2/stale/app/manifests/v1`);
    assert.equal(old.status, 503, 'an older record is not');
    assert.equal(JSON.parse(old.body).errors[0].code, 'UNAVAILABLE');
  } finally {
    fault.remove();
  }
});
