/**
 * Review 2026-12-01, findings 1, 2, 11 and 13: an upstream chooses URLs
 * (redirect targets, token realms, their redirects), and the egress policy
 * decides where the mirror connects. The malicious upstream is on
 * 127.0.0.1 (its own address is allowed: it is the configured upstream);
 * the internal service is on 127.0.0.2 and, named `localhost`, on another
 * 127.0.0.1 port. For every route: the internal service receives no
 * request, the client gets a clear error, and nothing is stored.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { INTERNAL_SECRET, INTERNAL_TOKEN, ROUTES, startAttack, type Attack, type InternalService, type MaliciousUpstream } from '../fixtures/malicious.js';
import type { RunningProxy } from '../fixtures/proxy.js';

let attack: Attack;
let internal: InternalService;
let evil: MaliciousUpstream;
let proxy: RunningProxy;

const EVIL = 'evil.test';
const DIGEST = `sha256:${createHash('sha256').update('x').digest('hex')}`;

before(async () => {
  attack = await startAttack((url) => [
    { name: EVIL, url },
    // Each realm route gets an upstream (and so an authorizer) of its own: a realm is learned upstream-wide.
    { name: 'realm-inward.test', url },
    { name: 'realm-redirect.test', url },
    { name: 'on-prem.test', url, allowedRedirectHosts: ['127.0.0.2'] },
  ]);
  ({ internal, evil, proxy } = attack);
});

after(async () => {
  await attack?.stop();
});

interface Answer {
  readonly status: number;
  readonly body: string;
  readonly complete: boolean;
}

async function ask(path: string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(`${proxy.url}${path}`, { headers });
  let body = '';
  try {
    body = await res.body.text();
    return { status: res.statusCode, body, complete: true };
  } catch {
    return { status: res.statusCode, body, complete: false };
  }
}

/** Every file under the storage root, relative to it, uploads included. */
async function storedFiles(): Promise<string[]> {
  const entries = await readdir(proxy.root, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(proxy.root.length + 1));
}

function assertNothingReachedInside(what: string): void {
  assert.deepEqual(internal.requests, [], `${what}: the internal service received ${JSON.stringify(internal.requests)}`);
}

function assertNoSecret(answer: Answer): void {
  assert.ok(!answer.body.includes(INTERNAL_SECRET), `the secret reached the client: ${answer.body}`);
}

for (const [name, repository] of [
  ['a blob redirect by IP', ROUTES.blobRedirect],
  ['a blob redirect to an IPv4-mapped IPv6 literal', ROUTES.blobRedirectMapped],
  ['a blob redirect to a decimal IPv4', ROUTES.blobRedirectDecimal],
  ['a blob redirect to a DNS name resolving to loopback', ROUTES.blobRedirectDns],
] as const) {
  test(`${name} to the internal service is refused: no request inside, a clear 503, nothing stored`, async () => {
    const whole = await ask(`/v2/${EVIL}/${repository}/blobs/${DIGEST}`);
    const ranged = await ask(`/v2/${EVIL}/${repository}/blobs/${DIGEST}`, { range: 'bytes=0-70' });
    assertNothingReachedInside(name);
    for (const answer of [whole, ranged]) {
      assert.equal(answer.status, 503, answer.body);
      assert.match(answer.body, /not a public address/);
      assertNoSecret(answer);
    }
    if (repository === ROUTES.blobRedirectDns) assert.ok(!whole.body.includes('127.0.0.1'), 'the address a name resolved to is for the log, not the client');
    const refusals = proxy.logs().filter((l) => l['msg'] === 'refused to connect to a non-public address an upstream chose');
    assert.ok(refusals.length > 0, 'the log has the refusal with its address');
    assert.deepEqual((await storedFiles()).filter((f) => f.includes(repository) || f.startsWith('blobs/')), []);
  });
}

test('a tag whose GET redirects to the internal service: not followed (manifests come from the origin), nothing stored or listed', async () => {
  const answer = await ask(`/v2/${EVIL}/${ROUTES.manifestRedirect}/manifests/latest`);
  assert.equal(answer.status, 503, answer.body);
  assert.match(answer.body, /only blobs may be redirected/);
  assertNoSecret(answer);
  assertNothingReachedInside('the manifest redirect');
  const again = await ask(`/v2/${EVIL}/${ROUTES.manifestRedirect}/manifests/latest`);
  assert.equal(again.status, 503, 'nothing was cached to answer with');
  assert.deepEqual((await storedFiles()).filter((f) => f.includes('ssrf/man')), []);
  const catalog = await ask('/v2/_catalog');
  assert.ok(!catalog.body.includes('ssrf/man'), catalog.body);
});

test('a tag answered with a JSON document that is not a manifest is refused (UPSTREAM_INVALID), not stored as one', async () => {
  const answer = await ask(`/v2/${EVIL}/${ROUTES.notAManifest}/manifests/latest`);
  assert.equal(answer.status, 502, answer.body);
  assert.match(answer.body, /UPSTREAM_INVALID/);
  assertNoSecret(answer);
  assert.deepEqual((await storedFiles()).filter((f) => f.includes('ssrf/notmanifest')), []);
});

test('a token realm on the internal service is never asked; the client gets one generic message', async () => {
  const answer = await ask(`/v2/realm-inward.test/${ROUTES.realmInward}/manifests/x`);
  assertNothingReachedInside('the inward realm');
  assert.equal(answer.status, 503, answer.body);
  const message = (JSON.parse(answer.body) as { errors: { message: string }[] }).errors[0]!.message;
  assert.equal(message, 'upstream realm-inward.test: the token service failed', 'no reason: no port-scan oracle');
  const logged = proxy.logs().filter((l) => l['msg'] === 'token service failed' && l['upstream'] === 'realm-inward.test');
  assert.ok(logged.length > 0 && String(logged[0]!['reason']).includes('EGRESS_REFUSED'), JSON.stringify(logged));
});

test('a token realm that redirects to the internal service: the redirect is refused, no internal token reaches the upstream', async () => {
  const answer = await ask(`/v2/realm-redirect.test/${ROUTES.realmRedirect}/manifests/x`);
  assertNothingReachedInside('the realm redirect');
  assert.equal(answer.status, 503, answer.body);
  assert.ok(evil.requests.some((r) => r.url.startsWith('/token')), 'the realm on the upstream itself was asked');
  assert.ok(evil.requests.every((r) => !r.authorization?.includes(INTERNAL_TOKEN)), 'no internal token relayed upstream');
});

test('a private redirect target the upstream\'s allowedRedirectHosts names is followed (on-prem object stores)', async () => {
  const bytes = Buffer.from('an on-prem layer');
  internal.serveBlob(bytes);
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const answer = await ask(`/v2/on-prem.test/${ROUTES.allowedRedirect}/blobs/${digest}`);
  assert.equal(answer.status, 200, answer.body);
  assert.equal(answer.body, bytes.toString());
  assert.deepEqual(internal.requests.map((r) => r.url), ['/blob']);
  assert.equal(internal.requests[0]!.authorization, undefined, 'no credentials to another origin');
  internal.requests.length = 0;
});
