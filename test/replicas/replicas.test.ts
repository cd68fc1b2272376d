import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeIndex } from '../fixtures/images.js';
import { testConfigDocument } from '../fixtures/proxy.js';
import { pushBlob } from '../fixtures/push.js';
import { findRedis, randomPrefix, redisKeys, startRedisProxy } from '../fixtures/redis.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { startServer, type RunningServer } from '../fixtures/server.js';
import { startThrottle } from '../fixtures/throttle.js';
import { download } from '../fixtures/download.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { tempDir, toolSkip, until } from '../fixtures/tools.js';

const redis = await findRedis();
const skip = redis.skip || toolSkip('docker-registry');
const BIG = 33 * 1024 * 1024;
/** Upstream bytes per second through the throttle: a 33 MiB fill takes about two seconds, long enough to watch. */
const RATE = 16 * 1024 * 1024;
const UPSTREAM = 'registry.test';

let upstream: RunningRegistry;
let throttle: { url: string; close(): Promise<void> };
let root: string;
let prefix: string;
let one: RunningServer;
let two: RunningServer;
const big: { repository: string; layer: string; size: number }[] = [];

function replicaConfig(): Record<string, unknown> {
  const document = testConfigDocument({ upstreams: [{ name: UPSTREAM, url: throttle.url }] }, root);
  return { ...document, redis: { url: redis.url!, keyPrefix: prefix, leaseTtl: '2s' } };
}

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  for (const repository of ['replicas/eight', 'replicas/killed']) {
    // No image needed to GET a blob: the blob alone, with the plain push API.
    const bytes = randomBytes(BIG);
    big.push({ repository, layer: await pushBlob(upstream.url, repository, bytes), size: bytes.length });
  }
  throttle = await startThrottle(upstream.host, RATE);
  root = await tempDir('replicas');
  prefix = randomPrefix();
  [one, two] = await Promise.all([startServer(replicaConfig()), startServer(replicaConfig())]);
});

after(async () => {
  await Promise.all([one?.stop(), two?.stop()]);
  await throttle?.close();
  await upstream?.stop();
});


async function upstreamBlobGets(digest: string): Promise<number> {
  return (await upstream.settledRequests()).filter((e) => e.method === 'GET' && e.path.endsWith(`/blobs/${digest}`)).length;
}

function requestOutcomes(server: RunningServer, digest: string): unknown[] {
  return server.logs().filter((l) => l['msg'] === 'request' && String(l['url']).endsWith(digest)).map((l) => l['cache']);
}

test('two replica processes, 8 simultaneous cold GETs of a 33 MiB blob split across them: 1 upstream GET, 8 right bodies', { skip }, async () => {
  const { repository, layer, size } = big[0]!;
  await upstream.clearRequests();
  const results = await Promise.all(Array.from({ length: 8 }, (_, i) =>
    download(`${(i % 2 === 0 ? one : two).url}/v2/${repository}/blobs/${layer}`)));
  for (const r of results) {
    assert.equal(r.error, undefined);
    assert.equal(r.status, 200);
    assert.equal(r.bytes, size);
    assert.equal(r.digest, layer);
  }
  assert.equal(await upstreamBlobGets(layer), 1, 'the blob was fetched once across both replicas');
  const outcomes = (): unknown[] => [...requestOutcomes(one, layer), ...requestOutcomes(two, layer)];
  // A request's log line is written once its response is done: it may trail the body.
  await until('8 request log lines', () => outcomes().length === 8);
  assert.equal(outcomes().filter((c) => c === 'miss').length, 1, 'one request started the fill');
  assert.equal(outcomes().filter((c) => c === 'coalesced').length, 7, 'the rest streamed it as it arrived, in both replicas');
  // The commit's bookkeeping (descriptors, links, lease) runs as the last bytes go out: wait for it, briefly.
  await until('the descriptors in Redis and the lease released', async () => {
    const keys = await redisKeys(redis.url!, prefix);
    return keys.has(`blob:${layer}`)
      && ![...keys.keys()].some((k) => k.startsWith('lease:') || k.startsWith('fill:'));
  }, 5000);
});

