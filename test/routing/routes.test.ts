/**
 * Two real upstreams holding a repository of the same name with different
 * content, one pullthrough in front of both: every route (`?ns=`, path
 * prefix, alias, default) reaches the right upstream, and neither upstream's
 * manifests, blobs or tags are ever served for the other.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from '../../src/upstream/undici.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type AccessLogEntry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { manifestDigestOf, pullWithSkopeo } from '../fixtures/skopeo.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');
/** A guard against hangs, not a performance check. */
const options = { skip, timeout: 120_000 };

const A = 'registry-a.test';
/** With a port, so containerd-style `?ns=` values arrive percent-encoded (`%3A`). */
const B = 'registry-b.test:5000';
const B_ALIAS = 'alias.test';
const REPO = 'team/oci-image';
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

let regA: RunningRegistry;
let regB: RunningRegistry;
let proxy: RunningProxy;
/** Per upstream: `v1` (same repository and tag on both, different content) and a tag only it has. */
let imageA: SeededImage;
let imageB: SeededImage;

before(async () => {
  if (skip) return;
  [regA, regB] = await Promise.all([startRegistry(), startRegistry()]);
  const seed = (reg: RunningRegistry, tag: string): Promise<SeededImage[]> =>
    seedImages(reg.host, { kinds: ['oci-image'], repositoryPrefix: 'team', tag, layerSize: 64 * 1024 });
  const [[a], [b]] = await Promise.all([seed(regA, 'v1'), seed(regB, 'v1'), seed(regA, 'a-only'), seed(regB, 'b-only')]);
  imageA = a!;
  imageB = b!;
  proxy = await startProxy({
    upstreams: [
      { name: A, url: regA.url },
      { name: B, url: regB.url, aliases: [B_ALIAS] },
    ],
    // Not the first upstream: proves the setting is honoured.
    defaultUpstream: B,
  });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.stop();
  await Promise.all([regA?.stop(), regB?.stop()]);
});

type Which = 'A' | 'B';

function upstream(which: Which): { reg: RunningRegistry; image: SeededImage; other: RunningRegistry; otherImage: SeededImage } {
  return which === 'A'
    ? { reg: regA, image: imageA, other: regB, otherImage: imageB }
    : { reg: regB, image: imageB, other: regA, otherImage: imageA };
}

async function clearBoth(): Promise<void> {
  await Promise.all([regA.clearRequests(), regB.clearRequests()]);
}

function touching(entries: AccessLogEntry[], fragment: string): AccessLogEntry[] {
  return entries.filter((e) => e.path.includes(fragment));
}

interface ErrorBody {
  errors: { code: string; message: string }[];
}

/**
 * GETs `path` from the proxy and checks that the manifest served is the
 * `which` upstream's `v1` (header and bytes), and that only that upstream was
 * asked anything about the repository.
 */
async function assertManifestRoute(path: string, which: Which): Promise<void> {
  const { reg, image, other, otherImage } = upstream(which);
  await clearBoth();
  const res = await request(`${proxy.url}${path}`, { headers: { accept: ACCEPT } });
  const body = Buffer.from(await res.body.arrayBuffer());
  assert.equal(res.statusCode, 200, `${path}: ${body.toString()}`);
  assert.equal(manifestDigestOf(body), image.digest, `${path}: bytes of upstream ${which}`);
  assert.notEqual(manifestDigestOf(body), otherImage.digest);
  assert.equal(res.headers['docker-content-digest'], image.digest, path);
  assert.ok(body.equals(image.manifest), `${path}: byte-exact`);

  const head = await request(`${proxy.url}${path}`, { method: 'HEAD', headers: { accept: ACCEPT } });
  await head.body.dump();
  assert.equal(head.statusCode, 200);
  assert.equal(head.headers['docker-content-digest'], image.digest, `HEAD ${path}`);

  const [seen, seenByOther] = await Promise.all([reg.settledRequests(), other.settledRequests()]);
  // A tag is revalidated upstream on every request here (tagMaxAge 0s); a digest once cached is not.
  if (/\/manifests\/v1(\?|$)/.test(path)) {
    assert.ok(touching(seen, `/v2/${REPO}/manifests/v1`).length > 0, `${path}: upstream ${which} was asked`);
  }
  assert.deepEqual(seenByOther, [], `${path}: the other upstream was never asked`);
  assert.ok(seen.every((e) => e.userAgent.startsWith('pullthrough')), 'only pullthrough talks to upstreams');
}

