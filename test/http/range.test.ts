import test from 'node:test';
import assert from 'node:assert/strict';
import { parseRange } from '../../src/http/range.js';
import { parseRegistryPath } from '../../src/http/paths.js';

test('Range: one range, open-ended and suffix forms, clamped to the size', () => {
  assert.deepEqual(parseRange(undefined, 100), { kind: 'whole' });
  assert.deepEqual(parseRange('bytes=0-9', 100), { kind: 'range', range: { start: 0, end: 9 } });
  assert.deepEqual(parseRange('bytes=90-', 100), { kind: 'range', range: { start: 90, end: 99 } });
  assert.deepEqual(parseRange('bytes=90-1000', 100), { kind: 'range', range: { start: 90, end: 99 } });
  assert.deepEqual(parseRange('bytes=-10', 100), { kind: 'range', range: { start: 90, end: 99 } });
  assert.deepEqual(parseRange('bytes=-1000', 100), { kind: 'range', range: { start: 0, end: 99 } });
});

test('Range: past the end is unsatisfiable; malformed or multiple ranges are ignored', () => {
  assert.deepEqual(parseRange('bytes=100-', 100), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=200-300', 100), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=-0', 100), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=0-0', 0), { kind: 'unsatisfiable' });
  assert.deepEqual(parseRange('bytes=0-1,5-6', 100), { kind: 'whole' });
  assert.deepEqual(parseRange('items=0-1', 100), { kind: 'whole' });
  assert.deepEqual(parseRange('bytes=9-1', 100), { kind: 'whole' });
  assert.deepEqual(parseRange('bytes=-', 100), { kind: 'whole' });
});

test('registry paths split at the endpoint keyword, names may contain one', () => {
  assert.deepEqual(parseRegistryPath('library/alpine/manifests/3.20'),
    { endpoint: 'manifest', name: 'library/alpine', reference: '3.20' });
  assert.deepEqual(parseRegistryPath('a/manifests/manifests/latest'),
    { endpoint: 'manifest', name: 'a/manifests', reference: 'latest' });
  assert.deepEqual(parseRegistryPath('a/blobs/sha256:abc'), { endpoint: 'blob', name: 'a', digest: 'sha256:abc' });
  assert.deepEqual(parseRegistryPath('a/b/tags/list'), { endpoint: 'tags', name: 'a/b' });
  assert.deepEqual(parseRegistryPath('a/blobs/uploads/'), { endpoint: 'upload', name: 'a' });
  assert.deepEqual(parseRegistryPath('a/blobs/uploads/1234'), { endpoint: 'upload', name: 'a' });
  assert.deepEqual(parseRegistryPath('a/b/referrers/sha256:abc'), { endpoint: 'referrers', name: 'a/b', digest: 'sha256:abc' });
  assert.deepEqual(parseRegistryPath('a/referrers/manifests/sha256:abc'), { endpoint: 'manifest', name: 'a/referrers', reference: 'sha256:abc' });
  assert.deepEqual(parseRegistryPath('a/other/x'), { endpoint: 'unknown' });
  assert.deepEqual(parseRegistryPath('manifests/latest'), { endpoint: 'unknown' });
});
