import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FakeClock } from '../fixtures/clock.js';
import { makeImage, writeOciLayout, type BuiltImage } from '../fixtures/images.js';
import { startProxy, testConfigDocument, type ProxyOptions, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { pushLayout } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { runCommand, tempDir, toolSkip } from '../fixtures/tools.js';

const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

const skip = toolSkip('docker-registry', 'skopeo');
const LAYER = 1024 * 1024;

let upstream: RunningRegistry;
const images = new Map<string, BuiltImage>();
const proxies: RunningProxy[] = [];

/** Pushes one image (or the same image under several names) to the upstream. */
async function seed(repositories: string[], image = makeImage({ layerSizes: [LAYER] })): Promise<BuiltImage> {
  const dir = await tempDir('evict-layout');
  await writeOciLayout(dir, [{ ref: 'v1', image }]);
  for (const repository of repositories) {
    await pushLayout(dir, 'v1', `${upstream.host}/${repository}:v1`);
    images.set(repository, image);
  }
  return image;
}

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  for (const r of ['lru/one', 'lru/two', 'lru/three', 'lru/four', 'pin/kept', 'pin/x', 'pin/y', 'pin/z']) await seed([r]);
  await seed(['shared/a', 'shared/b']);
  await seed(['shared/x']);
  await seed(['shared/y']);
});

after(async () => {
  for (const p of proxies) await p.stop();
  await upstream?.stop();
});

function imageBytes(image: BuiltImage): number {
  return image.size + image.config.size + image.layers.reduce((n, l) => n + l.size, 0);
}

async function proxyWith(maxSize: number, extra: Partial<ProxyOptions> = {}, pins: string[] = []): Promise<RunningProxy> {
  const proxy = await startProxy({
    upstreams: [{ name: 'registry.test', url: upstream.url }],
    ...extra,
    storage: { maxSize, evictionGrace: '0s', evictionInterval: '1h', usageFlushInterval: '1h' },
    pins,
  });
  proxies.push(proxy);
  await proxy.mirror.evictor.idle();
  return proxy;
}

async function pull(proxy: RunningProxy, repository: string): Promise<void> {
  const pulled = await pullWithSkopeo(`${proxy.host}/${repository}:v1`, await tempDir('evict-pull'));
  assert.equal(pulled.manifestDigest, images.get(repository)!.digest, repository);
  await proxy.mirror.evictor.idle();
}

async function diskBytes(root: string): Promise<number> {
  let total = 0;
  for (const prefix of await readdir(join(root, 'blobs', 'sha256')).catch(() => [] as string[])) {
    for (const hex of await readdir(join(root, 'blobs', 'sha256', prefix))) {
      total += (await stat(join(root, 'blobs', 'sha256', prefix, hex, 'data'))).size;
    }
  }
  return total;
}

