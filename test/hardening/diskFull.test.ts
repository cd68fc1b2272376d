/**
 * A full disk during a fill, on a real file system: a small tmpfs mounted by
 * the test as the storage root, a real registry upstream and skopeo. The
 * fill's clients get a cut-off body, the temp file goes, an eviction run is
 * asked for, the log says so once, new fills get 503 (not 500, never blamed
 * on the upstream), cached images still pull; once there is space again the
 * same blob fills and verifies.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FakeClock } from '../fixtures/clock.js';
import { getOutcome, type Outcome } from '../fixtures/outcome.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { runCommand, tempDir, toolSkip } from '../fixtures/tools.js';

let mountSkip: string | false = false;
let root = '';

/** Mounts a tmpfs of `size` at a new directory; false (and why) where mounting is not allowed. Under CI=true it must work. */
async function mountTmpfs(size: string): Promise<string | false> {
  root = await tempDir('diskfull');
  const mounted = await runCommand('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', root], { allowFailure: true });
  if (mounted.code === 0) return false;
  const reason = `mount -t tmpfs is not allowed here (${mounted.stderr.trim() || `exit ${mounted.code}`})`;
  if (process.env['CI'] === 'true') throw new Error(`${reason}; CI runs as root and must be able to mount`);
  return reason;
}

const toolsSkip = toolSkip('docker-registry', 'skopeo', 'mount');
let upstream: RunningRegistry;
let proxy: RunningProxy;
let small: SeededImage;
let big: SeededImage;
let other: SeededImage;
const clock = new FakeClock();
let evictionRuns = 0;

before(async () => {
  if (toolsSkip) return;
  mountSkip = await mountTmpfs('8m');
  if (mountSkip) return;
  upstream = await startRegistry();
  [small] = await seedImages(upstream.host, { layerSize: 100 * 1024, kinds: ['oci-image'], repositoryPrefix: 'small' });
  [big] = await seedImages(upstream.host, { layerSize: 24 * 1024 * 1024, kinds: ['oci-image'], repositoryPrefix: 'big' });
  [other] = await seedImages(upstream.host, { layerSize: 50 * 1024, kinds: ['oci-image'], repositoryPrefix: 'other' });
  proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url }], root, clock, storage: { maxSize: '1GiB' } });
  const evictor = proxy.mirror.evictor;
  const trigger = evictor.trigger.bind(evictor);
  evictor.trigger = () => { evictionRuns++; trigger(); };
});

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
  if (root && !mountSkip && !toolsSkip) await runCommand('umount', ['-l', root], { allowFailure: true });
});

const skip = (): string | false => toolsSkip || mountSkip;

/** The big image's layer: larger than the whole tmpfs. */
function bigLayer(): string {
  return big.blobDigests.find((d) => d !== JSON.parse(big.manifest.toString()).config.digest)!;
}

function getBlob(repository: string, digest: string): Promise<Outcome> {
  return getOutcome(`${proxy.url}/v2/${repository}/blobs/${digest}`);
}

async function settled(): Promise<void> {
  while (proxy.mirror.blobs.activeFills > 0) await new Promise((r) => setTimeout(r, 10));
}

test('disk full during a fill: cut-off bodies, no temp file, one log line, eviction asked, 503 for new fills, cached images still pull, and the blob fills once there is space', { skip: skip() }, async (t) => {
  if (skip()) return t.skip(String(skip()));
  // A cached image first.
  await pullWithSkopeo(`${proxy.host}/${small.repository}:${small.tag}`, await tempDir('pull-small'));

  const layer = bigLayer();
  const clients = await Promise.all([1, 2, 3].map(() => getBlob(big.repository, layer)));
  for (const outcome of clients) assert.equal(outcome.broken || outcome.status === 503, true, `cut off or refused: ${JSON.stringify(outcome)}`);
  await settled();
  assert.deepEqual(await readdir(join(root, '_uploads')), [], 'the temp file is removed');
  const hex = layer.slice(7);
  await assert.rejects(stat(join(root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data')), 'nothing stored');
  assert.ok(evictionRuns >= 1, 'an eviction run was asked for');

  const logs = proxy.logs();
  assert.equal(logs.filter((l) => l['msg'] === 'storage cannot take fills: refusing new fills until it can; cached content is still served').length, 1,
    'said once, not per chunk or per client');
  assert.equal(logs.filter((l) => String(l['err'] ?? '').includes('upstream broke off')).length, 0, 'never blamed on the upstream');

  // New fills: 503 at once, with Retry-After, and the upstream is not asked for bytes that could not be kept.
  await upstream.clearRequests();
  const refused = await getBlob(other.repository, other.blobDigests[0]!);
  assert.equal(refused.status, 503);
  assert.equal(refused.code, 'UNAVAILABLE');
  assert.ok(Number(refused.retryAfter) >= 1, `Retry-After: ${refused.retryAfter}`);
  assert.deepEqual((await upstream.settledRequests()).filter((r) => r.method === 'GET' && r.path.includes('/blobs/')), []);

  // Cached content is still served: skopeo pulls the cached image.
  const again = await pullWithSkopeo(`${proxy.host}/${small.repository}:${small.tag}`, await tempDir('pull-small-again'));
  assert.equal(again.manifestDigest, small.digest);

  // Space again; after the retry window the same blob fills and verifies.
  await runCommand('mount', ['-o', 'remount,size=96m', root]);
  await clock.advance(6000);
  const filled = await getBlob(big.repository, layer);
  assert.deepEqual(filled, { status: 200, broken: false, digest: layer });
  await settled();
  assert.ok((await stat(join(root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'))).size > 0, 'committed');
  assert.equal(proxy.logs().filter((l) => l['msg'] === 'storage takes fills again').length, 1);
  const fresh = await getBlob(other.repository, other.blobDigests[0]!);
  assert.equal(fresh.status, 200, 'new fills are taken again');
});
