/**
 * Where the upstream's credentials may go, through pullthrough:
 * - a blob redirect to another host (a CDN) is followed without
 *   `Authorization`, though the upstream itself got it;
 * - a token realm on another host than the upstream (on loopback,
 *   `localhost` and `127.0.0.1` are different hosts) gets no credentials and
 *   the pull goes on with an anonymous token; listed in `trustedRealms`, it
 *   does get them.
 * `localhost` is not a public address, so the egress policy lets the
 * mirror connect there only when `allowedRedirectHosts` names it (or
 * `trustedRealms` does): allowing the connection is not trusting the realm.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startFakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { manifestDigestOf } from '../fixtures/skopeo.js';
import { ask, basicHeader, bearerOf, scopeRequests, startBearerUpstream, warnings } from '../fixtures/upstreamAuth.js';

const MIRROR = { username: 'mirror', password: `trust-${randomBytes(12).toString('hex')}` };
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function proxy(upstream: Record<string, unknown> & { name: string; url: string }): Promise<RunningProxy> {
  const p = await startProxy({ upstreams: [upstream] });
  cleanups.push(() => p.stop());
  return p;
}

test('a blob redirect to another host is followed without Authorization; the upstream itself got it', async () => {
  const upstream = await startBearerUpstream({ users: { [MIRROR.username]: MIRROR.password } });
  cleanups.push(() => upstream.stop());
  const cdn = await startFakeUpstream();
  cleanups.push(() => cdn.stop());
  const repository = 'trust/redirected';
  const image = makeImage({ layerSizes: [100_000] });
  upstream.fake.addImage(repository, 'v1', image);
  const layer = image.layers[0]!;
  cdn.addBlob(layer.data);
  const blobPath = `/v2/${repository}/blobs/${layer.digest}`;
  // Another host name for the same loopback address: a different origin and a different host.
  const fault = upstream.fake.addFault({ path: blobPath }, { redirect: `http://localhost:${cdn.port}${blobPath}?X-Amz-Signature=abc` });
  const p = await proxy({ name: 'redirects.test', url: upstream.fake.url, credentials: MIRROR, allowedRedirectHosts: ['localhost'] });

  const answer = await ask(p, blobPath);
  assert.equal(answer.status, 200, answer.body.toString());
  assert.ok(answer.body.equals(layer.data));
  assert.equal(fault.hits(), 1);
  const redirected = upstream.fake.requests({ path: blobPath }).filter((r) => r.status === 302);
  assert.equal(redirected.length, 1);
  assert.ok(bearerOf(redirected[0]!.headers), 'the upstream got the token');
  assert.equal(scopeRequests(upstream.tokens, repository)[0]?.authorization, basicHeader(MIRROR), 'and the token service the credentials');
  const atCdn = cdn.requests({ path: blobPath });
  assert.ok(atCdn.length >= 1, 'the bytes came from the redirect target');
  for (const r of atCdn) {
    assert.equal(r.headers.authorization, undefined, `${r.method} at the CDN carried Authorization`);
    assert.ok(!r.rawHeaders.join('\n').includes(MIRROR.password));
  }
});

test('a realm on another host gets no credentials (anonymous tokens, one warning); trustedRealms lets them go', async () => {
  // The upstream is 127.0.0.1; its challenges name a realm on `localhost`.
  const upstream = await startBearerUpstream({ realmHost: 'localhost' });
  cleanups.push(() => upstream.stop());
  assert.match(upstream.realm, /^http:\/\/localhost:\d+\/token$/);
  const images = ['trust/foreign-a', 'trust/foreign-b'].map((repository) => {
    const image = makeImage({ layerSizes: [4096] });
    upstream.fake.addImage(repository, 'v1', image);
    return { repository, image };
  });

  const untrusted = await proxy({ name: 'foreign-realm.test', url: upstream.fake.url, credentials: MIRROR, allowedRedirectHosts: ['localhost'] });
  for (const { repository, image } of images) {
    const answer = await ask(untrusted, `/v2/${repository}/manifests/v1`);
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(manifestDigestOf(answer.body), image.digest, 'the pull works with an anonymous token');
  }
  const anonymous = upstream.tokens.requests();
  assert.equal(anonymous.length, images.length, 'one token per repository');
  for (const r of anonymous) {
    assert.equal(r.status, 200);
    assert.equal(r.authorization, undefined, 'no credentials to a foreign realm');
    assert.equal(r.account, undefined, 'not even the account name');
  }
  const realmWarnings = warnings(untrusted).filter((w) => w['realm'] === upstream.realm);
  assert.equal(realmWarnings.length, 1, `warned once per realm: ${JSON.stringify(warnings(untrusted))}`);
  assert.ok(!untrusted.rawLogs().includes(MIRROR.password));

  upstream.tokens.clearRequests();
  const trusted = await proxy({
    name: 'trusted-realm.test', url: upstream.fake.url, credentials: MIRROR,
    trustedRealms: [new URL(upstream.realm).origin],
  });
  for (const { repository, image } of images) {
    const answer = await ask(trusted, `/v2/${repository}/manifests/v1`);
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(manifestDigestOf(answer.body), image.digest);
  }
  const withCredentials = upstream.tokens.requests();
  assert.equal(withCredentials.length, images.length);
  for (const r of withCredentials) {
    assert.equal(r.authorization, basicHeader(MIRROR), 'a configured realm gets the credentials');
    assert.equal(r.account, MIRROR.username);
  }
  assert.deepEqual(warnings(trusted).filter((w) => 'realm' in w), [], 'no warning for a trusted realm');
});
