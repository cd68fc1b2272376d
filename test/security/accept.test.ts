/**
 * Review 2026-12-01, finding 3, against the real Distribution: a tag's
 * record and its 404 must not depend on one client's Accept.
 *
 * - Distribution answers 404 for an OCI index to an Accept without the
 *   index type. One client asking that way must not make the tag unknown
 *   for everyone.
 * - Distribution answers a v2-only Accept for a docker manifest list with
 *   the amd64 image manifest. One client asking that way must not make the
 *   list's tag point at one platform's image for everyone.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { DEFAULT_MANIFEST_ACCEPT, MAX_ACCEPT_ENTRIES, MEDIA_TYPES, acceptedManifestTypes } from '../../src/registry/mediaTypes.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { toolSkip } from '../fixtures/tools.js';
import { ACCEPT_ALL } from '../fixtures/upstreamAuth.js';

const skip = toolSkip('docker-registry', 'skopeo');
const UPSTREAM = 'registry.test';
let upstream: RunningRegistry;
let proxy: RunningProxy;
let index: SeededImage;
let list: SeededImage;

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  [index, list] = await seedImages(upstream.host, { kinds: ['oci-index', 'docker-list'], layerSize: 1024, repositoryPrefix: 'accept' });
  // A tag record lives a minute: a poisoned one would be served to everyone for that long.
  proxy = await startProxy({ upstreams: [{ name: UPSTREAM, url: upstream.url }], upstreamDefaults: { tagMaxAge: '1m', notFoundTtl: '1m' } });
});

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
});

async function get(image: SeededImage, accept: string): Promise<{ status: number; digest: string | undefined; code: string | undefined }> {
  const res = await request(`${proxy.url}/v2/${image.repository}/manifests/${image.tag}`, { headers: { accept } });
  const body = await res.body.text();
  const code = res.statusCode >= 400 ? (JSON.parse(body) as { errors: { code: string }[] }).errors[0]!.code : undefined;
  const digest = res.headers['docker-content-digest'];
  return { status: res.statusCode, digest: typeof digest === 'string' ? digest : undefined, code };
}

async function recordedDigest(image: SeededImage): Promise<string> {
  const record = await readFile(join(proxy.root, 'repositories', UPSTREAM, image.repository, '_manifests', 'tags', image.tag), 'utf8');
  return (JSON.parse(record) as { digest: string }).digest;
}

test('a narrow Accept on an OCI index gets MANIFEST_UNKNOWN for itself only; the next client gets the index', { skip }, async () => {
  const narrow = await get(index, MEDIA_TYPES.ociManifest);
  assert.equal(narrow.status, 404);
  assert.equal(narrow.code, 'MANIFEST_UNKNOWN');
  const full = await get(index, ACCEPT_ALL);
  assert.equal(full.status, 200);
  assert.equal(full.digest, index.digest);
  assert.equal(await recordedDigest(index), index.digest);
});

test('a v2-only Accept on a manifest list: the list stays the tag\'s record', { skip }, async () => {
  const narrow = await get(list, MEDIA_TYPES.dockerManifest);
  assert.equal(narrow.status, 404, 'not the amd64 image in place of the list');
  assert.equal(narrow.code, 'MANIFEST_UNKNOWN');
  assert.equal(await recordedDigest(list), list.digest);
  const full = await get(list, ACCEPT_ALL);
  assert.equal(full.status, 200);
  assert.equal(full.digest, list.digest);
});

test('Accept is read with a cap on entries, duplicates dropped by a set', () => {
  const huge = Array.from({ length: 100_000 }, (_, i) => `application/x-${i % 50}+json`).join(', ');
  const types = acceptedManifestTypes([huge, ACCEPT_ALL]);
  assert.ok(types.length <= MAX_ACCEPT_ENTRIES, `${types.length} types kept`);
  assert.equal(new Set(types).size, types.length);
  assert.deepEqual(acceptedManifestTypes(`${MEDIA_TYPES.ociManifest}, */*`).slice().sort(), [...DEFAULT_MANIFEST_ACCEPT].sort(), '*/* accepts all of ours');
  assert.deepEqual(acceptedManifestTypes(undefined), DEFAULT_MANIFEST_ACCEPT);
  assert.deepEqual(acceptedManifestTypes('bad type\r\nx: 1, application/vnd.oci.image.index.v1+json'), [MEDIA_TYPES.ociIndex], 'not a media type: ignored');
});
