/**
 * A real Distribution 2.8 registry with htpasswd (bcrypt) Basic auth. With
 * the right password (from `passwordFile`) pulls work; with a wrong one the
 * client gets 403 DENIED saying the configured credentials were rejected
 * (and without any, that some are needed), and neither the answer nor
 * pullthrough's log carries a password or a Basic header value.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { runCommand, tempDir, toolSkip } from '../fixtures/tools.js';
import { ask, basicHeader, warnings } from '../fixtures/upstreamAuth.js';

const skip = toolSkip('docker-registry', 'skopeo', 'htpasswd');
const GOOD_NAME = 'basic.test';
const BAD_NAME = 'basic-wrong.test';
const ANON_NAME = 'basic-none.test';
const MIRROR = { username: 'mirror', password: `basic-${randomBytes(12).toString('hex')}` };
const WRONG = { username: 'mirror', password: `wrong-${randomBytes(12).toString('hex')}` };

let registry: RunningRegistry;
let seeded: SeededImage[];
let good: RunningProxy;
let bad: RunningProxy;
let anon: RunningProxy;

/** Strings that must never reach a client or a log line. */
const SECRETS = [
  MIRROR.password, WRONG.password,
  basicHeader(MIRROR).slice('Basic '.length), basicHeader(WRONG).slice('Basic '.length),
];

function assertNoSecret(text: string, where: string): void {
  for (const secret of SECRETS) assert.ok(!text.includes(secret), `${where} contains a secret`);
}

before(async () => {
  if (skip) return;
  registry = await startRegistry({ htpasswd: MIRROR });
  seeded = await seedImages(registry.host, { creds: MIRROR, kinds: ['oci-image', 'docker-list'], layerSize: 64 * 1024 });
  const dir = await tempDir('basic-secret');
  const passwordFile = join(dir, 'password');
  await writeFile(passwordFile, `${MIRROR.password}\n`, { mode: 0o600 });
  [good, bad, anon] = await Promise.all([
    startProxy({ upstreams: [{ name: GOOD_NAME, url: registry.url, credentials: { username: MIRROR.username, passwordFile } }] }),
    startProxy({ upstreams: [{ name: BAD_NAME, url: registry.url, credentials: WRONG }] }),
    startProxy({ upstreams: [{ name: ANON_NAME, url: registry.url }] }),
  ]);
});

after(async () => {
  await good?.stop();
  await bad?.stop();
  await anon?.stop();
  await registry?.stop();
});

test('with the password from passwordFile, skopeo pulls through pullthrough from a Basic-auth upstream', { skip }, async () => {
  for (const image of seeded) {
    const pulled = await pullWithSkopeo(`${good.host}/${image.repository}:${image.tag}`, await tempDir(`basic-${image.kind}`));
    assert.equal(pulled.manifestDigest, image.digest, image.kind);
    assert.deepEqual(pulled.blobDigests.sort(), [...image.blobDigests].sort(), image.kind);
  }
  const seen = await registry.settledRequests();
  assert.ok(seen.some((e) => e.status === 200 && e.path.startsWith('/v2/seed/')), 'the upstream served pullthrough');
  assertNoSecret(good.rawLogs(), 'the log');
});

test('a wrong password: 403 DENIED naming the upstream, no secret in the answer or the log', { skip }, async () => {
  const image = seeded[0]!;
  const paths = [
    `/v2/${image.repository}/manifests/${image.tag}`,
    `/v2/${image.repository}/manifests/${image.digest}`,
    `/v2/${image.repository}/blobs/${image.blobDigests[0]!}`,
  ];
  for (const path of paths) {
    const answer = await ask(bad, path);
    assert.equal(answer.status, 403, `${path}: ${answer.body.toString()}`);
    assert.equal(answer.code, 'DENIED', path);
    assert.match(answer.message ?? '', new RegExp(`^upstream ${BAD_NAME.replace('.', '\\.')} rejected the configured credentials \\(401 to Basic authentication at ${registry.url}${path}\\)$`),
      `${path}: the message names the upstream, the URL and what came back`);
    assert.equal(answer.headers['www-authenticate'], undefined, 'no challenge: the client has nothing to log in to');
    assertNoSecret(`${JSON.stringify(answer.headers)}\n${answer.body.toString('utf8')}`, `the answer to ${path}`);
  }
  // A real client shows the reason too.
  const inspect = await runCommand('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${bad.host}/${image.repository}:${image.tag}`], { allowFailure: true });
  assert.notEqual(inspect.code, 0);
  assert.match(inspect.stderr, /denied/i);
  assert.ok(inspect.stderr.includes(BAD_NAME), inspect.stderr);
  assertNoSecret(inspect.stderr, 'skopeo\'s error');
  assertNoSecret(bad.rawLogs(), 'the log');
  // One warning for the cause, not one per request.
  const rejected = warnings(bad).filter((w) => w['cause'] === 'credentials-rejected');
  assert.equal(rejected.length, 1, JSON.stringify(warnings(bad)));
  assert.equal(rejected[0]!['upstream'], BAD_NAME);
});

test('no credentials for a Basic-auth upstream: 403 DENIED saying that some are needed, not that they were rejected', { skip }, async () => {
  const image = seeded[0]!;
  const answer = await ask(anon, `/v2/${image.repository}/manifests/${image.tag}`);
  assert.equal(answer.status, 403);
  assert.equal(answer.code, 'DENIED');
  assert.match(answer.message ?? '', new RegExp(`^upstream ${ANON_NAME.replace('.', '\\.')} wants Basic credentials \\(401 at .*\\), and none are configured for it`));
  assert.equal(warnings(anon).filter((w) => w['cause'] === 'credentials-missing').length, 1);
});
