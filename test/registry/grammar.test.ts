import test from 'node:test';
import assert from 'node:assert/strict';
import { parseDigest, digestOf } from '../../src/registry/digest.js';
import { RegistryError } from '../../src/registry/errors.js';
import { acceptedManifestTypes, DEFAULT_MANIFEST_ACCEPT, MEDIA_TYPES } from '../../src/registry/mediaTypes.js';
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
