import test from 'node:test';
import assert from 'node:assert/strict';
import { isTrustedRealm, matchesConfiguredRealm } from '../../src/upstream/auth/realmTrust.js';

function trusted(upstream: string, realm: string, configured: readonly string[] = []): boolean {
  return isTrustedRealm(new URL(upstream), new URL(realm), configured);
}

test('Docker Hub: registry-1.docker.io trusts auth.docker.io (same registrable domain)', () => {
  assert.equal(trusted('https://registry-1.docker.io', 'https://auth.docker.io/token'), true);
  assert.equal(trusted('https://registry-1.docker.io', 'https://auth.docker.io./token'), true, 'trailing dot');
});

test('a realm on the upstream\'s own host is trusted', () => {
  assert.equal(trusted('https://ghcr.io', 'https://ghcr.io/token'), true);
  assert.equal(trusted('https://GHCR.io', 'https://ghcr.IO/token'), true);
});

test('other domains are not, however they are dressed up', () => {
  assert.equal(trusted('https://registry-1.docker.io', 'https://evil.com/token'), false);
  assert.equal(trusted('https://registry-1.docker.io', 'https://docker.io.evil.com/token'), false);
  assert.equal(trusted('https://registry-1.docker.io', 'https://auth.docker.io.evil.com/token'), false);
  assert.equal(trusted('https://registry-1.docker.io', 'https://dockerio.com/token'), false);
  assert.equal(trusted('https://ghcr.io', 'https://gcr.io/token'), false);
});

test('public suffixes, private section included, are not registrable domains', () => {
  assert.equal(trusted('https://registry.foo.co.uk', 'https://auth.foo.co.uk/token'), true);
  assert.equal(trusted('https://foo.co.uk', 'https://bar.co.uk/token'), false);
  assert.equal(trusted('https://alice.github.io', 'https://mallory.github.io/token'), false);
  assert.equal(trusted('https://a.corp.internal', 'https://b.corp.internal/token'), true);
});

test('single-label names, localhost and IP addresses: only the same host name', () => {
  assert.equal(trusted('http://registry:5000', 'http://registry:5001/token'), true);
  assert.equal(trusted('http://registry:5000', 'http://auth:5001/token'), false);
  assert.equal(trusted('http://localhost:5000', 'http://localhost:5001/token'), true);
  assert.equal(trusted('http://localhost:5000', 'http://127.0.0.1:5001/token'), false);
  assert.equal(trusted('http://127.0.0.1:5000', 'http://localhost:5001/token'), false);
  assert.equal(trusted('http://127.0.0.1:5000', 'http://127.0.0.1:5001/token'), true, 'ports are ignored');
  assert.equal(trusted('http://127.0.0.1:5000', 'http://127.0.0.2:5000/token'), false);
  assert.equal(trusted('http://10.0.0.1', 'http://10.0.0.2/token'), false);
  assert.equal(trusted('http://[::1]:5000', 'http://[::1]:5001/token'), true);
  assert.equal(trusted('http://[::1]:5000', 'http://[::2]:5000/token'), false);
});

test('ports are ignored for named hosts too', () => {
  assert.equal(trusted('https://registry.corp.example:5000', 'https://registry.corp.example:5001/auth'), true);
});

test('an HTTPS upstream never sends credentials to a plain-HTTP realm, unless configured', () => {
  assert.equal(trusted('https://registry-1.docker.io', 'http://auth.docker.io/token'), false);
  assert.equal(trusted('https://ghcr.io', 'http://ghcr.io/token'), false);
  assert.equal(trusted('https://ghcr.io', 'http://ghcr.io/token', ['http://ghcr.io']), true);
  assert.equal(trusted('http://registry.example.com', 'https://auth.example.com/token'), true, 'an upgrade is fine');
});

test('only http(s) realms', () => {
  assert.equal(trusted('https://ghcr.io', 'ftp://ghcr.io/token'), false);
  assert.equal(trusted('https://ghcr.io', 'file:///etc/passwd'), false);
});

test('configured realms: a URL matches its origin, and its path when it has one', () => {
  const upstream = 'https://registry.example.com';
  assert.equal(trusted(upstream, 'https://login.other.net/token', ['https://login.other.net']), true);
  assert.equal(trusted(upstream, 'https://login.other.net/token', ['https://login.other.net/']), true);
  assert.equal(trusted(upstream, 'https://login.other.net/token', ['https://login.other.net/token']), true);
  assert.equal(trusted(upstream, 'https://login.other.net/other', ['https://login.other.net/token']), false);
  assert.equal(trusted(upstream, 'https://login.other.net:8443/token', ['https://login.other.net']), false, 'origin includes the port');
  assert.equal(trusted(upstream, 'http://login.other.net/token', ['https://login.other.net']), false, 'origin includes the scheme');
  assert.equal(trusted(upstream, 'https://LOGIN.other.net/token', ['HTTPS://login.OTHER.net']), true);
  assert.equal(trusted(upstream, 'https://evil.com/token', ['https://login.other.net', 'https://x.y']), false);
});

test('configured realms: a host matches any port and scheme, host:port only that port', () => {
  const realm = (s: string): URL => new URL(s);
  assert.equal(matchesConfiguredRealm(realm('https://auth.corp/token'), 'auth.corp'), true);
  assert.equal(matchesConfiguredRealm(realm('http://auth.corp:8080/token'), 'auth.corp'), true);
  assert.equal(matchesConfiguredRealm(realm('http://auth.corp:8080/token'), 'auth.corp:8080'), true);
  assert.equal(matchesConfiguredRealm(realm('http://auth.corp:8081/token'), 'auth.corp:8080'), false);
  assert.equal(matchesConfiguredRealm(realm('http://auth.corp/token'), 'auth.corp:80'), true, 'default port spelled out');
  assert.equal(matchesConfiguredRealm(realm('https://auth.corp/token'), 'auth.corp:443'), true);
  assert.equal(matchesConfiguredRealm(realm('https://auth.corp/token'), 'auth.corp:80'), false);
  assert.equal(matchesConfiguredRealm(realm('https://sub.auth.corp/token'), 'auth.corp'), false, 'no implicit subdomains');
  assert.equal(matchesConfiguredRealm(realm('http://[::1]:5001/token'), '[::1]:5001'), true);
  assert.equal(matchesConfiguredRealm(realm('http://[::1]:5001/token'), '[::1]'), true);
});

test('configured realms: empty or unparseable entries match nothing', () => {
  const realm = new URL('https://auth.corp/token');
  for (const entry of ['', '   ', 'http://', '://auth.corp', 'auth.corp/token', 'user@auth.corp', 'not a host', '[zz']) {
    assert.equal(matchesConfiguredRealm(realm, entry), false, entry);
  }
});
