/**
 * `/status.json`, the document the status page renders (README "Operating
 * it" documents it), field by field after a few requests; and the page
 * itself: one HTML document with no external assets, whose policy lets only
 * its own style and script run.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PACKAGE_VERSION } from '../../src/config/version.js';
import type { StatusDocument } from '../../src/admin/status.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { ask } from '../fixtures/upstreamAuth.js';

const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

async function status(proxy: RunningProxy): Promise<StatusDocument> {
  const res = await proxy.app.inject({ url: '/status.json' });
  assert.equal(res.statusCode, 200);
  assert.match(String(res.headers['content-type']), /^application\/json/);
  assert.equal(res.headers['cache-control'], 'no-store');
  return res.json<StatusDocument>();
}

test('/status.json: version, uptime, requests, bytes, upstreams, most pulled and last errors', async () => {
  const fake: FakeUpstream = await startFakeUpstream();
  stops.push(() => fake.stop());
  const image = makeImage({ layerSizes: [1024] });
  fake.addImage('s/app', 'v1', image);
  fake.setRateLimit({ limit: 200, remaining: 150, window: 3600 });
  const proxy = await startProxy({ upstreams: [{ name: 'st.test', url: fake.url }, { name: 'off.test', url: fake.url, offline: true }] });
  stops.push(() => proxy.stop());

  const fresh = await status(proxy);
  assert.equal(fresh.version, PACKAGE_VERSION);
  assert.ok(Date.parse(fresh.startedAt) <= Date.now());
  assert.ok(fresh.uptimeSeconds >= 0);
  assert.equal(fresh.requests.hitRatio, null, 'no requests yet');
  assert.deepEqual(fresh.fills, []);
  assert.equal(fresh.redis, null);
  assert.equal(fresh.storage.maxBytes, null);

  const miss = await ask(proxy, '/v2/s/app/manifests/v1');
  const hit = await ask(proxy, '/v2/s/app/manifests/v1');
  assert.equal(miss.status, 200);
  assert.equal(hit.status, 200);
  const missing = await ask(proxy, '/v2/s/app/manifests/nope');
  assert.equal(missing.status, 404);

  const s = await status(proxy);
  assert.deepEqual(s.requests, { hit: 1, miss: 1, coalesced: 0, stale: 0, error: 1, hitRatio: 0.5 });
  const manifestBytes = image.manifest.length;
  // The 404's error body was served too.
  const served = 2 * manifestBytes + missing.body.length;
  assert.deepEqual(s.bytes, { served, fetched: manifestBytes, saved: served - manifestBytes });
  const [st, off] = s.upstreams;
  assert.equal(st!.name, 'st.test');
  assert.equal(st!.offline, false);
  assert.equal(st!.health.state, 'up');
  assert.ok(st!.health.lastSuccess !== null && Date.parse(st!.health.lastSuccess) <= Date.now());
  assert.equal(st!.health.lastFailure, null);
  assert.deepEqual(st!.requests, s.requests);
  assert.deepEqual(st!.rateLimit, { limit: 200, remaining: 149, windowSeconds: 3600 });
  assert.equal(off!.name, 'off.test');
  assert.equal(off!.offline, true);
  assert.equal(off!.health.state, 'unknown');
  assert.deepEqual(s.mostPulled, [{ image: 'st.test/s/app:v1', pulls: 2 }]);
  assert.equal(s.lastErrors.length, 1);
  const [error] = s.lastErrors;
  assert.equal(error!.method, 'GET');
  assert.equal(error!.path, '/v2/s/app/manifests/nope');
  assert.equal(error!.status, 404);
  assert.equal(error!.code, 'MANIFEST_UNKNOWN');
  assert.equal(error!.upstream, 'st.test');
  assert.ok(Date.parse(error!.at) <= Date.now());
});

test('the status page is one document with no external assets, under a policy that runs only its own script', async () => {
  const fake = await startFakeUpstream();
  stops.push(() => fake.stop());
  const proxy = await startProxy({ upstreams: [{ name: 'page.test', url: fake.url }] });
  stops.push(() => proxy.stop());
  for (const path of ['/', '/status']) {
    const res = await proxy.app.inject({ url: path });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/html/);
    const html = res.body;
    assert.doesNotMatch(html, /\s(src|href)=/i, 'nothing is loaded from anywhere');
    const csp = String(res.headers['content-security-policy']);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /connect-src 'self'/);
    const script = /<script>([\s\S]*)<\/script>/.exec(html)![1]!;
    const style = /<style>([\s\S]*)<\/style>/.exec(html)![1]!;
    assert.ok(csp.includes(`script-src 'sha256-${createHash('sha256').update(script).digest('base64')}'`), 'the page\'s script is allowed by its hash');
    assert.ok(csp.includes(`style-src 'sha256-${createHash('sha256').update(style).digest('base64')}'`));
    assert.match(script, /status\.json/);
    assert.doesNotMatch(script, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/, 'text goes in as text');
  }
});
