/**
 * The README's "Air-gapped CI" walkthrough, step by step, with real parts:
 * two docker-registry upstreams, `pullthrough warm` from a docker-compose file
 * and Kubernetes manifests, `export` to one OCI layout tar (read by skopeo),
 * `import` into an empty storage root (corrupt and truncated bundles refused,
 * leaving storage as it was), and `pullthrough serve` with `offline: true`
 * serving skopeo, containerd and podman while the upstreams see nothing and
 * then are stopped altogether.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { startContainerd, type RunningContainerd } from '../fixtures/containerd.js';
import { createPodman, registriesConf } from '../fixtures/podman.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { startServer, type RunningServer } from '../fixtures/server.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { isOnPath, runCommand, tempDir, toolSkip, type RunResult } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo', 'containerd', 'ctr');
const options = { skip, timeout: 120_000 };
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

const A = 'registry-a.test';
const B = 'registry-b.test:5000';
/** An image reference cannot hold a port in a path component: skopeo and podman reach B by this alias. */
const B_ALIAS = 'registry-b.test';

let regA: RunningRegistry;
let regB: RunningRegistry;
let containerd: RunningContainerd;
let work: string;
let cacheRoot: string;
let airRoot: string;
let imagesA: Record<string, SeededImage>;
let imagesB: Record<string, SeededImage>;
let server: RunningServer | undefined;
let namespaces = 0;

/** What the CI pipeline asks for, as the compose file and the manifests name it; A's docker-image is never asked. */
let wanted: { upstream: string; image: SeededImage; lockRef: string }[];

before(async () => {
  if (skip) return;
  [regA, regB, containerd, work] = await Promise.all([startRegistry(), startRegistry(), startContainerd(), tempDir('airgap')]);
  const seed = async (reg: RunningRegistry, kinds: SeededImage['kind'][]): Promise<Record<string, SeededImage>> =>
    Object.fromEntries((await seedImages(reg.host, { kinds, repositoryPrefix: 'team', tag: 'v1', layerSize: 64 * 1024 })).map((i) => [i.kind, i]));
  [imagesA, imagesB] = await Promise.all([
    seed(regA, ['oci-index', 'oci-image', 'docker-image']),
    seed(regB, ['docker-list', 'oci-image']),
  ]);
  cacheRoot = join(work, 'cache');
  airRoot = join(work, 'airgap-cache');
  const upstreams = [{ name: A, url: regA.url }, { name: B, url: regB.url, aliases: [B_ALIAS] }];
  await writeFile(join(work, 'online.json'), JSON.stringify({ listen: { port: 5000 }, storage: { root: cacheRoot }, upstreams }, null, 2));
  await writeFile(join(work, 'airgap.json'), JSON.stringify({
    listen: { port: 5000 }, storage: { root: airRoot }, upstreams, upstreamDefaults: { offline: true },
  }, null, 2));
  await writeFile(join(work, 'docker-compose.yml'), [
    'services:',
    '  web:',
    `    image: ${A}/team/oci-index:v1`,
    '  worker:',
    `    image: ${B_ALIAS}/team/docker-list:v1`,
    '  tools:',
    '    build: ./tools',
    '',
  ].join('\n'));
  await writeFile(join(work, 'k8s.yaml'), [
    'apiVersion: apps/v1',
    'kind: Deployment',
    'metadata: { name: web }',
    'spec:',
    '  template:',
    '    spec:',
    '      initContainers:',
    '        - name: setup',
    `          image: ${A}/team/oci-image:v1`,
    '      containers:',
    '        - name: web',
    `          image: ${A}/team/oci-index:v1`,
    '---',
    'apiVersion: batch/v1',
    'kind: CronJob',
    'metadata: { name: nightly }',
    'spec:',
    '  schedule: "0 3 * * *"',
    '  jobTemplate:',
    '    spec:',
    '      template:',
    '        spec:',
    '          restartPolicy: OnFailure',
    '          containers:',
    '            - name: job',
    `              image: ${B}/team/oci-image:v1`,
    '',
  ].join('\n'));
  wanted = [
    { upstream: A, image: imagesA['oci-index']!, lockRef: `${A}/team/oci-index:v1` },
    { upstream: B, image: imagesB['docker-list']!, lockRef: `${B_ALIAS}/team/docker-list:v1` },
    { upstream: A, image: imagesA['oci-image']!, lockRef: `${A}/team/oci-image:v1` },
    { upstream: B, image: imagesB['oci-image']!, lockRef: `${B}/team/oci-image:v1` },
  ];
}, { timeout: 120_000 });

