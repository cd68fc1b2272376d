/**
 * Review 2026-12-01, finding 3, last point: tag single-flight was keyed by
 * the client's Accept, so an attacker varying it defeated coalescing (one
 * upstream HEAD per Accept). Now every client's revalidation of a tag is
 * one flight, asked upstream with the full Accept.
 *
 * In process: the upstream's HEAD is held until every request is waiting on
 * it, so the count of HEADs is exact, not a race.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { MemoryTagRecords } from '../../src/cache/memory.js';
import { ProxyTagService } from '../../src/proxy/tags.js';
import type { ProxyManifestStore } from '../../src/proxy/manifests.js';
import type { Digest } from '../../src/registry/digest.js';
import { DEFAULT_MANIFEST_ACCEPT, MEDIA_TYPES } from '../../src/registry/mediaTypes.js';
import type { RepositoryName, Tag } from '../../src/registry/names.js';
import type { LocalTagStore } from '../../src/storage/tags.js';
import type { UpstreamClient } from '../../src/upstream/client.js';
import { FakeClock } from '../fixtures/clock.js';

const DIGEST = `sha256:${'a'.repeat(64)}` as Digest;

test('concurrent resolutions of one tag with different Accept headers make one upstream HEAD, asked with the full Accept', async () => {
  const heads: string[][] = [];
  let release!: () => void;
  const held = new Promise<void>((resolve) => { release = resolve; });
  const client = {
    settings: { tagMaxAgeMs: 60_000, maxStaleMs: Infinity, staleWhileRevalidateMs: 0, revalidateTimeoutMs: 3000 },
    headManifest: async (_repository: string, _tag: string, accept: readonly string[]) => {
      heads.push([...accept]);
      await held;
      return { digest: DIGEST, mediaType: MEDIA_TYPES.ociIndex, size: 100 };
    },
  };
  const tags = new ProxyTagService({
    records: new MemoryTagRecords(100),
    local: {} as LocalTagStore,
    manifests: {} as ProxyManifestStore,
    upstreams: () => client as unknown as UpstreamClient,
    logger: pino({ level: 'silent' }),
    clock: new FakeClock(),
  });
  const repository = { upstream: 'docker.io', name: 'library/alpine' as RepositoryName };
  // Each client names the index among its types, in a different list: the attack's way of defeating coalescing.
  const accepts = Array.from({ length: 8 }, (_, i) => [MEDIA_TYPES.ociIndex, `application/x-variant-${i}+json`]);
  const answers = accepts.map((accept) => tags.resolve(repository, '3.19' as Tag, accept));
  while (heads.length === 0) await new Promise((r) => setImmediate(r));
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  release();
  const resolved = await Promise.all(answers);
  assert.equal(heads.length, 1, 'one HEAD for all eight clients');
  assert.deepEqual(heads[0], [...DEFAULT_MANIFEST_ACCEPT], 'asked with the full list, not one client\'s');
  assert.ok(resolved.every((r) => r.descriptor.digest === DIGEST));
});
