/**
 * skopeo over HTTPS (`--src-cert-dir` with the run's CA) with htpasswd users
 * (`--src-creds`) and read rules per upstream, against two real upstreams:
 * alice may pull docker.io, bob the corporate registry's team/**, carol
 * everything, anonymous nothing. A refusal comes before any upstream or
 * storage access, on every route (default, prefix, ?ns=), and `_catalog`
 * lists only what the client may pull.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createTestCa, writeHtpasswd, type TestCa } from '../fixtures/certs.js';
import { basicAuth, httpsRequest } from '../fixtures/https.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { pullWithSkopeo, type Creds } from '../fixtures/skopeo.js';
import { CommandError, tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('openssl', 'htpasswd', 'docker-registry', 'skopeo');
const options = { skip, timeout: 120_000 };

const CORP = 'registry.corp:5000';
const USERS = { alice: 'alice-Pw-123', bob: 'bob-Pw-456', carol: 'carol-Pw-789' };
const creds = (name: keyof typeof USERS): Creds => ({ username: name, password: USERS[name] });

let ca: TestCa;
let certDir: string;
let hub: RunningRegistry;
let corp: RunningRegistry;
let proxy: RunningProxy;
let hubImage: SeededImage;
let corpImage: SeededImage;

before(async () => {
  if (skip) return;
  [ca, hub, corp, certDir] = await Promise.all([createTestCa(), startRegistry(), startRegistry(), tempDir('skopeo-certs')]);
  [[hubImage], [corpImage]] = await Promise.all([
    seedImages(hub.host, { kinds: ['oci-image'], repositoryPrefix: 'library', layerSize: 32 * 1024 }),
    seedImages(corp.host, { kinds: ['oci-index'], repositoryPrefix: 'team', layerSize: 32 * 1024 }),
  ]);
  const server = await ca.issue({ commonName: '127.0.0.1', use: 'server' });
  await copyFile(ca.certFile, join(certDir, 'ca.crt'));
  const dir = await tempDir('auth');
  const htpasswd = join(dir, 'htpasswd');
  await writeHtpasswd(htpasswd, USERS);
  proxy = await startProxy({
    upstreams: [{ name: 'docker.io', url: hub.url }, { name: CORP, url: corp.url, aliases: ['registry.corp'] }],
    tls: { certFile: server.certFile, keyFile: server.keyFile },
    auth: {
      htpasswd: { file: htpasswd, realm: 'pullthrough test' },
      rules: [
        { users: ['alice'], repositories: ['docker.io/**'] },
        { users: ['bob'], repositories: ['registry.corp/team/**'] },
        { users: ['carol'], repositories: ['*/**'] },
      ],
    },
  });
}, { timeout: 120_000 });

after(async () => {
  await proxy?.stop();
  await Promise.all([hub?.stop(), corp?.stop()]);
});

async function skopeoPull(ref: string, who?: Creds): Promise<string> {
  const out = await tempDir('pulled');
  const pulled = await pullWithSkopeo(ref, out, { certDir, ...(who ? { creds: who } : {}) });
  return pulled.manifestDigest;
}

function get(path: string, who?: Creds): ReturnType<typeof httpsRequest> {
  return httpsRequest(`${proxy.url}${path}`, {
    caFile: ca.certFile, ...(who ? { headers: { authorization: basicAuth(who.username, who.password) } } : {}),
  });
}

function skopeoError(pattern: RegExp): (err: unknown) => boolean {
  return (err: unknown) => err instanceof CommandError && pattern.test(err.stderr);
}

test('skopeo --src-cert-dir --src-creds: alice pulls docker.io by the default route and by prefix, digests verified', options, async () => {
  assert.equal(await skopeoPull(`${proxy.host}/library/oci-image:v1`, creds('alice')), hubImage.digest);
  assert.equal(await skopeoPull(`${proxy.host}/docker.io/library/oci-image:v1`, creds('alice')), hubImage.digest);
  assert.equal(await skopeoPull(`${proxy.host}/registry.corp/team/oci-index:v1`, creds('bob')), corpImage.digest);
});

