/**
 * A real Distribution 2.8 registry that demands bearer tokens from the
 * fixture token server, which only issues them to `mirror`. pullthrough has
 * those credentials from the environment (`passwordEnv`); skopeo pulls
 * anonymously from pullthrough. Every test image arrives byte-exact, and the
 * token server is asked once per repository, not once per request.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { startTokenServer, type RunningTokenServer } from '../fixtures/tokenServer.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';
import { basicHeader, scopeRequests } from '../fixtures/upstreamAuth.js';

const skip = toolSkip('docker-registry', 'skopeo', 'openssl');
const NAME = 'tokened.test';
const MIRROR = { username: 'mirror', password: `tok-${randomBytes(12).toString('hex')}` };
const PASSWORD_ENV = `PULLTHROUGH_TEST_TOKEN_PW_${process.pid}`;

let tokens: RunningTokenServer;
let registry: RunningRegistry;
let seeded: SeededImage[];
let proxy: RunningProxy;

before(async () => {
  if (skip) return;
  tokens = await startTokenServer({ users: { [MIRROR.username]: MIRROR.password } });
  registry = await startRegistry({ token: tokens });
  seeded = await seedImages(registry.host, { creds: MIRROR, layerSize: 64 * 1024 });
  tokens.clearRequests();
  await registry.clearRequests();
  process.env[PASSWORD_ENV] = MIRROR.password;
  try {
    proxy = await startProxy({
      upstreams: [{ name: NAME, url: registry.url, credentials: { username: MIRROR.username, passwordEnv: PASSWORD_ENV } }],
    });
  } finally {
    // Read once, at start-up: nothing later depends on the variable.
    delete process.env[PASSWORD_ENV];
  }
});

after(async () => {
  await proxy?.stop();
  await registry?.stop();
  await tokens?.stop();
});

test('skopeo pulls every test image through pullthrough from a token-auth upstream, byte-exact', { skip }, async () => {
  for (const image of seeded) {
    const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, await tempDir(`token-${image.kind}`));
    assert.equal(pulled.manifestDigest, image.digest, image.kind);
    assert.equal(pulled.mediaType, image.mediaType, image.kind);
    assert.deepEqual(pulled.childDigests.sort(), [...image.childDigests].sort(), image.kind);
    assert.deepEqual(pulled.blobDigests.sort(), [...image.blobDigests].sort(), image.kind);
  }
  const requests = tokens.requests();
  // One token per repository, with the password from the environment, accepted.
  assert.deepEqual(requests.map((r) => r.scope).sort(), seeded.map((i) => `repository:${i.repository}:pull`).sort());
  for (const r of requests) {
    assert.equal(r.status, 200, r.scope);
    assert.equal(r.authorization, basicHeader(MIRROR), r.scope);
    assert.equal(r.account, MIRROR.username, r.scope);
  }
  assert.ok(!proxy.rawLogs().includes(MIRROR.password), 'the password is never logged');
});

test('many pulls of one repository within a token\'s lifetime cost one token fetch', { skip }, async () => {
  const image = seeded[0]!;
  await registry.clearRequests();
  for (let i = 0; i < 4; i++) {
    const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, await tempDir('token-again'));
    assert.equal(pulled.manifestDigest, image.digest);
  }
  assert.equal(scopeRequests(tokens, image.repository).length, 1, JSON.stringify(tokens.requests()));
  // tagMaxAge is 0s in tests: every pull asked the upstream (a HEAD with that one token), and it said yes.
  const heads = (await registry.settledRequests())
    .filter((e) => e.method === 'HEAD' && e.path === `/v2/${image.repository}/manifests/${image.tag}`);
  assert.ok(heads.length >= 4, `the upstream was asked on every pull (${heads.length} HEADs)`);
  assert.ok(heads.every((e) => e.status === 200), JSON.stringify(heads));
});

test('cold, concurrent pulls of 4 repositories: after the first challenge every request carries its token and none is refused', { skip }, async () => {
  const cold = await startProxy({ upstreams: [{ name: NAME, url: registry.url, credentials: MIRROR }] });
  try {
    await registry.clearRequests();
    tokens.clearRequests();
    const pulled = await Promise.all(seeded.map(async (image) =>
      pullWithSkopeo(`${cold.host}/${image.repository}:${image.tag}`, await tempDir(`token-cold-${image.kind}`))));
    pulled.forEach((p, i) => assert.equal(p.manifestDigest, seeded[i]!.digest));
    const seen = await registry.settledRequests();
    // The one challenge is the answer to GET /v2/, asked once before anything else.
    assert.deepEqual(seen.filter((e) => e.status === 401).map((e) => `${e.method} ${e.path}`), ['GET /v2/'], JSON.stringify(seen));
    assert.equal(`${seen[0]!.method} ${seen[0]!.path}`, 'GET /v2/');
    assert.ok(seen.slice(1).every((e) => e.status >= 200 && e.status < 300), JSON.stringify(seen.map((e) => `${e.method} ${e.path} ${e.status}`)));
    assert.equal(tokens.requests().length, seeded.length, 'one token per repository');
  } finally {
    await cold.stop();
  }
});
