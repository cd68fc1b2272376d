import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { ChallengeAuthorizer, type ChallengeAuthorizerOptions } from '../../src/upstream/auth/challengeAuthorizer.js';
import { UpstreamAuthError } from '../../src/upstream/auth/authError.js';
import { RegistryError } from '../../src/registry/errors.js';
import {
  bearerJudge, loopbackAgent, pull, recordingLogger, startRegistry, startTokenService,
  type FakeRegistry, type TokenService,
} from './authServers.js';
import { FakeClock } from '../fixtures/clock.js';

const agent = loopbackAgent();
after(() => agent.close());

const ALICE = { username: 'alice', password: 's3cret-pa55word' };
const ALICE_BASIC = `Basic ${Buffer.from('alice:s3cret-pa55word').toString('base64')}`;
const SERVICE = 'registry.example.test';

function fakeClock(): FakeClock {
  return new FakeClock();
}

/** A token service and a bearer registry whose challenge names `realmHost`; the registry answers as `registry.example.test`. */
async function bearerSetup(options: { realmHost?: string; realmQuery?: string; users?: Record<string, string> } = {}): Promise<{
  tokens: TokenService; registry: FakeRegistry; registryUrl: URL; realm: string; revoked: Set<string>; denied: Set<string>; stop: () => Promise<void>;
}> {
  const tokens = await startTokenService({ expiresIn: 300, ...(options.users ? { users: options.users } : {}) });
  const realm = tokens.realm(options.realmHost ?? 'auth.example.test') + (options.realmQuery ?? '');
  const revoked = new Set<string>();
  const denied = new Set<string>();
  const registry = await startRegistry(bearerJudge(tokens, realm, SERVICE, revoked, denied));
  return {
    tokens, registry, realm, revoked, denied,
    registryUrl: new URL(registry.url('registry.example.test')),
    stop: async () => {
      await registry.stop();
      await tokens.stop();
    },
  };
}

function authorizer(registryUrl: URL, options: Partial<ChallengeAuthorizerOptions> = {}): ChallengeAuthorizer {
  return new ChallengeAuthorizer({ upstreamName: 'example', upstreamUrl: registryUrl, dispatcher: agent, ...options });
}

/** Everything a logger was given, as text, for "no secret here" checks. */
function logText(lines: readonly { obj: unknown; msg: string | undefined }[]): string {
  return lines.map((l) => `${JSON.stringify(l.obj)} ${l.msg ?? ''}`).join('\n');
}

test('an anonymous upstream: no Authorization, no token requests', async () => {
  const tokens = await startTokenService();
  const registry = await startRegistry(() => ({ ok: true }));
  try {
    const auth = authorizer(new URL(registry.url()));
    for (let i = 0; i < 3; i++) assert.equal(await pull(auth, registry.url(), 'library/alpine', agent), 200);
    assert.deepEqual(registry.authorizations, [undefined, undefined, undefined]);
    assert.equal(tokens.requests.length, 0);
    assert.equal(await auth.authorize('library/alpine'), undefined);
  } finally {
    await registry.stop();
    await tokens.stop();
  }
});

test('bearer with credentials: the first pull learns the challenge, the token is fetched with Basic and reused', async () => {
  const s = await bearerSetup({ users: { alice: ALICE.password } });
  try {
    const { logger, lines } = recordingLogger();
    const auth = authorizer(s.registryUrl, { credentials: ALICE, logger });
    assert.equal(await pull(auth, s.registryUrl.href, 'library/alpine', agent), 200);
    assert.deepEqual(s.registry.authorizations, [undefined, 'Bearer tok-1'], 'anonymous first, then the token');
    assert.equal(s.tokens.requests.length, 1);
    const [req] = s.tokens.requests;
    assert.equal(req!.authorization, ALICE_BASIC);
    assert.equal(req!.query.get('service'), SERVICE);
    assert.equal(req!.query.get('scope'), 'repository:library/alpine:pull');
    assert.equal(req!.query.get('account'), 'alice');

    assert.equal(await pull(auth, s.registryUrl.href, 'library/alpine', agent), 200);
    assert.equal(s.tokens.requests.length, 1, 'the token is cached');
    assert.equal(s.registry.authorizations.at(-1), 'Bearer tok-1');

    assert.equal(await pull(auth, s.registryUrl.href, 'library/nginx', agent), 200);
    assert.equal(s.tokens.requests.length, 2, 'tokens are per scope');
    assert.equal(s.tokens.requests[1]!.query.get('scope'), 'repository:library/nginx:pull');
    assert.equal(lines.filter((l) => l.level === 'warn').length, 0);
    assert.ok(!logText(lines).includes(ALICE.password));
  } finally {
    await s.stop();
  }
});

