/**
 * A token that stops working mid-session: the upstream answers 401 to it,
 * once with `error="invalid_token"`, once with a bare Bearer challenge (a
 * revoked token). pullthrough fetches exactly one new token and the client's
 * request succeeds.
 *
 * "Mid-session" needs time: the authorizer takes a 401 that arrives within
 * 10 s (its `raceWindowMs`) of learning the challenge as a straggler sent
 * before it had a token, and retries it with the same token. So the
 * session is opened in `before`, and the tests start once that window has
 * passed on the mirror's clock: a fake one, moved past the window instead of
 * slept through. Everything else (the token service, the upstream, the
 * sockets) is real.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { FakeClock } from '../fixtures/clock.js';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { manifestDigestOf } from '../fixtures/skopeo.js';
import { ask, bearerOf, scopeRequests, startBearerUpstream, type BearerUpstream } from '../fixtures/upstreamAuth.js';

/** Just past the authorizer's default race window (10 s). */
const MID_SESSION_MS = 10_500;
const MIRROR = { username: 'mirror', password: `session-${randomBytes(12).toString('hex')}` };

const clock = new FakeClock(Date.now());
let upstream: BearerUpstream;
let proxy: RunningProxy;
const images = new Map<string, BuiltImage>();
/** The token pullthrough sent for each repository when the session was opened. */
const sessionTokens = new Map<string, string>();

before(async () => {
  upstream = await startBearerUpstream({ users: { [MIRROR.username]: MIRROR.password } });
  for (const repository of ['session/explicit', 'session/revoked']) {
    const image = makeImage({ layerSizes: [4096] });
    upstream.fake.addImage(repository, 'v1', image);
    images.set(repository, image);
  }
  proxy = await startProxy({ upstreams: [{ name: 'session.test', url: upstream.fake.url, credentials: MIRROR }], clock });
  for (const repository of images.keys()) {
    const answer = await ask(proxy, `/v2/${repository}/manifests/v1`);
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(scopeRequests(upstream.tokens, repository).length, 1);
    const sent = upstream.fake.requests({ path: `/v2/${repository}/manifests/v1` }).map((r) => bearerOf(r.headers)).filter(Boolean);
    assert.ok(sent.length > 0);
    sessionTokens.set(repository, sent[sent.length - 1]!);
  }
  await clock.advance(MID_SESSION_MS);
});

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
});

async function pullsAfterOneRefresh(repository: string, old: string): Promise<void> {
  const path = `/v2/${repository}/manifests/v1`;
  const answer = await ask(proxy, path);
  assert.equal(answer.status, 200, answer.body.toString());
  assert.equal(manifestDigestOf(answer.body), images.get(repository)!.digest);
  assert.equal(scopeRequests(upstream.tokens, repository).length, 2, 'exactly one refresh');
  const seen = upstream.fake.requests({ path }).map((r) => ({ status: r.status, token: bearerOf(r.headers) }));
  assert.deepEqual(seen.map((r) => r.status), [401, 200], JSON.stringify(seen));
  assert.equal(seen[0]!.token, old, 'the refused request carried the old token');
  assert.ok(seen[1]!.token && seen[1]!.token !== old, 'the retry carried a new one');
  // The new token is cached like the first.
  assert.equal((await ask(proxy, path)).status, 200);
  assert.equal(scopeRequests(upstream.tokens, repository).length, 2);
}

test('401 error="invalid_token" mid-session: one token refresh, then success', async () => {
  const repository = 'session/explicit';
  const path = `/v2/${repository}/manifests/v1`;
  const old = sessionTokens.get(repository)!;
  upstream.fake.clearRequests();
  // Once, for a request that passed the fake's own token check: revoke the
  // token it carried and answer 401 invalid_token. A retry with the old
  // token would now be refused too.
  upstream.fake.addFault({
    once: true,
    path: (p) => {
      if (p !== path) return false;
      upstream.revoked.add(old);
      return true;
    },
  }, {
    status: {
      code: 401,
      headers: {
        'WWW-Authenticate': `Bearer realm="${upstream.realm}",service="${upstream.tokens.service}",scope="repository:${repository}:pull",error="invalid_token"`,
      },
    },
  });
  await pullsAfterOneRefresh(repository, old);
});

test('a revoked token (a bare Bearer challenge although a token was sent) mid-session: one refresh, then success', async () => {
  const repository = 'session/revoked';
  const old = sessionTokens.get(repository)!;
  upstream.fake.clearRequests();
  upstream.revoked.add(old);
  await pullsAfterOneRefresh(repository, old);
});
