/**
 * Rate limits through pullthrough, against a fake upstream that demands
 * bearer tokens (as Docker Hub does even for anonymous pulls):
 * - a 429 with Retry-After: recorded tags are served stale, anything not
 *   cached answers 429 with Retry-After, and no manifest request reaches the
 *   upstream until Retry-After has passed;
 * - `ratelimit-*` readings on manifest responses are kept per upstream, a
 *   warning is logged when little remains, and tag checks (HEAD) cost none.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import type { RateLimitState } from '../../src/upstream/rateLimit.js';
import { tooManyRequests } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { manifestDigestOf } from '../fixtures/skopeo.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { ask, startBearerUpstream, warnings, type BearerUpstream } from '../fixtures/upstreamAuth.js';

let upstream: BearerUpstream;
const proxies: RunningProxy[] = [];

before(async () => {
  upstream = await startBearerUpstream();
});

after(async () => {
  for (const proxy of proxies) await proxy.stop();
  await upstream?.stop();
});

async function proxyFor(name: string): Promise<RunningProxy> {
  const proxy = await startProxy({ upstreams: [{ name, url: upstream.fake.url }] });
  proxies.push(proxy);
  return proxy;
}

const MANIFESTS = (repository: string): RegExp => new RegExp(`^/v2/${repository}/manifests/`);

test('429 with Retry-After: the recorded tag is served stale, the rest is 429, and manifests are not asked for again', async () => {
  const name = 'limited.test';
  const proxy = await proxyFor(name);
  const repository = 'rl/app';
  const cached = makeImage({ layerSizes: [4096] });
  const uncached = makeImage({ layerSizes: [4096] });
  upstream.fake.addImage(repository, 'cached', cached);
  upstream.fake.addImage(repository, 'uncached', uncached);

  const first = await ask(proxy, `/v2/${repository}/manifests/cached`);
  assert.equal(first.status, 200, first.body.toString());
  upstream.fake.clearRequests();
  const fault = upstream.fake.addFault({ path: MANIFESTS(repository) }, tooManyRequests({ retryAfter: 120, limit: 100 }));

  const limited = await ask(proxy, `/v2/${repository}/manifests/uncached`);
  assert.equal(limited.status, 429);
  assert.equal(limited.code, 'TOOMANYREQUESTS');
  assert.equal(limited.headers['retry-after'], '120', 'the upstream\'s Retry-After is passed on');
  assert.equal(fault.hits(), 1, 'the upstream was asked once and said 429');

  // During the back-off: what is recorded is served, the rest answers 429 at once.
  const stale = await ask(proxy, `/v2/${repository}/manifests/cached`);
  assert.equal(stale.status, 200);
  assert.equal(manifestDigestOf(stale.body), cached.digest);
  assert.equal(stale.headers['x-pullthrough-cache'], 'stale');
  assert.match(String(stale.headers['warning']), /^110 /);
  const byDigest = await ask(proxy, `/v2/${repository}/manifests/${cached.digest}`);
  assert.equal(byDigest.status, 200, 'a cached manifest by digest needs no upstream');
  for (const [method, path] of [
    ['GET', `/v2/${repository}/manifests/uncached`],
    ['HEAD', `/v2/${repository}/manifests/uncached`],
    ['GET', `/v2/${repository}/manifests/${uncached.digest}`],
    ['GET', `/v2/other/repo/manifests/latest`],
  ] as const) {
    const again = await ask(proxy, path, method);
    assert.equal(again.status, 429, `${method} ${path}`);
    if (method === 'GET') assert.equal(again.code, 'TOOMANYREQUESTS');
    const retryAfter = Number(again.headers['retry-after']);
    assert.ok(Number.isInteger(retryAfter) && retryAfter > 0 && retryAfter <= 120, `${method} ${path}: Retry-After ${again.headers['retry-after']}`);
  }
  assert.deepEqual(
    upstream.fake.requests().filter((r) => /\/manifests\//.test(r.path)).map((r) => `${r.method} ${r.path} ${r.status}`),
    [`HEAD /v2/${repository}/manifests/uncached 429`],
    'no upstream manifest request during the back-off',
  );

  // Blobs are not manifests: they still come (Docker Hub does not count them).
  const blob = await ask(proxy, `/v2/${repository}/blobs/${cached.layers[0]!.digest}`);
  assert.equal(blob.status, 200);
  assert.ok(blob.body.equals(cached.layers[0]!.data));

  const client = proxy.mirror.upstream(name)!;
  assert.deepEqual(
    { ...client.rateLimit.latest, observedAt: undefined },
    { limit: 100, remaining: 0, windowSeconds: 21600, observedAt: undefined },
    'the reading on the 429 is kept',
  );
  assert.ok(warnings(proxy).some((w) => w['upstream'] === name && w['retryAfterSeconds'] === 120), 'the back-off is logged');
  fault.remove();
});

test('rate-limit readings are kept, tag checks (HEAD) cost none, and low remaining is a warning', async () => {
  const name = 'counted.test';
  const proxy = await proxyFor(name);
  const repository = 'rl/counted';
  const one = makeImage({ layerSizes: [4096] });
  const two = makeImage({ layerSizes: [4096] });
  upstream.fake.addImage(repository, 'one', one);
  upstream.fake.addImage(repository, 'two', two);
  const client = proxy.mirror.upstream(name)!;
  const reading = (): RateLimitState | undefined => client.rateLimit.latest;
  assert.equal(reading(), undefined, 'nothing read before any manifest response');
  const lowWarnings = (): Record<string, unknown>[] => warnings(proxy).filter((w) => w['upstream'] === name && 'remaining' in w);

  upstream.fake.clearRequests();
  upstream.fake.setRateLimit({ limit: 100, remaining: 50 });
  try {
    assert.equal((await ask(proxy, `/v2/${repository}/manifests/one`)).status, 200);
    assert.equal(upstream.fake.requests({ method: 'GET', path: MANIFESTS(repository) }).length, 1, 'one counted GET, by digest');
    assert.equal(reading()?.limit, 100);
    assert.equal(reading()?.remaining, 49);
    assert.equal(reading()?.windowSeconds, 21600);
    assert.deepEqual(lowWarnings(), [], 'plenty left: no warning');

    // The same tag again: resolved with a HEAD, manifest from the cache, nothing spent.
    for (let i = 0; i < 3; i++) assert.equal((await ask(proxy, `/v2/${repository}/manifests/one`)).status, 200);
    assert.equal(upstream.fake.requests({ method: 'GET', path: MANIFESTS(repository) }).length, 1, 'no further manifest GET');
    assert.ok(upstream.fake.requests({ method: 'HEAD', path: MANIFESTS(repository) }).length >= 3, 'the tag was checked with HEAD');

    upstream.fake.setRateLimit({ limit: 100, remaining: 5 });
    assert.equal((await ask(proxy, `/v2/${repository}/manifests/two`)).status, 200);
    assert.equal(reading()?.remaining, 4);
    const low = lowWarnings();
    assert.equal(low.length, 1, JSON.stringify(low));
    assert.equal(low[0]!['remaining'], 4);
    assert.equal(low[0]!['limit'], 100);
  } finally {
    upstream.fake.setRateLimit(null);
  }
});
