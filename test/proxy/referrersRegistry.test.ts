/**
 * Referrers from a real upstream without the referrers API: Debian's
 * docker-registry 2.8. An image, a cosign-style signature and an SBOM
 * (OCI image manifests with `subject`, `artifactType` and an empty-JSON
 * config) and their index under the referrers tag `sha256-<hex>` are pushed
 * with the plain push API, as a client does against such a registry. The
 * mirror's referrers endpoint answers from the tag's index.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { request } from '../../src/upstream/undici.js';
import { FakeClock } from '../fixtures/clock.js';
import {
  COSIGN_SIGNATURE, MEDIA, SPDX_SBOM, makeArtifact, makeImage, makeReferrersIndex, referrerEntry, referrersTagOf,
  type BuiltArtifact, type BuiltImage,
} from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { pushBuilt, pushManifest } from '../fixtures/push.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { inspectRaw } from '../fixtures/skopeo.js';
import { toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');
const REPOSITORY = 'signed/app';
let upstream: RunningRegistry;
let proxy: RunningProxy;
const clock = new FakeClock();
let image: BuiltImage;
let signature: BuiltArtifact;
let sbom: BuiltArtifact;

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  image = makeImage({ layerSizes: [1000] });
  signature = makeArtifact({
    artifactType: COSIGN_SIGNATURE, subject: image,
    payloads: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', data: Buffer.from('{"critical":{}}') }],
    annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQ==' },
  });
  sbom = makeArtifact({
    artifactType: SPDX_SBOM, subject: image, payloads: [{ mediaType: SPDX_SBOM, data: Buffer.from('{"spdxVersion":"SPDX-2.3"}') }],
  });
  await pushBuilt(upstream.url, REPOSITORY, image, 'v1');
  await pushReferrers(image, [signature, sbom]);
  proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url, tagMaxAge: '1m' }], clock });
});

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
});

/** What a client does against a registry without the referrers API: push each referrer, then the index under the subject's referrers tag. */
async function pushReferrers(subject: BuiltImage, referrers: readonly BuiltArtifact[]): Promise<void> {
  for (const r of referrers) await pushBuilt(upstream.url, REPOSITORY, r);
  await pushManifest(upstream.url, REPOSITORY, referrersTagOf(subject.digest), makeReferrersIndex(referrers));
}

async function listed(url: string): Promise<{ headers: Record<string, unknown>; manifests: unknown[] }> {
  const res = await request(url);
  const body = await res.body.json() as { mediaType: string; manifests: unknown[] };
  assert.equal(res.statusCode, 200);
  assert.equal(body.mediaType, MEDIA.ociIndex);
  return { headers: res.headers, manifests: body.manifests };
}

test('docker-registry 2.8 has no referrers API: the mirror lists the referrers from the sha256-<hex> tag index', { skip }, async () => {
  const direct = await request(`${upstream.url}/v2/${REPOSITORY}/referrers/${image.digest}`);
  await direct.body.dump();
  assert.equal(direct.statusCode, 404, 'the upstream itself answers 404: the fallback is needed');
  const all = await listed(`${proxy.url}/v2/${REPOSITORY}/referrers/${image.digest}`);
  assert.equal(all.headers['content-type'], MEDIA.ociIndex);
  assert.deepEqual(all.manifests, [referrerEntry(signature), referrerEntry(sbom)]);
  const signatures = await listed(`${proxy.url}/v2/${REPOSITORY}/referrers/${image.digest}?artifactType=${encodeURIComponent(COSIGN_SIGNATURE)}`);
  assert.equal(signatures.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual(signatures.manifests, [referrerEntry(signature)]);
});

test('skopeo inspect --raw of each referrer through the mirror equals the upstream bytes', { skip }, async () => {
  for (const artifact of [signature, sbom]) {
    const [viaMirror, fromUpstream] = await Promise.all([
      inspectRaw(`${proxy.host}/${REPOSITORY}@${artifact.digest}`),
      inspectRaw(`${upstream.host}/${REPOSITORY}@${artifact.digest}`),
    ]);
    assert.ok(viaMirror.equals(fromUpstream), 'bit-exact');
    assert.ok(viaMirror.equals(artifact.manifest));
  }
});

test('tags/list shows the sha256-<hex> fallback tag as the upstream lists it, once, and nothing invented', { skip }, async () => {
  const upstreamTags = (await (await request(`${upstream.url}/v2/${REPOSITORY}/tags/list`)).body.json() as { tags: string[] }).tags;
  const res = await request(`${proxy.url}/v2/${REPOSITORY}/tags/list`);
  const body = await res.body.json() as { tags: string[] };
  assert.deepEqual(body.tags, [...upstreamTags].sort());
  assert.deepEqual(body.tags, [referrersTagOf(image.digest), 'v1']);
});

test('freshness: a referrer pushed after the first list appears after tagMaxAge', { skip }, async () => {
  const url = `${proxy.url}/v2/${REPOSITORY}/referrers/${image.digest}`;
  assert.equal((await listed(url)).manifests.length, 2);
  const attestation = makeArtifact({ artifactType: 'application/vnd.in-toto+json', subject: image });
  await pushReferrers(image, [signature, sbom, attestation]);
  await upstream.clearRequests();
  assert.equal((await listed(url)).manifests.length, 2, 'within tagMaxAge: the recorded list, without asking');
  assert.deepEqual((await upstream.settledRequests()).filter((r) => r.path.startsWith(`/v2/${REPOSITORY}/`)), []);
  await clock.advance(60_000);
  const revalidated = await listed(url);
  assert.equal(revalidated.headers['x-pullthrough-cache'], 'miss');
  assert.deepEqual(revalidated.manifests, [referrerEntry(signature), referrerEntry(sbom), referrerEntry(attestation)]);
});

test('the upstream stopped: the cached list is served, marked stale', { skip }, async () => {
  // The real clock here: a stopped upstream's connection retries sleep on the mirror's clock.
  const live = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url, tagMaxAge: '0s' }] });
  try {
    const url = `${live.url}/v2/${REPOSITORY}/referrers/${image.digest}`;
    const before = await listed(url);
    assert.equal(before.manifests.length, 3);
    await upstream.stop();
    const stale = await listed(url);
    assert.equal(stale.headers['x-pullthrough-cache'], 'stale');
    assert.match(String(stale.headers['warning']), /^110 /);
    assert.deepEqual(stale.manifests, before.manifests);
  } finally {
    await live.stop();
    await upstream.restart();
  }
});