test('the two upstreams really hold different content under the same name', options, () => {
  assert.equal(imageA.repository, REPO);
  assert.equal(imageB.repository, REPO);
  assert.notEqual(imageA.digest, imageB.digest);
  assert.deepEqual(imageA.blobDigests.filter((d) => imageB.blobDigests.includes(d)), [], 'no shared blobs');
});

test('?ns= picks the upstream by name, as containerd sends it (percent-encoded) or plain', options, async () => {
  await assertManifestRoute(`/v2/${REPO}/manifests/v1?ns=${A}`, 'A');
  await assertManifestRoute(`/v2/${REPO}/manifests/v1?ns=${encodeURIComponent(B)}`, 'B');
  assert.match(encodeURIComponent(B), /%3A/);
  await assertManifestRoute(`/v2/${REPO}/manifests/v1?ns=${B}`, 'B');
  // By digest, as containerd fetches after resolving.
  await assertManifestRoute(`/v2/${REPO}/manifests/${imageA.digest}?ns=${A}`, 'A');
  await assertManifestRoute(`/v2/${REPO}/manifests/${imageB.digest}?ns=${encodeURIComponent(B)}`, 'B');
});

test('a path prefix naming an upstream picks it, and the rest of the path is the repository', options, async () => {
  await assertManifestRoute(`/v2/${A}/${REPO}/manifests/v1`, 'A');
  await assertManifestRoute(`/v2/${A}/${REPO}/manifests/${imageA.digest}`, 'A');
  // A name with a port is a valid HTTP path segment, though no image reference can carry it (see the alias).
  await assertManifestRoute(`/v2/${B}/${REPO}/manifests/v1`, 'B');
});

test('neither ns nor prefix: the configured defaultUpstream (not simply the first one)', options, async () => {
  await assertManifestRoute(`/v2/${REPO}/manifests/v1`, 'B');
  await assertManifestRoute(`/v2/${REPO}/manifests/${imageB.digest}`, 'B');
});

test('aliases answer as ?ns= and as a path prefix', options, async () => {
  await assertManifestRoute(`/v2/${REPO}/manifests/v1?ns=${B_ALIAS}`, 'B');
  await assertManifestRoute(`/v2/${B_ALIAS}/${REPO}/manifests/v1`, 'B');
  await assertManifestRoute(`/v2/${B_ALIAS}/${REPO}/manifests/${imageB.digest}`, 'B');
});

test('ns wins over a path prefix: the whole path is then the repository name', options, async () => {
  await clearBoth();
  const res = await request(`${proxy.url}/v2/${B_ALIAS}/${REPO}/manifests/v1?ns=${A}`);
  const body = await res.body.json() as ErrorBody;
  assert.equal(res.statusCode, 404);
  assert.equal(body.errors[0]!.code, 'MANIFEST_UNKNOWN');
  const [seenA, seenB] = await Promise.all([regA.settledRequests(), regB.settledRequests()]);
  assert.ok(touching(seenA, `/v2/${B_ALIAS}/${REPO}/manifests/v1`).length > 0, 'A was asked for alias.test/team/oci-image');
  assert.deepEqual(seenB, []);
});

test('skopeo copy through the prefix form gets each upstream\'s image, every blob verified', options, async () => {
  for (const [prefix, which] of [[A, 'A'], [B_ALIAS, 'B']] as const) {
    const { image, otherImage, other } = upstream(which);
    await clearBoth();
    const pulled = await pullWithSkopeo(`${proxy.host}/${prefix}/${REPO}:v1`, await tempDir('routing-skopeo'));
    assert.equal(pulled.manifestDigest, image.digest, prefix);
    assert.deepEqual([...pulled.blobDigests].sort(), [...image.blobDigests].sort(), `${prefix}: blobs of upstream ${which}`);
    assert.deepEqual(pulled.blobDigests.filter((d) => otherImage.blobDigests.includes(d)), []);
    assert.deepEqual(await other.settledRequests(), [], `${prefix}: the other upstream saw nothing`);
  }
});

