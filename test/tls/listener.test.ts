/**
 * The HTTPS listener and the htpasswd file, with node as the client and
 * certificates made by openssl for this run: the certificate is reloaded when
 * its files are replaced (new connections get the new one, open ones keep
 * theirs), a broken file keeps the old one, mutual TLS refuses clients at the
 * handshake, users removed from the htpasswd file are refused soon after, and
 * no secret reaches a log line.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTestCa, writeHtpasswd, type IssuedCert, type TestCa } from '../fixtures/certs.js';
import { basicAuth, httpsRequest, keepAliveAgent } from '../fixtures/https.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('openssl', 'htpasswd');
const options = { skip, timeout: 60_000 };

/** Never contacted: these tests stop at the listener. */
const UPSTREAM = { name: 'docker.io', url: 'http://127.0.0.1:9' };
const PASSWORDS = { alice: 'alice-secret-Pw1', bob: 'bob-secret-Pw2' };

let ca: TestCa;
let otherCa: TestCa;
let dir: string;
let first: IssuedCert;
let second: IssuedCert;
let httpsProxy: RunningProxy;
let mtlsProxy: RunningProxy;
/** Mutual TLS `request`, with a rule for one certificate CN. */
let requestProxy: RunningProxy;
let htpasswdFile: string;
const proxies: RunningProxy[] = [];

/** Replaces the listener's certificate and key the way renewals do: new files renamed over the old ones. */
async function install(cert: IssuedCert): Promise<void> {
  await copyFile(cert.certFile, join(dir, 'tls.crt.new'));
  await copyFile(cert.keyFile, join(dir, 'tls.key.new'));
  await rename(join(dir, 'tls.key.new'), join(dir, 'tls.key'));
  await rename(join(dir, 'tls.crt.new'), join(dir, 'tls.crt'));
}

/** Polls until `check` holds: a file watch is an event, not a timer; the deadline is a guard against hangs. */
async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!await check()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

before(async () => {
  if (skip) return;
  [ca, otherCa, dir] = await Promise.all([createTestCa(), createTestCa('another CA'), tempDir('tls')]);
  [first, second] = await Promise.all([
    ca.issue({ commonName: '127.0.0.1', use: 'server', name: 'first' }),
    ca.issue({ commonName: '127.0.0.1', use: 'server', name: 'second' }),
  ]);
  await install(first);
  htpasswdFile = join(dir, 'htpasswd');
  await writeHtpasswd(htpasswdFile, PASSWORDS);
  httpsProxy = await startProxy({
    upstreams: [UPSTREAM],
    tls: { certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key') },
    auth: { htpasswd: { file: htpasswdFile, realm: 'test realm' } },
  });
  const server = await ca.issue({ commonName: '127.0.0.1', use: 'server', name: 'mtls-server' });
  mtlsProxy = await startProxy({
    upstreams: [UPSTREAM],
    tls: { certFile: server.certFile, keyFile: server.keyFile, clientCaFile: ca.certFile, clientAuth: 'require' },
  });
  requestProxy = await startProxy({
    upstreams: [UPSTREAM],
    tls: { certFile: server.certFile, keyFile: server.keyFile, clientCaFile: ca.certFile, clientAuth: 'request' },
    auth: { rules: [{ users: ['CN=ci-runner'], repositories: ['docker.io/**'] }] },
  });
  proxies.push(httpsProxy, mtlsProxy, requestProxy);
});

after(async () => {
  for (const p of proxies) await p.stop();
});

test('HTTPS with the configured certificate; TLS below 1.2 is refused', options, async () => {
  assert.ok(httpsProxy.url.startsWith('https://'));
  const answer = await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile, headers: { authorization: basicAuth('alice', PASSWORDS.alice) } });
  assert.equal(answer.status, 200);
  assert.equal(answer.serial, first.serial);
  assert.ok(['TLSv1.2', 'TLSv1.3'].includes(answer.socket.getProtocol() ?? ''), String(answer.socket.getProtocol()));
  const old = await new Promise<string>((resolve) => {
    const socket = connect({
      host: '127.0.0.1', port: Number(httpsProxy.host.split(':')[1]), ca: readFileSync(ca.certFile), minVersion: 'TLSv1', maxVersion: 'TLSv1.1',
      // OpenSSL 3 refuses TLS 1.1 at its default security level; level 0 lets this client offer it.
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    socket.once('secureConnect', () => { socket.destroy(); resolve('connected'); });
    socket.once('error', (err) => resolve((err as NodeJS.ErrnoException).code ?? err.message));
  });
  assert.notEqual(old, 'connected');
});

test('replaced certificate files: a new connection gets the new serial, an open keep-alive connection goes on with the old one', options, async () => {
  const agent = keepAliveAgent();
  const auth = { authorization: basicAuth('alice', PASSWORDS.alice) };
  const before = await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile, agent, headers: auth });
  assert.equal(before.serial, first.serial);
  await install(second);
  await eventually('a new connection sees the new certificate', async () =>
    (await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile, headers: auth })).serial === second.serial);
  const again = await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile, agent, headers: auth });
  assert.equal(again.status, 200);
  assert.equal(again.reusedSocket, true, 'the same keep-alive connection');
  assert.equal(again.socket, before.socket);
  assert.equal(again.serial, first.serial, 'an open connection keeps the certificate it was made with');
  agent.destroy();
  assert.ok(httpsProxy.logs().some((l) => l['msg'] === 'TLS certificate reloaded'));
});

