/**
 * Review 2026-12-01, finding 7: what is in Redis is a hint, never proof.
 * Anyone who can write to it (the compose deployment's Redis had no
 * password) tries, one forged value at a time:
 *
 * - a `repo:` (or `manifest:`) key for a repository that never had the
 *   blob: no access without a link (the upstream is asked, and says no);
 * - a `blob:` size of 10 for a blob of 100 KiB: the Content-Length is the
 *   file's, so no body runs past it into the next response;
 * - a `fill:` naming the upload of another digest's fill: never followed,
 *   not one byte of the other blob is served;
 * - a `fill:` failure with a code from the prototype chain and a message
 *   of the writer's: a 503 with our own message.
 *
 * Against the real Distribution, except the running fill of the third
 * (a body that stalls, which a real registry does not do on purpose).
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { request } from '../../src/upstream/undici.js';
import type { Digest } from '../../src/registry/digest.js';
import { RegistryError } from '../../src/registry/errors.js';
import { parseFillInfo } from '../../src/proxy/replicas/lease.js';
import { newUploadName } from '../../src/storage/layout.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { findRedis, randomPrefix } from '../fixtures/redis.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { pushImage } from '../fixtures/seed.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const redis = await findRedis();
const skip = redis.skip || toolSkip('docker-registry', 'skopeo');
const UPSTREAM = 'registry.test';
let upstream: RunningRegistry;
let client: Redis;
let image: BuiltImage;
const proxies: RunningProxy[] = [];

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  client = new Redis(redis.url!);
  image = makeImage({ layerSizes: [100 * 1024] });
  // The same image in two repositories: `forge/a` is pulled first, `forge/b` later has the layer upstream too.
  for (const repository of ['forge/a', 'forge/b']) await pushImage(upstream.host, repository, 'v1', image);
});

after(async () => {
  for (const p of proxies) await p.stop();
  client?.disconnect();
  await upstream?.stop();
});

async function proxyOn(root: string, prefix: string, upstreamUrl: string, extra: Record<string, unknown> = {}): Promise<RunningProxy> {
  const p = await startProxy({ root, upstreams: [{ name: UPSTREAM, url: upstreamUrl }], redis: { url: redis.url!, keyPrefix: prefix, leaseTtl: '1s' }, ...extra });
  proxies.push(p);
  return p;
}

async function getBody(url: string): Promise<{ status: number; length: string | undefined; body: Buffer; complete: boolean }> {
  const res = await request(url);
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
    return { status: res.statusCode, length: res.headers['content-length'] as string | undefined, body: Buffer.concat(chunks), complete: true };
  } catch {
    return { status: res.statusCode, length: res.headers['content-length'] as string | undefined, body: Buffer.concat(chunks), complete: false };
  }
}

test('forged repo: and manifest: keys grant nothing: a repository without a link is asked upstream, which says no', { skip }, async () => {
  const prefix = randomPrefix();
  const root = await tempDir('forge-root');
  const proxy = await proxyOn(root, prefix, upstream.url);
  const layer = image.layers[0]!;
  const pulled = await getBody(`${proxy.url}/v2/forge/a/blobs/${layer.digest}`);
  assert.equal(pulled.status, 200);
  await client.set(`${prefix}repo:${UPSTREAM}/forge/nobody@${layer.digest}`, JSON.stringify({ size: layer.size, mediaType: 'application/octet-stream' }));
  await client.set(`${prefix}manifest:${UPSTREAM}/forge/nobody@${image.digest}`, JSON.stringify({ size: image.size, mediaType: image.mediaType }));
  const blob = await getBody(`${proxy.url}/v2/forge/nobody/blobs/${layer.digest}`);
  assert.equal(blob.status, 404, 'the upstream was asked and has no such repository');
  const manifest = await getBody(`${proxy.url}/v2/forge/nobody/manifests/${image.digest}`);
  assert.equal(manifest.status, 404);
});

test('a forged blob: size never becomes a Content-Length: the file\'s size does, and the body is whole', { skip }, async () => {
  const prefix = randomPrefix();
  const root = await tempDir('forge-root');
  const first = await proxyOn(root, prefix, upstream.url);
  const layer = image.layers[0]!;
  assert.equal((await getBody(`${first.url}/v2/forge/a/blobs/${layer.digest}`)).status, 200);
  await client.set(`${prefix}blob:${layer.digest}`, JSON.stringify({ size: 10, mediaType: 'application/octet-stream' }));
  // A second replica on the same root: nothing in its memory, so it reads Redis.
  const second = await proxyOn(root, prefix, upstream.url);
  const head = await request(`${second.url}/v2/forge/b/blobs/${layer.digest}`, { method: 'HEAD' });
  await head.body.dump();
  assert.equal(head.headers['content-length'], String(layer.size), 'HEAD: the size storage has');
  const got = await getBody(`${second.url}/v2/forge/b/blobs/${layer.digest}`);
  assert.equal(got.status, 200);
  assert.equal(got.length, String(layer.size));
  assert.ok(got.complete && got.body.equals(layer.data));

  // Two requests on one connection: the second answer is an answer, not the rest of a blob.
  const raw = await new Promise<string>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: Number(new URL(second.url).port) });
    let text = '';
    socket.on('data', (c: Buffer) => { text += c.toString('latin1'); });
    socket.on('error', reject);
    socket.on('end', () => resolve(text));
    socket.write(`GET /v2/forge/b/blobs/${layer.digest} HTTP/1.1\r\nhost: x\r\n\r\nGET /v2/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
  });
  const second200 = raw.indexOf('HTTP/1.1 200', 1);
  assert.ok(second200 > 0, 'two responses');
  assert.equal(raw.slice(second200).split('\r\n\r\n')[1], '{}', 'the second response is /v2/\'s');
});

test('a forged fill: naming another digest\'s upload is never followed: not one byte of the other blob', { skip: redis.skip }, async () => {
  const fake: FakeUpstream = await startFakeUpstream();
  try {
    const other = randomBytes(300_000);
    const wanted = randomBytes(100_000);
    const otherDigest = fake.addBlob(other);
    const wantedDigest = fake.addBlob(wanted);
    // The other blob's fill writes 100,000 bytes and then stalls, its upload open.
    fake.addFault({ path: `/v2/team/app/blobs/${otherDigest}` }, { stall: { afterBytes: 100_000 } });
    const prefix = randomPrefix();
    const proxy = await proxyOn(await tempDir('forge-root'), prefix, fake.url, { upstreamDefaults: { timeouts: { connect: '2s', headers: '3s', bodyIdle: '30s' } } });
    const stalled = request(`${proxy.url}/v2/team/app/blobs/${otherDigest}`).then((r) => r.body.dump().catch(() => undefined), () => undefined);
    let published: { upload: string } | undefined;
    for (let i = 0; i < 500 && !published; i++) {
      const value = await client.get(`${prefix}fill:${otherDigest}`);
      if (value) published = JSON.parse(value) as { upload: string };
      else await sleep(10);
    }
    assert.ok(published, 'the running fill published its upload');
    await client.set(`${prefix}lease:${wantedDigest}`, 'forger/1/00', 'PX', 800);
    await client.set(`${prefix}fill:${wantedDigest}`, JSON.stringify({ owner: 'forger/1/00', upload: published.upload, size: wanted.length }), 'PX', 800);
    const got = await getBody(`${proxy.url}/v2/team/app/blobs/${wantedDigest}`);
    assert.equal(got.status, 200);
    assert.ok(got.complete, 'once the forged lease lapsed, the replica fetched the blob itself');
    assert.ok(got.body.equals(wanted), 'the wanted blob, and nothing of the other');
    assert.equal(createHash('sha256').update(got.body).digest('hex'), wantedDigest.slice(7));
    void stalled;
  } finally {
    await fake.stop();
  }
});

test('a fill: failure read from Redis: only a fill\'s own codes, and our message, never the writer\'s', () => {
  const digest = `sha256:${'a'.repeat(64)}` as Digest;
  const read = (value: unknown): RegistryError => {
    const info = parseFillInfo(JSON.stringify(value), digest);
    assert.ok(info && 'failed' in info);
    return info.failed;
  };
  const constructor = read({ owner: 'o', failed: { code: 'constructor', message: '<b>from Redis</b>' } });
  assert.equal(constructor.code, 'UNAVAILABLE');
  assert.equal(constructor.status, 503);
  assert.ok(!constructor.message.includes('from Redis'));
  assert.equal(read({ owner: 'o', failed: { code: 'UNAUTHORIZED' } }).code, 'UNAVAILABLE', 'never a 401 (docker would prompt)');
  const unknown = read({ owner: 'o', failed: { code: 'BLOB_UNKNOWN', message: 'planted' } });
  assert.equal(unknown.code, 'BLOB_UNKNOWN');
  assert.equal(unknown.message, 'blob unknown to registry');
  assert.equal(parseFillInfo(JSON.stringify({ owner: 'o', upload: newUploadName(`sha256:${'b'.repeat(64)}` as Digest), size: 1 }), digest), undefined,
    'an upload made for another digest is no information');
  assert.ok(parseFillInfo(JSON.stringify({ owner: 'o', upload: newUploadName(digest), size: 1 }), digest));
  assert.equal(parseFillInfo(JSON.stringify({ owner: 'o', upload: '../../etc/passwd' }), digest), undefined);
});
