/**
 * The real Docker daemon pulling through pullthrough as the README documents:
 * `daemon.json` with `"registry-mirrors": ["http://<pullthrough>"]`, and
 * pullthrough's `docker.io` upstream (a local registry holding
 * `library/alpine`). dockerd pings `/v2/`, then asks the mirror for
 * `library/alpine` with no `ns` and no prefix. Had the mirror failed, dockerd
 * would have fallen back to registry-1.docker.io, which cannot hold these
 * random images: a pull that yields the upstream's digests came through
 * pullthrough.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startDockerd, type RunningDockerd } from '../fixtures/dockerd.js';
import { makeImage, writeOciLayout, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { pushLayout, type PushOptions } from '../fixtures/seed.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('dockerd', 'docker', 'docker-registry', 'skopeo');
/** A guard against hangs, not a performance check. */
const options = { skip, timeout: 120_000 };

let hub: RunningRegistry;
let proxy: RunningProxy;
let dockerd: RunningDockerd;
/** `library/alpine:v1`, pushed as OCI. */
let ociImage: BuiltImage;
let ociDigest: string;
/** `library/alpine:v2s2`, pushed converted to a docker v2 schema 2 manifest. */
let dockerImage: BuiltImage;
let dockerDigest: string;

async function push(image: BuiltImage, tag: string, pushOptions: PushOptions = {}): Promise<string> {
  const dir = await tempDir('alpine-layout');
  await writeOciLayout(dir, [{ ref: 'img', image }]);
  return pushLayout(dir, 'img', `${hub.host}/library/alpine:${tag}`, pushOptions);
}

before(async () => {
  if (skip) return;
  hub = await startRegistry();
  ociImage = makeImage({ layerSizes: [64 * 1024] });
  dockerImage = makeImage({ layerSizes: [64 * 1024, 32 * 1024] });
  [ociDigest, dockerDigest] = await Promise.all([push(ociImage, 'v1'), push(dockerImage, 'v2s2', { format: 'v2s2' })]);
  assert.equal(ociDigest, ociImage.digest);
  await hub.clearRequests();
  proxy = await startProxy({ upstreams: [{ name: 'docker.io', url: hub.url }] });
  dockerd = await startDockerd({ registryMirrors: [proxy.url] });
}, { timeout: 120_000 });

after(async () => {
  await dockerd?.stop();
  await proxy?.stop();
  await hub?.stop();
});

interface RequestLine { method: string; url: string; status: number }

function proxyRequests(): RequestLine[] {
  return proxy.logs().filter((l) => l['msg'] === 'request') as unknown as RequestLine[];
}

/** Checks what pullthrough saw since `since` and that the upstream only ever heard from pullthrough. */
async function assertThroughPullthrough(since: number, image: BuiltImage, digest: string, expectPing: boolean): Promise<void> {
  const requests = proxyRequests().slice(since);
  const context = JSON.stringify(requests, null, 1);
  for (const r of requests) assert.equal(r.status, 200, `${r.method} ${r.url}\n${context}`);
  if (expectPing) assert.ok(requests.some((r) => r.method === 'GET' && r.url === '/v2/'), `dockerd pings /v2/\n${context}`);
  for (const r of requests.filter((r) => r.url !== '/v2/')) {
    assert.ok(r.url.startsWith('/v2/library/alpine/') && !r.url.includes('?'), `no ns, no prefix, library/: ${r.url}`);
  }
  assert.ok(requests.some((r) => r.method === 'GET' && r.url === `/v2/library/alpine/manifests/${digest}`), `manifest fetched by digest\n${context}`);
  for (const blob of [image.config, ...image.layers]) {
    // skopeo's v2s2 conversion keeps the layer blobs; the config blob is rewritten, so only check layers there.
    if (blob === image.config && digest !== image.digest) continue;
    assert.ok(requests.some((r) => r.method === 'GET' && r.url === `/v2/library/alpine/blobs/${blob.digest}`), `${blob.digest}\n${context}`);
  }
  const seen = await hub.settledRequests();
  assert.ok(seen.length > 0, 'the upstream was asked');
  assert.deepEqual(seen.filter((e) => !e.userAgent.startsWith('pullthrough')), [], 'only pullthrough talks to the upstream');
}

test('daemon.json registry-mirrors: docker pull alpine:v1 is served by pullthrough from the docker.io upstream', options, async () => {
  assert.deepEqual(dockerd.daemonJson['registry-mirrors'], [proxy.url]);
  const info = await dockerd.docker(['info', '--format', '{{json .RegistryConfig.Mirrors}}']);
  assert.deepEqual(JSON.parse(info.stdout), [`${proxy.url}/`], 'dockerd read the mirror from daemon.json');

  const since = proxyRequests().length;
  const pulled = await dockerd.pull('alpine:v1');
  assert.equal(pulled.digest, ociImage.digest, `${pulled.output}\n${dockerd.logs().slice(-4000)}`);
  assert.deepEqual(pulled.repoDigests, [`alpine@${ociImage.digest}`]);
  assert.equal(pulled.id, ociImage.config.digest, 'the image id is the upstream config digest');
  await assertThroughPullthrough(since, ociImage, ociDigest, true);
});

test('docker pull library/alpine:<tag> of a docker v2s2 manifest goes the same way', options, async () => {
  await hub.clearRequests();
  const since = proxyRequests().length;
  const pulled = await dockerd.pull('library/alpine:v2s2');
  assert.equal(pulled.digest, dockerDigest, pulled.output);
  assert.deepEqual(pulled.repoDigests, [`alpine@${dockerDigest}`]);
  await assertThroughPullthrough(since, dockerImage, dockerDigest, false);
});
