import test from 'node:test';
import assert from 'node:assert/strict';
import { parseDigest, digestOf, type Digest } from '../../src/registry/digest.js';
import { decodeDescriptorRecord } from '../../src/registry/descriptorRecord.js';
import { RegistryError } from '../../src/registry/errors.js';
import { manifestMediaType, tagManifestMediaType } from '../../src/registry/imageManifest.js';
import { acceptedManifestTypes, DEFAULT_MANIFEST_ACCEPT, MEDIA_TYPES, isMediaType } from '../../src/registry/mediaTypes.js';
import { decodeTagRecord, isFreshTagRecord } from '../../src/registry/tagRecord.js';
import { isValidRepositoryName, parseTag, MAX_NAME_LENGTH } from '../../src/registry/names.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err instanceof RegistryError ? err.code : 'not a RegistryError';
  }
}

test('repository names follow the distribution grammar', () => {
  for (const ok of ['alpine', 'library/alpine', 'a/b/c', 'my-app', 'my__app', 'my.app', 'a--b', 'x0/y_1/z.2']) {
    assert.equal(isValidRepositoryName(ok), true, ok);
  }
  for (const bad of ['', 'Alpine', 'a//b', '/a', 'a/', '..', 'a/../b', 'a/./b', '-a', 'a-', 'a___b', 'a\\b', 'a%2fb', 'a\0b', 'a b', 'a:b', '_a']) {
    assert.equal(isValidRepositoryName(bad), false, JSON.stringify(bad));
  }
  assert.equal(isValidRepositoryName('a'.repeat(MAX_NAME_LENGTH)), true);
  assert.equal(isValidRepositoryName('a'.repeat(MAX_NAME_LENGTH + 1)), false);
});

test('tags follow the grammar and at most 128 characters', () => {
  assert.equal(parseTag('latest'), 'latest');
  assert.equal(parseTag('v1.2.3-rc_1'), 'v1.2.3-rc_1');
  assert.equal(parseTag('_x'), '_x');
  assert.equal(parseTag('a'.repeat(128)), 'a'.repeat(128));
  for (const bad of ['', '.x', '-x', 'a'.repeat(129), 'a/b', 'a:b', 'a..%2f']) {
    assert.equal(code(() => parseTag(bad)), 'TAG_INVALID', bad);
  }
});

test('digests: sha256 and sha512 in lowercase hex; other algorithms unsupported; the rest invalid', () => {
  const hex256 = 'a'.repeat(64);
  assert.equal(parseDigest(`sha256:${hex256}`).hex, hex256);
  assert.equal(parseDigest(`sha512:${'b'.repeat(128)}`).algorithm, 'sha512');
  assert.equal(code(() => parseDigest(`sha256:${'A'.repeat(64)}`)), 'DIGEST_INVALID');
  assert.equal(code(() => parseDigest(`sha256:${'a'.repeat(63)}`)), 'DIGEST_INVALID');
  assert.equal(code(() => parseDigest(`sha512:${hex256}`)), 'DIGEST_INVALID');
  assert.equal(code(() => parseDigest('sha256:../../etc/passwd')), 'DIGEST_INVALID');
  assert.equal(code(() => parseDigest('latest')), 'DIGEST_INVALID');
  assert.equal(code(() => parseDigest(`md5:${'a'.repeat(32)}`)), 'UNSUPPORTED');
  assert.equal(digestOf(Buffer.from('')), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});

test('Accept: several headers and comma lists, parameters dropped, order kept, */* means our full list', () => {
  assert.deepEqual(acceptedManifestTypes([
    `${MEDIA_TYPES.ociIndex};q=0.9, ${MEDIA_TYPES.dockerManifest}`,
    MEDIA_TYPES.ociIndex,
    'application/vnd.example.artifact+json',
  ]), [MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifest, 'application/vnd.example.artifact+json']);
  assert.deepEqual(acceptedManifestTypes(undefined), DEFAULT_MANIFEST_ACCEPT);
  assert.deepEqual(acceptedManifestTypes('*/*'), DEFAULT_MANIFEST_ACCEPT);
  assert.deepEqual(acceptedManifestTypes(MEDIA_TYPES.dockerManifest), [MEDIA_TYPES.dockerManifest]);
});

test('media types: RFC 6838 grammar; stored records with anything else are unreadable (refetched), never a 500', () => {
  for (const type of ['application/vnd.oci.image.manifest.v1+json', 'application/json', 'text/plain', 'application/vnd.docker.distribution.manifest.list.v2+json']) {
    assert.ok(isMediaType(type), type);
  }
  for (const type of ['application/json\r\nx-injected: 1', 'application', 'a/b/c', 'app lication/json', '/json', `a/${'b'.repeat(200)}`, '']) {
    assert.equal(isMediaType(type), false, JSON.stringify(type));
  }
  const digest = `sha256:${'a'.repeat(64)}` as Digest;
  assert.equal(decodeDescriptorRecord(digest, JSON.stringify({ size: 1, mediaType: 'x/y\r\nz: 1' })), undefined);
  assert.equal(decodeTagRecord(JSON.stringify({ digest, mediaType: 'bad type', size: 1, fetchedAt: '2026-01-01T00:00:00Z' })), undefined);
  assert.throws(() => manifestMediaType('application/json', Buffer.from('{"mediaType":"a\\r\\nb: c"}')), /not a media type/);
});

test('a tag GET answers a manifest, or it is refused: JSON, schemaVersion 2, a known type that agrees with Content-Type', () => {
  const oci = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: {}, layers: [] }));
  assert.equal(tagManifestMediaType(MEDIA_TYPES.ociManifest, oci), MEDIA_TYPES.ociManifest);
  assert.equal(tagManifestMediaType('application/json', oci), MEDIA_TYPES.ociManifest, 'a generic Content-Type defers to the document');
  const undeclared = Buffer.from(JSON.stringify({ schemaVersion: 2, config: {}, layers: [] }));
  assert.equal(tagManifestMediaType(MEDIA_TYPES.ociManifest, undeclared), MEDIA_TYPES.ociManifest, 'OCI may leave mediaType out');
  assert.equal(tagManifestMediaType(MEDIA_TYPES.ociIndex, oci), undefined, 'Content-Type and document disagree');
  assert.equal(tagManifestMediaType('application/json', undeclared), undefined, 'no type anywhere');
  assert.equal(tagManifestMediaType('application/json', Buffer.from('{"secret":"AKIA"}')), undefined);
  assert.equal(tagManifestMediaType(MEDIA_TYPES.ociManifest, Buffer.from('<html>')), undefined);
  assert.equal(tagManifestMediaType('application/vnd.example+json', Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.example+json"}')), undefined);
});

test('a tag record learned in the future is never fresh', () => {
  const record = { descriptor: { digest: `sha256:${'a'.repeat(64)}` as Digest, mediaType: MEDIA_TYPES.ociManifest, size: 1 }, fetchedAt: 10_000 };
  assert.equal(isFreshTagRecord(record, 10_500, 1000), true);
  assert.equal(isFreshTagRecord(record, 11_000, 1000), false);
  assert.equal(isFreshTagRecord(record, 9_000, 1000), false, 'a time ahead of the clock');
});