after(async () => {
  await server?.stop();
  await containerd?.stop();
  await Promise.all([regA?.stop(), regB?.stop()]);
});

/** `pullthrough <args>` in the work directory, as the README runs it. */
function pullthrough(args: readonly string[]): Promise<RunResult> {
  return runCommand(process.execPath, [CLI, ...args], { cwd: work, allowFailure: true, timeoutMs: 60_000 });
}

/** Every file under `root` (relative path → sha256 of its bytes). */
async function snapshot(root: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else files.set(relative(root, path), createHash('sha256').update(await readFile(path)).digest('hex'));
    }
  };
  await walk(root);
  return files;
}

function blobPath(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
}

/** The files a cache holding exactly the wanted images has. */
function expectedFiles(): string[] {
  const files = new Set<string>();
  for (const { upstream, image } of wanted) {
    const repo = `repositories/${upstream}/${image.repository}`;
    files.add(`${repo}/_manifests/tags/${image.tag}`);
    for (const d of [image.digest, ...image.childDigests]) {
      files.add(`${repo}/_manifests/revisions/sha256/${d.slice(7)}`);
      files.add(blobPath(d));
    }
    for (const d of image.blobDigests) {
      files.add(`${repo}/_layers/sha256/${d.slice(7)}`);
      files.add(blobPath(d));
    }
  }
  return [...files].sort();
}

test('step 1: warm from a docker-compose file and Kubernetes manifests fetches exactly what they name, from both upstreams', options, async () => {
  const warmed = await pullthrough(['warm', '--config', 'online.json', '--from', 'docker-compose.yml', '--from', 'k8s.yaml', '--lock', 'images.lock']);
  assert.equal(warmed.code, 0, warmed.stdout + warmed.stderr);
  // Not a terminal: one plain line per image, then the summary table.
  assert.equal(warmed.stderr.split('\n').filter((l) => l.startsWith('ok ')).length, 4, warmed.stderr);
  for (const { image, lockRef } of wanted) {
    assert.match(warmed.stdout, new RegExp(`^${lockRef.replace(/[.]/g, '\\.')}\\s+${image.digest}\\s.*\\sfetched$`, 'm'));
  }
  assert.match(warmed.stdout, /^4 images, .*; 0 failed$/m);

  const files = [...(await snapshot(cacheRoot)).keys()].sort();
  assert.deepEqual(files, expectedFiles(), 'the cache holds exactly the images asked for');
  assert.ok(!files.some((f) => f.includes('docker-image')), 'nothing that was not asked for');

  const lock = await readFile(join(work, 'images.lock'), 'utf8');
  const lines = lock.split('\n').filter((l) => l && !l.startsWith('#'));
  assert.deepEqual(lines.sort(), wanted.map((w) => `${w.lockRef} ${w.image.digest}`).sort());
});

