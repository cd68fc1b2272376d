import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { FakeClock } from '../fixtures/clock.js';
import { makeImage, writeOciLayout, type BuiltImage } from '../fixtures/images.js';
import { startProxy, testConfigDocument, type ProxyOptions, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { pushLayout } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { runCommand, tempDir, toolSkip, until } from '../fixtures/tools.js';
import { formatBytes } from '../../src/cli/format.js';
import type { Digest } from '../../src/registry/digest.js';

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
  for (const r of ['stream/a', 'stream/b']) await seed([r], makeImage({ layerSizes: [24 * 1024 * 1024] }));
});

after(async () => {
  for (const p of proxies) await p.stop();
  await upstream?.stop();
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function imageBytes(image: BuiltImage): number {
  return image.size + image.config.size + image.layers.reduce((n, l) => n + l.size, 0);
}

/** A proxy whose only eviction setting is `maxSize`: every other one is the default (evictionGrace 10m, evictionInterval 5m). */
async function proxyWith(maxSize: number, extra: Partial<ProxyOptions> = {}, pins: string[] = []): Promise<RunningProxy> {
  const proxy = await startProxy({
    upstreams: [{ name: 'registry.test', url: upstream.url }],
    ...extra,
    storage: { maxSize },
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

test('default settings, maxSize about 1.5 images and 4 pulled: disk is under the cap once each pull returns, the most recent still pulls with no upstream blob GET', { skip }, async () => {
  const cap = Math.floor(imageBytes(images.get('lru/one')!) * 1.5);
  const proxy = await proxyWith(cap);
  for (const r of ['lru/one', 'lru/two', 'lru/three', 'lru/four']) {
    // pull() returns once the eviction run that the last commit started is over: nothing waits for evictionGrace or evictionInterval.
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
  // The low watermark (0.8 of the cap) must hold two images with room to spare: at 2.5 images it was
  // 2 images less a byte whenever an image's size was odd, so a run that saw all of shared/y took shared/b too.
  const cap = Math.floor(imageBytes(shared) * 2.6);
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

test('pullthrough gc beside a running server: names images by tag, sizes in human units, says what it kept and why; --dry-run removes nothing', { skip }, async () => {
  const proxy = await proxyWith(1024 ** 4);
  await pull(proxy, 'lru/two');
  await pull(proxy, 'lru/three');
  const orphan = Buffer.from('a blob no cached image references');
  const hex = createHash('sha256').update(orphan).digest('hex');
  const dir = join(proxy.root, 'blobs', 'sha256', hex.slice(0, 2), hex);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'data'), orphan);
  const hourAgo = new Date(Date.now() - 3600_000);
  await utimes(join(dir, 'data'), hourAgo, hourAgo);
  // gc with a cap both images are over: it cannot see the server's readers, so the grace keeps what was just pulled.
  const cap = Math.floor(imageBytes(images.get('lru/two')!) * 1.5);
  const configPath = join(await tempDir('gc'), 'config.json');
  const document = testConfigDocument({ upstreams: [{ name: 'registry.test', url: upstream.url }] }, proxy.root);
  await writeFile(configPath, JSON.stringify({ ...document, storage: { root: proxy.root, maxSize: cap } }));

  const before = await diskBytes(proxy.root);
  const dry = await runCommand(process.execPath, [CLI, 'gc', '--dry-run', '--config', configPath]);
  const totals = `0 images and 1 blob, freeing ${formatBytes(orphan.length)} of ${formatBytes(before)}; the size cap brings it down to ${formatBytes(Math.floor(cap * 0.8))}`;
  assert.match(dry.stdout, new RegExp(`^would remove ${escape(totals)}$`, 'm'));
  assert.match(dry.stdout, /^kept above the low watermark \(\d+\.\d MiB\):$/m);
  for (const repository of ['lru/two', 'lru/three']) {
    const size = formatBytes(imageBytes(images.get(repository)!));
    assert.match(dry.stdout, new RegExp(`^  registry\\.test/${escape(repository)}:v1 \\(${escape(size)}\\): within the grace \\(used .+ ago; evictionGrace 10m00s\\)$`, 'm'), dry.stdout);
  }
  assert.equal(await diskBytes(proxy.root), before, 'a dry run removes nothing');

  const real = await runCommand(process.execPath, [CLI, 'gc', '--config', configPath]);
  assert.match(real.stdout, new RegExp(`^removed ${escape(totals)}$`, 'm'));
  await assert.rejects(stat(join(dir, 'data')));
  assert.equal(await diskBytes(proxy.root), before - orphan.length);
  await upstream.clearRequests();
  await pull(proxy, 'lru/two');
  assert.equal(await upstreamBlobGets(), 0, 'what the server had cached is still served');
});

test('a blob being streamed while eviction runs is not removed under its reader; once released, the next run takes it and the cap holds', { skip }, async () => {
  const cap = Math.floor(imageBytes(images.get('stream/a')!) * 1.5);
  const proxy = await proxyWith(cap);
  await pull(proxy, 'stream/a');
  const a = images.get('stream/a')!;
  const layer = a.layers[0]!;
  // A client that reads the first bytes of a cached 24 MiB layer, then stops reading for now.
  const res = await request(`${proxy.url}/v2/stream/a/blobs/${layer.digest}`);
  const body = res.body[Symbol.asyncIterator]();
  const hash = createHash('sha256');
  hash.update((await body.next()).value as Buffer);
  assert.ok(proxy.mirror.localBlobs.isReading(layer.digest as Digest));

  await pull(proxy, 'stream/b'); // over the high watermark: stream/a is the least recently used
  assert.ok(await stored(proxy, layer.digest), 'the layer being read is still there');
  assert.equal(await stored(proxy, a.config.digest), false, 'the rest of its image went');

  for (let next = await body.next(); !next.done; next = await body.next()) hash.update(next.value as Buffer);
  assert.equal(`sha256:${hash.digest('hex')}`, layer.digest, 'the reader got every byte');
  await until('the run that follows the release', async () => !(await stored(proxy, layer.digest)));
  await proxy.mirror.evictor.idle();
  assert.ok(await diskBytes(proxy.root) <= cap, `${await diskBytes(proxy.root)} > ${cap}`);
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
  assert.deepEqual(report.removedImages.map((i) => i.id), [`registry.test/lru/three@${images.get('lru/three')!.digest}`]);
  assert.equal(await stored(proxy, images.get('lru/three')!.layers[0]!.digest), false);
  assert.ok(await stored(proxy, images.get('lru/four')!.layers[0]!.digest));
});
