/**
 * Docker Hub naming: for an upstream that is Docker Hub (`dockerHub: true`),
 * a one-component name means `library/<name>`. dockerd's registry-mirrors
 * requests (no `ns`, no prefix, names already `library/...`) and direct pulls
 * of `mirror/alpine` reach the same upstream repository and share one cache
 * entry. An upstream that is not Docker Hub keeps one-component names as they are.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { request } from '../../src/upstream/undici.js';
import { makeImage, writeOciLayout, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type AccessLogEntry, type RunningRegistry } from '../fixtures/registry.js';
import { pushLayout } from '../fixtures/seed.js';
import { manifestDigestOf, pullWithSkopeo } from '../fixtures/skopeo.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');
/** A guard against hangs, not a performance check. */
const options = { skip, timeout: 120_000 };

const HUB = 'hub.test';
const OTHER = 'other.test';
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json';

let hub: RunningRegistry;
let other: RunningRegistry;
let proxy: RunningProxy;
/** `library/alpine:3` on the Docker-Hub-like upstream. */
let hubAlpine: BuiltImage;
/** `alpine:3` (one component, no library/) on the other upstream: different content. */
let otherAlpine: BuiltImage;

async function push(reg: RunningRegistry, repository: string, image: BuiltImage): Promise<void> {
  const dir = await tempDir('alpine-layout');
  await writeOciLayout(dir, [{ ref: 'img', image }]);
  const digest = await pushLayout(dir, 'img', `${reg.host}/${repository}:3`);
  assert.equal(digest, image.digest);
}

before(async () => {
  if (skip) return;
  [hub, other] = await Promise.all([startRegistry(), startRegistry()]);
  hubAlpine = makeImage({ layerSizes: [64 * 1024] });
  otherAlpine = makeImage({ layerSizes: [64 * 1024] });
  await Promise.all([push(hub, 'library/alpine', hubAlpine), push(other, 'alpine', otherAlpine)]);
  await Promise.all([hub.clearRequests(), other.clearRequests()]);
  proxy = await startProxy({
    upstreams: [
      { name: HUB, url: hub.url, dockerHub: true },
      { name: OTHER, url: other.url },
    ],
    defaultUpstream: HUB,
  });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.stop();
  await Promise.all([hub?.stop(), other?.stop()]);
});

async function get(path: string): Promise<{ status: number; body: Buffer; cache: unknown; digest: unknown }> {
  const res = await request(`${proxy.url}${path}`, { headers: { accept: ACCEPT } });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, body, cache: res.headers['x-pullthrough-cache'], digest: res.headers['docker-content-digest'] };
}

function gets(entries: AccessLogEntry[]): AccessLogEntry[] {
  return entries.filter((e) => e.method === 'GET');
}

test('a one-component name with no ns and no prefix goes to the default (Docker Hub) upstream as library/<name>', options, async () => {
  await Promise.all([hub.clearRequests(), other.clearRequests()]);
  const manifest = await get('/v2/alpine/manifests/3');
  assert.equal(manifest.status, 200, manifest.body.toString());
  assert.equal(manifestDigestOf(manifest.body), hubAlpine.digest);
  for (const blob of [hubAlpine.config, ...hubAlpine.layers]) {
    const res = await get(`/v2/alpine/blobs/${blob.digest}`);
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(blob.data), blob.digest);
  }
  const seen = await hub.settledRequests();
  assert.ok(seen.some((e) => e.path === '/v2/library/alpine/manifests/3'), 'asked upstream for library/alpine');
  // Besides the one GET /v2/ that learns how the upstream authenticates.
  assert.deepEqual(seen.filter((e) => e.path !== '/v2/' && !e.path.startsWith('/v2/library/alpine/')), [], 'never for alpine without library/');
  assert.deepEqual(await other.settledRequests(), []);
});

test('dockerd-style library/alpine (and ns=, and the prefix form) share that one cache entry: no upstream GET', options, async () => {
  // Cached by the previous test through `alpine`; make sure of it here.
  for (const path of ['/v2/alpine/manifests/3', ...[hubAlpine.config, ...hubAlpine.layers].map((b) => `/v2/alpine/blobs/${b.digest}`)]) {
    assert.equal((await get(path)).status, 200, path);
  }
  await hub.clearRequests();
  for (const name of ['library/alpine', `alpine?ns=${HUB}`, `${HUB}/alpine`, `${HUB}/library/alpine`]) {
    const [repo, query] = name.split('?');
    const q = query ? `?${query}` : '';
    const byTag = await get(`/v2/${repo}/manifests/3${q}`);
    assert.equal(byTag.status, 200, name);
    assert.equal(byTag.digest, hubAlpine.digest, name);
    assert.equal(byTag.cache, 'hit', `${name}: tag answered from the cache`);
    const byDigest = await get(`/v2/${repo}/manifests/${hubAlpine.digest}${q}`);
    assert.equal(byDigest.cache, 'hit', `${name}: manifest from the cache`);
    for (const blob of [hubAlpine.config, ...hubAlpine.layers]) {
      const res = await get(`/v2/${repo}/blobs/${blob.digest}${q}`);
      assert.equal(res.status, 200);
      assert.equal(res.cache, 'hit', `${name}: blob from the cache`);
      assert.ok(res.body.equals(blob.data));
    }
  }
  const seen = await hub.settledRequests();
  assert.deepEqual(gets(seen), [], 'no upstream GET: one cache entry for alpine and library/alpine');
  // tagMaxAge is 0s in tests, so each tag request is revalidated, with a HEAD on library/alpine.
  assert.ok(seen.every((e) => e.method === 'HEAD' && e.path === '/v2/library/alpine/manifests/3'), JSON.stringify(seen));
});

test('skopeo pulls mirror/alpine:3 and mirror/library/alpine:3 alike, from the cache', options, async () => {
  await hub.clearRequests();
  for (const ref of ['alpine:3', 'library/alpine:3', `${HUB}/alpine:3`]) {
    const pulled = await pullWithSkopeo(`${proxy.host}/${ref}`, await tempDir('hub-skopeo'));
    assert.equal(pulled.manifestDigest, hubAlpine.digest, ref);
  }
  assert.deepEqual(gets(await hub.settledRequests()), []);
});

test('an upstream that is not Docker Hub keeps a one-component name as it is', options, async () => {
  await Promise.all([hub.clearRequests(), other.clearRequests()]);
  for (const path of [`/v2/${OTHER}/alpine/manifests/3`, `/v2/alpine/manifests/3?ns=${OTHER}`]) {
    const res = await get(path);
    assert.equal(res.status, 200, path);
    assert.equal(manifestDigestOf(res.body), otherAlpine.digest, path);
  }
  const seen = await other.settledRequests();
  assert.ok(seen.some((e) => e.path === '/v2/alpine/manifests/3'));
  assert.deepEqual(seen.filter((e) => e.path.includes('library/')), []);
  assert.deepEqual(await hub.settledRequests(), []);
});

test('_catalog: one entry for alpine and library/alpine', options, async () => {
  const res = await request(`${proxy.url}/v2/_catalog`);
  assert.deepEqual(await res.body.json(), { repositories: [`${HUB}/library/alpine`, `${OTHER}/alpine`] });
});
