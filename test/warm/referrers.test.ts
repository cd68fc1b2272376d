/**
 * Referrers across the air gap, with the commands as the README runs them:
 * `warm --referrers` from an upstream without the referrers API (Debian's
 * docker-registry, the referrers tag schema) and from one with it (a fake
 * upstream over real HTTP), `export --referrers`, `import` into an empty
 * root, and `serve` offline: the referrers endpoint lists the same digests
 * (a signature of the SBOM included), the referrers tag answers, and every
 * referrer pulls with skopeo by digest, blobs and all.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import type { Digest } from '../../src/registry/digest.js';
import { fromArguments } from '../../src/warm/references.js';
import { Warmer, type WarmResult } from '../../src/warm/warm.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import {
  COSIGN_SIGNATURE, SPDX_SBOM, makeArtifact, makeImage, makeReferrersIndex, referrersTagOf, type BuiltArtifact, type BuiltImage,
} from '../fixtures/images.js';
import { startProxy } from '../fixtures/proxy.js';
import { pushBuilt, pushManifest } from '../fixtures/push.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { startServer, type RunningServer } from '../fixtures/server.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { runCommand, tempDir, toolSkip, type RunResult } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');
const options = { skip, timeout: 120_000 };
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const TAGS = 'registry-a.test';
const API = 'registry-b.test';
const REPOSITORY = 'team/app';

/** An image, its signature and SBOM, and a signature of the SBOM. */
interface Signed {
  readonly image: BuiltImage;
  readonly signature: BuiltArtifact;
  readonly sbom: BuiltArtifact;
  readonly sbomSignature: BuiltArtifact;
}

let registry: RunningRegistry;
let fake: FakeUpstream;
let work: string;
let signed: Record<string, Signed>;
let server: RunningServer | undefined;

function signedImage(): Signed {
  const image = makeImage({ layerSizes: [2000] });
  const signature = makeArtifact({ artifactType: COSIGN_SIGNATURE, subject: image });
  const sbom = makeArtifact({ artifactType: SPDX_SBOM, subject: image, payloads: [{ mediaType: SPDX_SBOM, data: Buffer.from('{"spdxVersion":"SPDX-2.3"}') }] });
  const sbomSignature = makeArtifact({ artifactType: COSIGN_SIGNATURE, subject: sbom });
  return { image, signature, sbom, sbomSignature };
}

before(async () => {
  if (skip) return;
  [registry, fake, work] = await Promise.all([startRegistry(), startFakeUpstream({ referrers: {} }), tempDir('referrers-airgap')]);
  signed = { [TAGS]: signedImage(), [API]: signedImage() };
  // Without the referrers API, as a client leaves it: each referrer pushed, then the index under the subject's referrers tag.
  const t = signed[TAGS]!;
  await pushBuilt(registry.url, REPOSITORY, t.image, 'v1');
  for (const a of [t.signature, t.sbom, t.sbomSignature]) await pushBuilt(registry.url, REPOSITORY, a);
  await pushManifest(registry.url, REPOSITORY, referrersTagOf(t.image.digest), makeReferrersIndex([t.signature, t.sbom]));
  await pushManifest(registry.url, REPOSITORY, referrersTagOf(t.sbom.digest), makeReferrersIndex([t.sbomSignature]));
  const a = signed[API]!;
  fake.addImage(REPOSITORY, 'v1', a.image);
  for (const artifact of [a.signature, a.sbom, a.sbomSignature]) fake.addImage(REPOSITORY, artifact.digest, artifact);

  const upstreams = [{ name: TAGS, url: registry.url }, { name: API, url: fake.url }];
  await writeFile(join(work, 'online.json'), JSON.stringify({ listen: { port: 5000 }, storage: { root: join(work, 'cache') }, upstreams }));
  await writeFile(join(work, 'airgap.json'), JSON.stringify({
    listen: { port: 5000 }, storage: { root: join(work, 'airgap-cache') }, upstreams, upstreamDefaults: { offline: true },
  }));
}, { timeout: 120_000 });

after(async () => {
  await server?.stop();
  await Promise.all([registry?.stop(), fake?.stop()]);
});

function pullthrough(args: readonly string[]): Promise<RunResult> {
  return runCommand(process.execPath, [CLI, ...args], { cwd: work, allowFailure: true, timeoutMs: 60_000 });
}

async function referrerDigests(base: string, upstream: string, subject: string): Promise<string[]> {
  const res = await request(`${base}/v2/${upstream}/${REPOSITORY}/referrers/${subject}`);
  assert.equal(res.statusCode, 200);
  return ((await res.body.json()) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest);
}

test('warm --referrers fetches every referrer, a signature of the SBOM included, and counts them', options, async () => {
  const warmed = await pullthrough(['warm', '--config', 'online.json', '--referrers', `${TAGS}/${REPOSITORY}:v1`, `${API}/${REPOSITORY}:v1`]);
  assert.equal(warmed.code, 0, warmed.stdout + warmed.stderr);
  assert.match(warmed.stdout, /^REFERENCE\s+DIGEST\s+PLATFORMS\s+REFERRERS\s+SIZE\s+FETCHED\s+STATUS$/m);
  for (const upstream of [TAGS, API]) {
    assert.match(warmed.stdout, new RegExp(`^${upstream.replace(/\./g, '\\.')}/${REPOSITORY}:v1\\s+${signed[upstream]!.image.digest}\\s+linux/amd64\\s+3\\s.*fetched$`, 'm'));
  }
  assert.match(warmed.stdout, /^2 images, 6 referrers, /m);
});

