/**
 * A token that stops working mid-session: the upstream answers 401 to it,
 * once with `error="invalid_token"`, once with a bare Bearer challenge (a
 * revoked token). pullthrough compares tokens, not clocks: the refused
 * token is dropped, exactly one new token is fetched (also when 8 requests
 * are refused at once), the retry carries the new token and the client's
 * request succeeds. The session is opened in `before` and the tests run
 * straight after: no window has to pass first. Everything (the token
 * service, the upstream, the sockets) is real.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { manifestDigestOf } from '../fixtures/skopeo.js';
import { ask, bearerOf, scopeRequests, startBearerUpstream, type BearerUpstream } from '../fixtures/upstreamAuth.js';

const MIRROR = { username: 'mirror', password: `session-${randomBytes(12).toString('hex')}` };

let upstream: BearerUpstream;
let proxy: RunningProxy;
const images = new Map<string, BuiltImage>();
/** The token pullthrough sent for each repository when the session was opened. */
const sessionTokens = new Map<string, string>();

before(async () => {
  upstream = await startBearerUpstream({ users: { [MIRROR.username]: MIRROR.password } });
  for (const repository of ['session/explicit', 'session/revoked', 'session/many']) {
    const image = makeImage({ layerSizes: [4096] });
    upstream.fake.addImage(repository, 'v1', image);
    images.set(repository, image);
  }
  proxy = await startProxy({ upstreams: [{ name: 'session.test', url: upstream.fake.url, credentials: MIRROR }] });
  for (const repository of images.keys()) {
    const answer = await ask(proxy, `/v2/${repository}/manifests/v1`);
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(scopeRequests(upstream.tokens, repository).length, 1);
    const sent = upstream.fake.requests({ path: `/v2/${repository}/manifests/v1` }).map((r) => bearerOf(r.headers)).filter(Boolean);
    assert.ok(sent.length > 0);
    sessionTokens.set(repository, sent[sent.length - 1]!);
  }
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
  assert.deepEqual(seen.map((r) => r.status), [401, 200], JSON.stringify(seen.map((r) => r.status)));
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

test('8 concurrent requests refused with the same revoked token: one token fetch between them, every retry carries the new token', async () => {
  const repository = 'session/many';
  const old = sessionTokens.get(repository)!;
  const image = images.get(repository)!;
  const tags = Array.from({ length: 8 }, (_, i) => `t${i}`);
  for (const tag of tags) upstream.fake.setTag(repository, tag, image.digest);
  upstream.fake.clearRequests();
  upstream.revoked.add(old);
  // Eight tags: eight upstream HEADs at once (the tag service shares a revalidation per tag only).
  const answers = await Promise.all(tags.map((tag) => ask(proxy, `/v2/${repository}/manifests/${tag}`, 'HEAD')));
  for (const answer of answers) assert.equal(answer.status, 200, answer.body.toString());
  assert.equal(scopeRequests(upstream.tokens, repository).length, 2, 'the session token and exactly one refresh');
  const heads = upstream.fake.requests({ method: 'HEAD' }).filter((r) => r.path.startsWith(`/v2/${repository}/manifests/`));
  const refused = heads.filter((r) => r.status === 401);
  assert.ok(refused.length >= 1 && refused.every((r) => bearerOf(r.headers) === old), 'only the old token was refused');
  const fresh = heads.filter((r) => r.status === 200).map((r) => bearerOf(r.headers));
  assert.equal(fresh.length, 8);
  assert.equal(new Set(fresh).size, 1, 'all on one new token');
  assert.notEqual(fresh[0], old);
});
