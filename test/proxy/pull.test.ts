import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { inspectRaw, manifestDigestOf, pullWithSkopeo } from '../fixtures/skopeo.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');

let upstream: RunningRegistry;
let proxy: RunningProxy;
let images: SeededImage[];

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  images = await seedImages(upstream.host, { layerSize: 300 * 1024, layers: 2 });
  proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url }] });
});

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
});

function blobGets(entries: { method: string; path: string }[]): string[] {
  return entries.filter((e) => e.method === 'GET' && e.path.includes('/blobs/')).map((e) => e.path);
}

test('skopeo copy --all through pullthrough gives the upstream digests, for all four kinds', { skip }, async () => {
  assert.deepEqual(images.map((i) => i.kind).sort(), ['docker-image', 'docker-list', 'oci-image', 'oci-index']);
  for (const image of images) {
    const out = await tempDir('pull');
    const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, out);
    assert.equal(pulled.manifestDigest, image.digest, `${image.kind}: manifest digest`);
    const served = await inspectRaw(`${proxy.host}/${image.repository}:${image.tag}`);
    assert.equal(manifestDigestOf(served), image.digest, `${image.kind}: manifest bytes served bit-exact`);
    assert.ok(served.equals(image.manifest), `${image.kind}: same bytes as the upstream serves`);
  }
});

test('a second pull is served from the cache: no upstream blob GET, no manifest GET', { skip }, async () => {
  await upstream.clearRequests();
  for (const image of images) {
    const out = await tempDir('pull-warm');
    const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, out);
    assert.equal(pulled.manifestDigest, image.digest);
  }
  const seen = await upstream.settledRequests();
  assert.deepEqual(blobGets(seen), [], 'no blob fetched twice');
  assert.deepEqual(seen.filter((e) => e.method === 'GET' && e.path.includes('/manifests/')), [],
    'tags are revalidated with HEAD only; manifests come from the cache');
});

test('storage holds the content-addressed blobs and no temp files remain', { skip }, async () => {
  const uploads = await readdir(join(proxy.root, '_uploads'));
  assert.deepEqual(uploads, []);
  for (const image of images) {
    for (const digest of image.blobDigests) {
      const hex = digest.split(':')[1]!;
      const files = await readdir(join(proxy.root, 'blobs', 'sha256', hex.slice(0, 2), hex));
      assert.deepEqual(files, ['data'], digest);
    }
  }
});

test('the upstream failing: recorded tags and cached content still pull', { skip }, async () => {
  const image = images.find((i) => i.kind === 'oci-index')!;
  await upstream.stop();
  try {
    const out = await tempDir('pull-down');
    const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, out);
    assert.equal(pulled.manifestDigest, image.digest);
    const res = await request(`${proxy.url}/v2/${image.repository}/manifests/${image.tag}`, { method: 'HEAD' });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['x-pullthrough-cache'], 'stale');
    assert.match(String(res.headers['warning']), /110/);
    const missing = await request(`${proxy.url}/v2/${image.repository}/manifests/never-pulled`);
    assert.equal(missing.statusCode, 503);
    assert.equal((await missing.body.json() as { errors: { code: string }[] }).errors[0]!.code, 'UNAVAILABLE');
  } finally {
    await upstream.restart();
  }
});

test('catalog lists what is cached, with its upstream; tags/list answers per repository', { skip }, async () => {
  const res = await request(`${proxy.url}/v2/_catalog`);
  const body = await res.body.json() as { repositories: string[] };
  for (const image of images) assert.ok(body.repositories.includes(`registry.test/${image.repository}`), image.repository);
  const tags = await request(`${proxy.url}/v2/${images[0]!.repository}/tags/list`);
  assert.equal(tags.statusCode, 200);
  assert.deepEqual(await tags.body.json(), { name: images[0]!.repository, tags: [images[0]!.tag] });
});