test('a certificate file that does not parse is logged and the old certificate stays', options, async () => {
  await install(second);
  await eventually('the second certificate is in use', async () =>
    (await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile })).serial === second.serial);
  await writeFile(join(dir, 'broken.crt'), '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n');
  await rename(join(dir, 'broken.crt'), join(dir, 'tls.crt'));
  await eventually('the broken file is reported', () =>
    httpsProxy.logs().some((l) => l['msg'] === 'changed TLS files do not make a usable certificate: keeping the old one'));
  const answer = await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile });
  assert.equal(answer.serial, second.serial);
  assert.equal(answer.status, 401, 'still served, and still asks for credentials');
  await install(second);
});

test('htpasswd: a user removed from the file is refused soon after; a wrong password never passes', options, async () => {
  const bob = { authorization: basicAuth('bob', PASSWORDS.bob) };
  assert.equal((await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile, headers: bob })).status, 200);
  const wrong = await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile, headers: { authorization: basicAuth('bob', 'guess') } });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.headers['www-authenticate'], 'Basic realm="test realm"');
  assert.equal(JSON.parse(wrong.body).errors[0].code, 'UNAUTHORIZED');
  await writeHtpasswd(htpasswdFile, { alice: PASSWORDS.alice });
  await eventually('bob is refused', async () =>
    (await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile, headers: bob })).status === 401, 5_000);
  const alice = await httpsRequest(`${httpsProxy.url}/v2/`, { caFile: ca.certFile, headers: { authorization: basicAuth('alice', PASSWORDS.alice) } });
  assert.equal(alice.status, 200);
  await eventually('the request line names the user', () =>
    httpsProxy.logs().some((l) => l['msg'] === 'request' && l['status'] === 200 && l['user'] === 'alice'));
  assert.ok(httpsProxy.logs().filter((l) => l['msg'] === 'request' && l['status'] === 401).every((l) => l['user'] === undefined));
  await writeHtpasswd(htpasswdFile, PASSWORDS);
});

/** Connects to the mTLS listener and sends `GET /v2/`; resolves with the status or the error code. */
function mtlsAttempt(client?: { certFile: string; keyFile: string }): Promise<string> {
  return httpsRequest(`${mtlsProxy.url}/v2/`, { caFile: ca.certFile, ...(client ? { client } : {}) })
    .then((a) => String(a.status), (err: NodeJS.ErrnoException) => err.code ?? err.message);
}

