/**
 * Peers that misbehave, played by small HTTP servers registered in Redis as
 * peers holding a blob: one that sends wrong bytes, one that hangs before
 * answering, one that goes silent mid-body, one whose address refuses
 * connections. The node under test never completes a wrong response, goes
 * on elsewhere (the upstream, a real `docker-registry`), and does not ask
 * the wrong-bytes peer again within its penalty (on the injected clock).
 * Eviction on a node takes its "has" record out of Redis.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Redis } from 'ioredis';
import { request } from '../../src/upstream/undici.js';
import { INTERNAL_BLOBS_PATH, PEER_AUTH_HEADER, verifyPeerToken } from '../../src/registry/heldBlobs.js';
import { FakeClock } from '../fixtures/clock.js';
import { freePort, serveOnLoopback, type LoopbackServer } from '../fixtures/net.js';
import { peerCluster, startPeer, type PeerCluster } from '../fixtures/peers.js';
import type { RunningProxy } from '../fixtures/proxy.js';
import { pushBlob } from '../fixtures/push.js';
import { findRedis } from '../fixtures/redis.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { toolSkip, until } from '../fixtures/tools.js';

const redis = await findRedis();
const skip = redis.skip || toolSkip('docker-registry');
const UPSTREAM = 'registry.test';
const SIZE = 1024 * 1024;

let upstream: RunningRegistry;
let cluster: PeerCluster;
let client: Redis;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  cluster = await peerCluster(redis.url!);
  client = new Redis(redis.url!);
});

after(async () => {
  for (const close of closers.reverse()) await close();
  client?.disconnect();
  await upstream?.stop();
});

async function node(clock: FakeClock): Promise<RunningProxy> {
  const proxy = await startPeer(cluster, {
    upstreams: [{ name: UPSTREAM, url: upstream.url }], clock,
    storage: { maxIdle: '10m', evictionGrace: '0s', evictionInterval: '1h', usageFlushInterval: '1h' },
  });
  closers.push(() => proxy.stop());
  return proxy;
}

/** A test peer: registered in Redis under `id`, answering every request with `answer`; it counts what it is asked. */
async function testPeer(id: string, answer: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ asked: () => number; server: LoopbackServer }> {
  let asked = 0;
  const server = await serveOnLoopback((req, res) => {
    asked++;
    const digest = (req.url ?? '').slice(INTERNAL_BLOBS_PATH.length);
    // The nodes run on fake clocks moved by minutes: the test peers check the token, not its time.
    if (!verifyPeerToken(cluster.secret, digest, req.headers[PEER_AUTH_HEADER] as string | undefined, Date.now(), Infinity)) {
      res.writeHead(401).end();
      return;
    }
    answer(req, res);
  });
  closers.push(() => server.stop());
  await client.set(`${cluster.prefix}peer:${id}`, server.url, 'PX', 600_000);
  return { asked: () => asked, server };
}

async function claims(id: string, digest: string): Promise<void> {
  await client.sadd(`${cluster.prefix}has:${digest}`, id);
}

async function blob(repository: string): Promise<{ bytes: Buffer; digest: string }> {
  const bytes = randomBytes(SIZE);
  return { bytes, digest: await pushBlob(upstream.url, repository, bytes) };
}

async function get(proxy: RunningProxy, repository: string, digest: string): Promise<{ complete: boolean; digest: string }> {
  const res = await request(`${proxy.url}/v2/${repository}/blobs/${digest}`);
  const hash = createHash('sha256');
  try {
    for await (const chunk of res.body) hash.update(chunk as Buffer);
  } catch {
    return { complete: false, digest: '' };
  }
  return { complete: res.statusCode === 200, digest: `sha256:${hash.digest('hex')}` };
}

async function upstreamGets(digest: string): Promise<number> {
  return (await upstream.settledRequests()).filter((e) => e.method === 'GET' && e.path.endsWith(`/blobs/${digest}`)).length;
}

test('a peer that sends wrong bytes: never a complete wrong response; the upstream serves it; the peer is not asked again within its penalty', { skip }, async () => {
  const clock = new FakeClock(Date.now());
  const proxy = await node(clock);
  const liar = await testPeer('liar/1/00', (_req, res) => {
    res.writeHead(200, { 'content-length': String(SIZE), 'pullthrough-held': 'committed' }).end(randomBytes(SIZE));
  });
  const first = await blob('faults/liar');
  await claims('liar/1/00', first.digest);

  const fooled = await get(proxy, 'faults/liar', first.digest);
  assert.equal(fooled.complete, false, 'the wrong bytes were never completed');
  assert.equal(liar.asked(), 1);
  assert.equal(await upstreamGets(first.digest), 0);

  assert.deepEqual(await get(proxy, 'faults/liar', first.digest), { complete: true, digest: first.digest });
  assert.equal(await upstreamGets(first.digest), 1, 'the retry came from the upstream');
  assert.equal(liar.asked(), 1, 'not asked again');

  const second = await blob('faults/liar');
  await claims('liar/1/00', second.digest);
  assert.deepEqual(await get(proxy, 'faults/liar', second.digest), { complete: true, digest: second.digest });
  assert.equal(liar.asked(), 1, 'still within its penalty: another blob it claims is not asked of it');

  await clock.advance(5 * 60_000 + 1);
  const third = await blob('faults/liar');
  await claims('liar/1/00', third.digest);
  await get(proxy, 'faults/liar', third.digest);
  assert.equal(liar.asked(), 2, 'after the penalty it is asked again');
  assert.ok(proxy.logs().some((l) => l['msg'] === 'a peer sent bytes that do not match the digest: not asking it again for the penalty'));
});