test('a blob (or manifest) of one upstream is never served through the other\'s routes, nor fetched', options, async () => {
  // Both upstreams' blobs are in pullthrough's shared, content-addressed store first.
  for (const [ns, image] of [[A, imageA], [B, imageB]] as const) {
    for (const digest of image.blobDigests) {
      const res = await request(`${proxy.url}/v2/${REPO}/blobs/${digest}?ns=${encodeURIComponent(ns)}`);
      const body = Buffer.from(await res.body.arrayBuffer());
      assert.equal(res.statusCode, 200, `${ns} ${digest}`);
      assert.equal(`sha256:${createHash('sha256').update(body).digest('hex')}`, digest);
    }
  }
  const routesTo: Record<Which, string[]> = {
    A: [`/v2/${REPO}/%s?ns=${A}`, `/v2/${A}/${REPO}/%s`],
    B: [`/v2/${REPO}/%s?ns=${encodeURIComponent(B)}`, `/v2/${B_ALIAS}/${REPO}/%s`, `/v2/${B}/${REPO}/%s`, `/v2/${REPO}/%s`],
  };
  for (const which of ['A', 'B'] as const) {
    const { reg: asked, other: owner, otherImage: foreign } = upstream(which);
    for (const route of routesTo[which]) {
      await clearBoth();
      for (const digest of foreign.blobDigests) {
        for (const method of ['GET', 'HEAD'] as const) {
          const res = await request(`${proxy.url}${route.replace('%s', `blobs/${digest}`)}`, { method });
          const text = await res.body.text();
          assert.equal(res.statusCode, 404, `${method} ${route} ${digest}: ${text}`);
          if (method === 'GET') assert.equal((JSON.parse(text) as ErrorBody).errors[0]!.code, 'BLOB_UNKNOWN');
        }
      }
      const manifest = await request(`${proxy.url}${route.replace('%s', `manifests/${foreign.digest}`)}`, { headers: { accept: ACCEPT } });
      assert.equal(manifest.statusCode, 404, `${route}: foreign manifest`);
      assert.equal((await manifest.body.json() as ErrorBody).errors[0]!.code, 'MANIFEST_UNKNOWN');
      const [seenByAsked, seenByOwner] = await Promise.all([asked.settledRequests(), owner.settledRequests()]);
      assert.deepEqual(seenByOwner, [], `${route}: the owner of the content was never asked`);
      // pullthrough asked the routed upstream, which does not have it, rather than serve its shared copy.
      for (const digest of foreign.blobDigests) assert.ok(touching(seenByAsked, digest).length > 0, `${route}: asked ${which} about ${digest}`);
    }
  }
});

test('?ns= naming no configured upstream: 404 NAME_UNKNOWN listing the upstreams, and no upstream is asked', options, async () => {
  await clearBoth();
  for (const path of [
    `/v2/${REPO}/manifests/v1`,
    `/v2/${REPO}/manifests/${imageA.digest}`,
    `/v2/${REPO}/blobs/${imageA.blobDigests[0]}`,
    `/v2/${REPO}/tags/list`,
  ]) {
    for (const ns of ['unknown.example', 'unknown.example%3A5000']) {
      const res = await request(`${proxy.url}${path}?ns=${ns}`);
      const body = await res.body.json() as ErrorBody;
      assert.equal(res.statusCode, 404, path);
      assert.equal(body.errors[0]!.code, 'NAME_UNKNOWN', path);
      assert.match(body.errors[0]!.message, /unknown\.example/);
      assert.ok(body.errors[0]!.message.includes(A) && body.errors[0]!.message.includes(B), body.errors[0]!.message);
    }
    const head = await request(`${proxy.url}${path}?ns=unknown.example`, { method: 'HEAD' });
    await head.body.dump();
    assert.equal(head.statusCode, 404, `HEAD ${path}`);
  }
  const [seenA, seenB] = await Promise.all([regA.settledRequests(), regB.settledRequests()]);
  assert.deepEqual(seenA, []);
  assert.deepEqual(seenB, []);
});