test('the realm\'s own query parameters are kept', async () => {
  const s = await bearerSetup({ realmQuery: '?client_id=pullthrough&service=overridden' });
  try {
    const auth = authorizer(s.registryUrl);
    assert.equal(await pull(auth, s.registryUrl.href, 'a/b', agent), 200);
    const query = s.tokens.requests[0]!.query;
    assert.equal(query.get('client_id'), 'pullthrough');
    assert.equal(query.get('service'), SERVICE, 'the challenge\'s service wins');
    assert.equal(query.get('account'), null, 'no account without credentials');
    assert.equal(s.tokens.requests[0]!.authorization, undefined);
  } finally {
    await s.stop();
  }
});

test('20 concurrent first pulls of one repository cause one token fetch', async () => {
  const s = await bearerSetup();
  try {
    const auth = authorizer(s.registryUrl);
    const statuses = await Promise.all(Array.from({ length: 20 }, () => pull(auth, s.registryUrl.href, 'library/alpine', agent)));
    assert.deepEqual(new Set(statuses), new Set([200]));
    assert.equal(s.tokens.requests.length, 1);
  } finally {
    await s.stop();
  }
});

test('invalid_token: 20 requests failing with a revoked token cause exactly one refresh, at once', async () => {
  const s = await bearerSetup();
  try {
    const auth = authorizer(s.registryUrl);
    assert.equal(await pull(auth, s.registryUrl.href, 'library/alpine', agent), 200);
    assert.equal(s.tokens.requests.length, 1);
    // Straight after the first token: no clock decides, the refused token does.
    s.revoked.add('tok-1');
    const statuses = await Promise.all(Array.from({ length: 20 }, () => pull(auth, s.registryUrl.href, 'library/alpine', agent)));
    assert.deepEqual(new Set(statuses), new Set([200]));
    assert.equal(s.tokens.requests.length, 2, 'one refresh');
    assert.equal(await auth.authorize('library/alpine'), 'Bearer tok-2');
  } finally {
    await s.stop();
  }
});

test('invalid_token: the refused token is dropped only while it is the current one; the retry never carries it', async () => {
  const s = await bearerSetup();
  try {
    const auth = authorizer(s.registryUrl);
    assert.equal(await pull(auth, s.registryUrl.href, 'x/y', agent), 200);
    const invalid = [`Bearer realm="${s.realm}",service="${SERVICE}",error="invalid_token"`];
    // tok-1 refused while current: dropped, and the next authorize fetches tok-2.
    assert.equal(await auth.challenged('x/y', invalid, 'Bearer tok-1'), true);
    assert.equal(await auth.authorize('x/y'), 'Bearer tok-2');
    // A straggler refused with tok-1 after tok-2 arrived: tok-2 stays, nothing is fetched.
    assert.equal(await auth.challenged('x/y', invalid, 'Bearer tok-1'), true);
    assert.equal(await auth.authorize('x/y'), 'Bearer tok-2');
    assert.equal(s.tokens.requests.length, 2);
    // A request that went out anonymous (before the challenge was known) is retried with the token.
    assert.equal(await auth.challenged('x/y', [`Bearer realm="${s.realm}",service="${SERVICE}"`], undefined), true);
    assert.equal(await auth.authorize('x/y'), 'Bearer tok-2');
  } finally {
    await s.stop();
  }
});

