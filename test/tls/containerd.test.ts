/**
 * Real containerd pulling through pullthrough over mutual TLS: a
 * `certs.d/<registry>/hosts.toml` whose mirror host has `ca = "…"` and
 * `client = [["cert", "key"]]`, read by `ctr --hosts-dir` and by the CRI
 * plugin (`config_path`, as kubelet set-ups have it), which a CRI client
 * drives with PullImage. pullthrough requires a client certificate and knows
 * the node by its CN; a read rule lets that CN pull the one upstream.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createTestCa, type TestCa } from '../fixtures/certs.js';
import { startContainerd, type RunningContainerd } from '../fixtures/containerd.js';
import { criClient, type CriClient } from '../fixtures/cri.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('openssl', 'docker-registry', 'skopeo', 'containerd', 'ctr');
const options = { skip, timeout: 120_000 };
const REGISTRY = 'registry-a.test';
const NODE = 'containerd-node-1';

let ca: TestCa;
let upstream: RunningRegistry;
let proxy: RunningProxy;
let containerd: RunningContainerd;
let cri: CriClient;
let images: SeededImage[];

before(async () => {
  if (skip) return;
  [ca, upstream] = await Promise.all([createTestCa(), startRegistry()]);
  const [server, node] = await Promise.all([
    ca.issue({ commonName: '127.0.0.1', use: 'server' }),
    ca.issue({ commonName: NODE, use: 'client' }),
  ]);
  [images, containerd] = await Promise.all([
    seedImages(upstream.host, { kinds: ['oci-image', 'docker-list'], repositoryPrefix: 'team', layerSize: 32 * 1024 }),
    startContainerd({ cri: true }),
  ]);
  proxy = await startProxy({
    upstreams: [{ name: REGISTRY, url: upstream.url }],
    tls: { certFile: server.certFile, keyFile: server.keyFile, clientCaFile: ca.certFile, clientAuth: 'require' },
    auth: { rules: [{ users: [`CN=${NODE}`], repositories: [`${REGISTRY}/**`] }] },
  });
  await containerd.writeHosts(REGISTRY, { server: upstream.url, hosts: [{ url: proxy.url, ca: ca.certFile, client: node }] });
  cri = await criClient(containerd.socket);
  await upstream.clearRequests();
}, { timeout: 120_000 });

after(async () => {
  cri?.close();
  await containerd?.stop();
  await proxy?.stop();
  await upstream?.stop();
});


/** Everything since `since` went through pullthrough, over mutual TLS, with `ns`, and the upstream heard only pullthrough. */
async function assertThroughPullthrough(since: number): Promise<void> {
  const requests = proxy.requests().slice(since);
  assert.ok(requests.some((r) => r.method === 'GET' && r.url.includes('/blobs/sha256:')), JSON.stringify(requests));
  for (const r of requests) {
    assert.equal(r.status, 200, `${r.method} ${r.url}`);
    assert.ok(r.url.endsWith(`?ns=${REGISTRY}`), r.url);
    assert.equal(r.user, `CN=${NODE}`, 'the node is known by its certificate');
  }
  const seen = await upstream.settledRequests();
  assert.ok(seen.length > 0);
  assert.deepEqual(seen.filter((e) => !e.userAgent.startsWith('pullthrough')), [], 'no fallback to the server');
}

test('ctr images pull through an HTTPS mirror with ca and client certificate in hosts.toml: digests checked', options, async () => {
  const since = proxy.requests().length;
  for (const [i, image] of images.entries()) {
    const ref = `${REGISTRY}/${image.repository}:${image.tag}`;
    const pulled = await containerd.pull(ref, `tls-${i}`);
    assert.equal(pulled.digest, image.digest, `${ref}\n${pulled.output}`);
    assert.equal(pulled.mediaType, image.mediaType);
  }
  await assertThroughPullthrough(since);
});

test('CRI PullImage (the kubelet path) through the same hosts.toml: the image, its config and its digest', options, async () => {
  await upstream.clearRequests();
  const since = proxy.requests().length;
  // Cached by the test above in pullthrough, but not in the CRI namespace: containerd pulls it again.
  const image = images[0]!;
  const ref = `${REGISTRY}/${image.repository}:${image.tag}`;
  const imageRef = await cri.pullImage(ref);
  const status = await cri.imageStatus(ref);
  assert.ok(status, 'CRI knows the image');
  assert.equal(imageRef, status.id);
  assert.deepEqual(status.repoDigests, [`${REGISTRY}/${image.repository}@${image.digest}`]);
  const requests = proxy.requests().slice(since);
  assert.ok(requests.some((r) => r.url.startsWith(`/v2/${image.repository}/manifests/`)), JSON.stringify(requests));
  for (const r of requests) {
    assert.equal(r.status, 200, `${r.method} ${r.url}`);
    assert.equal(r.user, `CN=${NODE}`);
  }
  const seen = await upstream.settledRequests();
  assert.deepEqual(seen.filter((e) => !e.userAgent.startsWith('pullthrough')), [], 'no fallback to the server');
});
