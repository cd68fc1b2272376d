import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages } from '../fixtures/seed.js';
import { toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');
const BIG = 33 * 1024 * 1024;

let upstream: RunningRegistry;
let proxy: RunningProxy;
/** Repositories that hold a big layer each, and the layer's digest. */
const big: { repository: string; layer: string; size: number }[] = [];

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  for (const prefix of ['one', 'two', 'three', 'four']) {
    const [image] = await seedImages(upstream.host, { kinds: ['oci-image'], layerSize: BIG, repositoryPrefix: prefix });
    const manifest = JSON.parse(image!.manifest.toString()) as { layers: { digest: string; size: number }[] };
    big.push({ repository: image!.repository, layer: manifest.layers[0]!.digest, size: manifest.layers[0]!.size });
  }
  proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url }] });
});

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
});

async function sha256Of(url: string, headers: Record<string, string> = {}): Promise<{ status: number; digest: string; bytes: number }> {
  const res = await request(url, { headers });
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}`, bytes };
}

async function upstreamBlobGets(digest: string): Promise<number> {
  return (await upstream.settledRequests()).filter((e) => e.method === 'GET' && e.path.endsWith(`/blobs/${digest}`)).length;
}

async function fillsSettled(): Promise<void> {
  while (proxy.mirror.blobs.activeFills > 0) await new Promise((r) => setTimeout(r, 20));
}

test('8 simultaneous GETs of one uncached 33 MiB blob: exactly 1 upstream GET, 8 correct bodies', { skip }, async () => {
  const { repository, layer, size } = big[0]!;
  await upstream.clearRequests();
  const url = `${proxy.url}/v2/${repository}/blobs/${layer}`;
  const results = await Promise.all(Array.from({ length: 8 }, () => sha256Of(url)));
  for (const r of results) {
    assert.equal(r.status, 200);
    assert.equal(r.bytes, size);
    assert.equal(r.digest, layer);
  }
  assert.equal(await upstreamBlobGets(layer), 1);
  const outcomes = proxy.logs().filter((l) => l['msg'] === 'request' && String(l['url']).endsWith(layer)).map((l) => l['cache']);
  assert.equal(outcomes.filter((c) => c === 'miss').length, 1, 'one request started the fill');
  assert.equal(outcomes.filter((c) => c === 'coalesced' || c === 'hit').length, 7, 'the others joined it');
});

test('a client that aborts after 10%: the fill goes on, and the next GET is a hit with 0 upstream GETs', { skip }, async () => {
  const { repository, layer, size } = big[1]!;
  await upstream.clearRequests();
  const controller = new AbortController();
  const res = await request(`${proxy.url}/v2/${repository}/blobs/${layer}`, { signal: controller.signal });
  let received = 0;
  await assert.rejects(async () => {
    for await (const chunk of res.body) {
      received += (chunk as Buffer).length;
      if (received >= size / 10) controller.abort();
    }
  });
  assert.ok(received >= size / 10 && received < size);
  await fillsSettled();
  assert.equal(await upstreamBlobGets(layer), 1);
  await upstream.clearRequests();
  const again = await sha256Of(`${proxy.url}/v2/${repository}/blobs/${layer}`);
  assert.equal(again.digest, layer);
  assert.equal(await upstreamBlobGets(layer), 0);
  assert.equal(proxy.logs().filter((l) => l['msg'] === 'request').at(-1)?.['cache'], 'hit');
});

test('Range on a miss is served from the fill as it arrives; the one fill completes the cache', { skip }, async () => {
  const { repository, layer, size } = big[2]!;
  const direct = await request(`${upstream.url}/v2/${repository}/blobs/${layer}`, { headers: { range: 'bytes=1000-1999' } });
  const expected = Buffer.from(await direct.body.arrayBuffer());
  await upstream.clearRequests();
  const res = await request(`${proxy.url}/v2/${repository}/blobs/${layer}`, { headers: { range: 'bytes=1000-1999' } });
  assert.equal(res.statusCode, 206);
  assert.equal(res.headers['content-range'], `bytes 1000-1999/${size}`);
  assert.equal(res.headers['content-length'], '1000');
  assert.ok(Buffer.from(await res.body.arrayBuffer()).equals(expected));
  await fillsSettled();
  const whole = await sha256Of(`${proxy.url}/v2/${repository}/blobs/${layer}`);
  assert.equal(whole.digest, layer);
  assert.equal(await upstreamBlobGets(layer), 1, 'one upstream GET served the range and the cache');
  const resume = await request(`${proxy.url}/v2/${repository}/blobs/${layer}`, { headers: { range: `bytes=${size - 10}-` } });
  assert.equal(resume.statusCode, 206);
  assert.equal((await resume.body.arrayBuffer()).byteLength, 10);
  const past = await request(`${proxy.url}/v2/${repository}/blobs/${layer}`, { headers: { range: `bytes=${size}-` } });
  assert.equal(past.statusCode, 416);
  assert.equal(past.headers['content-range'], `bytes */${size}`);
  assert.equal((await past.body.json() as { errors: { code: string }[] }).errors[0]!.code, 'RANGE_INVALID');
});

test('HEAD on a miss makes one upstream HEAD and stores nothing', { skip }, async () => {
  const { repository, layer, size } = big[3]!;
  await upstream.clearRequests();
  const res = await request(`${proxy.url}/v2/${repository}/blobs/${layer}`, { method: 'HEAD' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['content-length'], String(size));
  assert.equal(res.headers['docker-content-digest'], layer);
  assert.equal(await res.body.text(), '');
  const seen = (await upstream.settledRequests()).filter((e) => e.path.includes('/blobs/'));
  assert.deepEqual(seen.map((e) => e.method), ['HEAD']);
  const hex = layer.split(':')[1]!;
  await assert.rejects(readdir(join(proxy.root, 'blobs', 'sha256', hex.slice(0, 2), hex)));
});

test('a blob cached through one repository is not served through another that does not have it', { skip }, async () => {
  const cached = big[0]!;
  const other = big[3]!;
  await upstream.clearRequests();
  const leak = await request(`${proxy.url}/v2/${other.repository}/blobs/${cached.layer}`);
  assert.equal(leak.statusCode, 404);
  assert.equal((await leak.body.json() as { errors: { code: string }[] }).errors[0]!.code, 'BLOB_UNKNOWN');
  const never = await request(`${proxy.url}/v2/never/pulled/blobs/${cached.layer}`);
  assert.equal(never.statusCode, 404);
  await never.body.dump();
  assert.equal(await upstreamBlobGets(cached.layer), 0, 'the check is a HEAD, never a second download');
});

test('a cached blob the upstream confirms for another repository is served from storage, not downloaded', { skip }, async () => {
  // A registry shares blobs across repositories it holds: mount `one`'s layer into `four` by pulling it there.
  const source = big[0]!;
  const target = big[3]!;
  const mount = await request(`${upstream.url}/v2/${target.repository}/blobs/uploads/?mount=${source.layer}&from=${source.repository}`, { method: 'POST' });
  assert.equal(mount.statusCode, 201, 'the reference registry mounts the blob');
  await mount.body.dump();
  await upstream.clearRequests();
  const res = await sha256Of(`${proxy.url}/v2/${target.repository}/blobs/${source.layer}`);
  assert.equal(res.digest, source.layer);
  const seen = (await upstream.settledRequests()).filter((e) => e.path.endsWith(source.layer));
  assert.deepEqual(seen.map((e) => `${e.method} ${e.path.split('/blobs/')[0]}`), [`HEAD /v2/${target.repository}`]);
});