test('no credentials: 401 with the Basic challenge and UNAUTHORIZED; skopeo fails', options, async () => {
  const answer = await get('/v2/library/oci-image/manifests/v1');
  assert.equal(answer.status, 401);
  assert.equal(answer.headers['www-authenticate'], 'Basic realm="pullthrough test"');
  assert.equal(JSON.parse(answer.body).errors[0].code, 'UNAUTHORIZED');
  assert.equal((await get('/v2/')).status, 401, '/v2/ asks anonymous clients to log in');
  await assert.rejects(skopeoPull(`${proxy.host}/library/oci-image:v1`), skopeoError(/unauthorized|authentication required/i));
});

test('a wrong password: 401, and the same answer as for an unknown user', options, async () => {
  await assert.rejects(skopeoPull(`${proxy.host}/library/oci-image:v1`, { username: 'alice', password: 'wrong' }),
    skopeoError(/unauthorized|authentication/i));
  const wrongPassword = await get('/v2/library/oci-image/manifests/v1', { username: 'alice', password: 'wrong' });
  const unknownUser = await get('/v2/library/oci-image/manifests/v1', { username: 'mallory', password: 'wrong' });
  assert.equal(wrongPassword.status, 401);
  assert.equal(wrongPassword.body, unknownUser.body, 'no hint of which part was wrong');
  assert.deepEqual(wrongPassword.headers['www-authenticate'], unknownUser.headers['www-authenticate']);
});

test('a user without a rule for an upstream: 403 DENIED on every route, before any upstream or storage access', options, async () => {
  await Promise.all([hub.clearRequests(), corp.clearRequests()]);
  await assert.rejects(skopeoPull(`${proxy.host}/library/oci-image:v1`, creds('bob')), skopeoError(/denied|403|not allowed/i));
  for (const path of [
    '/v2/library/oci-image/manifests/v1',
    '/v2/docker.io/library/oci-image/manifests/v1',
    '/v2/library/oci-image/manifests/v1?ns=docker.io',
    `/v2/library/oci-image/blobs/${hubImage.blobDigests[0]}`,
    '/v2/library/oci-image/tags/list',
    '/v2/uncached/thing/manifests/v9',
  ]) {
    const answer = await get(path, creds('bob'));
    assert.equal(answer.status, 403, path);
    assert.equal(JSON.parse(answer.body).errors[0].code, 'DENIED', path);
  }
  assert.equal((await get('/v2/team/oci-index/tags/list?ns=registry.corp%3A5000', creds('alice'))).status, 403);
  assert.deepEqual(await hub.settledRequests(), [], 'docker.io was never asked');
  assert.deepEqual(await corp.settledRequests(), [], 'the corporate registry was never asked');
  const tags = await get('/v2/library/oci-image/tags/list', creds('alice'));
  assert.equal(tags.status, 200);
  assert.deepEqual(JSON.parse(tags.body).tags, ['v1']);
});

test('_catalog lists only what the client may pull; anonymous gets 401', options, async () => {
  const catalog = async (who: keyof typeof USERS): Promise<string[]> => {
    const answer = await get('/v2/_catalog', creds(who));
    assert.equal(answer.status, 200);
    return (JSON.parse(answer.body) as { repositories: string[] }).repositories;
  };
  assert.deepEqual(await catalog('carol'), ['docker.io/library/oci-image', `${CORP}/team/oci-index`]);
  assert.deepEqual(await catalog('alice'), ['docker.io/library/oci-image']);
  assert.deepEqual(await catalog('bob'), [`${CORP}/team/oci-index`]);
  const anonymous = await get('/v2/_catalog');
  assert.equal(anonymous.status, 401);
});

test('the request lines name the user and carry no credentials', options, async () => {
  const lines = proxy.logs().filter((l) => l['msg'] === 'request');
  assert.ok(lines.some((l) => l['user'] === 'alice' && l['status'] === 200));
  assert.ok(lines.some((l) => l['user'] === 'bob' && l['status'] === 403));
  const raw = proxy.rawLogs();
  for (const [name, password] of Object.entries(USERS)) {
    assert.ok(!raw.includes(password), name);
    assert.ok(!raw.includes(basicAuth(name, password).slice(6)), name);
  }
});