test('insufficient_scope with a token: challenged answers false and fetches nothing', async () => {
  const s = await bearerSetup();
  try {
    s.denied.add('private/thing');
    const auth = authorizer(s.registryUrl);
    assert.equal(await pull(auth, s.registryUrl.href, 'private/thing', agent), 401);
    const before = s.tokens.requests.length;
    const challenge = `Bearer realm="${s.realm}",service="${SERVICE}",scope="repository:private/thing:pull",error="insufficient_scope"`;
    assert.equal(await auth.challenged('private/thing', [challenge], await auth.authorize('private/thing')), false);
    assert.equal(await pull(auth, s.registryUrl.href, 'private/thing', agent), 401);
    assert.equal(s.tokens.requests.length, before);
  } finally {
    await s.stop();
  }
});

test('GET /v2/ teaches the challenge: the first request of every repository carries its token', async () => {
  const s = await bearerSetup();
  try {
    const auth = authorizer(s.registryUrl);
    assert.equal(auth.learned, false);
    auth.learn([`Bearer realm="${s.realm}",service="${SERVICE}"`]);
    assert.equal(auth.learned, true);
    const statuses = await Promise.all(['a/one', 'a/two', 'a/three'].map((r) => pull(auth, s.registryUrl.href, r, agent)));
    assert.deepEqual(statuses, [200, 200, 200]);
    assert.ok(s.registry.authorizations.every((a) => a?.startsWith('Bearer ')), JSON.stringify(s.registry.authorizations));
    assert.equal(s.registry.authorizations.length, 3, 'no request was refused');

    const open = authorizer(s.registryUrl);
    open.learn([]);
    assert.equal(open.learned, true, 'an anonymous answer is knowledge too');
    assert.equal(await open.authorize('a/one'), undefined);
  } finally {
    await s.stop();
  }
});

test('a realm on a foreign host gets no credentials, and one warning per realm', async () => {
  const s = await bearerSetup({ realmHost: 'auth.evil.test' });
  try {
    const { logger, lines } = recordingLogger();
    const auth = authorizer(s.registryUrl, { credentials: ALICE, logger });
    assert.equal(await pull(auth, s.registryUrl.href, 'library/alpine', agent), 200);
    assert.equal(await pull(auth, s.registryUrl.href, 'library/nginx', agent), 200);
    assert.equal(await pull(auth, s.registryUrl.href, 'library/redis', agent), 200);
    assert.equal(s.tokens.requests.length, 3);
    for (const req of s.tokens.requests) {
      assert.equal(req.authorization, undefined);
      assert.equal(req.query.get('account'), null);
    }
    const warnings = lines.filter((l) => l.level === 'warn');
    assert.equal(warnings.length, 1);
    assert.match(JSON.stringify(warnings[0]!.obj), /auth\.evil\.test/);
    const text = logText(lines);
    assert.ok(!text.includes(ALICE.password));
    assert.ok(!text.includes(ALICE_BASIC.slice(6)));
    assert.ok(!text.includes('tok-'), 'tokens are not logged either');
  } finally {
    await s.stop();
  }
});

test('trustedRealms lets credentials go to a foreign realm (as an origin or as a host)', async () => {
  const s = await bearerSetup({ realmHost: 'auth.evil.test', users: { alice: ALICE.password } });
  try {
    for (const entry of [`http://auth.evil.test:${s.tokens.port}`, 'auth.evil.test']) {
      const { logger, lines } = recordingLogger();
      const auth = authorizer(s.registryUrl, { credentials: ALICE, trustedRealms: [entry], logger });
      assert.equal(await pull(auth, s.registryUrl.href, 'library/alpine', agent), 200, entry);
      assert.equal(s.tokens.requests.at(-1)!.authorization, ALICE_BASIC);
      assert.equal(s.tokens.requests.at(-1)!.query.get('account'), 'alice');
      assert.equal(lines.filter((l) => l.level === 'warn').length, 0);
    }
  } finally {
    await s.stop();
  }
});

test('a realm on the same IP address, another port, is trusted', async () => {
  const tokens = await startTokenService({ users: { alice: ALICE.password } });
  const registry = await startRegistry(bearerJudge(tokens, tokens.realm('127.0.0.1'), SERVICE, new Set()));
  try {
    const auth = authorizer(new URL(registry.url('127.0.0.1')), { credentials: ALICE });
    assert.equal(await pull(auth, registry.url('127.0.0.1'), 'a/b', agent), 200);
    assert.equal(tokens.requests[0]!.authorization, ALICE_BASIC);
  } finally {
    await registry.stop();
    await tokens.stop();
  }
});