test('step 2: export the locked images as one OCI layout tar that skopeo reads', options, async () => {
  const exported = await pullthrough(['export', '--config', 'online.json', '--lock', 'images.lock', '--out', 'bundle.tar']);
  assert.equal(exported.code, 0, exported.stdout + exported.stderr);
  assert.match(exported.stdout, /^exported 4 images \(8 manifests, \d+ blobs, /m);
  // skopeo 1.9 (containers/image 5.23) looks only at OCI-typed entries of an OCI layout; docker-typed
  // images travel with their own media type, never converted (import and the offline pulls below read them).
  for (const { upstream, image } of wanted.filter((w) => w.image.mediaType.startsWith('application/vnd.oci.'))) {
    const name = `${upstream}/${image.repository}:${image.tag}`;
    const inspected = await runCommand('skopeo', ['inspect', `oci-archive:${join(work, 'bundle.tar')}:${name}`]);
    // For an index skopeo reports the digest of the index itself.
    assert.equal(JSON.parse(inspected.stdout).Digest, image.digest, name);
  }
});

test('step 2b: the short name a lock file gives finds the image in the bundle; import still records it under its upstream', options, async () => {
  // A is the default upstream of online.json: `team/oci-image:v1` is the lock's short name for A's image.
  const image = imagesA['oci-image']!;
  await writeFile(join(work, 'short.lock'), `team/oci-image:v1 ${image.digest}\n`);
  const exported = await pullthrough(['export', '--config', 'online.json', '--lock', 'short.lock', '--out', 'short.tar']);
  assert.equal(exported.code, 0, exported.stdout + exported.stderr);
  for (const name of ['team/oci-image:v1', `${A}/team/oci-image:v1`]) {
    const inspected = await runCommand('skopeo', ['inspect', `oci-archive:${join(work, 'short.tar')}:${name}`]);
    assert.equal(JSON.parse(inspected.stdout).Digest, image.digest, name);
  }
  // Where the short name would mean another upstream, the bundle's full name decides.
  const elsewhere = join(work, 'short-import');
  await writeFile(join(work, 'b-default.json'), JSON.stringify({
    listen: { port: 5000 }, storage: { root: elsewhere }, defaultUpstream: B,
    upstreams: [{ name: A, url: regA.url }, { name: B, url: regB.url, aliases: [B_ALIAS] }],
  }));
  const imported = await pullthrough(['import', '--config', 'b-default.json', 'short.tar']);
  assert.equal(imported.code, 0, imported.stdout + imported.stderr);
  assert.match(imported.stdout, /^imported 1 images /m, 'one image, though index.json lists it twice');
  const files = [...(await snapshot(elsewhere)).keys()];
  assert.ok(files.includes(`repositories/${A}/team/oci-image/_manifests/tags/v1`), files.join('\n'));
  assert.ok(!files.some((f) => f.startsWith(`repositories/${B}/`)), 'nothing under the upstream the short name would mean here');
});

test('step 3: a bundle with one flipped byte, or cut short, is refused and storage is left as it was', options, async () => {
  const bundle = await readFile(join(work, 'bundle.tar'));
  // Flip a byte inside a layer's data: after its 512-byte tar header.
  const layer = wanted[0]!.image.blobDigests.at(-1)!.slice(7);
  const header = bundle.indexOf(Buffer.from(`blobs/sha256/${layer}`));
  assert.ok(header > 0);
  const flipped = Buffer.from(bundle);
  flipped[header + 512 + 1000] ^= 0x01;
  await writeFile(join(work, 'flipped.tar'), flipped);
  await writeFile(join(work, 'truncated.tar'), bundle.subarray(0, Math.floor(bundle.length * 0.6)));
  await writeFile(join(work, 'cut-at-entry.tar'), bundle.subarray(0, header));

  const before = await snapshot(airRoot);
  assert.deepEqual([...before.keys()], [], 'the air-gapped storage root starts empty');
  for (const [file, reason] of [
    ['flipped.tar', new RegExp(`blobs/sha256/${layer} does not match its digest`)],
    ['truncated.tar', /truncated/],
    ['cut-at-entry.tar', /truncated/],
  ] as const) {
    const refused = await pullthrough(['import', '--config', 'airgap.json', file]);
    assert.equal(refused.code, 1, `${file}: ${refused.stdout}${refused.stderr}`);
    assert.match(refused.stderr, /refused/);
    assert.match(refused.stderr, reason, file);
    assert.deepEqual(await snapshot(airRoot), before, `${file}: storage unchanged`);
  }
});

test('step 4: import into an empty storage root records every image under its upstream, byte for byte as warmed', options, async () => {
  const imported = await pullthrough(['import', '--config', 'airgap.json', 'bundle.tar']);
  assert.equal(imported.code, 0, imported.stdout + imported.stderr);
  assert.match(imported.stdout, /^imported 4 images \(8 manifests, \d+ blobs, [\d.]+ KiB; [\d.]+ KiB new\)/m);
  // Links, manifest revisions, tag records (with the time the tag was learned upstream) and blobs: identical.
  assert.deepEqual(await snapshot(airRoot), await snapshot(cacheRoot));

  // A refused bundle leaves a populated storage as it was, too.
  const populated = await snapshot(airRoot);
  const refused = await pullthrough(['import', '--config', 'airgap.json', 'flipped.tar']);
  assert.equal(refused.code, 1);
  assert.deepEqual(await snapshot(airRoot), populated);
});

/** A fresh containerd namespace: every pull in it is cold. */
function freshNamespace(): string {
  return `airgap-${++namespaces}`;
}

/** skopeo (every platform) and ctr (its own) through the offline server; digests must be the upstream's. */
async function pullEverything(label: string): Promise<void> {
  for (const { upstream, image } of wanted) {
    const prefix = upstream === B ? B_ALIAS : upstream;
    const pulled = await pullWithSkopeo(`${server!.host}/${prefix}/${image.repository}:${image.tag}`, await tempDir('airgap-pull'));
    assert.equal(pulled.manifestDigest, image.digest, `${label}: skopeo ${upstream}/${image.repository}`);
    const ref = `${upstream}/${image.repository}:${image.tag}`;
    const viaCtr = await containerd.pull(ref, freshNamespace());
    assert.equal(viaCtr.digest, image.digest, `${label}: ctr ${ref}\n${viaCtr.output}`);
  }
}

test('step 5: pullthrough serve with offline: true serves skopeo and ctr with no upstream request, then with the upstreams stopped', options, async () => {
  const airgap = JSON.parse(await readFile(join(work, 'airgap.json'), 'utf8')) as Record<string, unknown>;
  server = await startServer(airgap);
  // containerd falls back to `server` when the mirror fails: a fallback would show in the upstream's log.
  await containerd.writeHosts(A, { server: regA.url, hosts: [{ url: server.url }] });
  await containerd.writeHosts(B, { server: regB.url, hosts: [{ url: server.url }] });
  await Promise.all([regA.clearRequests(), regB.clearRequests()]);

  await pullEverything('upstreams running');
  const [seenA, seenB] = await Promise.all([regA.settledRequests(), regB.settledRequests()]);
  assert.deepEqual(seenA, [], 'upstream A: zero requests, from pullthrough or a client fallback');
  assert.deepEqual(seenB, [], 'upstream B: zero requests');

  await Promise.all([regA.stop(), regB.stop()]);
  await pullEverything('upstreams stopped');
  const errors = server.logs().filter((l) => typeof l['level'] === 'number' && (l['level'] as number) >= 50);
  assert.deepEqual(errors, []);
});

test('step 5 (podman): the imported images pull with podman from the offline server', { skip: skip || (isOnPath('podman') ? false : 'podman not installed'), timeout: 120_000 }, async () => {
  assert.ok(server, 'the offline server of step 5 runs');
  const podman = await createPodman(registriesConf([
    { prefix: A, location: A, mirrors: [{ location: `${server.host}/${A}`, insecure: true }] },
    { prefix: B_ALIAS, location: B_ALIAS, mirrors: [{ location: `${server.host}/${B_ALIAS}`, insecure: true }] },
  ]));
  for (const { upstream, image } of wanted.filter((w) => w.image.kind === 'oci-index' || w.image.kind === 'docker-list')) {
    const ref = `${upstream === B ? B_ALIAS : upstream}/${image.repository}:${image.tag}`;
    await podman.pull(ref);
    assert.equal(await podman.imageDigest(ref), image.digest, ref);
  }
  assert.ok((await stat(airRoot)).isDirectory());
});
