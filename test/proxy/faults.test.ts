import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { FakeClock } from '../fixtures/clock.js';
import { startFakeUpstream, tooManyRequests, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { until } from '../fixtures/tools.js';

let fake: FakeUpstream;
let proxy: RunningProxy;

/**
 * The hung and stalled upstreams below wait for these real socket timeouts
 * (undici's, not the mirror's clock): short, so the tests are quick, and still
 * far above what the in-process fake upstream needs to answer.
 */
const TIMEOUTS = { connect: '1s', headers: '500ms', bodyIdle: '500ms' };

before(async () => {
  fake = await startFakeUpstream();
  proxy = await startProxy({
    upstreams: [{ name: 'fake.test', url: fake.url }],
    upstreamDefaults: { timeouts: TIMEOUTS },
  });
});

after(async () => {
  await proxy?.stop();
  await fake?.stop();
});

let counter = 0;
function addImage(layerSize = 200_000): { repository: string; image: BuiltImage; layer: string } {
  const repository = `faults/image${++counter}`;
  const image = makeImage({ layerSizes: [layerSize] });
  fake.addImage(repository, 'v1', image);
  return { repository, image, layer: image.layers[0]!.digest };
}

interface Fetched {
  status: number;
  digest?: string;
  code?: string;
  headers: Record<string, unknown>;
  broken: boolean;
}

/** GETs a URL; a response cut off mid-body is `broken`, never an exception. */
async function fetchBody(url: string): Promise<Fetched> {
  const res = await request(url);
  if (res.statusCode >= 400) {
    const body = await res.body.json() as { errors: { code: string }[] };
    return { status: res.statusCode, code: body.errors[0]!.code, headers: res.headers, broken: false };
  }
  const hash = createHash('sha256');
  try {
    for await (const chunk of res.body) hash.update(chunk as Buffer);
  } catch {
    return { status: res.statusCode, headers: res.headers, broken: true };
  }
  return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}`, headers: res.headers, broken: false };
}

async function settled(): Promise<void> {
  while (proxy.mirror.blobs.activeFills > 0) await new Promise((r) => setTimeout(r, 10));
}

async function nothingStored(digest: string): Promise<void> {
  await settled();
  const hex = digest.split(':')[1]!;
  await assert.rejects(stat(join(proxy.root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data')), 'no blob under that digest');
  assert.deepEqual(await readdir(join(proxy.root, '_uploads')), [], 'no temp file left');
}

async function servedCorrectlyAfterwards(repository: string, digest: string): Promise<void> {
  fake.clearFaults();
  const again = await fetchBody(`${proxy.url}/v2/${repository}/blobs/${digest}`);
  assert.equal(again.status, 200);
  assert.equal(again.digest, digest);
}

test('corrupt bytes: the client gets an aborted response, nothing is stored, a later GET is correct', async () => {
  const { repository, layer } = addImage();
  fake.addFault({ path: `/v2/${repository}/blobs/${layer}` }, { corrupt: true });
  const first = await fetchBody(`${proxy.url}/v2/${repository}/blobs/${layer}`);
  assert.ok(first.broken || first.status >= 500, 'never a complete response with wrong bytes');
  assert.notEqual(first.digest, layer);
  await nothingStored(layer);
  await servedCorrectlyAfterwards(repository, layer);
});

test('a truncated body and a reset: aborted response, nothing stored, a later GET is correct', async () => {
  const { repository, layer } = addImage();
  fake.addFault({ path: `/v2/${repository}/blobs/${layer}` }, { truncate: { afterBytes: 50_000 } });
  const first = await fetchBody(`${proxy.url}/v2/${repository}/blobs/${layer}`);
  assert.ok(first.broken || first.status >= 500);
  await nothingStored(layer);
  await servedCorrectlyAfterwards(repository, layer);
});

test('a slow first byte within the timeout is simply waited for', async () => {
  const { repository, layer } = addImage();
  fake.addFault({ path: `/v2/${repository}/blobs/${layer}` }, { slowFirstByte: 150 });
  const first = await fetchBody(`${proxy.url}/v2/${repository}/blobs/${layer}`);
  assert.equal(first.digest, layer);
});

test('an upstream 500 is 503 UNAVAILABLE for a blob not cached; nothing stored', async () => {
  const { repository, layer } = addImage();
  fake.addFault({ path: `/v2/${repository}/blobs/${layer}` }, { status: { code: 500 } });
  const first = await fetchBody(`${proxy.url}/v2/${repository}/blobs/${layer}`);
  assert.equal(first.status, 503);
  assert.equal(first.code, 'UNAVAILABLE');
  await nothingStored(layer);
  await servedCorrectlyAfterwards(repository, layer);
});

test('an upstream 429 is 429 TOOMANYREQUESTS with its Retry-After', async () => {
  const { repository, layer } = addImage();
  fake.addFault({ path: `/v2/${repository}/blobs/${layer}` }, tooManyRequests({ retryAfter: 7 }));
  const first = await fetchBody(`${proxy.url}/v2/${repository}/blobs/${layer}`);
  assert.equal(first.status, 429);
  assert.equal(first.code, 'TOOMANYREQUESTS');
  assert.equal(first.headers['retry-after'], '7');
  await nothingStored(layer);
  await servedCorrectlyAfterwards(repository, layer);
});

test('a hung upstream: the request fails with 503 after the header timeout, misses fail at once while it is down, the probe ends that', async () => {
  const { repository, layer } = addImage();
  // Its own proxy, on a fake clock: the timeout marks the upstream down, which other tests must not inherit.
  const clock = new FakeClock();
  const own = await startProxy({ upstreams: [{ name: 'fake.test', url: fake.url }], upstreamDefaults: { timeouts: TIMEOUTS }, clock });
  try {
    fake.addFault({ path: `/v2/${repository}/blobs/${layer}` }, { hang: true });
    const first = await fetchBody(`${own.url}/v2/${repository}/blobs/${layer}`);
    assert.equal(first.status, 503);
    assert.equal(own.mirror.upstream('fake.test')!.health.state.status, 'down', 'one timeout is enough');
    fake.clearFaults();
    fake.clearRequests();
    const meanwhile = await fetchBody(`${own.url}/v2/${repository}/blobs/${layer}`);
    assert.equal(meanwhile.status, 503, 'a miss fails at once while the upstream is down');
    assert.deepEqual(fake.requests(), [], 'and asks nothing');
    await clock.advance(5_000);
    await until('the probe to find the upstream', () => own.mirror.upstream('fake.test')!.health.state.status === 'up');
    assert.deepEqual(fake.requests().map((r) => `${r.method} ${r.path}`), ['GET /v2/'], 'the probe');
    const again = await fetchBody(`${own.url}/v2/${repository}/blobs/${layer}`);
    assert.equal(again.digest, layer);
  } finally {
    fake.clearFaults();
    await own.stop();
  }
});

test('a body that stalls mid-way fails on the body-idle timeout: aborted response, nothing stored', async () => {
  const { repository, layer } = addImage(3_000_000);
  fake.addFault({ path: `/v2/${repository}/blobs/${layer}` }, { stall: { afterBytes: 1_000_000 } });
  const first = await fetchBody(`${proxy.url}/v2/${repository}/blobs/${layer}`);
  assert.ok(first.broken, 'the client sees the response cut off');
  await nothingStored(layer);
  await servedCorrectlyAfterwards(repository, layer);
});

test('blob redirects (a CDN) are followed; more than 5 hops is an error', async () => {
  const cdn = await startFakeUpstream();
  try {
    const { repository, image, layer } = addImage();
    cdn.addBlob(image.layers[0]!.data);
    fake.addFault({ path: `/v2/${repository}/blobs/${layer}` }, { redirect: `${cdn.url}/v2/${repository}/blobs/${layer}?signed=1` });
    const first = await fetchBody(`${proxy.url}/v2/${repository}/blobs/${layer}`);
    assert.equal(first.digest, layer);
    assert.equal(cdn.requests({ method: 'GET' }).length, 1, 'the bytes came from the redirect target');

    const loop = addImage();
    fake.addFault({ path: `/v2/${loop.repository}/blobs/${loop.layer}` }, { redirect: `${fake.url}/v2/${loop.repository}/blobs/${loop.layer}` });
    const looping = await fetchBody(`${proxy.url}/v2/${loop.repository}/blobs/${loop.layer}`);
    assert.equal(looping.status, 503);
    assert.equal(fake.requests({ path: `/v2/${loop.repository}/blobs/${loop.layer}` }).length, 6, 'the first request and 5 redirects');
    await nothingStored(loop.layer);
  } finally {
    fake.clearFaults();
    await cdn.stop();
  }
});

test('a manifest whose bytes do not match its digest is refused and not stored', async () => {
  const { repository, image } = addImage();
  fake.addFault({ method: 'GET', path: `/v2/${repository}/manifests/${image.digest}` }, { corrupt: true });
  const first = await fetchBody(`${proxy.url}/v2/${repository}/manifests/${image.digest}`);
  assert.equal(first.status, 502);
  assert.equal(first.code, 'UPSTREAM_INVALID');
  const hex = image.digest.split(':')[1]!;
  await assert.rejects(stat(join(proxy.root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data')));
  fake.clearFaults();
  const again = await fetchBody(`${proxy.url}/v2/${repository}/manifests/${image.digest}`);
  assert.equal(again.digest, image.digest);
});

test('tag resolution: upstream 500 or 429 serve the recorded tag (stale); unknown tags get the upstream error', async () => {
  const { repository, image } = addImage();
  // Its own proxy: the 429 leaves it backing off, which other tests must not inherit.
  const own = await startProxy({
    upstreams: [{ name: 'fake.test', url: fake.url }],
    upstreamDefaults: { timeouts: TIMEOUTS },
  });
  try {
    const tagUrl = `${own.url}/v2/${repository}/manifests/v1`;
    assert.equal((await fetchBody(tagUrl)).digest, image.digest);
    // The 429 last: after it, pullthrough backs off and asks the upstream nothing more for manifests.
    // (A hang marks the upstream down at once: test/proxy/health.test.ts.)
    for (const fault of [{ status: { code: 500 } }, tooManyRequests({ retryAfter: 30 })]) {
      fake.clearFaults();
      fake.addFault({ path: `/v2/${repository}/manifests/v1` }, fault);
      const stale = await fetchBody(tagUrl);
      assert.equal(stale.status, 200, JSON.stringify(fault));
      assert.equal(stale.digest, image.digest);
      assert.equal(stale.headers['x-pullthrough-cache'], 'stale');
    }
    fake.clearFaults();
    fake.clearRequests();
    const limited = await fetchBody(`${own.url}/v2/${repository}/manifests/never`);
    assert.equal(limited.status, 429, 'a tag never seen, during the back-off: 429 at once');
    assert.equal(limited.code, 'TOOMANYREQUESTS');
    const retryAfter = Number(limited.headers['retry-after']);
    assert.ok(retryAfter > 0 && retryAfter <= 30, `Retry-After ${retryAfter}`);
    assert.deepEqual(fake.requests({ path: /\/manifests\// }), [], 'no upstream manifest request during the back-off');
    const blob = await fetchBody(`${own.url}/v2/${repository}/blobs/${image.config.digest}`);
    assert.equal(blob.digest, image.config.digest, 'blobs are not rate-limited and still flow');
  } finally {
    fake.clearFaults();
    await own.stop();
  }
});

test('tag resolution uses HEAD; an upstream that cannot answer HEAD is asked with GET', async () => {
  const { repository, image } = addImage();
  fake.clearRequests();
  const res = await request(`${proxy.url}/v2/${repository}/manifests/v1`, { method: 'HEAD' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['docker-content-digest'], image.digest);
  assert.deepEqual(fake.requests({ path: new RegExp(`/v2/${repository}/manifests/`) }).map((r) => r.method), ['HEAD']);

  fake.clearRequests();
  fake.addFault({ method: 'HEAD', path: `/v2/${repository}/manifests/v1` }, { status: { code: 405 } });
  const viaGet = await fetchBody(`${proxy.url}/v2/${repository}/manifests/v1`);
  assert.equal(viaGet.digest, image.digest);
  assert.deepEqual(fake.requests({ path: new RegExp(`/v2/${repository}/manifests/`) }).map((r) => r.method), ['HEAD', 'GET']);
  fake.clearFaults();
});
