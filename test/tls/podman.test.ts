/**
 * Real podman pulling through pullthrough over HTTPS: a registries.conf
 * mirror (`127.0.0.1:P/<upstream>`, `insecure = false`), the run's CA through
 * `--cert-dir`, and an htpasswd user through `podman login`. The fallback
 * location is a closed port, so a pull that succeeds came through the mirror.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createTestCa, writeHtpasswd, type TestCa } from '../fixtures/certs.js';
import { freePort } from '../fixtures/net.js';
import { createPodman, registriesConf, type Podman } from '../fixtures/podman.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('openssl', 'htpasswd', 'docker-registry', 'skopeo', 'podman');
const options = { skip, timeout: 120_000 };
const REGISTRY = 'registry-a.test';
const PASSWORD = 'pat-Pw-1357';

let ca: TestCa;
let certDir: string;
let upstream: RunningRegistry;
let proxy: RunningProxy;
let podman: Podman;
let image: SeededImage;
/** The fallback location: closed, so a pull that works came through the mirror. */
let closedPort: number;

before(async () => {
  if (skip) return;
  [ca, upstream, certDir, closedPort] = await Promise.all([createTestCa(), startRegistry(), tempDir('podman-certs'), freePort()]);
  [[image]] = await Promise.all([seedImages(upstream.host, { kinds: ['oci-index'], repositoryPrefix: 'team', layerSize: 32 * 1024 })]);
  const server = await ca.issue({ commonName: '127.0.0.1', use: 'server' });
  await copyFile(ca.certFile, join(certDir, 'ca.crt'));
  const htpasswd = join(await tempDir('auth'), 'htpasswd');
  await writeHtpasswd(htpasswd, { pat: PASSWORD });
  proxy = await startProxy({
    upstreams: [{ name: REGISTRY, url: upstream.url }],
    tls: { certFile: server.certFile, keyFile: server.keyFile },
    auth: { htpasswd: { file: htpasswd, realm: 'pullthrough' } },
  });
  podman = await createPodman(registriesConf([{
    prefix: REGISTRY, location: `127.0.0.1:${closedPort}`, insecure: true, mirrors: [{ location: `${proxy.host}/${REGISTRY}`, insecure: false }],
  }]));
  await upstream.clearRequests();
}, { timeout: 120_000 });

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
});


const ref = (): string => `${REGISTRY}/${image.repository}:${image.tag}`;

test('podman login, then podman pull --cert-dir through the HTTPS mirror: the index digest checked, the user in the log', options, async () => {
  // podman sends a mirror the credentials stored for the mirror's host (`--creds` only reaches the registry itself).
  const login = await podman.run(['login', '--cert-dir', certDir, '--username', 'pat', '--password-stdin', proxy.host], { input: `${PASSWORD}\n` });
  assert.match(login.stdout, /Login Succeeded/i);
  await podman.pull(ref(), { extraArgs: ['--cert-dir', certDir] });
  assert.equal(await podman.imageDigest(ref()), image.digest);
  const requests = proxy.requests();
  assert.ok(requests.some((r) => r.url === `/v2/${REGISTRY}/${image.repository}/manifests/${image.tag}` && r.user === 'pat' && r.status === 200),
    JSON.stringify(requests));
  for (const r of requests.filter((r) => r.status !== 401)) assert.equal(r.user, 'pat', r.url);
  const seen = await upstream.settledRequests();
  assert.ok(seen.length > 0);
  assert.deepEqual(seen.filter((e) => !e.userAgent.startsWith('pullthrough')), []);
  assert.ok(!proxy.rawLogs().includes(PASSWORD));
});

test('without credentials, or without the CA, podman gets nothing from the mirror', options, async () => {
  const stranger = await createPodman(registriesConf([{
    prefix: REGISTRY, location: `127.0.0.1:${closedPort}`, insecure: true, mirrors: [{ location: `${proxy.host}/${REGISTRY}`, insecure: false }],
  }]));
  const anonymous = await stranger.run(['pull', '--cert-dir', certDir, ref()], { allowFailure: true });
  assert.notEqual(anonymous.code, 0);
  assert.match(anonymous.stderr, /unauthorized|authentication/i);
  const since = proxy.requests().length;
  const untrusted = await podman.run(['pull', '--creds', `pat:${PASSWORD}`, ref()], { allowFailure: true });
  assert.notEqual(untrusted.code, 0);
  assert.match(untrusted.stderr, /certificate|x509/i, untrusted.stderr);
  assert.deepEqual(proxy.requests().slice(since), [], 'no request got through an untrusted handshake');
});
