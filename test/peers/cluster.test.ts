/**
 * Three node-local pullthrough processes, each on its own storage root, one
 * Redis, a real `docker-registry` upstream: a cold blob comes from the
 * upstream once for the cluster, a fourth node pulls an image from its peers
 * alone, and a fill whose owner is SIGKILLed finishes on the others.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { request } from '../../src/upstream/undici.js';
import { makeImage } from '../fixtures/images.js';
import { freePort } from '../fixtures/net.js';
import { peerCluster, type PeerCluster } from '../fixtures/peers.js';
import { testConfigDocument } from '../fixtures/proxy.js';
import { pushBlob, pushBuilt } from '../fixtures/push.js';
import { findRedis } from '../fixtures/redis.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { startServer, type RunningServer } from '../fixtures/server.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { startThrottle } from '../fixtures/throttle.js';
import { download } from '../fixtures/download.js';
import { tempDir, toolSkip, until } from '../fixtures/tools.js';

const redis = await findRedis();
const skip = redis.skip || toolSkip('docker-registry', 'skopeo');
const UPSTREAM = 'registry.test';
const BIG = 64 * 1024 * 1024;
const KILLED = 24 * 1024 * 1024;
/** Upstream bytes per second for the fill that is killed: it lasts long enough to be cut in the middle. */
const RATE = 12 * 1024 * 1024;

let upstream: RunningRegistry;
let throttle: { url: string; close(): Promise<void> };
let cluster: PeerCluster;
let servers: RunningServer[] = [];

async function startNode(upstreamUrl: string): Promise<RunningServer> {
  const port = await freePort();
  const document = testConfigDocument({ upstreams: [{ name: UPSTREAM, url: upstreamUrl }] }, await tempDir('peer-node'));
  const server = await startServer({ ...document, ...cluster.blocks(port) }, { port });
  servers.push(server);
  return server;
}

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  throttle = await startThrottle(upstream.host, RATE);
  cluster = await peerCluster(redis.url!);
});

after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await throttle?.close();
  await upstream?.stop();
});


async function upstreamBlobGets(digest?: string): Promise<number> {
  return (await upstream.settledRequests())
    .filter((e) => e.method === 'GET' && e.path.includes('/blobs/') && (digest === undefined || e.path.endsWith(digest))).length;
}

async function metric(server: RunningServer, name: string): Promise<number> {
  const text = await (await request(`${server.url}/metrics`)).body.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

test('three peers, 12 simultaneous cold GETs of a 64 MiB blob, 4 to each: 1 upstream GET, 12 right bodies; a fourth node pulls an image from its peers alone', { skip }, async () => {
  const nodes = await Promise.all([0, 1, 2].map(() => startNode(upstream.url)));
  const bytes = randomBytes(BIG);
  const layer = await pushBlob(upstream.url, 'peers/big', bytes);
  await upstream.clearRequests();

  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => download(`${nodes[i % 3]!.url}/v2/peers/big/blobs/${layer}`)));
  for (const r of results) assert.deepEqual(r, { status: 200, bytes: BIG, digest: layer });
  assert.equal(await upstreamBlobGets(layer), 1, 'one upstream GET for the whole cluster');
  const fromPeers = await Promise.all(nodes.map((n) => metric(n, 'pullthrough_peer_received_bytes_total')));
  assert.equal(fromPeers.filter((b) => b === BIG).length, 2, 'two nodes had every byte from the owner');
  const served = await Promise.all(nodes.map((n) => metric(n, 'pullthrough_peer_served_bytes_total')));
  assert.equal(served.reduce((a, b) => a + b, 0), 2 * BIG, 'what the owner served is what the others received');

  // Every node now holds it, and says so in Redis.
  const client = new Redis(cluster.redisUrl);
  try {
    await until('three has records', async () => (await client.scard(`${cluster.prefix}has:${layer}`)) === 3);
  } finally {
    client.disconnect();
  }

  // An image pulled through one node; then a fourth node pulls it with skopeo: its blobs come from the peers.
  const image = makeImage({ layerSizes: [3 * 1024 * 1024, 1024 * 1024] });
  await pushBuilt(upstream.url, 'peers/app', image, 'v1');
  await pullWithSkopeo(`${nodes[0]!.host}/peers/app:v1`, await tempDir('peer-pull'), { tlsVerify: false });
  await upstream.clearRequests();
  const fourth = await startNode(upstream.url);
  const pulled = await pullWithSkopeo(`${fourth.host}/peers/app:v1`, await tempDir('peer-pull'), { tlsVerify: false });
  assert.ok(pulled);
  assert.equal(await upstreamBlobGets(), 0, 'no upstream blob GET for the fourth node');
  const imageBytes = image.layers.reduce((n, l) => n + l.size, 0) + image.config.size;
  assert.equal(await metric(fourth, 'pullthrough_peer_received_bytes_total'), imageBytes);
});

test('the owner of a fill SIGKILLed in the middle: the others finish with right bytes, with at most one more upstream GET', { skip }, async () => {
  const nodes = await Promise.all([0, 1, 2].map(() => startNode(throttle.url)));
  const bytes = randomBytes(KILLED);
  const layer = await pushBlob(upstream.url, 'peers/killed', bytes);
  await upstream.clearRequests();

  let received = 0;
  const downloads = nodes.map((n) => download(`${n.url}/v2/peers/killed/blobs/${layer}`, (b) => { received = Math.max(received, b); }));
  const client = new Redis(cluster.redisUrl);
  let ownerId: string | null = null;
  try {
    await until('a lease owner', async () => (ownerId = await client.get(`${cluster.prefix}lease:${layer}`)) !== null);
  } finally {
    client.disconnect();
  }
  const owner = nodes.find((n) => ownerId!.split('/')[1] === String(n.pid));
  assert.ok(owner, `the owner ${ownerId} is one of the nodes`);
  await until('a quarter of the blob through', () => received > KILLED / 4);
  await owner.kill('SIGKILL');
  const results = await Promise.all(downloads);

  for (const [i, node] of nodes.entries()) {
    if (node === owner) continue;
    assert.deepEqual(results[i], { status: 200, bytes: KILLED, digest: layer });
  }
  assert.ok(await upstreamBlobGets(layer) <= 2, 'at most one upstream GET more than the killed one');
  const survivors = nodes.filter((n) => n !== owner);
  assert.equal(survivors.filter((n) => n.logs().some((l) => l['msg'] === 'took over a fill whose peer went away')).length, 1,
    'one survivor took the fill over; the other followed it');
});
