/**
 * The real dockerd pulling through pullthrough over HTTPS, with no
 * `insecure-registries`: `registry-mirrors: ["https://[::1]:P"]`, the run's
 * CA in `/etc/docker/certs.d/[::1]:P/ca.crt`, and an htpasswd user.
 *
 * On `[::1]`, not 127.0.0.1: dockerd always counts 127.0.0.0/8 as an
 * insecure registry, where it skips certificate checks and never reads
 * certs.d, so a test there would pass without any TLS set-up at all.
 *
 * dockerd never sends a mirror the credentials of `docker login <mirror>`:
 * for a mirror it uses Docker Hub's (it pings the mirror, gets 401, and falls
 * back to Docker Hub). So the daemon proves who it is with a client
 * certificate in the same certs.d directory (`client.cert`, `client.key`),
 * which it presents to the mirror. `docker login` works against the Basic
 * challenge (for pulls that name pullthrough as the registry; docker 20.10
 * cannot write such a reference with an IPv6 literal, so this test stops at
 * the login).
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createTestCa, writeHtpasswd, type TestCa } from '../fixtures/certs.js';
import { startDockerd, type RunningDockerd } from '../fixtures/dockerd.js';
import { makeImage, writeOciLayout, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { pushLayout } from '../fixtures/seed.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('openssl', 'htpasswd', 'dockerd', 'docker', 'docker-registry', 'skopeo');
const options = { skip, timeout: 120_000 };
const PASSWORD = 'dora-Pw-2468';

let ca: TestCa;
let hub: RunningRegistry;
let proxy: RunningProxy;
/** The same, without mutual TLS: `docker login` and pulls that name it. */
let registry: RunningProxy;
let dockerd: RunningDockerd;
let image: BuiltImage;

before(async () => {
  if (skip) return;
  [ca, hub] = await Promise.all([createTestCa(), startRegistry()]);
  image = makeImage({ layerSizes: [32 * 1024] });
  const layout = await tempDir('alpine-layout');
  await writeOciLayout(layout, [{ ref: 'img', image }]);
  await pushLayout(layout, 'img', `${hub.host}/library/alpine:v1`);
  const server = await ca.issue({ commonName: '127.0.0.1', use: 'server' });
  const htpasswd = join(await tempDir('auth'), 'htpasswd');
  await writeHtpasswd(htpasswd, { dora: PASSWORD });
  const start = (mutual: boolean): Promise<RunningProxy> => startProxy({
    upstreams: [{ name: 'docker.io', url: hub.url }],
    listenHost: '::1',
    tls: { certFile: server.certFile, keyFile: server.keyFile, ...(mutual ? { clientCaFile: ca.certFile, clientAuth: 'request' } : {}) },
    auth: {
      htpasswd: { file: htpasswd, realm: 'pullthrough' },
      rules: [{ users: ['dora', 'CN=docker-node-1'], repositories: ['docker.io/**'] }],
    },
  });
  // The mirror knows the daemon by its certificate; the registry of the login test asks for a password.
  [proxy, registry] = await Promise.all([start(true), start(false)]);
  const node = await ca.issue({ commonName: 'docker-node-1', use: 'client' });
  dockerd = await startDockerd({ registryMirrors: [proxy.url] });
  await dockerd.trust(proxy.host, ca.certFile, node);
  await dockerd.trust(registry.host, ca.certFile);
  await hub.clearRequests();
}, { timeout: 120_000 });

after(async () => {
  await dockerd?.stop();
  await proxy?.stop();
  await registry?.stop();
  await hub?.stop();
});


test('registry-mirrors over HTTPS (certs.d ca.crt, no insecure-registries): docker pull alpine is served by pullthrough', options, async () => {
  const since = proxy.requests().length;
  const pulled = await dockerd.pull('alpine:v1');
  assert.equal(pulled.digest, image.digest, `${pulled.output}\n${dockerd.logs().slice(-3000)}`);
  assert.equal(pulled.id, image.config.digest);
  const requests = proxy.requests().slice(since);
  assert.ok(requests.some((r) => r.url === `/v2/library/alpine/manifests/${image.digest}` && r.status === 200), JSON.stringify(requests));
  for (const r of requests) {
    assert.equal(r.status, 200, `${r.method} ${r.url}`);
    assert.equal(r.user, 'CN=docker-node-1', 'the daemon is known by its client certificate');
  }
  const seen = await hub.settledRequests();
  assert.deepEqual(seen.filter((e) => !e.userAgent.startsWith('pullthrough')), [], 'only pullthrough talks to the upstream');
});

test('docker login with an htpasswd user over HTTPS; a wrong password fails', options, async () => {
  const wrong = await dockerd.docker(['login', registry.host, '--username', 'dora', '--password-stdin'], { allowFailure: true, input: 'wrong\n' });
  assert.notEqual(wrong.code, 0);
  assert.match(wrong.stderr, /401|unauthorized/i);
  const login = await dockerd.docker(['login', registry.host, '--username', 'dora', '--password-stdin'], { input: `${PASSWORD}\n` });
  assert.match(login.stdout, /Login Succeeded/);
  const requests = registry.requests();
  assert.ok(requests.some((r) => r.url === '/v2/' && r.status === 200 && r.user === 'dora'), JSON.stringify(requests));
  assert.ok(requests.some((r) => r.url === '/v2/' && r.status === 401 && r.user === undefined), 'the challenge first');
  assert.ok(!registry.rawLogs().includes(PASSWORD));
});
