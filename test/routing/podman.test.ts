/**
 * Real podman pulling through pullthrough with a registries.conf whose mirror
 * locations carry the upstream's name as a path prefix
 * (`127.0.0.1:P/<upstream-name>`): podman sends `GET /v2/` and then plain
 * requests with no `ns`, so the prefix alone must pick the upstream.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { freePort } from '../fixtures/net.js';
import { createPodman, registriesConf, type Podman } from '../fixtures/podman.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo', 'podman');
/** A guard against hangs, not a performance check. */
const options = { skip, timeout: 120_000 };

const A = 'registry-a.test';
/**
 * An upstream whose name has a port: `127.0.0.1:P/registry-b.test:5000/...`
 * is not a valid image reference (a path component cannot hold ':'), so its
 * mirror location uses the port-less alias.
 */
const B = 'registry-b.test:5000';
const B_ALIAS = 'registry-b.test';
const KINDS = ['oci-image', 'oci-index'] as const;

let regA: RunningRegistry;
let regB: RunningRegistry;
let proxy: RunningProxy;
let imagesA: SeededImage[];
let imagesB: SeededImage[];
let closedPort: number;

before(async () => {
  if (skip) return;
  [regA, regB, closedPort] = await Promise.all([startRegistry(), startRegistry(), freePort()]);
  const seed = (reg: RunningRegistry): Promise<SeededImage[]> =>
    seedImages(reg.host, { kinds: KINDS, repositoryPrefix: 'team', tag: 'v1', layerSize: 64 * 1024 });
  [imagesA, imagesB] = await Promise.all([seed(regA), seed(regB)]);
  proxy = await startProxy({ upstreams: [{ name: A, url: regA.url }, { name: B, url: regB.url, aliases: [B_ALIAS] }] });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.stop();
  await Promise.all([regA?.stop(), regB?.stop()]);
});

function proxyRequests(): { method: string; url: string; status: number }[] {
  return proxy.logs().filter((l) => l['msg'] === 'request') as unknown as { method: string; url: string; status: number }[];
}

async function clearAll(): Promise<number> {
  await Promise.all([regA.clearRequests(), regB.clearRequests()]);
  return proxyRequests().length;
}

/** The README's form: the registry as podman knows it, its real location as the fallback, pullthrough as the mirror. */
function confFor(proxyHost: string): string {
  return registriesConf([
    { prefix: A, location: regA.host, insecure: true, mirrors: [{ location: `${proxyHost}/${A}`, insecure: true }] },
    { prefix: B, location: regB.host, insecure: true, mirrors: [{ location: `${proxyHost}/${B_ALIAS}`, insecure: true }] },
  ]);
}

test('podman pulls each upstream\'s image through the prefix route, digests checked', options, async () => {
  const podman: Podman = await createPodman(confFor(proxy.host));
  const since = await clearAll();
  for (const [registry, images, others] of [[A, imagesA, imagesB], [B, imagesB, imagesA]] as const) {
    for (const image of images) {
      const ref = `${registry}/${image.repository}:${image.tag}`;
      await podman.pull(ref);
      const digest = await podman.imageDigest(ref);
      assert.equal(digest, image.digest, ref);
      assert.ok(!others.some((o) => o.digest === digest), `${ref}: not the other upstream's`);
    }
  }
  const requests = proxyRequests().slice(since);
  assert.ok(requests.some((r) => r.method === 'GET' && r.url === '/v2/'), 'podman pings /v2/ first');
  for (const r of requests) {
    assert.equal(r.status, 200, `${r.method} ${r.url}`);
    assert.ok(!r.url.includes('ns='), `${r.url}: podman sends no ns`);
    if (r.url !== '/v2/') assert.ok(r.url.startsWith(`/v2/${A}/team/`) || r.url.startsWith(`/v2/${B_ALIAS}/team/`), r.url);
  }
  for (const prefix of [A, B_ALIAS]) {
    assert.ok(requests.some((r) => r.url.startsWith(`/v2/${prefix}/team/oci-image/manifests/v1`)), `${prefix}: manifest by tag`);
    assert.ok(requests.some((r) => r.url.startsWith(`/v2/${prefix}/team/oci-image/blobs/sha256:`)), `${prefix}: blobs`);
  }
  const [seenA, seenB] = await Promise.all([regA.settledRequests(), regB.settledRequests()]);
  for (const [name, seen] of [['A', seenA], ['B', seenB]] as const) {
    assert.ok(seen.length > 0, `upstream ${name} was asked`);
    assert.deepEqual(seen.filter((e) => !e.userAgent.startsWith('pullthrough')), [],
      `upstream ${name}: no request from podman itself (a fallback to location)`);
    assert.deepEqual(seen.filter((e) => e.path.includes(`/${A}/`) || e.path.includes(`/${B_ALIAS}/`)), [], 'the prefix never reaches an upstream');
  }
});

test('a mirror prefix naming no configured upstream: 404 NAME_UNKNOWN, and no upstream (the default neither) is asked', options, async () => {
  const podman = await createPodman(registriesConf([{
    prefix: 'unknown.example',
    // Closed: podman's fallback after the mirror fails fast.
    location: `127.0.0.1:${closedPort}`,
    insecure: true,
    mirrors: [{ location: `${proxy.host}/unknown.example`, insecure: true }],
  }]));
  const since = await clearAll();
  const pulled = await podman.pull(`unknown.example/${imagesA[0]!.repository}:v1`, { allowFailure: true });
  assert.notEqual(pulled.code, 0, pulled.stdout + pulled.stderr);
  assert.ok(pulled.stderr.includes(`127.0.0.1:${closedPort}`), `podman fell back to the location after the mirror:\n${pulled.stderr}`);
  const requests = proxyRequests().slice(since).filter((r) => r.url !== '/v2/');
  assert.ok(requests.length > 0, 'podman asked pullthrough first');
  for (const r of requests) {
    assert.equal(r.status, 404, `${r.method} ${r.url}`);
    assert.ok(r.url.startsWith('/v2/unknown.example/'), r.url);
  }
  const [seenA, seenB] = await Promise.all([regA.settledRequests(), regB.settledRequests()]);
  assert.deepEqual(seenA, [], 'the default upstream is not asked for unknown.example/...');
  assert.deepEqual(seenB, []);
});
