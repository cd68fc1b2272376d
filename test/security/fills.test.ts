/**
 * Review 2026-12-01, findings 5 and 8: what a client can make a fill cost,
 * and what a fill can hand out before its bytes are verified.
 *
 * - 64 blob GETs that leave at once leave 64 fills against a slow upstream;
 *   blobs have a connection pool of their own and a bounded number of
 *   fills, so a manifest HEAD to that upstream is still answered.
 * - A body without Content-Length is cut at maxBlobSize, and nothing stays
 *   in `_uploads`.
 * - A Range inside a fill of wrong bytes is never a complete 206.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from '../../src/upstream/undici.js';
import type { Digest } from '../../src/registry/digest.js';
import { ROUTES, startAttack, type Attack, type MaliciousUpstream } from '../fixtures/malicious.js';
import type { RunningProxy } from '../fixtures/proxy.js';

let attack: Attack;
let evil: MaliciousUpstream;
let proxy: RunningProxy;

before(async () => {
  attack = await startAttack((url) => [{ name: 'evil.test', url, maxBlobSize: '1MiB' }]);
  ({ evil, proxy } = attack);
});

after(async () => {
  await attack?.stop();
});

function digestOf(text: string): string {
  return `sha256:${createHash('sha256').update(text).digest('hex')}`;
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('64 slow fills whose clients left: a manifest HEAD to the same upstream still answers', async () => {
  const clients = Array.from({ length: 64 }, async (_, i) => {
    const controller = new AbortController();
    const res = await request(`${proxy.url}/v2/evil.test/${ROUTES.slowBlob}/blobs/${digestOf(`slow-${i}`)}`, { signal: controller.signal });
    // Headers in: the fill runs; the client leaves, and the fill goes on detached.
    controller.abort();
    await res.body.dump().catch(() => undefined);
    return res.statusCode;
  });
  assert.ok((await Promise.all(clients)).every((s) => s === 200), 'every request got its answer: detached fills made room');
  // Headers within the upstream's own timeouts (3 s in tests); 15 s is only the guard against a hang.
  const head = await request(`${proxy.url}/v2/evil.test/${ROUTES.ok}/manifests/b`, { method: 'HEAD', headersTimeout: 15_000 });
  await head.body.dump();
  assert.equal(head.statusCode, 200);
  assert.equal(head.headers['docker-content-digest'], evil.okManifest.digest);
  assert.ok(evil.slowMostOpen() <= 32, `at most one blob pool's worth of fills at once (${evil.slowMostOpen()})`);
});

test('an endless blob without Content-Length is cut at maxBlobSize; nothing is stored, nothing stays in _uploads', async () => {
  const res = await request(`${proxy.url}/v2/evil.test/${ROUTES.endlessBlob}/blobs/${digestOf('endless')}`);
  let received = 0;
  let failed = false;
  try {
    for await (const chunk of res.body) received += (chunk as Buffer).length;
  } catch {
    failed = true;
  }
  assert.ok(failed || res.statusCode !== 200, 'the response does not complete');
  assert.ok(received <= 1024 * 1024, `received ${received} bytes`);
  const hex = digestOf('endless').slice('sha256:'.length);
  await until('the fill to end', () => !proxy.mirror.blobs.isFilling(digestOf('endless') as Digest));
  assert.ok(evil.endlessBytes() < 16 * 1024 * 1024, `the upstream wrote ${evil.endlessBytes()} bytes before the mirror let go`);
  const blobs = await readdir(join(proxy.root, 'blobs'), { recursive: true }).catch(() => []);
  assert.ok(!blobs.some((p) => p.includes(hex)), 'not committed');
  const uploads = await readdir(join(proxy.root, '_uploads'));
  assert.deepEqual(uploads.filter((name) => name.includes(hex)), [], 'its upload is gone');
  const logs = proxy.logs().filter((l) => typeof l['err'] === 'string' && (l['err'] as string).includes('maxBlobSize'));
  assert.ok(logs.length > 0, 'the log says why');
});

test('a Range inside a fill of wrong bytes is never a complete 206', async () => {
  const digest = digestOf('not A at all');
  const path = `/v2/evil.test/${ROUTES.wrongBlob}/blobs/${digest}`;
  const whole = request(`${proxy.url}${path}`).then(async (res) => {
    let got = 0;
    try {
      for await (const chunk of res.body) got += (chunk as Buffer).length;
      return { got, complete: true };
    } catch {
      return { got, complete: false };
    }
  });
  // The fill is under way (the upstream sends 10,000 bytes every 40 ms): the range is within what it has already written.
  await until('the fill to start', () => evil.requests.some((r) => r.url === `/v2/${ROUTES.wrongBlob}/blobs/${digest}`));
  await sleep(100);
  const ranged = await request(`${proxy.url}${path}`, { headers: { range: 'bytes=0-9999' } });
  let rangeBytes = 0;
  let rangeComplete = true;
  try {
    for await (const chunk of ranged.body) rangeBytes += (chunk as Buffer).length;
  } catch {
    rangeComplete = false;
  }
  const first = await whole;
  assert.equal(first.complete, false, 'the whole GET is cut');
  assert.ok(first.got < 100_000);
  assert.ok(!(ranged.statusCode === 206 && rangeComplete && rangeBytes === 10_000), `a complete 206 of ${rangeBytes} unverified bytes`);
});