test('a peer that hangs before answering, one that goes silent mid-body, one that is gone: the blob comes from elsewhere, right', { skip }, async () => {
  const proxy = await node(new FakeClock(Date.now()));
  const hung = await testPeer('hung/1/00', () => undefined);
  const wanted = await blob('faults/slow');
  const silent = await testPeer('silent/1/00', (_req, res) => {
    res.writeHead(200, { 'content-length': String(SIZE), 'pullthrough-held': 'committed' });
    res.write(wanted.bytes.subarray(0, SIZE / 2));
  });
  const gonePort = await freePort();
  await client.set(`${cluster.prefix}peer:gone/1/00`, `http://127.0.0.1:${gonePort}`, 'PX', 600_000);
  for (const id of ['hung/1/00', 'silent/1/00', 'gone/1/00']) await claims(id, wanted.digest);

  assert.deepEqual(await get(proxy, 'faults/slow', wanted.digest), { complete: true, digest: wanted.digest });
  assert.deepEqual([hung.asked(), silent.asked()], [1, 1], 'each was tried once, then skipped');
  assert.equal(await upstreamGets(wanted.digest), 1, 'the rest came from the upstream');
  const text = await (await request(`${proxy.url}/metrics`)).body.text();
  assert.match(text, /pullthrough_peer_failures_total\{reason="slow"\} 2\n/, 'the hung one (first byte) and the silent one (idle body)');
  assert.match(text, /pullthrough_peer_failures_total\{reason="gone"\} 1\n/, 'the refused one');
});

test('eviction on a node takes its "has" record out, and peers stop asking it for that blob', { skip }, async () => {
  const clock = new FakeClock(Date.now());
  const [a, b] = [await node(clock), await node(new FakeClock(Date.now()))];
  const lone = await blob('faults/evicted');
  assert.deepEqual(await get(a, 'faults/evicted', lone.digest), { complete: true, digest: lone.digest });
  const members = (): Promise<string[]> => client.smembers(`${cluster.prefix}has:${lone.digest}`);
  await until('A\'s has record', async () => (await members()).length === 1);

  // Unused past maxIdle on A's clock: a collection removes it.
  await clock.advance(11 * 60_000);
  const report = await a.mirror.evictor.collect(false);
  assert.ok(report.removedBlobs >= 1, JSON.stringify(report));
  assert.deepEqual(await members(), [], 'the record went with the blob');

  await upstream.clearRequests();
  const servedBefore = a.requests().filter((r) => r.url.includes('/_pullthrough/')).length;
  assert.deepEqual(await get(b, 'faults/evicted', lone.digest), { complete: true, digest: lone.digest });
  assert.equal(a.requests().filter((r) => r.url.includes('/_pullthrough/')).length, servedBefore, 'B did not ask A');
  assert.equal(await upstreamGets(lone.digest), 1);
});

test('only registered peers are dialled: an id without a registration, or one registered with more than an origin, is never contacted', { skip }, async () => {
  const proxy = await node(new FakeClock(Date.now()));
  let contacted = 0;
  const trap = await serveOnLoopback((_req, res) => {
    contacted++;
    res.writeHead(500).end();
  });
  closers.push(() => trap.stop());
  const wanted = await blob('faults/unregistered');
  await client.set(`${cluster.prefix}peer:pathy/1/00`, `${trap.url}/somewhere`, 'PX', 600_000);
  for (const id of ['ghost/1/00', 'pathy/1/00']) await claims(id, wanted.digest);
  assert.deepEqual(await get(proxy, 'faults/unregistered', `${wanted.digest}`), { complete: true, digest: wanted.digest });
  assert.equal(contacted, 0);
  assert.equal(await upstreamGets(wanted.digest), 1);
});

test('a node\'s "has" record is written on commit and its TTL refreshed when the blob is used again', { skip }, async () => {
  const clock = new FakeClock(Date.now());
  const proxy = await node(clock);
  const used = await blob('faults/used');
  assert.deepEqual(await get(proxy, 'faults/used', used.digest), { complete: true, digest: used.digest });
  const key = `${cluster.prefix}has:${used.digest}`;
  await until('the has record', async () => (await client.scard(key)) === 1);
  await client.pexpire(key, 5_000);
  // Refreshes are at most once a minute per blob: a minute on the node's clock later, a read renews it.
  await clock.advance(61_000);
  assert.deepEqual(await get(proxy, 'faults/used', used.digest), { complete: true, digest: used.digest });
  await until('the refreshed TTL', async () => (await client.pttl(key)) > 60_000);
});
