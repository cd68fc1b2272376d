/**
 * `pullthrough warm` beyond the walkthrough: `--platform` fetches only the
 * children asked for; a second run fetches nothing; `--pin` protects what was
 * warmed from `gc`; upstream failures and 429 Retry-After are retried; a
 * failed reference makes the exit code non-zero and writes no lock.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeUpstream, tooManyRequests, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { startRegistry, type AccessLogEntry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { inspectRaw } from '../fixtures/skopeo.js';
import { runCommand, tempDir, toolSkip, type RunResult } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const NAME = 'registry.test';

let upstream: RunningRegistry;
let index: SeededImage;
let image: SeededImage;
let fake: FakeUpstream;

before(async () => {
  fake = await startFakeUpstream();
  if (skip) return;
  upstream = await startRegistry();
  const seeded = await seedImages(upstream.host, { kinds: ['oci-index', 'oci-image'], layerSize: 64 * 1024 });
  index = seeded.find((i) => i.kind === 'oci-index')!;
  image = seeded.find((i) => i.kind === 'oci-image')!;
}, { timeout: 120_000 });

after(async () => {
  await upstream?.stop();
  await fake?.stop();
});

/** A config file on a fresh storage root; `tagMaxAge: 0s` so that every run asks the upstream about tags. */
async function configFor(upstreams: Record<string, unknown>[], storage: Record<string, unknown> = {}): Promise<{ path: string; root: string }> {
  const dir = await tempDir('warm');
  const root = join(dir, 'cache');
  const path = join(dir, 'config.json');
  await writeFile(path, JSON.stringify({
    listen: { port: 5000 }, storage: { root, ...storage }, upstreams, upstreamDefaults: { tagMaxAge: '0s' },
  }));
  return { path, root };
}