async function stored(proxy: RunningProxy, digest: string): Promise<boolean> {
  const hex = digest.split(':')[1]!;
  return stat(join(proxy.root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data')).then(() => true, () => false);
}

async function upstreamBlobGets(): Promise<number> {
  return (await upstream.settledRequests()).filter((e) => e.method === 'GET' && e.path.includes('/blobs/')).length;
}

test('maxSize about 1.5 images and 4 pulled: disk stays under the cap, the most recent still pulls with no upstream blob GET', { skip }, async () => {
  const cap = Math.floor(imageBytes(images.get('lru/one')!) * 1.5);
  const proxy = await proxyWith(cap);
  for (const r of ['lru/one', 'lru/two', 'lru/three', 'lru/four']) {
    await pull(proxy, r);
    assert.ok(await diskBytes(proxy.root) <= cap, `after ${r}: ${await diskBytes(proxy.root)} > ${cap}`);
  }
  assert.equal(await stored(proxy, images.get('lru/one')!.layers[0]!.digest), false, 'the least recently used image went');
  await upstream.clearRequests();
  await pull(proxy, 'lru/four');
  assert.equal(await upstreamBlobGets(), 0);
  const logs = proxy.logs().filter((l) => l['msg'] === 'evicted');
  assert.ok(logs.length > 0, 'eviction is logged');
});

test('a pinned image survives eviction and still pulls from the cache', { skip }, async () => {
  const cap = Math.floor(imageBytes(images.get('pin/kept')!) * 2.5);
  const proxy = await proxyWith(cap, {}, ['registry.test/pin/kept:v1']);
  for (const r of ['pin/kept', 'pin/x', 'pin/y', 'pin/z']) await pull(proxy, r);
  assert.ok(await stored(proxy, images.get('pin/kept')!.layers[0]!.digest), 'pinned layer kept');
  assert.equal(await stored(proxy, images.get('pin/x')!.layers[0]!.digest), false, 'unpinned LRU image went');
  await upstream.clearRequests();
  await pull(proxy, 'pin/kept');
  assert.equal(await upstreamBlobGets(), 0);
});

test('a blob shared by two images survives while either of them is retained', { skip }, async () => {
  const shared = images.get('shared/a')!;
  const cap = Math.floor(imageBytes(shared) * 2.5);
  const proxy = await proxyWith(cap);
  await pull(proxy, 'shared/a');
  await pull(proxy, 'shared/b');
  await pull(proxy, 'shared/x');
  await proxy.mirror.usage.flush();
  await new Promise((r) => setTimeout(r, 20));
  await pull(proxy, 'shared/b'); // now the most recently used of the three
  await proxy.mirror.usage.flush();
  await pull(proxy, 'shared/y'); // over the high watermark: shared/a, then shared/x go
  const catalog = await proxy.mirror.catalog();
  assert.ok(await stored(proxy, shared.layers[0]!.digest), 'the shared layer is kept for shared/b');
  assert.equal(await stored(proxy, images.get('shared/x')!.layers[0]!.digest), false);
  assert.ok(catalog.includes('registry.test/shared/b'));
  await upstream.clearRequests();
  await pull(proxy, 'shared/b');
  assert.equal(await upstreamBlobGets(), 0);
});

test('pullthrough gc: --dry-run reports and removes nothing; gc removes unreferenced blobs, beside a running server', { skip }, async () => {
  const proxy = await proxyWith(1024 ** 4);
  await pull(proxy, 'lru/two');
  const orphan = Buffer.from('a blob no cached image references');
  const hex = createHash('sha256').update(orphan).digest('hex');
  const dir = join(proxy.root, 'blobs', 'sha256', hex.slice(0, 2), hex);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'data'), orphan);
  const hourAgo = new Date(Date.now() - 3600_000);
  await utimes(join(dir, 'data'), hourAgo, hourAgo);
  const configPath = join(await tempDir('gc'), 'config.json');
  await writeFile(configPath, JSON.stringify(testConfigDocument({ upstreams: [{ name: 'registry.test', url: upstream.url }] }, proxy.root)));

  const before = await diskBytes(proxy.root);
  const dry = await runCommand(process.execPath, [CLI, 'gc', '--dry-run', '--config', configPath]);
  assert.match(dry.stdout, new RegExp(`would remove 0 images and 1 blobs, freeing ${orphan.length} of ${before} bytes`));
  assert.equal(await diskBytes(proxy.root), before, 'a dry run removes nothing');

  const real = await runCommand(process.execPath, [CLI, 'gc', '--config', configPath]);
  assert.match(real.stdout, new RegExp(`removed 0 images and 1 blobs, freeing ${orphan.length} of ${before} bytes`));
  await assert.rejects(stat(join(dir, 'data')));
  assert.equal(await diskBytes(proxy.root), before - orphan.length);
  await upstream.clearRequests();
  await pull(proxy, 'lru/two');
  assert.equal(await upstreamBlobGets(), 0, 'what the server had cached is still served');
});

/**
 * maxIdle is judged on the mirror's clock: a fake one, moved instead of slept.
 * It starts at the real time because a fresh file's last use is its
 * modification time, written by the filesystem; minutes of fake time then
 * dwarf the seconds the pulls take. (The maxSize tests above stay on the real
 * clock: they wait on no policy, only rank last uses, some of which are those
 * filesystem times.)
 */
test('maxIdle removes images not used for that long, whatever the size; a used one stays', { skip }, async () => {
  const clock = new FakeClock(Date.now());
  const proxy = await startProxy({
    upstreams: [{ name: 'registry.test', url: upstream.url }],
    storage: { maxIdle: '10m', evictionGrace: '0s', evictionInterval: '1h', usageFlushInterval: '1h' },
    clock,
  });
  proxies.push(proxy);
  await pull(proxy, 'lru/three');
  await pull(proxy, 'lru/four');
  await clock.advance(6 * 60_000);
  await pull(proxy, 'lru/four'); // used again: its last use is recent
  await clock.advance(5 * 60_000);
  const report = await proxy.mirror.evictor.collect(false);
  assert.deepEqual(report.removedImages, [`registry.test/lru/three@${images.get('lru/three')!.digest}`]);
  assert.equal(await stored(proxy, images.get('lru/three')!.layers[0]!.digest), false);
  assert.ok(await stored(proxy, images.get('lru/four')!.layers[0]!.digest));
});
