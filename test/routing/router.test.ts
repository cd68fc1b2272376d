/**
 * The router alone, in memory: which configured upstream serves a request
 * (`?ns=`, a path prefix, an alias, the default), Docker Hub's `library/`,
 * and what it refuses. No server, no upstream: settings from the config
 * loader, so they are what the CLI would build.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { resolveConfig } from '../../src/config/load.js';
import { RegistryError } from '../../src/registry/errors.js';
import { UpstreamRouter } from '../../src/routing/router.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

function routerOf(upstreams: Record<string, unknown>[], defaultUpstream?: string): UpstreamRouter {
  const config = resolveConfig({
    listen: { host: '127.0.0.1', port: 0 },
    storage: { root: '/nonexistent/pullthrough-router-test' },
    upstreams,
    ...(defaultUpstream ? { defaultUpstream } : {}),
  }, 'test');
  return new UpstreamRouter(config.upstreams, config.defaultUpstream);
}

const router = routerOf([
  { name: 'docker.io', url: 'https://registry-1.docker.io' },
  { name: 'ghcr.io', url: 'https://ghcr.io' },
  { name: 'registry.test:5000', url: 'http://127.0.0.1:5999', aliases: ['alias.test', 'Mixed.Case.Test'] },
], 'docker.io');

/** `<upstream> <repository>` of a route, for compact assertions. */
function where(pathName: string, ns?: string): string {
  const { upstream, repository } = router.route(pathName, ns);
  assert.equal(repository.upstream, upstream.name, 'the repository is namespaced by the upstream that serves it');
  return `${upstream.name} ${repository.name}`;
}

