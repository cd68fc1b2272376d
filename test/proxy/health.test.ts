/**
 * A sick upstream costs nothing: upstream health, the revalidation deadline
 * and stale-while-revalidate, against the fake upstream over real HTTP (a
 * stopped registry refuses connections, a hung one accepts and never
 * answers: faults a real one cannot show on demand). The mirror runs on a
 * fake clock: the down window, the probe and `revalidateTimeout` are waited
 * on by moving it, never by sleeping. Each test has its own proxy, since a
 * down upstream is state that the next test must not inherit.
 */
import test, { after, afterEach, before } from 'node:test';
import assert from 'node:assert/strict';
import { request } from '../../src/upstream/undici.js';
import { FakeClock } from '../fixtures/clock.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type ProxyOptions, type RunningProxy } from '../fixtures/proxy.js';
import { until } from '../fixtures/tools.js';
import type { UpstreamHealthState } from '../../src/upstream/health.js';

const UPSTREAM = 'sick.test';
/** The defaults this file relies on: 3 failures, a 5 s first window, revalidateTimeout 3 s. */
const BACKOFF_MS = 5_000;
const REVALIDATE_MS = 3_000;
/** Long socket timeouts: only the mirror's clock may end a wait here. */
const TIMEOUTS = { connect: '2s', headers: '30s', bodyIdle: '30s' };

let fake: FakeUpstream;
const proxies: RunningProxy[] = [];

before(async () => {
  fake = await startFakeUpstream();
});

afterEach(() => fake.clearFaults());

after(async () => {
  for (const p of proxies) await p.stop();
  await fake?.stop();
});

let counter = 0;
function addImage(): { repository: string; image: BuiltImage } {
  const repository = `health/app${++counter}`;
  const image = makeImage({ layerSizes: [2_000] });
  fake.addImage(repository, 'v1', image);
  return { repository, image };
}

async function proxyOn(clock: FakeClock, upstream: Record<string, unknown> = {}, extra: Partial<ProxyOptions> = {}): Promise<RunningProxy> {
  const proxy = await startProxy({ upstreams: [{ name: UPSTREAM, url: fake.url, ...upstream }], upstreamDefaults: { timeouts: TIMEOUTS }, clock, ...extra });
  proxies.push(proxy);
  return proxy;
}

interface Answer {
  status: number;
  digest: string | undefined;
  cache: string | undefined;
  warning: string | undefined;
  code: string | undefined;
}

async function get(proxy: RunningProxy, path: string): Promise<Answer> {
  const res = await request(`${proxy.url}${path}`);
  const body = await res.body.text();
  return {
    status: res.statusCode,
    digest: res.headers['docker-content-digest'] as string | undefined,
    cache: res.headers['x-pullthrough-cache'] as string | undefined,
    warning: res.headers['warning'] as string | undefined,
    code: res.statusCode >= 400 ? (JSON.parse(body) as { errors: { code: string }[] }).errors[0]!.code : undefined,
  };
}

function health(proxy: RunningProxy): UpstreamHealthState {
  return proxy.mirror.upstream(UPSTREAM)!.health.state;
}

function transitions(proxy: RunningProxy): string[] {
  return proxy.logs().map((l) => String(l['msg'])).filter((m) => m.startsWith('upstream is down') || m === 'upstream answers again');
}

function upstreamRequests(): string[] {
  return fake.requests().map((r) => `${r.method} ${r.path}`);
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => { resolve = r; });
  return { promise, resolve };
}

