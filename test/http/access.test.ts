/**
 * Client access without real clients (app.inject, a fake clock): the rule
 * grammar and order, the configuration checks, slowed-down guessing, the
 * anonymous cases, and the warning for Basic over plain HTTP.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/settings.js';
import { FailureThrottle } from '../../src/http/auth/failures.js';
import { globToRegExp, ReadRules } from '../../src/http/auth/rules.js';
import { parseHtpasswd } from '../../src/http/auth/htpasswd.js';
import type { RepositoryName } from '../../src/registry/names.js';
import { writeHtpasswd } from '../fixtures/certs.js';
import { FakeClock } from '../fixtures/clock.js';
import { basicAuth } from '../fixtures/https.js';
import { startProxy, testConfigDocument, type RunningProxy } from '../fixtures/proxy.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const UPSTREAMS = [
  { name: 'docker.io', url: 'http://127.0.0.1:9' },
  { name: 'registry.corp:5000', url: 'http://127.0.0.1:9', aliases: ['registry.corp'] },
];
const repo = (upstream: string, name: string): { upstream: string; name: RepositoryName } => ({ upstream, name: name as RepositoryName });

test('repository globs: * stays within a path component, ** spans any number of them', () => {
  const cases: [string, string, boolean][] = [
    ['*', 'alpine', true], ['*', 'library/alpine', false],
    ['library/*', 'library/alpine', true], ['library/*', 'library/a/b', false],
    ['**', 'a/b/c', true], ['team/**', 'team/app', true], ['team/**', 'team/x/y', true], ['team/**', 'team', true], ['team/**', 'teamx/app', false],
    ['**/app', 'app', true], ['**/app', 'a/b/app', true], ['a/**/z', 'a/z', true], ['a/**/z', 'a/b/c/z', true], ['a/**/z', 'a/b/c', false],
    ['app-*', 'app-1', true], ['app.x', 'appAx', false],
  ];
  for (const [glob, name, expected] of cases) assert.equal(globToRegExp(glob).test(name), expected, `${glob} ~ ${name}`);
});

test('rules: the first rule naming the client and matching the repository decides; none matching is no', () => {
  const config = resolveConfig(testConfigDocument({
    upstreams: UPSTREAMS,
  }, '/tmp/unused'), 'test');
  const document = {
    ...testConfigDocument({ upstreams: UPSTREAMS }, '/tmp/unused'),
    auth: {
      rules: [
        { users: ['alice'], repositories: ['docker.io/library/secret'], access: 'none' },
        { users: ['alice', 'CN=node-1'], repositories: ['docker.io/**'] },
        { users: ['anonymous'], repositories: ['registry.corp/public/*'] },
        { users: ['*'], repositories: ['registry.corp:5000/team/**'] },
      ],
    },
  };
  assert.equal(config.auth, undefined, 'no auth block: no rules at all');
  const rules = new ReadRules(resolveConfig(document, 'test').auth!.rules);
  const alice = { kind: 'user', name: 'alice' } as const;
  const bob = { kind: 'user', name: 'bob' } as const;
  const node = { kind: 'certificate', commonName: 'node-1' } as const;
  const anonymous = { kind: 'anonymous' } as const;
  assert.equal(rules.mayPull(alice, repo('docker.io', 'library/alpine')), true);
  assert.equal(rules.mayPull(alice, repo('docker.io', 'library/secret')), false, 'an earlier "none" wins');
  assert.equal(rules.mayPull(node, repo('docker.io', 'library/secret')), true, 'the carve-out names alice only');
  assert.equal(rules.mayPull(bob, repo('docker.io', 'library/alpine')), false);
  assert.equal(rules.mayPull(bob, repo('registry.corp:5000', 'team/app')), true, '* is any authenticated client');
  assert.equal(rules.mayPull(anonymous, repo('registry.corp:5000', 'team/app')), false, '* is not anonymous');
  assert.equal(rules.mayPull(anonymous, repo('registry.corp:5000', 'public/base')), true, 'an alias names the upstream');
  assert.equal(rules.mayPull({ kind: 'user', name: 'node-1' }, repo('docker.io', 'x')), false, 'a user is not a certificate of the same name');
  assert.equal(rules.anonymousMayPullSomething(), true);
  const defaults = new ReadRules(resolveConfig({ ...document, auth: {} }, 'test').auth!.rules);
  assert.equal(defaults.mayPull(bob, repo('registry.corp:5000', 'anything/at/all')), true, 'default: authenticated clients read everything');
  assert.equal(defaults.mayPull(anonymous, repo('docker.io', 'library/alpine')), false);
  assert.equal(defaults.anonymousMayPullSomething(), false);
  assert.equal(rules.everyonePullsEverything(), false);
  assert.equal(defaults.everyonePullsEverything(), false, 'the default keeps anonymous clients out: a restriction');
  const open = new ReadRules(resolveConfig({ ...document, auth: { rules: [{ users: ['anonymous', '*'], repositories: ['*/**'] }, ...document.auth.rules] } }, 'test').auth!.rules);
  assert.equal(open.everyonePullsEverything(), true, 'a first rule that lets everyone read everything restricts nothing (cross-upstream HEADs suffice)');
});