test('localhost and 127.0.0.1 are different hosts: no credentials cross', async () => {
  const tokens = await startTokenService();
  const registry = await startRegistry(bearerJudge(tokens, tokens.realm('localhost'), SERVICE, new Set()));
  try {
    const auth = authorizer(new URL(registry.url('127.0.0.1')), { credentials: ALICE });
    assert.equal(await pull(auth, registry.url('127.0.0.1'), 'a/b', agent), 200);
    assert.equal(tokens.requests[0]!.authorization, undefined);
  } finally {
    await registry.stop();
    await tokens.stop();
  }
});

test('the token service may answer with access_token only and no expires_in (60 s, refreshed 6 s early)', async () => {
  const s = await bearerSetup();
  const clock = fakeClock();
  try {
    s.tokens.behaviour.field = 'access_token';
    s.tokens.behaviour.expiresIn = undefined;
    const auth = authorizer(s.registryUrl, { clock });
    assert.equal(await pull(auth, s.registryUrl.href, 'a/b', agent), 200);
    await clock.advance(53_999);
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-1');
    await clock.advance(1);
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-2');
    assert.equal(s.tokens.requests.length, 2);
  } finally {
    await s.stop();
  }
});

test('issued_at is honoured when plausible, ignored when the clocks disagree', async () => {
  const s = await bearerSetup();
  const clock = fakeClock();
  try {
    const auth = authorizer(s.registryUrl, { clock });
    // Issued 250 s ago, lives 300 s: refreshed 30 s before expiry, i.e. in 20 s.
    s.tokens.behaviour.issuedAt = new Date(clock.now() - 250_000).toISOString();
    assert.equal(await pull(auth, s.registryUrl.href, 'a/b', agent), 200);
    await clock.advance(19_000);
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-1');
    await clock.advance(1_000);
    // Now issued_at lies in the future of our clock: the lifetime counts from now instead.
    s.tokens.behaviour.issuedAt = new Date(clock.now() + 3_600_000).toISOString();
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-2');
    await clock.advance(269_000);
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-2');
    // An issued_at older than the lifetime would make every token born dead: also ignored.
    s.tokens.behaviour.issuedAt = new Date(clock.now() - 3_600_000).toISOString();
    await clock.advance(1_000);
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-3');
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-3');
  } finally {
    await s.stop();
  }
});

test('Basic upstream: credentials are sent after the first 401, and no token service is involved', async () => {
  const registry = await startRegistry((authorization) =>
    authorization === ALICE_BASIC ? { ok: true } : { challenge: 'Basic realm="Registry Realm"' });
  try {
    const auth = authorizer(new URL(registry.url()), { credentials: ALICE });
    assert.equal(await pull(auth, registry.url(), 'a/b', agent), 200);
    assert.equal(await pull(auth, registry.url(), 'c/d', agent), 200);
    assert.deepEqual(registry.authorizations, [undefined, ALICE_BASIC, ALICE_BASIC]);
  } finally {
    await registry.stop();
  }
});

test('Basic upstream with wrong or no credentials: challenged answers false once Basic was tried', async () => {
  const registry = await startRegistry((authorization) =>
    authorization === ALICE_BASIC ? { ok: true } : { challenge: 'Basic realm="Registry Realm"' });
  try {
    const wrong = authorizer(new URL(registry.url()), { credentials: { username: 'alice', password: 'wrong' } });
    assert.equal(await pull(wrong, registry.url(), 'a/b', agent), 401);
    assert.equal(await wrong.challenged('a/b', ['Basic realm="Registry Realm"'], await wrong.authorize('a/b')), false);

    const none = authorizer(new URL(registry.url()));
    assert.equal(await none.challenged('a/b', ['Basic realm="Registry Realm"'], undefined), false);
    assert.equal(await none.authorize('a/b'), undefined);
  } finally {
    await registry.stop();
  }
});

test('Bearer is preferred when both Basic and Bearer are offered', async () => {
  const s = await bearerSetup();
  try {
    const auth = authorizer(s.registryUrl, { credentials: ALICE });
    assert.equal(await auth.challenged('a/b', [`Basic realm="x", Bearer realm="${s.realm}",service="${SERVICE}"`], undefined), true);
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-1');
  } finally {
    await s.stop();
  }
});

