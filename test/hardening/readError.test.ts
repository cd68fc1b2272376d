/**
 * A read error on a cached blob (a real one: its data file turned into a
 * directory reads EISDIR): the client is answered with an error or cut off,
 * never 200 with wrong bytes; the blob is hashed again, found unreadable and
 * removed, and the next request fills it afresh from the upstream.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { getOutcome } from '../fixtures/outcome.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { until } from '../fixtures/tools.js';

let fake: FakeUpstream;
let proxy: RunningProxy;

before(async () => {
  fake = await startFakeUpstream();
  proxy = await startProxy({ upstreams: [{ name: 'fake.test', url: fake.url }] });
});

after(async () => {
  await proxy?.stop();
  await fake?.stop();
});

/** A blob fetched through the mirror and committed: its URL there, and its data file. */
async function cachedBlob(repository: string): Promise<{ digest: string; url: string; data: string }> {
  const digest = fake.addBlob(randomBytes(200 * 1024));
  const url = `${proxy.url}/v2/fake.test/${repository}/blobs/${digest}`;
  assert.deepEqual(await getOutcome(url), { status: 200, digest, broken: false });
  while (proxy.mirror.blobs.activeFills > 0) await new Promise((r) => setTimeout(r, 10));
  const hex = digest.slice(7);
  return { digest, url, data: join(proxy.root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data') };
}

/** The next request goes upstream again, and gets the right bytes. */
async function filledAfresh(repository: string, digest: string, url: string): Promise<void> {
  fake.clearRequests();
  assert.deepEqual(await getOutcome(url), { status: 200, digest, broken: false });
  assert.equal(fake.requests({ method: 'GET', path: `/v2/${repository}/blobs/${digest}` }).length, 1, 'filled afresh from the upstream');
}

test('a cached blob that cannot be read back is answered with an error, re-verified, removed, and filled again by the next request', async () => {
  const { digest, url, data } = await cachedBlob('reads/app');
  await rm(data);
  await mkdir(data);
  const failed = await getOutcome(url);
  assert.ok(failed.broken || failed.status >= 500, `never a complete answer: ${JSON.stringify(failed)}`);
  assert.notEqual(failed.digest, digest);
  assert.ok(failed.status === 200 || failed.status === 500 || failed.status === 503, `status ${failed.status}`);
  await until('re-verified and removed', () => proxy.logs().some((l) => l['digest'] === digest && String(l['msg']).includes('removed')));
  await assert.rejects(stat(data), 'the unreadable blob is gone');

  await filledAfresh('reads/app', digest, url);
});

test('a cached blob cut short on disk is found by its size, re-verified, removed, and filled again', async () => {
  const { digest, url, data } = await cachedBlob('reads/short');
  await truncate(data, 1000);
  const short = await getOutcome(url);
  assert.notEqual(short.digest, digest, 'the bytes cut short never hash to the digest');
  await until('re-verified and removed', async () => !(await stat(data).then(() => true, () => false)));
  await filledAfresh('reads/short', digest, url);
});
