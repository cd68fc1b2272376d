import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { request } from '../../src/upstream/undici.js';
import { FakeClock } from '../fixtures/clock.js';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { pushImage } from '../fixtures/seed.js';
import { toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');
let upstream: RunningRegistry;
const proxies: RunningProxy[] = [];

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
});

after(async () => {
  for (const p of proxies) await p.stop();
  await upstream?.stop();
});

async function push(repository: string, image: BuiltImage): Promise<void> {
  await pushImage(upstream.host, repository, 'v1', image);
}

async function served(proxy: RunningProxy, repository: string): Promise<string> {
  const res = await request(`${proxy.url}/v2/${repository}/manifests/v1`);
  await res.body.dump();
  assert.equal(res.statusCode, 200);
  return String(res.headers['docker-content-digest']);
}

function manifestRequests(entries: { method: string; path: string }[], repository: string): string[] {
  return entries.filter((e) => e.path.startsWith(`/v2/${repository}/manifests/`)).map((e) => e.method);
}

/** Points `repository:v1` at an image already pushed under `v2`: one quick PUT, so the move is not slower than tagMaxAge. */
async function moveTag(repository: string, image: BuiltImage): Promise<void> {
  const res = await request(`${upstream.url}/v2/${repository}/manifests/v1`, {
    method: 'PUT', body: image.manifest, headers: { 'content-type': image.mediaType },
  });
  await res.body.dump();
  assert.equal(res.statusCode, 201);
}

/**
 * On a fake clock: tagMaxAge is measured on the mirror's clock, so the test
 * moves it past the window instead of sleeping, and how long the requests
 * themselves take no longer matters. The two tests below stay on the real
 * clock: they wait for nothing, and the last one is the end-to-end check with
 * a stopped upstream (whose connection retries sleep on the clock).
 */
test('the tag moves upstream: within tagMaxAge the old digest, after it the new one, an unchanged tag costs one HEAD', { skip }, async () => {
  const [first, second] = [makeImage({ layerSizes: [1000] }), makeImage({ layerSizes: [1000] })];
  await push('fresh/slow', second);
  await pushImage(upstream.host, 'fresh/slow', 'v2', second);
  await push('fresh/slow', first);
  const clock = new FakeClock(Date.now());
  const proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url, tagMaxAge: '3s' }], clock });
  proxies.push(proxy);
  assert.equal(await served(proxy, 'fresh/slow'), first.digest);
  await moveTag('fresh/slow', second);
  await upstream.clearRequests();
  assert.equal(await served(proxy, 'fresh/slow'), first.digest, 'a fresh record answers without asking');
  await clock.advance(2_999);
  assert.equal(await served(proxy, 'fresh/slow'), first.digest, 'still fresh 1 ms before tagMaxAge');
  assert.deepEqual(manifestRequests(await upstream.settledRequests(), 'fresh/slow'), []);
  await clock.advance(1);
  assert.equal(await served(proxy, 'fresh/slow'), second.digest, 'after tagMaxAge the upstream is asked');
  await clock.advance(3_000);
  await upstream.clearRequests();
  assert.equal(await served(proxy, 'fresh/slow'), second.digest);
  assert.deepEqual(manifestRequests(await upstream.settledRequests(), 'fresh/slow'), ['HEAD'], 'revalidating an unchanged tag: one HEAD, no GET');
});

test('tagMaxAge 0: the new digest is served at once', { skip }, async () => {
  const [first, second] = [makeImage({ layerSizes: [1000] }), makeImage({ layerSizes: [1000] })];
  await push('fresh/now', first);
  const proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url, tagMaxAge: '0s' }] });
  proxies.push(proxy);
  assert.equal(await served(proxy, 'fresh/now'), first.digest);
  await push('fresh/now', second);
  assert.equal(await served(proxy, 'fresh/now'), second.digest);
});

test('the upstream stopped: the recorded tag is served stale, with the header', { skip }, async () => {
  const image = makeImage({ layerSizes: [1000] });
  await push('fresh/down', image);
  const proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url, tagMaxAge: '0s' }] });
  proxies.push(proxy);
  assert.equal(await served(proxy, 'fresh/down'), image.digest);
  await upstream.stop();
  try {
    const res = await request(`${proxy.url}/v2/fresh/down/manifests/v1`);
    await res.body.dump();
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['x-pullthrough-cache'], 'stale');
    assert.match(String(res.headers['warning']), /^110 /);
    assert.ok(proxy.logs().some((l) => String(l['msg']).includes('stale')), 'the log records it');
  } finally {
    await upstream.restart();
  }
});