test('stopped upstream: 20 cached-tag GETs all right, the upstream sees nothing but the probe, one down and one up in the log', async () => {
  const { repository, image } = addImage();
  const clock = new FakeClock();
  const proxy = await proxyOn(clock);
  const path = `/v2/${repository}/manifests/v1`;
  assert.equal((await get(proxy, path)).digest, image.digest);

  await fake.refuseConnections();
  try {
    for (let i = 0; i < 20; i++) {
      if (i === 10) {
        // Listening again, but the window is not over: nothing is asked until the probe.
        await fake.acceptConnections();
        fake.clearRequests();
      }
      // The first failures retry after a short back-off on the clock; runWhile moves the clock over it.
      const answer = await clock.runWhile(get(proxy, path));
      assert.equal(answer.status, 200, `GET ${i}`);
      assert.equal(answer.digest, image.digest, `GET ${i}`);
      assert.equal(answer.cache, 'stale', `GET ${i}`);
      assert.match(answer.warning ?? '', /^110 /);
    }
  } finally {
    await fake.acceptConnections().catch(() => undefined);
  }
  assert.equal(health(proxy).status, 'down');
  assert.equal(health(proxy).consecutiveFailures, 3, 'three failed requests, then no more attempts');
  assert.match(health(proxy).lastError ?? '', /is unreachable at .*: nothing listens there \(ECONNREFUSED\)$/, 'what the status page shows');
  assert.ok(health(proxy).lastFailureAt! > health(proxy).lastSuccessAt!);
  assert.equal(health(proxy).downCount, 1);
  assert.deepEqual(upstreamRequests(), [], 'nothing while down, though it listens again');
  assert.deepEqual(transitions(proxy), ['upstream is down: serving what is cached and failing misses at once until it answers again']);

  await clock.advance(BACKOFF_MS);
  await until('the probe to end the down state', () => health(proxy).status === 'up');
  assert.deepEqual(upstreamRequests(), ['GET /v2/'], 'the one probe');
  assert.deepEqual(transitions(proxy).map((m) => m.split(':')[0]), ['upstream is down', 'upstream answers again']);
  const fresh = await get(proxy, path);
  assert.equal(fresh.cache, 'hit');
  assert.deepEqual(upstreamRequests(), ['GET /v2/', `HEAD ${path}`], 'asked again once it is up');
});

test('hung upstream: the first cached-tag GET is answered within revalidateTimeout, the next five ask nothing, the probe ends it after the hang', async () => {
  const { repository, image } = addImage();
  const clock = new FakeClock();
  const proxy = await proxyOn(clock);
  const path = `/v2/${repository}/manifests/v1`;
  assert.equal((await get(proxy, path)).digest, image.digest);

  const hang = fake.addFault({}, { hang: true });
  fake.clearRequests();
  let settled = false;
  const first = get(proxy, path).finally(() => { settled = true; });
  await until('the HEAD to reach the hung upstream', () => fake.requests().some((r) => r.faults.includes('hang')));
  await clock.advance(REVALIDATE_MS - 1);
  assert.equal(settled, false, 'still waiting 1 ms before revalidateTimeout');
  await clock.advance(1);
  const answer = await first;
  assert.equal(answer.status, 200);
  assert.equal(answer.digest, image.digest);
  assert.equal(answer.cache, 'stale');
  assert.equal(health(proxy).status, 'down', 'one timeout is enough');

  fake.clearRequests();
  for (let i = 0; i < 5; i++) {
    const next = await get(proxy, path);
    assert.equal(next.digest, image.digest);
    assert.equal(next.cache, 'stale');
  }
  assert.deepEqual(upstreamRequests(), [], 'no upstream request while down');
  const miss = await get(proxy, `/v2/${repository}/manifests/never-seen`);
  assert.equal(miss.status, 503, 'a miss fails at once');
  assert.equal(miss.code, 'UNAVAILABLE');

  // The first probe finds it still hung, gives up at its own deadline, and the window doubles.
  await clock.advance(BACKOFF_MS);
  await until('the probe to reach the hung upstream', () => upstreamRequests().includes('GET /v2/'));
  await clock.advance(REVALIDATE_MS);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(health(proxy).status, 'down');
  hang.remove();
  fake.clearRequests();
  await clock.advance(2 * BACKOFF_MS);
  await until('the second probe to end the down state', () => health(proxy).status === 'up');
  assert.deepEqual(upstreamRequests(), ['GET /v2/']);
  assert.equal((await get(proxy, path)).cache, 'hit');
});

test('without a record, the full timeouts apply: revalidateTimeout does not cut a first resolution short', async () => {
  const { repository, image } = addImage();
  const clock = new FakeClock();
  const proxy = await proxyOn(clock);
  const gate = deferred();
  fake.addFault({ method: 'HEAD', path: `/v2/${repository}/manifests/v1`, once: true }, { waitFor: gate.promise });
  let settled = false;
  const first = get(proxy, `/v2/${repository}/manifests/v1`).finally(() => { settled = true; });
  await until('the HEAD to arrive', () => fake.requests({ method: 'HEAD' }).some((r) => r.path.startsWith(`/v2/${repository}/`)));
  await clock.advance(10 * REVALIDATE_MS);
  assert.equal(settled, false, 'no deadline on the clock without a record to fall back on');
  gate.resolve();
  const answer = await first;
  assert.equal(answer.digest, image.digest);
  assert.equal(answer.cache, 'miss');
  assert.equal(health(proxy).status, 'up');
});

