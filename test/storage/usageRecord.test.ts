/**
 * The usage record (S3 without Redis): uses are batched, one read-modify-write
 * per flush and none per request; two processes on one storage keep each
 * other's uses; removed content's entries go; a size added to a storage that
 * never had one stays unknown until a walk sets it.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../fixtures/clock.js';
import { MemoryDriver } from '../fixtures/memoryDriver.js';
import { USAGE_RECORD_PATH } from '../../src/storage/layout.js';
import { UsageRecorder } from '../../src/storage/usage.js';
import { BucketUsageRecord } from '../../src/storage/usageRecord.js';

test('uses go to the record once per flush, not per request', async () => {
  const driver = new MemoryDriver();
  const clock = new FakeClock();
  const record = new BucketUsageRecord(driver);
  const usage = new UsageRecorder({ driver, intervalMs: 30_000, clock, times: record });
  usage.start();
  for (let i = 0; i < 100; i++) usage.used(`blobs/sha256/aa/${String(i).padStart(64, '0')}/data`);
  assert.equal(driver.counts.get('putContent') ?? 0, 0, 'a use writes nothing');
  await clock.advance(30_000);
  await usage.stop();
  assert.equal(driver.counts.get('putContent'), 1, 'one write for the flush; nothing more at stop, nothing was used since');
  assert.equal(driver.counts.get('getContent'), 1, 'one read for it');
  assert.equal(driver.counts.get('touch') ?? 0, 0, 'the driver is never asked to touch');
  const times = (await new BucketUsageRecord(driver).lastUsed())!;
  assert.equal(times.size, 100);
  assert.equal(times.get(`blobs/sha256/aa/${'0'.repeat(64)}/data`), clock.now());
});

test('two processes on one storage keep each other\'s uses; forgotten paths go', async () => {
  const driver = new MemoryDriver();
  const server = new BucketUsageRecord(driver);
  const gc = new BucketUsageRecord(driver);
  await server.record(new Set(['a', 'b']), 1000);
  await gc.record(new Set(['c']), 2000);
  await server.forget(['b']);
  await server.record(new Set(['a']), 3000);
  assert.deepEqual(Object.fromEntries((await new BucketUsageRecord(driver).lastUsed())!), { a: 3000, c: 2000 });
  assert.deepEqual(JSON.parse((await driver.getContent(USAGE_RECORD_PATH))!.toString()).used, { a: 3000, c: 2000 });
});

test('the size ledger: unknown until a walk sets it, then commits add to it', async () => {
  const driver = new MemoryDriver();
  const ledger = new BucketUsageRecord(driver);
  await ledger.add(500);
  await ledger.record(new Set(), 0);
  assert.equal(await new BucketUsageRecord(driver).read(), undefined, 'an addition to no total is no total');
  await ledger.set(10_000);
  await ledger.add(500);
  assert.equal(await ledger.read(), 10_500, 'this process sees its addition before the flush');
  assert.equal(await new BucketUsageRecord(driver).read(), 10_000, 'others after it');
  await ledger.record(new Set(), 0);
  assert.equal(await new BucketUsageRecord(driver).read(), 10_500);
});