test('configuration: a rule naming no upstream, a bad glob, clientAuth without a CA and a realm with a quote are start-up errors', () => {
  const base = testConfigDocument({ upstreams: UPSTREAMS }, '/tmp/unused');
  const bad = (patch: Record<string, unknown>, pattern: RegExp): void => {
    assert.throws(() => resolveConfig({ ...base, ...patch }, 'test'), (err: unknown) => err instanceof ConfigError && pattern.test(err.message));
  };
  bad({ auth: { rules: [{ users: ['a'], repositories: ['ghcr.io/**'] }] } }, /ghcr\.io names no upstream/);
  bad({ auth: { rules: [{ users: ['a'], repositories: ['docker.io/Upper/**'] }] } }, /repository glob/);
  bad({ auth: { rules: [{ users: ['a'], repositories: ['docker.io'] }] } }, /must be an <upstream>\/<repository glob> pattern/);
  bad({ listen: { host: '127.0.0.1', port: 0, tls: { certFile: 'c', keyFile: 'k', clientAuth: 'require' } } }, /clientCaFile and clientAuth go together/);
  bad({ auth: { htpasswd: { file: 'f', realm: 'a"b' } } }, /realm/);
  bad({ auth: { users: [] } }, /unknown key/);
});

test('htpasswd parsing: bcrypt entries only, and bad lines reported by number, never by content', () => {
  const { users, badLines } = parseHtpasswd([
    '# comment', '', 'alice:$2y$05$Xlbqx2gp4fUwk4rXC5DGmOEKrjLPJRyCSubXatjoYne//UVNUPUEC',
    'md5:$apr1$abc$def', 'plain:secret', ':$2y$05$Xlbqx2gp4fUwk4rXC5DGmOEKrjLPJRyCSubXatjoYne//UVNUPUEC',
  ].join('\n'));
  assert.deepEqual([...users.keys()], ['alice']);
  assert.deepEqual(badLines, [4, 5, 6]);
});

test('failure throttle: five failures free, then 250 ms doubling to 10 s; a success or 15 quiet minutes forget them', async () => {
  const clock = new FakeClock();
  const throttle = new FailureThrottle({ clock });
  const delays: number[] = [];
  for (let i = 0; i < 12; i++) {
    delays.push(throttle.delayMs('10.0.0.1'));
    throttle.failed('10.0.0.1');
  }
  assert.deepEqual(delays, [0, 0, 0, 0, 0, 250, 500, 1000, 2000, 4000, 8000, 10_000]);
  assert.equal(throttle.delayMs('10.0.0.2'), 0, 'per address');
  throttle.succeeded('10.0.0.1');
  assert.equal(throttle.delayMs('10.0.0.1'), 0);
  for (let i = 0; i < 6; i++) throttle.failed('10.0.0.3');
  assert.equal(throttle.delayMs('10.0.0.3'), 500);
  clock.advance(15 * 60_000 + 1);
  assert.equal(throttle.delayMs('10.0.0.3'), 0);
});

const skip = toolSkip('htpasswd');
let proxy: RunningProxy;
let clock: FakeClock;

before(async () => {
  if (skip) return;
  clock = new FakeClock();
  const htpasswd = join(await tempDir('auth'), 'htpasswd');
  await writeHtpasswd(htpasswd, { alice: 'alice-pw' });
  proxy = await startProxy({
    upstreams: UPSTREAMS,
    clock,
    // Nothing is dialled: an allowed miss answers "offline" at once instead of waiting on upstream retries.
    upstreamDefaults: { offline: true },
    auth: {
      htpasswd: { file: htpasswd, realm: 'r' },
      rules: [
        { users: ['anonymous', '*'], repositories: ['docker.io/library/public'] },
        { users: ['alice'], repositories: ['*/**'] },
      ],
    },
  });
});

after(async () => {
  await proxy?.stop();
});

test('anonymous pulls where a rule says so; /v2/ answers anonymous 200 then; elsewhere 401 with the challenge', { skip }, async () => {
  assert.equal((await proxy.app.inject({ url: '/v2/' })).statusCode, 200);
  const allowed = await proxy.app.inject({ url: '/v2/library/public/manifests/v1' });
  assert.ok(![401, 403].includes(allowed.statusCode), `${allowed.statusCode} ${allowed.body}`);
  const denied = await proxy.app.inject({ url: '/v2/library/private/manifests/v1' });
  assert.equal(denied.statusCode, 401);
  assert.equal(denied.headers['www-authenticate'], 'Basic realm="r"');
  assert.equal((await proxy.app.inject({ url: '/v2/_catalog' })).statusCode, 200, 'lists what anonymous may pull');
});

test('after five wrong passwords from one address, the next attempt waits on the clock before it is checked', { skip }, async () => {
  const wrong = { authorization: basicAuth('alice', 'nope') };
  const address = '10.9.9.9';
  for (let i = 0; i < 5; i++) {
    assert.equal((await proxy.app.inject({ url: '/v2/', headers: wrong, remoteAddress: address })).statusCode, 401);
  }
  let settled = false;
  const sixth = proxy.app.inject({ url: '/v2/', headers: { authorization: basicAuth('alice', 'alice-pw') }, remoteAddress: address })
    .then((r) => { settled = true; return r; });
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(settled, false, 'held back while the clock stands still');
  clock.advance(250);
  assert.equal((await sixth).statusCode, 200, 'the right password still works after the wait');
  assert.equal((await proxy.app.inject({ url: '/v2/', headers: wrong, remoteAddress: address })).statusCode, 401, 'a success forgot the failures');
});

test('Basic credentials over plain HTTP: one warning at start-up', { skip }, () => {
  const warnings = proxy.logs().filter((l) => l['level'] === 40 && String(l['msg']).includes('clear text'));
  assert.equal(warnings.length, 1);
});