test('while down, misses fail at once and a blob fill already running goes on to the end', async () => {
  const { repository, image } = addImage();
  const big = makeImage({ layerSizes: [2_000_000] });
  fake.addImage(`${repository}-big`, 'v1', big);
  const layer = big.layers[0]!;
  const clock = new FakeClock();
  const proxy = await proxyOn(clock);
  const resume = deferred();
  fake.addFault({ path: `/v2/${repository}-big/blobs/${layer.digest}`, once: true }, { pause: { afterBytes: 500_000, until: resume.promise } });
  // The response headers come once the upstream has answered: the fill is running, its answer counted.
  const response = await request(`${proxy.url}/v2/${repository}-big/blobs/${layer.digest}`);
  const fill = response.body.arrayBuffer().then((body) => Buffer.from(body));
  assert.equal(response.statusCode, 200);

  // Three 503s in a row: down.
  const failing = fake.addFault({ path: /\/manifests\// }, { status: { code: 503 } });
  for (let i = 0; i < 3; i++) assert.equal((await get(proxy, `/v2/${repository}/manifests/v${i + 2}`)).status, 503);
  assert.equal(health(proxy).status, 'down');
  failing.remove();
  fake.clearRequests();
  const miss = await get(proxy, `/v2/${repository}/blobs/${image.config.digest}`);
  assert.equal(miss.status, 503);
  assert.equal(miss.code, 'UNAVAILABLE');
  assert.deepEqual(upstreamRequests(), [], 'the miss asked nothing');

  resume.resolve();
  assert.ok((await fill).equals(layer.data), 'the fill that was running finished, byte-exact');
});

test('staleWhileRevalidate: past tagMaxAge the record answers at once and one background HEAD refreshes it; past the window the client waits', async () => {
  const { repository, image } = addImage();
  const moved = makeImage({ layerSizes: [2_000] });
  fake.addImage(repository, 'v2', moved);
  const clock = new FakeClock();
  const proxy = await proxyOn(clock, { tagMaxAge: '1m', staleWhileRevalidate: '5m' });
  const path = `/v2/${repository}/manifests/v1`;
  assert.equal((await get(proxy, path)).digest, image.digest);
  fake.setTag(repository, 'v1', moved.digest);

  await clock.advance(61_000);
  const gate = deferred();
  fake.addFault({ method: 'HEAD', path, once: true }, { waitFor: gate.promise });
  fake.clearRequests();
  const answers = await Promise.all([get(proxy, path), get(proxy, path)]);
  for (const a of answers) {
    assert.equal(a.digest, image.digest, 'the record answers');
    assert.equal(a.cache, 'stale');
  }
  await until('the background HEAD', () => fake.requests({ method: 'HEAD' }).length > 0);
  assert.deepEqual(fake.requests({ method: 'HEAD' }).map((r) => r.status), [0], 'one HEAD, and it had not answered yet');
  gate.resolve();
  await until('the record to be refreshed', async () => (await get(proxy, path)).digest === moved.digest);
  assert.equal(fake.requests({ method: 'HEAD' }).length, 1, 'one background HEAD for all of them');
  const fresh = await get(proxy, path);
  assert.equal(fresh.cache, 'hit');

  // Past tagMaxAge + staleWhileRevalidate: a record that old is revalidated while the client waits.
  await clock.advance(7 * 60_000);
  const slow = deferred();
  fake.addFault({ method: 'HEAD', path, once: true }, { waitFor: slow.promise });
  let settled = false;
  const waiting = get(proxy, path).finally(() => { settled = true; });
  await until('the HEAD', () => fake.requests({ method: 'HEAD' }).length === 2);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(settled, false, 'the client waits for the upstream');
  slow.resolve();
  assert.equal((await waiting).cache, 'hit');
});