test('a first path segment that can only be a registry host but names none: 404 NAME_UNKNOWN, no upstream asked', options, async () => {
  await clearBoth();
  for (const prefix of ['unknown.example', 'unknown.example:5000', 'localhost']) {
    for (const endpoint of ['manifests/v1', `manifests/${imageB.digest}`, `blobs/${imageB.blobDigests[0]}`, 'tags/list']) {
      const res = await request(`${proxy.url}/v2/${prefix}/${REPO}/${endpoint}`);
      const body = await res.body.json() as ErrorBody;
      assert.equal(res.statusCode, 404, `${prefix} ${endpoint}`);
      assert.equal(body.errors[0]!.code, 'NAME_UNKNOWN', `${prefix} ${endpoint}`);
      assert.ok(body.errors[0]!.message.includes(prefix) && body.errors[0]!.message.includes(A) && body.errors[0]!.message.includes(B),
        body.errors[0]!.message);
    }
  }
  const [seenA, seenB] = await Promise.all([regA.settledRequests(), regB.settledRequests()]);
  assert.deepEqual(seenA, []);
  assert.deepEqual(seenB, [], 'the default upstream is not asked for unknown.example/team/oci-image');
  // A first segment without a dot is a repository component and goes to the default upstream.
  await assertManifestRoute(`/v2/${REPO}/manifests/v1`, 'B');
});

test('tags/list answers per upstream, under the name the client used', options, async () => {
  const tags = async (path: string): Promise<unknown> => {
    const res = await request(`${proxy.url}${path}`);
    assert.equal(res.statusCode, 200, path);
    return res.body.json();
  };
  assert.deepEqual(await tags(`/v2/${REPO}/tags/list?ns=${A}`), { name: REPO, tags: ['a-only', 'v1'] });
  assert.deepEqual(await tags(`/v2/${A}/${REPO}/tags/list`), { name: `${A}/${REPO}`, tags: ['a-only', 'v1'] });
  assert.deepEqual(await tags(`/v2/${REPO}/tags/list?ns=${encodeURIComponent(B)}`), { name: REPO, tags: ['b-only', 'v1'] });
  assert.deepEqual(await tags(`/v2/${B_ALIAS}/${REPO}/tags/list`), { name: `${B_ALIAS}/${REPO}`, tags: ['b-only', 'v1'] });
  assert.deepEqual(await tags(`/v2/${REPO}/tags/list`), { name: REPO, tags: ['b-only', 'v1'] }, 'default upstream');

  // Pagination keeps the route: the next-page Link carries the ns (or the prefix) along.
  for (const [first, which] of [[`/v2/${REPO}/tags/list?ns=${encodeURIComponent(B)}&n=1`, 'B'], [`/v2/${A}/${REPO}/tags/list?n=1`, 'A']] as const) {
    const res = await request(`${proxy.url}${first}`);
    const page1 = await res.body.json() as { tags: string[] };
    const link = /^<([^>]+)>; rel="next"$/.exec(String(res.headers['link']))?.[1];
    assert.ok(link, `${first}: Link header`);
    const page2 = await tags(link);
    const own = which === 'A' ? ['a-only', 'v1'] : ['b-only', 'v1'];
    assert.deepEqual([...page1.tags, ...(page2 as { tags: string[] }).tags], own, `${first} then ${link}`);
  }
});

test('_catalog lists each cached repository as <upstream>/<repository>', options, async () => {
  // Cached through every route above; make sure of both here.
  for (const path of [`/v2/${REPO}/manifests/v1?ns=${A}`, `/v2/${B_ALIAS}/${REPO}/manifests/v1`]) {
    const res = await request(`${proxy.url}${path}`, { headers: { accept: ACCEPT } });
    await res.body.dump();
    assert.equal(res.statusCode, 200);
  }
  const res = await request(`${proxy.url}/v2/_catalog`);
  const { repositories } = await res.body.json() as { repositories: string[] };
  // Exactly these: aliases are not storage namespaces, and the ns-wins test's request
  // for alias.test/team/oci-image at A (which A does not have) cached nothing.
  assert.deepEqual(repositories, [`${A}/${REPO}`, `${B}/${REPO}`]);
});
