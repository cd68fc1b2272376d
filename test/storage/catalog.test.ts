/**
 * `_catalog` from a cached walk: anonymous clients may ask as often as they
 * like, and each walk reads the whole `repositories/` tree (review
 * 2026-12-01, finding 10).
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { CachedCatalog } from '../../src/storage/catalog.js';
import { FakeClock } from '../fixtures/clock.js';
import { MemoryDriver } from '../fixtures/memoryDriver.js';

test('one walk answers for a few seconds; after that, the next request walks again and sees what was added', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  await driver.putContent('repositories/registry.test/team/a/_layers/sha256/aa', 'x');
  const catalog = new CachedCatalog({ driver, clock, maxAgeMs: 5000 });
  assert.deepEqual(await catalog.list(), ['registry.test/team/a']);
  const walked = (driver.counts.get('list') ?? 0);
  await driver.putContent('repositories/registry.test/team/b/_layers/sha256/bb', 'x');
  assert.deepEqual(await Promise.all([catalog.list(), catalog.list()]), [['registry.test/team/a'], ['registry.test/team/a']]);
  assert.equal((driver.counts.get('list') ?? 0), walked, 'no walk for the requests within 5 s');
  await clock.advance(5000);
  assert.deepEqual(await catalog.list(), ['registry.test/team/a', 'registry.test/team/b']);
});
