/**
 * The referrers vocabulary: the referrers tag schema, the descriptor a
 * referrers list gives a manifest, reading a list an upstream sent, and the
 * stored record.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { parseDigest, type Digest } from '../../src/registry/digest.js';
import { MEDIA_TYPES } from '../../src/registry/mediaTypes.js';
import {
  decodeReferrersRecord, encodeReferrersRecord, manifestSubject, readReferrersIndex, referrerDescriptor, referrersTag,
} from '../../src/registry/referrers.js';

const SHA256 = `sha256:${'ab'.repeat(32)}` as Digest;
const SHA512 = parseDigest(`sha512:${'cd'.repeat(64)}`).digest;

function manifest(json: Record<string, unknown>, mediaType: string = MEDIA_TYPES.ociManifest): { digest: Digest; mediaType: string; body: Buffer } {
  return { digest: SHA256, mediaType, body: Buffer.from(JSON.stringify(json)) };
}

test('the referrers tag: algorithm, a dash, and the encoded part truncated to 64 characters', () => {
  assert.equal(referrersTag(SHA256), `sha256-${'ab'.repeat(32)}`);
  assert.equal(referrersTag(SHA512), `sha512-${'cd'.repeat(32)}`, 'a sha512 digest is cut to a valid tag');
});

test('a referrer\'s descriptor: artifactType, else an image\'s config media type, else none; its annotations', () => {
  const config = { mediaType: 'application/vnd.oci.empty.v1+json', digest: SHA256, size: 2 };
  const declared = manifest({ artifactType: 'application/x.sig', config, annotations: { a: 'b', n: 1 } });
  assert.deepEqual(referrerDescriptor(declared),
    { mediaType: MEDIA_TYPES.ociManifest, digest: SHA256, size: declared.body.length, artifactType: 'application/x.sig', annotations: { a: 'b' } });
  assert.equal(referrerDescriptor(manifest({ config })).artifactType, config.mediaType);
  const index = referrerDescriptor(manifest({ manifests: [] }, MEDIA_TYPES.ociIndex));
  assert.equal('artifactType' in index, false, 'an index that states no artifactType has none');
  assert.equal('annotations' in index, false);
});

test('the subject of a manifest, when it names a digest we can store', () => {
  assert.equal(manifestSubject(manifest({ subject: { digest: SHA256, size: 1, mediaType: MEDIA_TYPES.ociManifest } }).body), SHA256);
  assert.equal(manifestSubject(manifest({ subject: { digest: 'md5:abc' } }).body), undefined);
  assert.equal(manifestSubject(Buffer.from('not json')), undefined);
});

test('reading a referrers list: not an index is undefined; entries nobody could fetch are left out', () => {
  assert.equal(readReferrersIndex(Buffer.from('{"errors":[]}')), undefined);
  const listed = readReferrersIndex(Buffer.from(JSON.stringify({
    manifests: [
      { mediaType: MEDIA_TYPES.ociManifest, digest: SHA256, size: 10, artifactType: 'application/x.sig', platform: { os: 'linux' } },
      { mediaType: MEDIA_TYPES.ociManifest, digest: '../../etc', size: 10 },
      { mediaType: MEDIA_TYPES.ociManifest, digest: SHA256, size: -1 },
      { digest: SHA256, size: 10 },
      'nonsense',
    ],
  })));
  assert.deepEqual(listed, [{ mediaType: MEDIA_TYPES.ociManifest, digest: SHA256, size: 10, artifactType: 'application/x.sig' }]);
});

test('the stored record reads back; anything unreadable is no record', () => {
  const fetchedAt = Date.parse('2026-12-01T12:00:00Z');
  const record = { referrers: [{ mediaType: MEDIA_TYPES.ociManifest, digest: SHA256, size: 10 }], fetchedAt, source: 'api' as const };
  assert.deepEqual(decodeReferrersRecord(encodeReferrersRecord(record)), record);
  const at = new Date(fetchedAt).toISOString();
  for (const bad of ['', '{}', '{"source":"api","fetchedAt":"x","manifests":[]}', `{"source":"other","fetchedAt":"${at}","manifests":[]}`,
    `{"source":"api","fetchedAt":"${at}","manifests":[{"digest":"x"}]}`]) {
    assert.equal(decodeReferrersRecord(bad), undefined, bad);
  }
});
