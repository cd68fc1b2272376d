/**
 * Review 2026-12-01, finding 13: only the upstream's own origin teaches
 * pullthrough a realm. A blob redirect target (a CDN, an object store) that
 * answers 401 with a Bearer challenge of its own must not move the realm of
 * the whole upstream: its realm is never asked, and the upstream's own
 * tokens keep working.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startFakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { startProxy } from '../fixtures/proxy.js';
import { ask, startBearerUpstream } from '../fixtures/upstreamAuth.js';
import { startTokenServer } from '../fixtures/tokenServer.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

test('a 401 from a blob redirect target never re-points the upstream\'s realm', async () => {
  const upstream = await startBearerUpstream();
  cleanups.push(() => upstream.stop());
  const foreignRealm = await startTokenServer();
  cleanups.push(() => foreignRealm.stop());
  const cdn = await startFakeUpstream();
  cleanups.push(() => cdn.stop());
  const repository = 'realm/redirected';
  const image = makeImage({ layerSizes: [4096] });
  upstream.fake.addImage(repository, 'v1', image);
  const missing = `sha256:${createHash('sha256').update('not on the cdn').digest('hex')}`;
  upstream.fake.addBlob({ digest: missing, body: 'x' });
  cdn.addFault({ path: /\/blobs\// }, {
    status: { code: 401, headers: { 'WWW-Authenticate': `Bearer realm="${foreignRealm.realm}",service="cdn"` } },
  });
  upstream.fake.addFault({ path: `/v2/${repository}/blobs/${missing}` }, { redirect: `${cdn.url}/v2/${repository}/blobs/${missing}` });
  const proxy = await startProxy({ upstreams: [{ name: 'realm.test', url: upstream.fake.url }] });
  cleanups.push(() => proxy.stop());

  const first = await ask(proxy, `/v2/${repository}/manifests/v1`);
  assert.equal(first.status, 200, first.body.toString());
  const refused = await ask(proxy, `/v2/${repository}/blobs/${missing}`);
  assert.equal(refused.status, 403, refused.body.toString());
  assert.equal(foreignRealm.requests().length, 0, 'the redirect target\'s realm was never asked');
  const after401 = await ask(proxy, `/v2/${repository}/blobs/${image.config.digest}`);
  assert.equal(after401.status, 200, 'the upstream\'s own realm still serves');
  assert.equal(foreignRealm.requests().length, 0);
});