test('mutual TLS "require": no client certificate, or one from another CA, fails the handshake; a certificate from the CA is the client\'s name', options, async () => {
  const noCert = await mtlsAttempt();
  assert.match(noCert, /CERTIFICATE_REQUIRED|ECONNRESET|HANDSHAKE/, noCert);
  const stranger = await otherCa.issue({ commonName: 'stranger', use: 'client' });
  const strange = await mtlsAttempt(stranger);
  assert.match(strange, /UNKNOWN_CA|ECONNRESET|HANDSHAKE|BAD_CERTIFICATE/, strange);
  const runner = await ca.issue({ commonName: 'ci-runner', use: 'client' });
  assert.equal(await mtlsAttempt(runner), '200');
  const lines = mtlsProxy.logs().filter((l) => l['msg'] === 'request');
  assert.equal(lines.length, 1, 'the refused clients never got to send a request');
  assert.equal(lines[0]!['user'], 'CN=ci-runner');
});

test('mutual TLS "request": a verified certificate is an identity for the rules; none, or one from another CA, is anonymous', options, async () => {
  const attempt = (client?: { certFile: string; keyFile: string }): Promise<number> =>
    httpsRequest(`${requestProxy.url}/v2/library/alpine/manifests/v1`, { caFile: ca.certFile, ...(client ? { client } : {}) }).then((a) => a.status);
  const [runner, stranger, other] = await Promise.all([
    ca.issue({ commonName: 'ci-runner', use: 'client', name: 'request-runner' }),
    otherCa.issue({ commonName: 'ci-runner', use: 'client', name: 'request-stranger' }),
    ca.issue({ commonName: 'someone-else', use: 'client' }),
  ]);
  assert.equal(await attempt(), 401, 'no certificate: anonymous');
  assert.equal(await attempt(stranger), 401, 'the same CN from another CA: anonymous');
  assert.equal(await attempt(other), 403, 'a verified certificate without a rule: denied');
  const allowed = await attempt(runner);
  assert.ok(![401, 403].includes(allowed), `the rule's CN passes (then the upstream, closed here, answers): ${allowed}`);
});

test('no password, Authorization value or htpasswd line in any log line', options, async () => {
  const raw = proxies.map((p) => p.rawLogs()).join('\n');
  assert.ok(raw.length > 0);
  const htpasswdLines = readFileSync(htpasswdFile, 'utf8').split('\n').filter(Boolean);
  for (const secret of [...Object.values(PASSWORDS), basicAuth('alice', PASSWORDS.alice).slice(6), basicAuth('bob', 'guess').slice(6), ...htpasswdLines,
    ...htpasswdLines.map((l) => l.split(':')[1]!)]) {
    assert.ok(!raw.includes(secret), `a secret in the logs: ${secret.slice(0, 6)}...`);
  }
});

test('the admin listener takes the same tls block: /metrics over HTTPS there, with the certificate of admin.tls', options, async () => {
  const admin = await ca.issue({ commonName: 'pullthrough admin', use: 'server', name: 'admin' });
  const proxy = await startProxy({
    upstreams: [UPSTREAM],
    admin: { listen: { port: 0 }, tls: { certFile: admin.certFile, keyFile: admin.keyFile } },
  });
  proxies.push(proxy);
  assert.match(proxy.adminUrl, /^https:\/\//);
  const metrics = await httpsRequest(`${proxy.adminUrl}/metrics`, { caFile: ca.certFile });
  assert.equal(metrics.status, 200);
  assert.equal(metrics.serial, admin.serial, 'the admin listener presents the admin certificate');
  assert.match(metrics.body, /^# HELP pullthrough_/m);
  const livez = await httpsRequest(`${proxy.adminUrl}/livez`, { caFile: ca.certFile });
  assert.equal(livez.status, 200);
  // A client that does not trust the admin certificate's CA gets no answer at all.
  await assert.rejects(httpsRequest(`${proxy.adminUrl}/metrics`, { caFile: otherCa.certFile }));
});