test('a 401 without a usable challenge is final', async () => {
  const auth = authorizer(new URL('http://registry.example.test'));
  assert.equal(await auth.challenged('a/b', [], undefined), false);
  assert.equal(await auth.challenged('a/b', ['Negotiate abc=='], undefined), false);
  assert.equal(await auth.challenged('a/b', ['Bearer service="s"'], undefined), false, 'no realm');
  assert.equal(await auth.challenged('a/b', ['Bearer realm="not a url"'], undefined), false);
  assert.equal(await auth.challenged('a/b', ['Bearer realm="file:///etc/passwd"'], undefined), false);
  assert.equal(await auth.challenged('a/b', ['"garbage', '==='], undefined), false);
  assert.equal(await auth.authorize('a/b'), undefined);
});

test('a changed realm is learned and used', async () => {
  const first = await bearerSetup();
  const second = await startTokenService({ expiresIn: 300 });
  try {
    const auth = authorizer(first.registryUrl);
    assert.equal(await pull(auth, first.registryUrl.href, 'a/b', agent), 200);
    assert.equal(await auth.challenged('a/b', [`Bearer realm="${second.realm('auth.example.test')}",service="${SERVICE}"`], undefined), true);
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-1');
    assert.equal(second.requests.length, 1);
  } finally {
    await first.stop();
    await second.stop();
  }
});

async function authError(promise: Promise<unknown>): Promise<UpstreamAuthError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof UpstreamAuthError, String(err));
    assert.ok(err instanceof RegistryError, 'the upstream client passes RegistryErrors through');
    return err;
  }
  assert.fail('expected an UpstreamAuthError');
}

function assertNoSecrets(err: Error): void {
  const text = `${err.message} ${JSON.stringify(err)}`;
  assert.ok(!text.includes(ALICE.password), text);
  assert.ok(!text.includes(ALICE_BASIC.slice(6)), text);
  assert.ok(!text.includes('alice'), text);
}

test('token service errors are typed, carry no secrets, and are not cached', async () => {
  const s = await bearerSetup({ users: { alice: 'the-right-one' } });
  try {
    const auth = authorizer(s.registryUrl, { credentials: ALICE });
    assert.equal(await auth.challenged('a/b', [`Bearer realm="${s.realm}",service="${SERVICE}"`], undefined), true);

    const wrong = await authError(auth.authorize('a/b'));
    assert.equal(wrong.kind, 'unauthorized');
    assert.equal(wrong.code, 'DENIED');
    assert.match(wrong.message, /rejected the configured credentials/);
    assertNoSecrets(wrong);

    s.tokens.behaviour = { status: 503 };
    const down = await authError(auth.authorize('a/b'));
    assert.equal(down.kind, 'unavailable');
    assert.equal(down.code, 'UNAVAILABLE');
    assert.match(down.reason ?? '', /503/);
    assert.doesNotMatch(down.message, /503/, 'the status is for the log, not the client');
    assertNoSecrets(down);

    s.tokens.behaviour = { field: 'none' };
    assert.equal((await authError(auth.authorize('a/b'))).kind, 'unavailable');

    s.tokens.behaviour = { users: { alice: ALICE.password } };
    const before = s.tokens.requests.length;
    assert.match((await auth.authorize('a/b')) ?? '', /^Bearer tok-\d+$/, 'a failure is not remembered');
    assert.equal(s.tokens.requests.length, before + 1);
    assert.equal(s.tokens.requests.at(-1)!.authorization, ALICE_BASIC);
  } finally {
    await s.stop();
  }
});

test('an anonymous token refused is "denied"', async () => {
  const s = await bearerSetup({ users: { alice: ALICE.password } });
  try {
    const auth = authorizer(s.registryUrl);
    await auth.challenged('a/b', [`Bearer realm="${s.realm}",service="${SERVICE}"`], undefined);
    const err = await authError(auth.authorize('a/b'));
    assert.equal(err.kind, 'denied');
    assert.equal(err.code, 'DENIED');
  } finally {
    await s.stop();
  }
});

