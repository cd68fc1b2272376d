/**
 * The internal fill endpoint: what another process gets from it, and what
 * it refuses. It needs a token made with the shared secret, serves blobs by digest only (a
 * committed one, or a fill of this process in progress, never its last byte
 * before the fill is verified), and never dials an upstream for the asker.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from '../../src/upstream/undici.js';
import { INTERNAL_BLOBS_PATH, PEER_AUTH_HEADER, peerToken } from '../../src/registry/heldBlobs.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { peerCluster, startPeer, type PeerCluster } from '../fixtures/peers.js';
import type { RunningProxy } from '../fixtures/proxy.js';
import { findRedis } from '../fixtures/redis.js';
import { until } from '../fixtures/tools.js';

const redis = await findRedis();
const skip = redis.skip;
const REPOSITORY = 'team/app';

let fake: FakeUpstream;
let cluster: PeerCluster;
let peer: RunningProxy;

before(async () => {
  if (skip) return;
  fake = await startFakeUpstream();
  cluster = await peerCluster(redis.url!);
  peer = await startPeer(cluster, { upstreams: [{ name: 'fake.test', url: fake.url }] });
});

after(async () => {
  await peer?.stop();
  await fake?.stop();
});

/** The auth header for `digest`, made with the cluster's secret (or `secret`) at `atMs`. */
function auth(digest: string, atMs = Date.now(), secret = cluster.secret): Record<string, string> {
  return { [PEER_AUTH_HEADER]: peerToken(secret, digest, atMs) };
}

function internal(path: string, headers: Record<string, string> = auth(path)) {
  return request(`${peer.url}${INTERNAL_BLOBS_PATH}${path}`, { headers });
}

async function pulled(digest: string): Promise<Buffer> {
  const res = await request(`${peer.url}/v2/${REPOSITORY}/blobs/${digest}`);
  assert.equal(res.statusCode, 200);
  return Buffer.from(await res.body.arrayBuffer());
}

test('a committed blob is served by digest, whole or from an offset, with a fresh token for that digest only (never the bare secret)', { skip }, async () => {
  const blob = randomBytes(300_000);
  const digest = fake.addBlob(blob);
  assert.deepEqual(await pulled(digest), blob);
  fake.clearRequests();

  const other = fake.addBlob(randomBytes(10));
  const refused: Record<string, string>[] = [
    {},
    auth(digest, Date.now(), 'not the secret at all, not at all'),
    { [PEER_AUTH_HEADER]: cluster.secret },
    { authorization: `Bearer ${cluster.secret}` },
    { [PEER_AUTH_HEADER]: peerToken(cluster.secret, other, Date.now()) },
    auth(digest, Date.now() - 10 * 60_000),
  ];
  for (const headers of refused) {
    const denied = await internal(digest, headers);
    assert.equal(denied.statusCode, 401);
    assert.equal((await denied.body.json() as { errors: { code: string }[] }).errors[0]!.code, 'UNAUTHORIZED');
  }

  const whole = await internal(digest);
  assert.equal(whole.statusCode, 200);
  assert.equal(whole.headers['pullthrough-held'], 'committed');
  assert.equal(whole.headers['content-length'], String(blob.length));
  assert.deepEqual(Buffer.from(await whole.body.arrayBuffer()), blob);

  const rest = await internal(digest, { ...auth(digest), range: 'bytes=1000-' });
  assert.equal(rest.statusCode, 206);
  assert.equal(rest.headers['content-range'], `bytes 1000-${blob.length - 1}/${blob.length}`);
  assert.deepEqual(Buffer.from(await rest.body.arrayBuffer()), blob.subarray(1000));
  assert.equal(fake.requests().length, 0, 'serving a peer never asks the upstream');
});

test('a blob neither held nor filling is a 404, and the upstream is never asked for it', { skip }, async () => {
  const digest = fake.addBlob(randomBytes(1000));
  fake.clearRequests();
  const res = await internal(digest);
  assert.equal(res.statusCode, 404);
  assert.equal((await res.body.json() as { errors: { code: string }[] }).errors[0]!.code, 'BLOB_UNKNOWN');
  assert.equal(fake.requests().length, 0);
});

test('only digests: anything else is refused before storage is touched', { skip }, async () => {
  for (const path of ['sha256:abc', '..%2F..%2Fconfig.json', 'repositories%2Ffake.test%2Fteam', '']) {
    const res = await internal(path);
    assert.ok([400, 401, 404].includes(res.statusCode), `${path}: ${res.statusCode}`);
    const body = await res.body.text();
    assert.match(body, /"errors"/);
  }
  const records = await internal(`sha256:${'a'.repeat(64)}/../x`);
  assert.ok([400, 401, 404].includes(records.statusCode));
  await records.body.dump();
});

test('a fill in progress is streamed as it grows, and its last byte only once the fill is verified', { skip }, async () => {
  const blob = randomBytes(2 * 1024 * 1024);
  const digest = fake.addBlob(blob);
  let release!: () => void;
  const held = new Promise<void>((resolve) => { release = resolve; });
  fake.addFault({ method: 'GET', path: new RegExp(digest), once: true }, { pause: { afterBytes: 1024 * 1024, until: held } });
  const client = request(`${peer.url}/v2/${REPOSITORY}/blobs/${digest}`);
  await until('the fill to start', async () => (await peer.mirror.blobs.inProgress(digest as never))?.written === 1024 * 1024);

  const res = await internal(digest);
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['pullthrough-held'], 'filling');
  assert.equal(res.headers['content-length'], String(blob.length));
  const chunks: Buffer[] = [];
  let received = 0;
  res.body.on('data', (c: Buffer) => { chunks.push(c); received += c.length; });
  const ended = new Promise((resolve, reject) => { res.body.on('end', resolve); res.body.on('error', reject); });
  await until('the first half to reach the peer', () => received >= 1024 * 1024 - 1);
  assert.ok(received < blob.length, 'not all of it before the upstream sent it');
  release();
  await ended;
  assert.deepEqual(Buffer.concat(chunks), blob);
  await (await client).body.dump();
  assert.equal(fake.requests({ method: 'GET', path: new RegExp(digest) }).length, 1);
});

test('a fill that turns out wrong never completes a peer\'s response', { skip }, async () => {
  const blob = randomBytes(1024 * 1024);
  const digest = fake.addBlob(blob);
  let release!: () => void;
  const held = new Promise<void>((resolve) => { release = resolve; });
  fake.addFault({ method: 'GET', path: new RegExp(digest), once: true }, { corrupt: true, pause: { afterBytes: 700_000, until: held } });
  const client = request(`${peer.url}/v2/${REPOSITORY}/blobs/${digest}`);
  await until('the fill to start', async () => (await peer.mirror.blobs.inProgress(digest as never)) !== undefined);
  const res = await internal(digest);
  assert.equal(res.statusCode, 200);
  const body = res.body.arrayBuffer();
  release();
  await assert.rejects(body);
  await (await client).body.arrayBuffer().catch(() => undefined);
});