test('the lease owner SIGKILLed mid-fill: the other replica takes over, its clients get the right blob, both serve it after', { skip }, async () => {
  const { repository, layer, size } = big[1]!;
  await upstream.clearRequests();
  const path = `/v2/${repository}/blobs/${layer}`;
  let ownerBytes = 0;
  const ownerClient = download(`${one.url}${path}`, (n) => { ownerBytes = n; });
  await until('the owner to stream', () => ownerBytes > 2 * 1024 * 1024);
  const lease = (await redisKeys(redis.url!, prefix)).get(`lease:${layer}`);
  assert.match(lease ?? '', new RegExp(`/${one.pid}/`), 'replica one holds the lease');

  const followed = [0, 0];
  const followers = [0, 1].map((i) => download(`${two.url}${path}`, (n) => { followed[i] = n; }));
  await until('the followers to stream from the shared file', () => followed.every((n) => n > 1024 * 1024));
  assert.ok(followed.every((n) => n < size), 'the followers are in the middle of the blob');

  await one.kill('SIGKILL');
  const broken = await ownerClient;
  assert.ok(broken.error !== undefined || broken.bytes < size, "the killed replica's own client is cut off");

  for (const result of await Promise.all(followers)) {
    assert.equal(result.error, undefined, 'the followers never noticed');
    assert.equal(result.status, 200);
    assert.equal(result.bytes, size);
    assert.equal(result.digest, layer);
  }
  assert.equal(await upstreamBlobGets(layer), 2, 'the dead fill and the takeover');
  const hex = layer.split(':')[1]!;
  const stored = await readFile(join(root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'));
  assert.equal(`sha256:${createHash('sha256').update(stored).digest('hex')}`, layer);
  assert.deepEqual(await readdir(join(root, '_uploads')), [], "the dead replica's temp file was removed by its successor");
  assert.ok(two.logs().some((l) => l['msg'] === 'took over a fill whose replica stopped renewing its lease'));

  one = await startServer(replicaConfig());
  await upstream.clearRequests();
  for (const server of [one, two]) {
    const before = requestOutcomes(server, layer).length;
    const again = await download(`${server.url}${path}`);
    assert.equal(again.digest, layer);
    await until('the request log line', () => requestOutcomes(server, layer).length > before);
    assert.equal(requestOutcomes(server, layer).at(-1), 'hit');
  }
  assert.equal(await upstreamBlobGets(layer), 0);
});

test('with replicas, start-up sweeps only temp files nobody has written for twice the body-idle timeout', { skip: redis.skip }, async () => {
  const shared = await tempDir('sweep');
  const uploads = join(shared, '_uploads');
  await mkdir(uploads, { recursive: true });
  const live = join(uploads, 'live-fill');
  const dead = join(uploads, 'dead-fill');
  await writeFile(live, 'written a moment ago by another replica');
  await writeFile(dead, 'left by a replica that died a while ago');
  const old = new Date(Date.now() - 60_000);
  await utimes(dead, old, old);
  // The test configuration's body-idle timeout is 3 s: 6 s is the line.
  const proxy = await startRedisProxy({ upstreams: [{ name: UPSTREAM, url: 'http://127.0.0.1:9' }], root: shared, redis: { url: redis.url!, keyPrefix: randomPrefix() } });
  try {
    assert.ok(await stat(live), 'a live fill of another replica is left alone');
    await assert.rejects(stat(dead), /ENOENT/);
  } finally {
    await proxy.stop();
  }
});

test('two replicas, concurrent cold pulls of one image through both: one upstream GET per manifest digest', { skip: skip || toolSkip('skopeo') }, async () => {
  // The fake upstream answers every manifest GET by digest after 300 ms: long enough that both replicas
  // want the same manifest at the same time, which is when each used to fetch it.
  const fake = await startFakeUpstream();
  const image = makeIndex({ layerSizes: [32 * 1024] });
  fake.addImage('replicas/manifests', 'v1', image);
  fake.addFault({ method: 'GET', path: /\/manifests\/sha256:/ }, { slowFirstByte: 300 });
  const shared = await tempDir('replicas-manifests');
  const document = testConfigDocument({ upstreams: [{ name: UPSTREAM, url: fake.url }] }, shared);
  const config = { ...document, redis: { url: redis.url!, keyPrefix: randomPrefix() } };
  const replicas = await Promise.all([startServer(config), startServer(config)]);
  try {
    const pulled = await Promise.all(replicas.map(async (server) =>
      pullWithSkopeo(`${server.host}/replicas/manifests:v1`, await tempDir('replicas-manifests-pull'))));
    for (const p of pulled) {
      assert.equal(p.manifestDigest, image.digest);
      assert.deepEqual([...p.childDigests].sort(), image.children.map((c) => c.digest).sort());
    }
    const gets = fake.requests({ method: 'GET', path: /\/manifests\/sha256:/ }).map((r) => r.path);
    const digests = [image.digest, ...image.children.map((c) => c.digest)];
    assert.deepEqual([...gets].sort(), digests.map((d) => `/v2/replicas/manifests/manifests/${d}`).sort(), 'each manifest digest fetched once across both');
  } finally {
    await Promise.all(replicas.map((r) => r.stop()));
    await fake.stop();
  }
});
