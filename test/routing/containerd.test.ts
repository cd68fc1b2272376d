/**
 * Real containerd pulling through pullthrough from two upstreams that hold a
 * repository of the same name with different content: per-registry
 * `certs.d/<registry>/hosts.toml`, `certs.d/_default/hosts.toml`, and a mirror
 * URL carrying the registry as a path prefix (`override_path = true`).
 * containerd appends `?ns=<registry>` to every mirror request; that alone must
 * pick the upstream.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { freePort } from '../fixtures/net.js';
import { startContainerd, type RunningContainerd } from '../fixtures/containerd.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { CommandError, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo', 'containerd', 'ctr');
/** A guard against hangs, not a performance check. */
const options = { skip, timeout: 120_000 };

/** Names ctr uses in references and sends as `ns`; ctr never dials them, hosts.toml says where to go. */
const A = 'registry-a.test';
const B = 'registry-b.test:5000';
const KINDS = ['oci-image', 'oci-index'] as const;

let regA: RunningRegistry;
let regB: RunningRegistry;
let proxy: RunningProxy;
let containerd: RunningContainerd;
let imagesA: SeededImage[];
let imagesB: SeededImage[];
let namespaces = 0;

before(async () => {
  if (skip) return;
  [regA, regB] = await Promise.all([startRegistry(), startRegistry()]);
  const seed = (reg: RunningRegistry): Promise<SeededImage[]> =>
    seedImages(reg.host, { kinds: KINDS, repositoryPrefix: 'team', tag: 'v1', layerSize: 64 * 1024 });
  [imagesA, imagesB, containerd] = await Promise.all([seed(regA), seed(regB), startContainerd()]);
  proxy = await startProxy({ upstreams: [{ name: A, url: regA.url }, { name: B, url: regB.url }] });
}, { timeout: 120_000 });

after(async () => {
  await containerd?.stop();
  await proxy?.stop();
  await Promise.all([regA?.stop(), regB?.stop()]);
});

/** A fresh containerd namespace: with `content_sharing_policy = "isolated"` every pull in it is cold. */
function freshNamespace(): string {
  return `pull-${++namespaces}`;
}

function proxyRequests(): { method: string; url: string; status: number }[] {
  return proxy.logs().filter((l) => l['msg'] === 'request') as unknown as { method: string; url: string; status: number }[];
}

async function clearAll(): Promise<number> {
  await Promise.all([regA.clearRequests(), regB.clearRequests()]);
  return proxyRequests().length;
}

/** Pulls every kind of both upstreams with ctr and checks each digest is that upstream's. */
async function pullBoth(hostsDir?: string): Promise<void> {
  for (const [registry, images, others] of [[A, imagesA, imagesB], [B, imagesB, imagesA]] as const) {
    for (const image of images) {
      const ref = `${registry}/${image.repository}:${image.tag}`;
      const pulled = await containerd.pull(ref, freshNamespace(), hostsDir);
      assert.equal(pulled.digest, image.digest, `${ref}\n${pulled.output}`);
      assert.equal(pulled.mediaType, image.mediaType, ref);
      assert.ok(!others.some((o) => o.digest === pulled.digest), `${ref}: not the other upstream's`);
    }
  }
}

/**
 * Every upstream request since `clearAll` came from pullthrough (a containerd
 * fallback to `server` would show containerd's user agent), each upstream was
 * asked about its own images, and pullthrough saw every request with the
 * right `ns` and answered it without an error.
 */
async function assertAllThroughPullthrough(since: number, expectNs: Record<string, string>, pathPrefix = ''): Promise<void> {
  const [seenA, seenB] = await Promise.all([regA.settledRequests(), regB.settledRequests()]);
  for (const [name, seen] of [['A', seenA], ['B', seenB]] as const) {
    assert.ok(seen.length > 0, `upstream ${name} was asked`);
    const direct = seen.filter((e) => !e.userAgent.startsWith('pullthrough'));
    assert.deepEqual(direct, [], `upstream ${name}: no request from containerd itself (a fallback to server)`);
  }
  const requests = proxyRequests().slice(since);
  assert.ok(requests.length > 0);
  for (const r of requests) {
    assert.ok(r.status === 200, `${r.method} ${r.url} answered ${r.status}`);
    assert.ok(r.url.startsWith(`/v2/${pathPrefix}`), r.url);
    assert.notEqual(r.url, '/v2/', 'containerd sends no /v2/ ping to a mirror');
  }
  for (const [registry, encoded] of Object.entries(expectNs)) {
    const withNs = requests.filter((r) => r.url.endsWith(`?ns=${encoded}`));
    assert.ok(withNs.some((r) => r.method === 'HEAD' && r.url.includes('/manifests/v1?')), `${registry}: HEAD by tag with ns`);
    assert.ok(withNs.some((r) => r.method === 'GET' && r.url.includes('/blobs/sha256:')), `${registry}: blob GETs with ns`);
  }
  assert.ok(requests.every((r) => Object.values(expectNs).some((ns) => r.url.endsWith(`?ns=${ns}`))), 'every request carries ns');
}

