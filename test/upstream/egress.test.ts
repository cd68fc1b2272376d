/**
 * The egress policy on its own: which addresses are public, which hosts the
 * configuration allows, and the connector refusing before any byte is sent
 * (an IP literal) or after the lookup (a name), with servers on loopback
 * recording whether anything reached them.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request } from '../../src/upstream/undici.js';
import { EgressPolicy, EgressRefused, isPublicAddress } from '../../src/upstream/egress.js';
import { serveOnLoopback } from '../fixtures/net.js';

test('public and non-public addresses, IPv4 and IPv6, mapped forms included', () => {
  for (const address of ['8.8.8.8', '1.1.1.1', '151.101.1.69', '2606:4700::1111', '2a00:1450:4001::200e']) {
    assert.ok(isPublicAddress(address), address);
  }
  for (const address of [
    '127.0.0.1', '127.0.0.2', '0.0.0.0', '10.1.2.3', '100.64.0.1', '169.254.169.254', '172.16.0.1', '172.31.255.255',
    '192.168.1.1', '198.18.0.1', '224.0.0.1', '255.255.255.255', '::1', '::', 'fc00::1', 'fd12:3456::1', 'fe80::1',
    '::ffff:127.0.0.1', '::ffff:8.8.8.8', '::ffff:7f00:2', '64:ff9b::7f00:1', '2002:7f00:1::', 'ff02::1', 'not-an-ip',
  ]) {
    assert.equal(isPublicAddress(address), false, address);
  }
});

test('hosts the configuration names may be anywhere; every other host only public', () => {
  const policy = new EgressPolicy({ allowedHosts: ['registry.corp', '*.s3.corp', 'https://auth.corp:8443/token', '[fd00::5]'], allowPrivate: false });
  assert.equal(policy.refusal('registry.corp', '10.0.0.5'), undefined);
  assert.equal(policy.refusal('REGISTRY.corp.', '10.0.0.5'), undefined, 'case and a trailing dot do not matter');
  assert.equal(policy.refusal('bucket.s3.corp', '10.0.0.6'), undefined);
  assert.equal(policy.refusal('auth.corp', '10.0.0.7'), undefined);
  assert.equal(policy.refusal('fd00::5', 'fd00::5'), undefined);
  assert.equal(policy.refusal('cdn.example.com', '151.101.1.69'), undefined, 'a public CDN');
  assert.ok(policy.refusal('evil.example.com', '10.0.0.5') instanceof EgressRefused);
  assert.ok(policy.refusal('s3.corp.evil.com', '10.0.0.5'), '*.s3.corp is a suffix, not a substring');
  const open = new EgressPolicy({ allowedHosts: [], allowPrivate: true });
  assert.equal(open.refusal('anything', '127.0.0.2'), undefined, 'allowPrivateRedirects');
});

test('the connector refuses an IP literal and a name resolving to loopback before anything reaches them; the allowed host connects', async () => {
  const seen: string[] = [];
  const server = await serveOnLoopback((req, res) => {
    seen.push(req.url ?? '');
    res.end('ok');
  });
  const agent = new Agent({ connect: new EgressPolicy({ allowedHosts: ['127.0.0.1'], allowPrivate: false }).connector({ timeout: 2000 }) });
  try {
    for (const url of [`http://localhost:${server.port}/by-name`, `http://127.0.0.3:${server.port}/other-loopback`]) {
      await assert.rejects(request(url, { dispatcher: agent }), (err: unknown) => err instanceof EgressRefused, url);
    }
    assert.deepEqual(seen, []);
    const res = await request(`http://127.0.0.1:${server.port}/allowed`, { dispatcher: agent });
    assert.equal(await res.body.text(), 'ok');
    assert.deepEqual(seen, ['/allowed']);
  } finally {
    await agent.close();
    await server.stop();
  }
});