function refusal(fn: () => unknown): RegistryError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RegistryError, `a typed error, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a refusal');
}

test('?ns= picks the upstream by name or alias, case-insensitively', () => {
  assert.equal(where('org/app', 'ghcr.io'), 'ghcr.io org/app');
  assert.equal(where('org/app', 'registry.test:5000'), 'registry.test:5000 org/app');
  assert.equal(where('org/app', 'alias.test'), 'registry.test:5000 org/app');
  assert.equal(where('org/app', 'mixed.case.test'), 'registry.test:5000 org/app');
  assert.equal(where('org/app', 'GHCR.IO'), 'ghcr.io org/app');
});

test('?ns= with a leading segment naming the same upstream drops it (override_path); another upstream\'s name stays part of the name', () => {
  assert.equal(where('ghcr.io/org/app', 'ghcr.io'), 'ghcr.io org/app');
  assert.equal(where('alias.test/org/app', 'registry.test:5000'), 'registry.test:5000 org/app');
  // ns decides: ghcr.io is not the upstream it names, so here it is only the first component of a name there.
  assert.equal(where('ghcr.io/org/app', 'registry.test:5000'), 'registry.test:5000 ghcr.io/org/app');
});

test('an empty ?ns= is no ns', () => {
  assert.equal(where('ghcr.io/org/app', ''), 'ghcr.io org/app');
  assert.equal(where('alpine', ''), 'docker.io library/alpine');
});

test('a path prefix naming an upstream or alias routes there, and is not part of the repository name', () => {
  assert.equal(where('ghcr.io/org/app'), 'ghcr.io org/app');
  assert.equal(where('registry.test:5000/team/tool'), 'registry.test:5000 team/tool');
  assert.equal(where('alias.test/team/tool'), 'registry.test:5000 team/tool');
  assert.equal(where('docker.io/bitnami/redis'), 'docker.io bitnami/redis');
});

test('anything else goes to the default upstream', () => {
  assert.equal(where('org/app'), 'docker.io org/app');
  assert.equal(where('a/b/c/d'), 'docker.io a/b/c/d');
  const other = routerOf([
    { name: 'a.test', url: 'http://127.0.0.1:1' },
    { name: 'b.test', url: 'http://127.0.0.1:2' },
  ], 'b.test');
  assert.equal(other.defaultUpstream.name, 'b.test', 'the configured default, not the first upstream');
  assert.equal(other.route('org/app', undefined).repository.upstream, 'b.test');
});

test('Docker Hub: a one-segment name is under library/, on every route; other upstreams keep names as they are', () => {
  assert.equal(where('alpine'), 'docker.io library/alpine');
  assert.equal(where('docker.io/alpine'), 'docker.io library/alpine');
  assert.equal(where('alpine', 'docker.io'), 'docker.io library/alpine');
  assert.equal(where('library/alpine'), 'docker.io library/alpine');
  assert.equal(where('bitnami/redis'), 'docker.io bitnami/redis');
  assert.equal(where('ghcr.io/app'), 'ghcr.io app');
  assert.equal(where('app', 'registry.test:5000'), 'registry.test:5000 app');
});

test('an upstream marked dockerHub gets library/ too, whatever its name', () => {
  const hub = routerOf([{ name: 'hub.mirror.test', url: 'http://127.0.0.1:3', dockerHub: true }]);
  assert.equal(hub.route('alpine', undefined).repository.name, 'library/alpine');
});

test('an ?ns= naming no configured upstream is refused with NAME_UNKNOWN, naming what is configured', () => {
  const err = refusal(() => router.route('org/app', 'evil.example.com'));
  assert.equal(err.code, 'NAME_UNKNOWN');
  assert.match(err.message, /evil\.example\.com is not configured/);
  assert.match(err.message, /docker\.io, ghcr\.io, registry\.test:5000/);
});

test('a first segment that can only be a registry host, but is not configured, is refused, never sent to the default upstream', () => {
  for (const path of ['quay.io/org/app', 'localhost/app', 'localhost:5000/app', 'internal:443/app', '10.0.0.1/app']) {
    const err = refusal(() => router.route(path, undefined));
    assert.equal(err.code, 'NAME_UNKNOWN', path);
  }
  // A single segment with a dot is a repository name, not a host: it goes to the default upstream.
  assert.equal(where('my.app'), 'docker.io library/my.app');
});

test('names the grammar refuses are NAME_INVALID, also behind a valid prefix', () => {
  for (const path of ['Org/App', 'org//app', '../etc/passwd', 'org/app/', '-app', 'ghcr.io/Org/app']) {
    assert.equal(refusal(() => router.route(path, undefined)).code, 'NAME_INVALID', path);
  }
});

test('image references: registry, tag and digest', () => {
  const plain = router.parseReference('alpine');
  assert.equal(`${plain.route.upstream.name} ${plain.route.repository.name}`, 'docker.io library/alpine');
  assert.equal(plain.tag, undefined);
  assert.equal(plain.digest, undefined);

  const tagged = router.parseReference('ghcr.io/org/app:1.2');
  assert.equal(`${tagged.route.upstream.name} ${tagged.route.repository.name}`, 'ghcr.io org/app');
  assert.equal(tagged.tag, '1.2');

  const pinned = router.parseReference(`registry.test:5000/team/tool:v1@${DIGEST}`);
  assert.equal(`${pinned.route.upstream.name} ${pinned.route.repository.name}`, 'registry.test:5000 team/tool');
  assert.equal(pinned.tag, 'v1');
  assert.equal(pinned.digest, DIGEST);

  // A port is not a tag.
  const port = router.parseReference('registry.test:5000/team/tool');
  assert.equal(port.tag, undefined);
  assert.equal(port.route.repository.name, 'team/tool');
  assert.equal(router.parseReference(`  alias.test/team/tool@${DIGEST}  `).route.upstream.name, 'registry.test:5000');

  assert.equal(refusal(() => router.parseReference('quay.io/org/app:1')).code, 'NAME_UNKNOWN');
  assert.equal(refusal(() => router.parseReference('alpine@sha256:nothex')).code, 'DIGEST_INVALID');
  assert.equal(refusal(() => router.parseReference('alpine:bad tag')).code, 'TAG_INVALID');
});

test('byName looks up names and aliases only', () => {
  assert.equal(router.byName('ALIAS.test')?.name, 'registry.test:5000');
  assert.equal(router.byName('registry-1.docker.io'), undefined, 'an upstream URL host is not a name');
});

test('a default upstream that is not configured is a start-up error', () => {
  const config = resolveConfig({
    listen: { host: '127.0.0.1', port: 0 }, storage: { root: '/nonexistent' }, upstreams: [{ name: 'a.test', url: 'http://127.0.0.1:1' }],
  }, 'test');
  assert.throws(() => new UpstreamRouter(config.upstreams, 'b.test'), /default upstream b\.test is not configured/);
});