function pullthrough(args: readonly string[]): Promise<RunResult> {
  return runCommand(process.execPath, [CLI, ...args], { allowFailure: true, timeoutMs: 60_000 });
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

function blobFile(root: string, digest: string): string {
  const hex = digest.slice(7);
  return join(root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

async function revisions(root: string, repository: string): Promise<string[]> {
  const dir = join(root, 'repositories', NAME, repository, '_manifests', 'revisions', 'sha256');
  return (await readdir(dir).catch(() => [] as string[])).map((hex) => `sha256:${hex}`).sort();
}

/** The child of the seeded index for a platform, with its config and layers, read from the upstream. */
async function child(architecture: string): Promise<{ digest: string; blobs: string[] }> {
  const parsed = JSON.parse(index.manifest.toString('utf8')) as { manifests: { digest: string; platform: { architecture: string } }[] };
  const digest = parsed.manifests.find((m) => m.platform.architecture === architecture)!.digest;
  const manifest = JSON.parse((await inspectRaw(`${upstream.host}/${index.repository}@${digest}`)).toString('utf8')) as
    { config: { digest: string }; layers: { digest: string }[] };
  return { digest, blobs: [manifest.config.digest, ...manifest.layers.map((l) => l.digest)] };
}

test('--platform linux/arm64 fetches the index and only its arm64 child; the partial image still exports and imports', { skip }, async () => {
  const { path, root } = await configFor([{ name: NAME, url: upstream.url }]);
  const ref = `${NAME}/${index.repository}:v1`;
  const warmed = await pullthrough(['warm', '--config', path, '--platform', 'linux/arm64', ref]);
  assert.equal(warmed.code, 0, warmed.stdout + warmed.stderr);
  assert.match(warmed.stdout, new RegExp(`${index.digest}\\s+linux/arm64\\s`));

  const [arm64, amd64] = await Promise.all([child('arm64'), child('amd64')]);
  assert.deepEqual(await revisions(root, index.repository), [index.digest, arm64.digest].sort());
  for (const d of arm64.blobs) assert.ok(await exists(blobFile(root, d)), `arm64 blob ${d}`);
  for (const d of [amd64.digest, ...amd64.blobs]) assert.ok(!(await exists(blobFile(root, d))), `amd64 ${d} not fetched`);

  const bundle = join(root, '..', 'arm64.tar');
  const exported = await pullthrough(['export', '--config', path, '--out', bundle, ref]);
  assert.equal(exported.code, 0, exported.stderr);
  assert.match(exported.stdout, /exported 1 images \(2 manifests, 2 blobs/);
  const other = await configFor([{ name: NAME, url: upstream.url }]);
  const imported = await pullthrough(['import', '--config', other.path, bundle]);
  assert.equal(imported.code, 0, imported.stderr);
  assert.deepEqual(await revisions(other.root, index.repository), [index.digest, arm64.digest].sort());

  // A bundle whose upstream the importing side does not configure has nowhere to go: refused, nothing written.
  const elsewhere = await configFor([{ name: 'elsewhere.test', url: upstream.url }]);
  const refused = await pullthrough(['import', '--config', elsewhere.path, bundle]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /refused.*\n.*registry registry\.test is not configured/);
  assert.deepEqual(await readdir(elsewhere.root), ['_uploads']);
  assert.deepEqual(await readdir(join(elsewhere.root, '_uploads')), []);
});

/** The storage the twice-in-a-row test warmed, for the export of everything. */
let twice: { path: string; root: string } | undefined;

test('warm twice in a row: the second run fetches nothing (no blob GET, no manifest GET)', { skip }, async () => {
  twice = await configFor([{ name: NAME, url: upstream.url }]);
  const { path } = twice;
  const refs = [`${NAME}/${index.repository}:v1`, `${NAME}/${image.repository}:v1`];
  const first = await pullthrough(['warm', '--config', path, '--jobs', '2', ...refs]);
  assert.equal(first.code, 0, first.stdout + first.stderr);
  assert.equal(first.stdout.split('\n').filter((l) => / fetched$/.test(l)).length, 2, first.stdout);

  await upstream.clearRequests();
  const second = await pullthrough(['warm', '--config', path, '--jobs', '2', ...refs]);
  assert.equal(second.code, 0, second.stdout + second.stderr);
  assert.equal(second.stdout.split('\n').filter((l) => / cached$/.test(l)).length, 2, second.stdout);
  assert.match(second.stdout, /fetched 0 B; 0 failed/);
  const seen = await upstream.settledRequests();
  const gets = seen.filter((e: AccessLogEntry) => e.method === 'GET' && /\/(blobs|manifests)\//.test(e.path));
  assert.deepEqual(gets, [], 'nothing fetched again');
  // What remains is the tag check (tagMaxAge 0s): a HEAD, which Docker Hub does not count.
  assert.ok(seen.every((e) => e.method === 'HEAD' || e.path === '/v2/'), JSON.stringify(seen));
});

test('export with no references bundles every cached image, named by its tag', { skip }, async () => {
  assert.ok(twice);
  const bundle = join(twice.root, '..', 'all.tar');
  const exported = await pullthrough(['export', '--config', twice.path, '--out', bundle]);
  assert.equal(exported.code, 0, exported.stderr);
  assert.match(exported.stdout, /^exported 2 images \(4 manifests, /m);
  for (const i of [index, image]) assert.match(exported.stdout, new RegExp(`^${NAME}/${i.repository}:v1  ${i.digest}$`, 'm'));
});

test('--pin protects what was warmed: gc under a 1-byte cap removes the other image, keeps the pinned one', { skip }, async () => {
  const { path, root } = await configFor([{ name: NAME, url: upstream.url }], { maxSize: '1B', evictionGrace: '0s' });
  const pinnedRef = `${NAME}/${image.repository}:v1`;
  const pinned = await pullthrough(['warm', '--config', path, '--pin', pinnedRef]);
  assert.equal(pinned.code, 0, pinned.stdout + pinned.stderr);
  assert.match(pinned.stdout, /pinned 1 images in .*pins\.json/);
  const pins = JSON.parse(await readFile(join(root, 'pins.json'), 'utf8')) as { pins: { pin: string; reference: string }[] };
  assert.deepEqual(pins.pins.map((p) => [p.reference, p.pin]), [[pinnedRef, `${NAME}/${image.repository}@${image.digest}`]]);
  const other = await pullthrough(['warm', '--config', path, `${NAME}/${index.repository}:v1`]);
  assert.equal(other.code, 0, other.stderr);

  const gc = await pullthrough(['gc', '--config', path]);
  assert.equal(gc.code, 0, gc.stderr);
  // gc names images by their tags, and says why the pinned one stayed.
  assert.match(gc.stdout, new RegExp(`^removed ${NAME}/${index.repository}:v1 \\(`, 'm'));
  assert.match(gc.stdout, new RegExp(`^  ${NAME}/${image.repository}:v1 \\(.+\\): pinned$`, 'm'));
  assert.doesNotMatch(gc.stdout, new RegExp(`^removed ${NAME}/${image.repository}`, 'm'));
  for (const d of image.blobDigests) assert.ok(await exists(blobFile(root, d)), `pinned blob ${d} kept`);
  for (const d of index.blobDigests) assert.ok(!(await exists(blobFile(root, d))), `unpinned blob ${d} removed`);
});

test('upstream failures are retried with back-off, and a 429 waits for its Retry-After', async () => {
  const built = makeImage({ layerSizes: [50_000] });
  fake.addImage('retry/app', 'v1', built);
  const layerPath = `/v2/retry/app/blobs/${built.layers[0]!.digest}`;
  const layerGets: number[] = [];
  fake.addFault({ method: 'GET', path: `/v2/retry/app/manifests/${built.digest}`, once: true }, { status: { code: 503 } });
  fake.addFault({ method: 'GET', path: layerPath, once: true }, tooManyRequests({ retryAfter: 1 }));
  // Newest first: this one only notes when each GET of the layer arrives.
  fake.addFault({ method: 'GET', path: (p) => { if (p === layerPath) layerGets.push(Date.now()); return false; } }, {});
  const { path, root } = await configFor([{ name: 'fake.test', url: fake.url }]);

  const warmed = await pullthrough(['warm', '--config', path, 'fake.test/retry/app:v1']);
  assert.equal(warmed.code, 0, warmed.stdout + warmed.stderr);
  assert.match(warmed.stderr, /^retry .*UNAVAILABLE/m);
  assert.match(warmed.stderr, /^retry .*TOOMANYREQUESTS/m);
  assert.equal(layerGets.length, 2, 'the layer was asked again after the 429');
  assert.ok(layerGets[1]! - layerGets[0]! >= 1000, `waited ${layerGets[1]! - layerGets[0]!} ms for Retry-After: 1`);
  assert.ok(await exists(blobFile(root, built.layers[0]!.digest)));
  fake.clearFaults();
});

test('a reference that fails makes the exit code 1, shows in the summary, and no lock is written', async () => {
  const built = makeImage({ layerSizes: [10_000] });
  fake.addImage('fail/ok', 'v1', built);
  const { path } = await configFor([{ name: 'fake.test', url: fake.url }]);
  const lock = join(path, '..', 'images.lock');
  const warmed = await pullthrough(['warm', '--config', path, '--retries', '0', '--lock', lock,
    'fake.test/fail/ok:v1', 'fake.test/fail/missing:v1', 'unknown.example/app:1']);
  assert.equal(warmed.code, 1, warmed.stdout + warmed.stderr);
  assert.match(warmed.stdout, new RegExp(`^fake\\.test/fail/ok:v1\\s+${built.digest}\\s.*fetched$`, 'm'));
  assert.match(warmed.stdout, /^failed: fake\.test\/fail\/missing:v1 \(argument\): MANIFEST_UNKNOWN/m);
  assert.match(warmed.stdout, /^failed: unknown\.example\/app:1 \(argument\): NAME_UNKNOWN: registry unknown\.example is not configured/m);
  assert.match(warmed.stdout, /3 images, .*; 2 failed/);
  assert.match(warmed.stderr, /images\.lock not written: 2 references failed/);
  assert.ok(!(await exists(lock)));
});

test('--lock writes through a temp file of a random name: a link planted at the predictable name is never written through', async () => {
  const built = makeImage({ layerSizes: [10_000] });
  fake.addImage('lock/ok', 'v1', built);
  const { path } = await configFor([{ name: 'fake.test', url: fake.url }]);
  const lock = join(path, '..', 'images.lock');
  const victim = join(path, '..', 'victim');
  await writeFile(victim, 'untouched\n');
  // The old temp name was `<lock>.tmp`: anyone who could write the directory could point it anywhere.
  await symlink(victim, `${lock}.tmp`);
  const warmed = await pullthrough(['warm', '--config', path, '--retries', '0', '--lock', lock, 'fake.test/lock/ok:v1']);
  assert.equal(warmed.code, 0, warmed.stdout + warmed.stderr);
  assert.equal(await readFile(victim, 'utf8'), 'untouched\n', 'nothing was written through the planted link');
  assert.match(await readFile(lock, 'utf8'), new RegExp(`^fake\\.test/lock/ok:v1 ${built.digest}$`, 'm'));
  assert.deepEqual((await readdir(join(path, '..'))).filter((f) => f.startsWith('images.lock.') && f !== 'images.lock.tmp'), [], 'no temp file left');
});
