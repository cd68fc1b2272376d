/**
 * Two replica processes on one S3 bucket and one Redis, each with its own
 * local temp directory (no shared file system): the Redis lease decides who
 * fetches, the other streams the fill from the owner's internal endpoint.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { freePort, waitForHttp } from '../fixtures/net.js';
import { peerCluster, type PeerCluster } from '../fixtures/peers.js';
import { testConfigDocument } from '../fixtures/proxy.js';
import { findRedis, redisKeys } from '../fixtures/redis.js';
import { s3StorageConfig, s3Store, type S3Store } from '../fixtures/s3.js';
import { tempDir, trackChildProcess, until } from '../fixtures/tools.js';

const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const MiB = 2 ** 20;

let store: S3Store;
let fake: FakeUpstream;
const redis = await findRedis();
const skip = redis.skip;
const redisUrl = redis.url;

before(async () => {
  if (skip) return;
  store = await s3Store();
  fake = await startFakeUpstream();
});

after(async () => {
  await fake?.stop();
});

interface Replica {
  readonly port: number;
  readonly url: string;
  readonly child: ChildProcess;
}

/** A replica process: its own spool directory, the cluster's bucket, Redis prefix and secret; `peers` adds to its peers block. */
async function startReplica(cluster: PeerCluster, bucket: string, peers: Record<string, unknown> = {}): Promise<Replica> {
  const root = await tempDir('s3-replica');
  const port = await freePort();
  const configPath = join(root, 'config.json');
  await writeFile(configPath, JSON.stringify({
    ...testConfigDocument({
      upstreams: [{ name: 'fake.test', url: fake.url }], storage: s3StorageConfig(store, bucket),
      upstreamDefaults: { timeouts: { connect: '2s', headers: '5s', bodyIdle: '30s' } },
    }, join(root, 'spool')),
    listen: { host: '127.0.0.1', port },
    ...cluster.blocks(port, peers),
  }));
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  if (process.env.S3_REPLICA_LOG) { const { createWriteStream } = await import('node:fs'); const out = createWriteStream(`${process.env.S3_REPLICA_LOG}.${port}`); child.stdout!.pipe(out); child.stderr!.pipe(out); } else { child.stdout!.resume(); child.stderr!.resume(); }
  trackChildProcess(child);
  await waitForHttp(`http://127.0.0.1:${port}/v2/`);
  return { port, url: `http://127.0.0.1:${port}`, child };
}

/** Starts a GET and resolves once its headers are in; `body` resolves to the digest of the whole body, or undefined if it broke. */
async function startGet(url: string): Promise<{ status: number; received: () => number; body: Promise<string | undefined> }> {
  const res = await request(url);
  let received = 0;
  const hash = createHash('sha256');
  const body = (async () => {
    for await (const chunk of res.body) {
      hash.update(chunk as Buffer);
      received += (chunk as Buffer).length;
    }
    return `sha256:${hash.digest('hex')}`;
  })().catch(() => undefined);
  return { status: res.statusCode, received: () => received, body };
}

function addBlob(repository: string, size: number): string {
  const image = makeImage({ layerSizes: [size] });
  fake.addImage(repository, 'v1', image);
  return image.layers[0]!.digest;
}

test('8 concurrent cold GETs of a 64 MiB blob across two replicas: exactly 1 upstream GET, every body right', { skip, timeout: 120_000 }, async () => {
  const cluster = await peerCluster(redisUrl!);
  const bucket = await store.createBucket();
  // The upstream is held below until every client has bytes. On a loaded machine that took longer than the cluster's
  // 2 s body-idle timeout: the follower's stream from the owner timed out, it took the owner for slow and fetched
  // for itself, as it should (2 upstream GETs in half the runs of the whole suite on 2 cores; "skipping a slow peer",
  // UND_ERR_BODY_TIMEOUT, in its log). The hold is the test's own, so the follower waits for it.
  const patient = { timeouts: { connect: '500ms', firstByte: '1s', idle: '30s' } };
  const replicas = [await startReplica(cluster, bucket, patient), await startReplica(cluster, bucket, patient)];
  try {
    const digest = addBlob('s3replicas/big', 64 * MiB);
    const path = `/v2/s3replicas/big/blobs/${digest}`;
    // The upstream holds the bytes after 16 MiB until every client is in: the followers join a fill in progress.
    let release!: () => void;
    fake.addFault({ path, once: true }, { pause: { afterBytes: 16 * MiB, until: new Promise<void>((r) => { release = r; }) } });
    const gets: Awaited<ReturnType<typeof startGet>>[] = [];
    for (let i = 0; i < 8; i++) gets.push(await startGet(`${replicas[i % 2]!.url}${path}`));
    assert.deepEqual(gets.map((g) => g.status), Array(8).fill(200));
    // Streamed, not waited for: the object is not in S3 yet, so the other replica's clients read the owner's fill over HTTP.
    await until('every client on both replicas has bytes while the fill is held mid-way', () => gets.every((g) => g.received() > MiB));
    release();
    const digests = await Promise.all(gets.map((g) => g.body));
    assert.deepEqual(digests, Array(8).fill(digest), 'every body right');
    assert.equal(fake.requests({ method: 'GET', path }).length, 1, 'one upstream GET between the two replicas');
    const hex = digest.split(':')[1]!;
    assert.ok((await store.keys(bucket)).includes(`blobs/sha256/${hex.slice(0, 2)}/${hex}/data`));
    assert.deepEqual(await store.multipartUploads(bucket), []);
  } finally {
    for (const r of replicas) r.child.kill('SIGKILL');
  }
});

test('the owner SIGKILLed mid-fill: the follower takes the lease over, completes, and the blob is right', { skip, timeout: 120_000 }, async () => {
  const cluster = await peerCluster(redisUrl!);
  const bucket = await store.createBucket();
  const replicas = [await startReplica(cluster, bucket), await startReplica(cluster, bucket)];
  try {
    const digest = addBlob('s3replicas/crash', 24 * MiB);
    const path = `/v2/s3replicas/crash/blobs/${digest}`;
    fake.addFault({ path, once: true }, { pause: { afterBytes: 12 * MiB, until: new Promise<void>(() => undefined) } });
    const ownerGet = await startGet(`${replicas[0]!.url}${path}`);
    await until('the owner has bytes', () => ownerGet.received() > MiB);
    const followerGet = await startGet(`${replicas[1]!.url}${path}`);
    await until('the follower streams the owner\'s fill', () => followerGet.received() > MiB);
    const keys = await redisKeys(redisUrl!, cluster.prefix);
    const owner = keys.get(`lease:${digest}`);
    assert.equal(keys.get(`peer:${owner}`), replicas[0]!.url, 'the first replica holds the lease');
    replicas[0]!.child.kill('SIGKILL');
    await once(replicas[0]!.child, 'exit');
    assert.equal(await followerGet.body, digest, 'the follower\'s client gets the whole blob, right');
    assert.equal(fake.requests({ method: 'GET', path }).length, 2, 'the follower fetched it again after the owner died');
    const again = await startGet(`${replicas[1]!.url}${path}`);
    assert.equal(await again.body, digest);
    assert.deepEqual(await store.multipartUploads(bucket).then((u) => u.length <= 1), true, 'at most the dead owner\'s upload is left, for the sweep');
  } finally {
    for (const r of replicas) r.child.kill('SIGKILL');
  }
});
