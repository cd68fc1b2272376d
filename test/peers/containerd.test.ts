/**
 * `pullthrough containerd-config`: the hosts.toml files it writes, `--check`,
 * and a real containerd (CRI PullImage, the kubelet path) on the node config
 * it wrote: pulls go through the local pullthrough, and once that is
 * stopped containerd falls back to the registry named in `server`.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd, type RunningContainerd } from '../fixtures/containerd.js';
import { criClient, type CriClient } from '../fixtures/cri.js';
import { testConfigDocument } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { startServer, type RunningServer } from '../fixtures/server.js';
import { runCommand, tempDir, toolSkip } from '../fixtures/tools.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const REGISTRY = 'registry-n.test';
const skip = toolSkip('docker-registry', 'skopeo', 'containerd');
const options = { skip, timeout: 120_000 };

let upstream: RunningRegistry;
let containerd: RunningContainerd;
let cri: CriClient;
let node: RunningServer;
let images: SeededImage[];

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  [images, containerd] = await Promise.all([
    seedImages(upstream.host, { kinds: ['oci-image', 'docker-image'], repositoryPrefix: 'node', layerSize: 32 * 1024 }),
    startContainerd({ cri: true }),
  ]);
  node = await startServer(testConfigDocument({ upstreams: [{ name: REGISTRY, url: upstream.url, aliases: ['alias-n.test'] }] }, await tempDir('node')));
  cri = await criClient(containerd.socket);
}, { timeout: 120_000 });

after(async () => {
  cri?.close();
  await containerd?.stop();
  await node?.stop();
  await upstream?.stop();
});

function generate(dir: string, ...extra: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCommand(process.execPath, [CLI, 'containerd-config', '--config', node.configPath, '--dir', dir, ...extra], { allowFailure: true });
}

test('containerd-config writes a hosts.toml per upstream name and alias and _default; --check shows a diff and writes nothing', options, async () => {
  const dir = await tempDir('certs.d');
  const mirror = node.url;
  const first = await generate(dir);
  assert.equal(first.code, 0, first.stderr);
  for (const registry of [REGISTRY, 'alias-n.test', '_default']) assert.match(first.stdout, new RegExp(`^wrote ${join(dir, registry, 'hosts.toml')}$`, 'm'));
  const hosts = await readFile(join(dir, REGISTRY, 'hosts.toml'), 'utf8');
  assert.match(hosts, new RegExp(`^server = "${upstream.url}"$`, 'm'), 'the registry itself is the fallback');
  assert.match(hosts, new RegExp(`^\\[host\\."${mirror}"\\]\\n  capabilities = \\["pull", "resolve"\\]$`, 'm'));
  const fallback = await readFile(join(dir, '_default', 'hosts.toml'), 'utf8');
  assert.doesNotMatch(fallback, /^server/m, '_default falls back to whichever registry was asked');
  assert.match(fallback, /capabilities = \["pull", "resolve"\]/);

  const again = await generate(dir, '--check');
  assert.equal(again.code, 0);
  assert.match(again.stdout, /up to date/);

  await writeFile(join(dir, REGISTRY, 'hosts.toml'), hosts.replace(upstream.url, 'https://elsewhere.test'));
  const check = await generate(dir, '--check');
  assert.equal(check.code, 1);
  assert.match(check.stdout, new RegExp(`^-server = "https://elsewhere.test"$`, 'm'));
  assert.match(check.stdout, new RegExp(`^\\+server = "${upstream.url}"$`, 'm'));
  assert.match(check.stdout, /1 of 3 files would change/);
  assert.match(await readFile(join(dir, REGISTRY, 'hosts.toml'), 'utf8'), /elsewhere/, '--check wrote nothing');
  const fixed = await generate(dir);
  assert.match(fixed.stdout, new RegExp(`^wrote ${join(dir, REGISTRY, 'hosts.toml')}$`, 'm'));
  assert.match(fixed.stdout, new RegExp(`^unchanged ${join(dir, '_default', 'hosts.toml')}$`, 'm'));
});

test('CRI PullImage on the node config containerd-config wrote: through the local pullthrough; with it stopped, from the registry itself', options, async () => {
  const written = await generate(containerd.hostsDir);
  assert.equal(written.code, 0, written.stderr);
  const [through, fallback] = images as [SeededImage, SeededImage];

  await upstream.clearRequests();
  const ref = `${REGISTRY}/${through.repository}:${through.tag}`;
  await cri.pullImage(ref);
  assert.deepEqual((await cri.imageStatus(ref))?.repoDigests, [`${REGISTRY}/${through.repository}@${through.digest}`]);
  const requests = node.logs().filter((l) => l['msg'] === 'request');
  assert.ok(requests.some((r) => String(r['url']).includes('/blobs/sha256:') && String(r['url']).endsWith(`?ns=${REGISTRY}`)), JSON.stringify(requests));
  const direct = (await upstream.settledRequests()).filter((e) => !e.userAgent.startsWith('pullthrough'));
  assert.deepEqual(direct, [], 'containerd did not go to the registry itself');

  await node.stop();
  const later = `${REGISTRY}/${fallback.repository}:${fallback.tag}`;
  await cri.pullImage(later);
  assert.deepEqual((await cri.imageStatus(later))?.repoDigests, [`${REGISTRY}/${fallback.repository}@${fallback.digest}`]);
  const fromContainerd = (await upstream.settledRequests()).filter((e) => !e.userAgent.startsWith('pullthrough'));
  assert.ok(fromContainerd.some((e) => e.method === 'GET' && e.path.includes('/blobs/')), 'the server line sent containerd to the registry');
});