test('export --referrers carries them; import into an empty root records them', options, async () => {
  const exported = await pullthrough(['export', '--config', 'online.json', '--referrers', '--out', 'bundle.tar', `${TAGS}/${REPOSITORY}:v1`, `${API}/${REPOSITORY}:v1`]);
  assert.equal(exported.code, 0, exported.stdout + exported.stderr);
  // Six referrers by digest, and the two referrers-tag indexes of the upstream without the API.
  assert.match(exported.stdout, /^exported 2 images and 8 referrers \(/m);
  const imported = await pullthrough(['import', '--config', 'airgap.json', 'bundle.tar']);
  assert.equal(imported.code, 0, imported.stdout + imported.stderr);
  assert.match(imported.stdout, /^recorded 6 referrers/m);
});

test('offline: the referrers endpoint lists the same digests, the referrers tag answers, each referrer pulls with skopeo', options, async () => {
  const offline = server = await startServer(JSON.parse(await readFile(join(work, 'airgap.json'), 'utf8')) as Record<string, unknown>);
  await registry.clearRequests();
  fake.clearRequests();
  for (const upstream of [TAGS, API]) {
    const { image, signature, sbom, sbomSignature } = signed[upstream]!;
    assert.deepEqual(await referrerDigests(offline.url, upstream, image.digest), [signature.digest, sbom.digest], `${upstream}: the image's referrers`);
    assert.deepEqual(await referrerDigests(offline.url, upstream, sbom.digest), [sbomSignature.digest], `${upstream}: the SBOM's signature`);
    const filtered = await request(`${offline.url}/v2/${upstream}/${REPOSITORY}/referrers/${image.digest}?artifactType=${encodeURIComponent(SPDX_SBOM)}`);
    assert.equal(filtered.headers['oci-filters-applied'], 'artifactType');
    assert.deepEqual(((await filtered.body.json()) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest), [sbom.digest]);
    for (const artifact of [signature, sbom, sbomSignature]) {
      const pulled = await pullWithSkopeo(`${offline.host}/${upstream}/${REPOSITORY}@${artifact.digest}`, await tempDir('referrer-pull'));
      assert.equal(pulled.manifestDigest, artifact.digest);
      assert.deepEqual(pulled.blobDigests.sort(), [artifact.config.digest, ...artifact.layers.map((l) => l.digest)].sort());
    }
  }
  const tag = await request(`${offline.url}/v2/${TAGS}/${REPOSITORY}/manifests/${referrersTagOf(signed[TAGS]!.image.digest)}`);
  assert.equal(tag.statusCode, 200, 'the referrers tag of the upstream without the API answers offline');
  assert.deepEqual(((await tag.body.json()) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest),
    [signed[TAGS]!.signature.digest, signed[TAGS]!.sbom.digest]);
  assert.deepEqual((await registry.settledRequests()).filter((r) => r.path.startsWith('/v2/team/')), [], 'no upstream request');
  assert.deepEqual(fake.requests(), []);
});

test('--artifact-type: only referrers of that type, at every level; a second run finds them cached', async () => {
  const upstream = await startFakeUpstream({ referrers: {} });
  const proxy = await startProxy({ upstreams: [{ name: API, url: upstream.url }], upstreamDefaults: { tagMaxAge: '1h' } });
  try {
    const { image, signature, sbom, sbomSignature } = signedImage();
    upstream.addImage(REPOSITORY, 'v1', image);
    for (const artifact of [signature, sbom, sbomSignature]) upstream.addImage(REPOSITORY, artifact.digest, artifact);
    const warm = (): Promise<WarmResult[]> =>
      new Warmer(proxy.mirror, { jobs: 2, referrers: { artifactTypes: [COSIGN_SIGNATURE] } }).run(fromArguments([`${API}/${REPOSITORY}:v1`]));
    const [first] = await warm();
    assert.equal(first!.status, 'fetched', first!.error);
    assert.equal(first!.referrers, 1, 'the signature; not the SBOM, so not the SBOM\'s signature either');
    const repository = first!.repository!;
    assert.ok(await proxy.mirror.localManifests.stat(repository, signature.digest as Digest));
    for (const skipped of [sbom, sbomSignature]) assert.equal(await proxy.mirror.localManifests.stat(repository, skipped.digest as Digest), undefined);
    assert.equal(first!.bytes, image.config.size + image.layers[0]!.size + signature.config.size + signature.layers[0]!.size);
    const [second] = await warm();
    assert.equal(second!.status, 'cached');
    assert.equal(second!.referrers, 1);
    assert.equal(upstream.requests({ path: new RegExp(`/referrers/`) }).length, 2, 'within tagMaxAge the lists are not asked again');
  } finally {
    await proxy.stop();
    await upstream.stop();
  }
});