test('certs.d/<registry>/hosts.toml per upstream: ctr pulls each upstream\'s image through pullthrough', options, async () => {
  // As the README documents: the real registry as the fallback `server`, pullthrough as the mirror host.
  await containerd.writeHosts(A, { server: regA.url, hosts: [{ url: proxy.url }] });
  await containerd.writeHosts(B, { server: regB.url, hosts: [{ url: proxy.url }] });
  const since = await clearAll();
  await pullBoth();
  // containerd percent-encodes the ':' of a registry with a port.
  await assertAllThroughPullthrough(since, { [A]: A, [B]: 'registry-b.test%3A5000' });
});

test('certs.d/_default/hosts.toml sends every registry through pullthrough', options, async () => {
  const hostsDir = join(containerd.dir, 'certs-default');
  await containerd.writeHosts('_default', { hosts: [{ url: proxy.url }] }, hostsDir);
  const since = await clearAll();
  await pullBoth(hostsDir);
  await assertAllThroughPullthrough(since, { [A]: A, [B]: 'registry-b.test%3A5000' });
});

test('a mirror URL with the registry as a path prefix (override_path = true) still carries ns and still routes', options, async () => {
  // containerd sends /v2/<prefix>/<repo>/...?ns=<registry>: the prefix and the ns name the same upstream.
  const hostsDir = join(containerd.dir, 'certs-override');
  await containerd.writeHosts(A, { server: regA.url, hosts: [{ url: `${proxy.url}/v2/${A}`, overridePath: true }] }, hostsDir);
  const since = await clearAll();
  for (const image of imagesA) {
    const ref = `${A}/${image.repository}:${image.tag}`;
    const pulled = await containerd.pull(ref, freshNamespace(), hostsDir);
    assert.equal(pulled.digest, image.digest, ref);
  }
  const requests = proxyRequests().slice(since);
  assert.ok(requests.length > 0);
  for (const r of requests) {
    assert.equal(r.status, 200, `${r.method} ${r.url}`);
    assert.ok(r.url.startsWith(`/v2/${A}/team/`) && r.url.endsWith(`?ns=${A}`), r.url);
  }
  const seenA = await regA.settledRequests();
  assert.deepEqual(seenA.filter((e) => !e.userAgent.startsWith('pullthrough')), [], 'no fallback to the server');
  assert.deepEqual(seenA.filter((e) => e.path.includes(`/${A}/`)), [], 'the prefix never reaches the upstream');
  assert.deepEqual(await regB.settledRequests(), []);
});

test('a registry that is not configured: pullthrough answers 404 NAME_UNKNOWN, no upstream is asked, ctr falls back', options, async () => {
  const hostsDir = join(containerd.dir, 'certs-unknown');
  // The fallback server is a closed port, so the pull fails fast after pullthrough's answer.
  const closed = await freePort();
  await containerd.writeHosts('unknown.example', { server: `http://127.0.0.1:${closed}`, hosts: [{ url: proxy.url }] }, hostsDir);
  const since = await clearAll();
  await assert.rejects(
    containerd.pull(`unknown.example/${imagesA[0]!.repository}:v1`, freshNamespace(), hostsDir),
    (err: unknown) => err instanceof CommandError && /127\.0\.0\.1:\d+/.test(err.stderr),
  );
  const requests = proxyRequests().slice(since);
  assert.ok(requests.length > 0, 'containerd asked pullthrough first');
  for (const r of requests) {
    assert.equal(r.status, 404, `${r.method} ${r.url}`);
    assert.ok(r.url.endsWith('?ns=unknown.example'), r.url);
  }
  const [seenA, seenB] = await Promise.all([regA.settledRequests(), regB.settledRequests()]);
  assert.deepEqual(seenA, []);
  assert.deepEqual(seenB, []);
});
