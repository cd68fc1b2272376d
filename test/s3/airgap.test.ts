/** `warm`, `export` and `import` unchanged against S3 storage: online bucket → bundle → air-gapped bucket → offline pulls. */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { s3StorageConfig, s3Store, type S3Store } from '../fixtures/s3.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { runCommand, tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

let upstream: RunningRegistry;
let store: S3Store;
let images: SeededImage[];
let work: string;

before(async () => {
  if (skip) return;
  store = await s3Store();
  upstream = await startRegistry();
  images = await seedImages(upstream.host, { kinds: ['oci-index', 'docker-image'], layerSize: 64 * 1024 });
  work = await tempDir('s3-airgap');
});

after(async () => {
  await upstream?.stop();
});

async function pullthrough(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await runCommand(process.execPath, [CLI, ...args], { cwd: work, allowFailure: true });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

test('warm into one bucket, export a bundle, import it into another bucket, pull offline from it', { skip, timeout: 120_000 }, async () => {
  const online = await store.createBucket();
  const air = await store.createBucket();
  const upstreams = [{ name: 'registry.test', url: upstream.url }];
  await writeFile(join(work, 'online.json'), JSON.stringify({
    listen: { port: 5000 }, storage: { root: join(work, 'spool-online'), ...s3StorageConfig(store, online) }, upstreams,
  }));
  await writeFile(join(work, 'air.json'), JSON.stringify({
    listen: { port: 5000 }, storage: { root: join(work, 'spool-air'), ...s3StorageConfig(store, air) }, upstreams, upstreamDefaults: { offline: true },
  }));
  const refs = images.map((i) => `registry.test/${i.repository}:${i.tag}`);
  const warmed = await pullthrough(['warm', '--config', 'online.json', '--lock', 'images.lock', ...refs]);
  assert.equal(warmed.code, 0, warmed.stdout + warmed.stderr);
  const warmedKeys = await store.keys(online);
  for (const image of images) for (const d of image.blobDigests) assert.ok(warmedKeys.some((k) => k.endsWith(`${d.slice(7)}/data`)), d);

  const exported = await pullthrough(['export', '--config', 'online.json', '--lock', 'images.lock', '--out', 'bundle.tar']);
  assert.equal(exported.code, 0, exported.stdout + exported.stderr);
  assert.match(exported.stdout, /^exported 2 images/m);

  const imported = await pullthrough(['import', '--config', 'air.json', 'bundle.tar']);
  assert.equal(imported.code, 0, imported.stdout + imported.stderr);
  assert.deepEqual(await store.keys(air), warmedKeys, 'the air-gapped bucket holds the same layout');
  assert.deepEqual(await store.multipartUploads(air), []);

  await upstream.clearRequests();
  const proxy = await startProxy({
    upstreams, upstreamDefaults: { offline: true }, storage: s3StorageConfig(store, air), root: join(work, 'spool-serve'),
  });
  try {
    for (const image of images) {
      const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, await tempDir('s3-airgap-pull'));
      assert.equal(pulled.manifestDigest, image.digest);
    }
  } finally {
    await proxy.stop();
  }
  assert.deepEqual(await upstream.settledRequests(), [], 'offline: the upstream saw nothing');
});
