/**
 * The fill queue of an upstream: `maxConcurrentFills` fills at once, up to
 * `fillQueue` more waiting, and beyond that 503 with Retry-After at once.
 * The upstream counts the blob GETs it is answering at any moment (a fake
 * over real HTTP: a real registry cannot say how many it serves at once).
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { serveOnLoopback, type LoopbackServer } from '../fixtures/net.js';
import { getOutcome } from '../fixtures/outcome.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { until } from '../fixtures/tools.js';

interface CountingUpstream {
  server: LoopbackServer;
  blobs: Map<string, Buffer>;
  inFlight: number;
  maxInFlight: number;
  gets: number;
  /** While set, every blob answer waits for it. */
  hold: Promise<void> | undefined;
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Writes `body` in 16 KiB pieces, one per turn of the event loop, so that a GET stays in flight a while. */
function trickle(res: ServerResponse, body: Buffer, done: () => void): void {
  let at = 0;
  const next = (): void => {
    if (res.destroyed) return done();
    if (at >= body.length) {
      res.end(done);
      return;
    }
    res.write(body.subarray(at, at += 16 * 1024));
    setImmediate(next);
  };
  next();
}

async function countingUpstream(): Promise<CountingUpstream> {
  const upstream: CountingUpstream = { server: undefined as unknown as LoopbackServer, blobs: new Map(), inFlight: 0, maxInFlight: 0, gets: 0, hold: undefined };
  upstream.server = await serveOnLoopback((req, res) => {
    const digest = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '')?.[1];
    const body = digest ? upstream.blobs.get(digest) : undefined;
    if (!body || req.method !== 'GET') {
      res.writeHead(req.url === '/v2/' ? 200 : 404, { 'docker-distribution-api-version': 'registry/2.0', 'content-type': 'application/json' }).end('{}');
      return;
    }
    upstream.gets++;
    upstream.inFlight++;
    upstream.maxInFlight = Math.max(upstream.maxInFlight, upstream.inFlight);
    let counted = true;
    const finished = (): void => {
      if (counted) upstream.inFlight--;
      counted = false;
    };
    res.once('close', finished);
    void (upstream.hold ?? Promise.resolve()).then(() => {
      res.writeHead(200, { 'content-length': body.length, 'docker-content-digest': digest! });
      trickle(res, body, finished);
    });
  });
  return upstream;
}

const running: { stop(): Promise<void> }[] = [];
after(async () => {
  for (const r of running.reverse()) await r.stop();
});

async function setup(fills: Record<string, number>): Promise<{ upstream: CountingUpstream; proxy: RunningProxy; digests: string[] }> {
  const upstream = await countingUpstream();
  running.push(upstream.server);
  const digests: string[] = [];
  for (let i = 0; i < 50; i++) {
    const body = randomBytes(128 * 1024);
    const digest = sha256(body);
    upstream.blobs.set(digest, body);
    digests.push(digest);
  }
  const proxy = await startProxy({ upstreams: [{ name: 'counted.test', url: upstream.server.url }], upstreamDefaults: fills });
  running.push(proxy);
  return { upstream, proxy, digests };
}

test('50 concurrent cold blobs with maxConcurrentFills 4: at most 4 upstream GETs in flight, every body right', async () => {
  const { upstream, proxy, digests } = await setup({ maxConcurrentFills: 4 });
  const outcomes = await Promise.all(digests.map((d) => getOutcome(`${proxy.url}/v2/counted.test/queue/blobs/${d}`)));
  assert.deepEqual(outcomes, digests.map((digest) => ({ status: 200, broken: false, digest })));
  assert.equal(upstream.gets, 50, 'one GET per blob');
  assert.ok(upstream.maxInFlight <= 4, `at most 4 in flight, saw ${upstream.maxInFlight}`);
  assert.ok(upstream.maxInFlight >= 2, `fills did run side by side (saw ${upstream.maxInFlight})`);
});

test('past maxConcurrentFills + fillQueue, a cold blob is answered 503 with Retry-After at once; the queued ones are served right', async () => {
  const { upstream, proxy, digests } = await setup({ maxConcurrentFills: 2, fillQueue: 3 });
  let release!: () => void;
  upstream.hold = new Promise<void>((resolve) => { release = resolve; });
  const ten = digests.slice(0, 10);
  const pending = ten.map((d) => getOutcome(`${proxy.url}/v2/counted.test/queue/blobs/${d}`));
  let answered = 0;
  for (const p of pending) void p.then(() => { answered++; });
  // Two run (held by the upstream) and three wait; the other five are answered while the upstream still holds.
  await until('two fills at the upstream', () => upstream.inFlight === 2);
  await until('five answered at once', () => answered >= 5);
  assert.equal(answered, 5, 'only the refused ones were answered before the upstream let go');
  release();
  const outcomes = await Promise.all(pending);
  const refused = outcomes.filter((o) => o.status === 503);
  assert.equal(refused.length, 5, JSON.stringify(outcomes));
  for (const o of refused) {
    assert.equal(o.code, 'UNAVAILABLE');
    assert.equal(o.retryAfter, '1');
  }
  const served = outcomes.map((o, i) => ({ o, digest: ten[i]! })).filter(({ o }) => o.status !== 503);
  assert.equal(served.length, 5);
  for (const { o, digest } of served) assert.deepEqual(o, { status: 200, broken: false, digest });
  assert.equal(upstream.gets, 5, 'the refused ones never reached the upstream');
});