test('an unreachable or slow token service is "unavailable"', async () => {
  const s = await bearerSetup();
  const port = s.tokens.port;
  try {
    // The timeout runs on the authorizer's clock: the token service would answer after 2 s of
    // real time, far less than the timeout, and the exchange gives up as soon as the clock has
    // moved the whole timeout, not before.
    const clock = fakeClock();
    const slow = authorizer(s.registryUrl, { tokenTimeoutMs: 30_000, clock });
    s.tokens.behaviour.delayMs = 2_000;
    await slow.challenged('a/b', [`Bearer realm="${s.realm}",service="${SERVICE}"`], undefined);
    let settled = false;
    const attempt = authError(slow.authorize('a/b')).finally(() => { settled = true; });
    while (s.tokens.requests.length === 0) await new Promise((r) => setImmediate(r));
    await clock.advance(29_999);
    assert.equal(settled, false, 'still waiting 1 ms before the timeout');
    await clock.advance(1);
    const timedOut = await attempt;
    assert.equal(timedOut.kind, 'unavailable');
    assert.match(timedOut.reason ?? '', /timed out after 30000 ms/);
    assert.equal(timedOut.message, 'upstream example: the token service failed', 'the client is told no more than that');
  } finally {
    await s.stop();
  }
  const gone = authorizer(new URL('http://registry.example.test'), { credentials: ALICE });
  await gone.challenged('a/b', [`Bearer realm="http://auth.example.test:${port}/token?account=x",service="s"`], undefined);
  const refused = await authError(gone.authorize('a/b'));
  assert.equal(refused.kind, 'unavailable');
  assert.match(refused.reason ?? '', /could not be reached \(ECONNREFUSED\)/);
  assert.equal(refused.message, 'upstream example: the token service failed', 'no port-scan oracle: refused and answered look alike');
  assert.ok(!refused.reason?.includes('account'), 'the realm query is not quoted');
  assertNoSecrets(refused);
});

test('token redirects: credentials follow within the origin, never to another host', async () => {
  const s = await bearerSetup({ users: { alice: ALICE.password } });
  const elsewhere = await startTokenService({ expiresIn: 300 });
  try {
    // Same origin: /token -> /token2 keeps the credentials.
    s.tokens.behaviour.redirectTo = `http://auth.example.test:${s.tokens.port}/token2`;
    const auth = authorizer(s.registryUrl, { credentials: ALICE });
    await auth.challenged('a/b', [`Bearer realm="${s.realm}",service="${SERVICE}"`], undefined);
    // The redirect target is the same server, which keeps redirecting: give up after a few hops.
    const loop = await authError(auth.authorize('a/b'));
    assert.equal(loop.kind, 'unavailable');
    assert.match(loop.reason ?? '', /too many redirects/);
    assert.deepEqual(s.tokens.requests.map((r) => r.authorization), [ALICE_BASIC, ALICE_BASIC, ALICE_BASIC, ALICE_BASIC]);
    assert.equal(s.tokens.requests[1]!.path, '/token2');

    // Another host: followed, but without the credentials.
    s.tokens.behaviour.redirectTo = elsewhere.realm('cdn.other.test');
    assert.equal(await auth.authorize('a/b'), 'Bearer tok-1');
    assert.equal(elsewhere.requests.length, 1);
    assert.equal(elsewhere.requests[0]!.authorization, undefined);
    assert.equal(elsewhere.requests[0]!.query.get('scope'), 'repository:a/b:pull');
  } finally {
    await s.stop();
    await elsewhere.stop();
  }
});

test('an aborted authorize rejects for its caller only', async () => {
  const s = await bearerSetup();
  try {
    s.tokens.behaviour.delayMs = 200;
    const auth = authorizer(s.registryUrl);
    await auth.challenged('a/b', [`Bearer realm="${s.realm}",service="${SERVICE}"`], undefined);
    const controller = new AbortController();
    const aborted = auth.authorize('a/b', controller.signal);
    const patient = auth.authorize('a/b');
    controller.abort(new Error('client gone'));
    await assert.rejects(aborted, /client gone/);
    assert.equal(await patient, 'Bearer tok-1');
    assert.equal(s.tokens.requests.length, 1);
  } finally {
    await s.stop();
  }
});
