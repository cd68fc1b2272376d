/**
 * OCI 1.1 referrers through the mirror, from a fake upstream over real HTTP
 * that implements the referrers API (and one that does not): an image, a
 * cosign-style signature and an SBOM built with real digests. The list, the
 * artifactType filter, each referrer by digest bit-exact, freshness on a
 * fake clock, stale lists when the upstream fails, pagination, and the
 * referrers tag schema fallback.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../fixtures/clock.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import {
  COSIGN_SIGNATURE, MEDIA, SPDX_SBOM, makeArtifact, makeImage, makeReferrersIndex, referrerEntry, referrersTagOf,
  type BuiltArtifact, type BuiltImage,
} from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';

const TAG_MAX_AGE_MS = 60_000;
let api: FakeUpstream;
let noApi: FakeUpstream;
let proxy: RunningProxy;
const clock = new FakeClock();

before(async () => {
  [api, noApi] = await Promise.all([startFakeUpstream({ referrers: {} }), startFakeUpstream()]);
  proxy = await startProxy({
    upstreams: [{ name: 'api.test', url: api.url }, { name: 'tags.test', url: noApi.url }],
    defaultUpstream: 'api.test',
    upstreamDefaults: { tagMaxAge: '1m', notFoundTtl: '0s' },
    clock,
  });
});

after(async () => {
  await proxy?.stop();
  await Promise.all([api?.stop(), noApi?.stop()]);
});

let counter = 0;
interface Signed {
  repository: string;
  image: BuiltImage;
  signature: BuiltArtifact;
  sbom: BuiltArtifact;
}

/** An image with a signature and an SBOM, added to `upstream` as a client pushing to it would leave them. */
function signedImage(upstream: FakeUpstream): Signed {
  const repository = `signed/app${++counter}`;
  const image = makeImage({ layerSizes: [1000] });
  const signature = makeArtifact({
    artifactType: COSIGN_SIGNATURE, subject: image,
    payloads: [{ mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', data: Buffer.from('{"critical":{}}') }],
    annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQ==' },
  });
  const sbom = makeArtifact({
    artifactType: SPDX_SBOM, subject: image, payloads: [{ mediaType: SPDX_SBOM, data: Buffer.from('{"spdxVersion":"SPDX-2.3"}') }],
  });
  upstream.addImage(repository, 'v1', image);
  for (const a of [signature, sbom]) upstream.addImage(repository, a.digest, a);
  return { repository, image, signature, sbom };
}

async function referrers(path: string): Promise<{ status: number; headers: Record<string, unknown>; body: { manifests: unknown[] } }> {
  const res = await proxy.app.inject({ method: 'GET', url: path });
  return { status: res.statusCode, headers: res.headers, body: JSON.parse(res.body) as { manifests: unknown[] } };
}

function referrersRequests(upstream: FakeUpstream, repository: string): number {
  return upstream.requests({ path: new RegExp(`^/v2/${repository}/referrers/`) }).length;
}

test('the list: an OCI image index of every referrer with its artifactType and annotations, cached by subject', async () => {
  const { repository, image, signature, sbom } = signedImage(api);
  const first = await referrers(`/v2/${repository}/referrers/${image.digest}`);
  assert.equal(first.status, 200);
  assert.equal(first.headers['content-type'], MEDIA.ociIndex);
  assert.equal(first.headers['x-pullthrough-cache'], 'miss');
  assert.equal(first.headers['oci-filters-applied'], undefined, 'nothing filtered, nothing claimed');
  assert.deepEqual(first.body, { schemaVersion: 2, mediaType: MEDIA.ociIndex, manifests: [referrerEntry(signature), referrerEntry(sbom)] });

  const again = await referrers(`/v2/${repository}/referrers/${image.digest}`);
  assert.equal(again.headers['x-pullthrough-cache'], 'hit');
  assert.deepEqual(again.body, first.body);
  const head = await proxy.app.inject({ method: 'HEAD', url: `/v2/${repository}/referrers/${image.digest}?ns=api.test` });
  assert.equal(head.statusCode, 200);
  assert.equal(head.headers['content-length'], String(Buffer.byteLength(JSON.stringify(first.body))));
  assert.equal(head.body, '');
  assert.equal(referrersRequests(api, repository), 1, 'within tagMaxAge the recorded list answers without asking');
});

test('the artifactType filter: only that type, with OCI-Filters-Applied; no match is an empty list', async () => {
  const { repository, image, signature } = signedImage(api);
  const signatures = await referrers(`/v2/${repository}/referrers/${image.digest}?artifactType=${encodeURIComponent(COSIGN_SIGNATURE)}`);
  assert.equal(signatures.status, 200);
  assert.equal(signatures.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual(signatures.body.manifests, [referrerEntry(signature)]);
  const none = await referrers(`/v2/${repository}/referrers/${image.digest}?artifactType=application%2Fvnd.example.none`);
  assert.equal(none.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual(none.body.manifests, []);
  const empty = await referrers(`/v2/${repository}/referrers/${image.digest}?artifactType=`);
  assert.equal(empty.headers['oci-filters-applied'], undefined, 'an empty filter is none');
  assert.equal(empty.body.manifests.length, 2);
  assert.equal(referrersRequests(api, repository), 1, 'one cached list per subject serves every filter');
});

test('each referrer by digest, bit-exact with its media type; its blobs too', async () => {
  const { repository, image, signature, sbom } = signedImage(api);
  for (const artifact of [signature, sbom]) {
    const res = await proxy.app.inject({ method: 'GET', url: `/v2/${repository}/manifests/${artifact.digest}` });
    assert.equal(res.statusCode, 200);
    assert.ok(res.rawPayload.equals(artifact.manifest), 'the bytes the upstream holds');
    assert.equal(res.headers['docker-content-digest'], artifact.digest);
    assert.equal(res.headers['content-type'], MEDIA.ociManifest);
    for (const blob of [artifact.config, ...artifact.layers]) {
      const b = await proxy.app.inject({ method: 'GET', url: `/v2/${repository}/blobs/${blob.digest}` });
      assert.equal(b.statusCode, 200);
      assert.ok(b.rawPayload.equals(blob.data));
    }
  }
  // The subject is served bit-exact as any manifest; nothing about it changed.
  const subject = await proxy.app.inject({ method: 'GET', url: `/v2/${repository}/manifests/v1` });
  assert.ok(subject.rawPayload.equals(image.manifest));
});

test('a referrer whose bytes do not match its digest is refused, never stored', async () => {
  const { repository, signature } = signedImage(api);
  const fault = api.addFault({ path: `/v2/${repository}/manifests/${signature.digest}`, method: 'GET', once: true }, { corrupt: true });
  const res = await proxy.app.inject({ method: 'GET', url: `/v2/${repository}/manifests/${signature.digest}` });
  assert.equal(fault.hits(), 1);
  assert.equal(res.statusCode, 502);
  assert.equal((JSON.parse(res.body) as { errors: { code: string }[] }).errors[0]!.code, 'UPSTREAM_INVALID');
  const again = await proxy.app.inject({ method: 'GET', url: `/v2/${repository}/manifests/${signature.digest}` });
  assert.ok(again.rawPayload.equals(signature.manifest), 'the next request fetches it again, right');
});

test('a subject nobody refers to is an empty list (200, never 404); a malformed digest is DIGEST_INVALID', async () => {
  const { repository, signature } = signedImage(api);
  const none = await referrers(`/v2/${repository}/referrers/${signature.digest}`);
  assert.equal(none.status, 200);
  assert.deepEqual(none.body.manifests, []);
  const unknown = await referrers(`/v2/${repository}/referrers/sha256:${'0'.repeat(64)}`);
  assert.equal(unknown.status, 200);
  assert.deepEqual(unknown.body.manifests, []);
  const malformed = [['sha256:abc', 'DIGEST_INVALID', 400], ['nope', 'DIGEST_INVALID', 400], [`sha384:${'a'.repeat(96)}`, 'UNSUPPORTED', 405]] as const;
  for (const [digest, code, status] of malformed) {
    const res = await proxy.app.inject({ method: 'GET', url: `/v2/${repository}/referrers/${digest}` });
    assert.equal(res.statusCode, status, digest);
    assert.equal((JSON.parse(res.body) as { errors: { code: string }[] }).errors[0]!.code, code);
  }
});

test('freshness: a referrer added upstream after the first list appears once tagMaxAge has passed', async () => {
  const { repository, image, signature, sbom } = signedImage(api);
  const url = `/v2/${repository}/referrers/${image.digest}`;
  assert.equal((await referrers(url)).body.manifests.length, 2);
  const attestation = makeArtifact({ artifactType: 'application/vnd.in-toto+json', subject: image });
  api.addImage(repository, attestation.digest, attestation);
  await clock.advance(TAG_MAX_AGE_MS - 1);
  const fresh = await referrers(url);
  assert.equal(fresh.body.manifests.length, 2, 'still the recorded list 1 ms before tagMaxAge');
  assert.equal(fresh.headers['x-pullthrough-cache'], 'hit');
  await clock.advance(1);
  const revalidated = await referrers(url);
  assert.equal(revalidated.headers['x-pullthrough-cache'], 'miss', 'the list changed');
  assert.deepEqual(revalidated.body.manifests, [referrerEntry(signature), referrerEntry(sbom), referrerEntry(attestation)]);
  assert.equal(referrersRequests(api, repository), 2);
});

test('the upstream failing: the recorded list is served stale, with Warning 110; with nothing recorded, 503', async () => {
  const { repository, image, signature, sbom } = signedImage(api);
  const url = `/v2/${repository}/referrers/${image.digest}`;
  await referrers(url);
  await clock.advance(TAG_MAX_AGE_MS);
  const down = api.addFault({ path: new RegExp(`^/v2/${repository}/`) }, { status: { code: 503 } });
  try {
    const stale = await referrers(url);
    assert.equal(stale.status, 200);
    assert.equal(stale.headers['x-pullthrough-cache'], 'stale');
    assert.match(String(stale.headers['warning']), /^110 /);
    assert.deepEqual(stale.body.manifests, [referrerEntry(signature), referrerEntry(sbom)]);
    assert.ok(proxy.logs().some((l) => String(l['msg']).includes('referrers (stale)')), 'the log records it');
    const never = await proxy.app.inject({ method: 'GET', url: `/v2/${repository}/referrers/${signature.digest}` });
    assert.equal(never.statusCode, 503);
  } finally {
    down.remove();
  }
});

test('a paginated upstream list (Link rel="next") is followed and served whole', async () => {
  const paged = await startFakeUpstream({ referrers: { pageSize: 1 } });
  const pagedProxy = await startProxy({ upstreams: [{ name: 'paged.test', url: paged.url }] });
  try {
    const { repository, image, signature, sbom } = signedImage(paged);
    const res = await pagedProxy.app.inject({ method: 'GET', url: `/v2/${repository}/referrers/${image.digest}` });
    assert.equal(res.statusCode, 200);
    assert.deepEqual((JSON.parse(res.body) as { manifests: unknown[] }).manifests, [referrerEntry(signature), referrerEntry(sbom)]);
    assert.equal(referrersRequests(paged, repository), 2, 'one request per page');
  } finally {
    await pagedProxy.stop();
    await paged.stop();
  }
});

test('no invented tags: with the referrers API, tags/list holds only the upstream tags', async () => {
  const { repository, image } = signedImage(api);
  await referrers(`/v2/${repository}/referrers/${image.digest}`);
  const res = await proxy.app.inject({ method: 'GET', url: `/v2/${repository}/tags/list` });
  assert.deepEqual(JSON.parse(res.body), { name: repository, tags: ['v1'] });
});

test('an upstream without the referrers API (404): the referrers tag sha256-<hex> is resolved like any tag', async () => {
  const { repository, image, signature, sbom } = signedImage(noApi);
  const index = makeReferrersIndex([signature, sbom]);
  noApi.addManifest({ repository, reference: referrersTagOf(image.digest), mediaType: index.mediaType, body: index.manifest });
  const prefix = `/v2/tags.test/${repository}`;
  const listed = await referrers(`${prefix}/referrers/${image.digest}`);
  assert.equal(listed.status, 200);
  assert.deepEqual(listed.body.manifests, [referrerEntry(signature), referrerEntry(sbom)]);
  const filtered = await referrers(`${prefix}/referrers/${image.digest}?artifactType=${encodeURIComponent(SPDX_SBOM)}`);
  assert.equal(filtered.headers['oci-filters-applied'], 'artifactType');
  assert.deepEqual(filtered.body.manifests, [referrerEntry(sbom)]);
  assert.deepEqual(
    noApi.requests({ path: new RegExp(`^/v2/${repository}/`) }).map((r) => `${r.method} ${r.path.slice(`/v2/${repository}/`.length)}`),
    [`GET referrers/${image.digest}`, `HEAD manifests/${referrersTagOf(image.digest)}`, `GET manifests/${index.digest}`],
    'the API once (404), then the tag by HEAD and its index by digest; the filtered list came from the record',
  );
  // The fallback tag is the upstream's own: served as the upstream has it, and listed as it lists it.
  const tag = await proxy.app.inject({ method: 'GET', url: `${prefix}/manifests/${referrersTagOf(image.digest)}` });
  assert.ok(tag.rawPayload.equals(index.manifest));
  const tags = JSON.parse((await proxy.app.inject({ method: 'GET', url: `${prefix}/tags/list` })).body) as { tags: string[] };
  assert.deepEqual(tags.tags, [referrersTagOf(image.digest), 'v1']);
});

test('without the referrers API: no referrers tag is an empty list; a tag holding no index is no referrers', async () => {
  const { repository, image } = signedImage(noApi);
  const empty = await referrers(`/v2/tags.test/${repository}/referrers/${image.digest}`);
  assert.equal(empty.status, 200);
  assert.deepEqual(empty.body.manifests, []);
  const other = makeImage({ layerSizes: [100] });
  noApi.addImage(repository, referrersTagOf(other.digest), other);
  const notAnIndex = await referrers(`/v2/tags.test/${repository}/referrers/${other.digest}`);
  assert.equal(notAnIndex.status, 200);
  assert.deepEqual(notAnIndex.body.manifests, []);
});
