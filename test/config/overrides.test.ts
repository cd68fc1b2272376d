/**
 * `PULLTHROUGH_<PATH>` overrides: every key of the schema has its variable,
 * values are parsed by the key's type, the result is validated by the same
 * schema, and a problem names the variable as well as the key path.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { loadConfig, loadEffective } from '../../src/config/load.js';
import { documentedKeys, type SchemaNode } from '../../src/config/keys.js';
import { environmentOverrides, variableName } from '../../src/config/overrides.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { runCommand, tempDir } from '../fixtures/tools.js';
import { configErrorMessage } from '../fixtures/config.js';

const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

async function configFile(document: Record<string, unknown>): Promise<string> {
  const file = join(await tempDir('overrides'), 'config.json');
  await writeFile(file, JSON.stringify(document));
  return file;
}

const BASE = {
  listen: { port: 5000 },
  storage: { root: '/tmp/pullthrough-overrides' },
  upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }],
};


test('a nested key, an array element, a number, a boolean, a duration and a size, each from its variable', async () => {
  const file = await configFile(BASE);
  const config = loadConfig(file, {
    PULLTHROUGH_LISTEN_PORT: '5001',
    PULLTHROUGH_LISTEN_HOST: '127.0.0.1',
    PULLTHROUGH_STORAGE_MAXSIZE: '20GiB',
    PULLTHROUGH_UPSTREAMDEFAULTS_TAGMAXAGE: '30s',
    PULLTHROUGH_UPSTREAMDEFAULTS_TIMEOUTS_CONNECT: '2s',
    PULLTHROUGH_UPSTREAMDEFAULTS_OFFLINE: 'true',
    PULLTHROUGH_UPSTREAMS_0_URL: 'http://127.0.0.1:5999',
    PULLTHROUGH_UPSTREAMS_0_ALIASES_0: 'hub.local',
    PULLTHROUGH_UPSTREAMS_1_NAME: 'ghcr.io',
    PULLTHROUGH_UPSTREAMS_1_URL: 'https://ghcr.io',
    PULLTHROUGH_UPSTREAMS_1_TAGMAXAGE: '5m',
  });
  assert.equal(config.listen.port, 5001, 'a number');
  assert.equal(config.listen.host, '127.0.0.1');
  assert.equal(config.storage.maxBytes, 20 * 2 ** 30, 'a size');
  assert.equal(config.upstreams[0]!.tagMaxAgeMs, 30_000, 'a duration');
  assert.equal(config.upstreams[0]!.timeouts.connectMs, 2000, 'a key three deep');
  assert.equal(config.upstreams[0]!.offline, true, 'a boolean');
  assert.equal(config.upstreams[0]!.url.href, 'http://127.0.0.1:5999/', 'an array element');
  assert.deepEqual(config.upstreams[0]!.aliases, ['hub.local'], 'an element of an array inside an element');
  assert.equal(config.upstreams.length, 2, 'a new element of a list, by the next index');
  assert.equal(config.upstreams[1]!.name, 'ghcr.io');
  assert.equal(config.upstreams[1]!.tagMaxAgeMs, 300_000);
  assert.equal(config.storage.maxBytes, loadConfig(file, { PULLTHROUGH_STORAGE_MAXSIZE: String(20 * 2 ** 30) }).storage.maxBytes, 'a size in bytes is a number');
});

test('a bad value names the variable and the key path, and the form expected', async () => {
  const file = await configFile(BASE);
  assert.match(configErrorMessage(() => loadConfig(file, { PULLTHROUGH_LISTEN_PORT: 'abc' })), /\/listen\/port \(PULLTHROUGH_LISTEN_PORT\): must be a whole number, got "abc"/);
  assert.match(configErrorMessage(() => loadConfig(file, { PULLTHROUGH_UPSTREAMDEFAULTS_TAGMAXAGE: '10 min' })),
    /\/upstreamDefaults\/tagMaxAge \(PULLTHROUGH_UPSTREAMDEFAULTS_TAGMAXAGE\): must be a duration: a number and a unit, ms, s, m, h or d/);
  assert.match(configErrorMessage(() => loadConfig(file, { PULLTHROUGH_UPSTREAMDEFAULTS_OFFLINE: 'yes' })), /offline \(PULLTHROUGH_UPSTREAMDEFAULTS_OFFLINE\): must be true or false/);
  // A new element that lacks a required key: the message says which variable added it.
  assert.match(configErrorMessage(() => loadConfig(file, { PULLTHROUGH_UPSTREAMS_1_URL: 'https://ghcr.io' })),
    /\/upstreams\/1\/name \(in \/upstreams\/1, added by PULLTHROUGH_UPSTREAMS_1_URL\): missing required key/);
  assert.match(configErrorMessage(() => loadConfig(file, { PULLTHROUGH_UPSTREAMS_3_URL: 'https://ghcr.io' })),
    /PULLTHROUGH_UPSTREAMS_3_URL: \/upstreams has 1 entry, so the next one is index 1, not 3/);
});

test('a variable that names no key is refused with the nearest one; variables that are not ours are left alone', async () => {
  const file = await configFile({
    ...BASE,
    upstreams: [{ name: 'r.example', url: 'https://r.example', credentials: { username: 'u', passwordEnv: 'PULLTHROUGH_REGISTRY_PASSWORD' } }],
  });
  assert.match(configErrorMessage(() => loadConfig(file, { PULLTHROUGH_STORAGE_MAXSIZ: '1GB', PULLTHROUGH_REGISTRY_PASSWORD: 'x' })),
    /PULLTHROUGH_STORAGE_MAXSIZ: \/storage has no key maxsiz; did you mean PULLTHROUGH_STORAGE_MAXSIZE\?/);
  assert.match(configErrorMessage(() => loadConfig(file, { PULLTHROUGH_LISTN_PORT: '1', PULLTHROUGH_REGISTRY_PASSWORD: 'x' })),
    /did you mean PULLTHROUGH_LISTEN_PORT\?/);
  // The secret a passwordEnv names, the config file's own variable, and a test's switch are not settings.
  const config = loadConfig(file, {
    PULLTHROUGH_REGISTRY_PASSWORD: 'from-env', PULLTHROUGH_CONFIG: file, PULLTHROUGH_KEEP_TMP: '1',
  });
  assert.equal(config.upstreams[0]!.credentials?.password, 'from-env');
});

test('secrets keep their File and Env forms when set from the environment', async () => {
  const dir = await tempDir('overrides-secret');
  await writeFile(join(dir, 'secret'), 'from-file\n');
  const file = await configFile({ ...BASE, upstreams: [{ name: 'r.example', url: 'https://r.example' }] });
  const viaFile = loadConfig(file, {
    PULLTHROUGH_UPSTREAMS_0_CREDENTIALS_USERNAME: 'u', PULLTHROUGH_UPSTREAMS_0_CREDENTIALS_PASSWORDFILE: join(dir, 'secret'),
  });
  assert.equal(viaFile.upstreams[0]!.credentials?.password, 'from-file');
  const viaEnv = loadConfig(file, {
    PULLTHROUGH_UPSTREAMS_0_CREDENTIALS_USERNAME: 'u', PULLTHROUGH_UPSTREAMS_0_CREDENTIALS_PASSWORDENV: 'CORP_PW', CORP_PW: 'from-env',
  });
  assert.equal(viaEnv.upstreams[0]!.credentials?.password, 'from-env');
});

test('every key of the schema has its variable, and every variable leads back to its key', () => {
  for (const key of documentedKeys(ConfigSchema as SchemaNode)) {
    const path = key.replace(/\[\]$/, '').split('.').flatMap((part) => (part.endsWith('[]') ? [part.slice(0, -2), 0] : [part]));
    const variable = variableName(path);
    assert.match(variable, /^PULLTHROUGH_[A-Z0-9_]+$/, key);
    const { overrides, problems } = environmentOverrides(ConfigSchema as SchemaNode, { [variable]: 'x' }, {});
    assert.deepEqual(problems, [], key);
    assert.deepEqual(overrides.map((o) => o.path), [path], `${variable} sets ${key}`);
  }
});

test('a key added to a schema gets its variable with no other change', () => {
  const schema = Type.Object({
    admin: Type.Object({ listen: Type.Object({ port: Type.Integer() }), enabled: Type.Boolean() }),
    listen: Type.Object({ tls: Type.Object({ certFile: Type.String() }) }),
  }) as SchemaNode;
  const { overrides, problems } = environmentOverrides(schema, {
    PULLTHROUGH_ADMIN_LISTEN_PORT: '9090', PULLTHROUGH_ADMIN_ENABLED: 'false', PULLTHROUGH_LISTEN_TLS_CERTFILE: '/etc/tls/cert.pem',
  }, {});
  assert.deepEqual(problems, []);
  assert.deepEqual(overrides.map((o) => [o.path, o.value]).sort(), [
    [['admin', 'enabled'], false], [['admin', 'listen', 'port'], 9090], [['listen', 'tls', 'certFile'], '/etc/tls/cert.pem'],
  ]);
});

test('flags win over the environment, and the environment over the file', async () => {
  const file = await configFile(BASE);
  const { config } = loadEffective(file, { PULLTHROUGH_LISTEN_PORT: '5001', PULLTHROUGH_STORAGE_ROOT: '/tmp/from-env' },
    [{ origin: '--port', path: ['listen', 'port'], value: 5002 }]);
  assert.equal(config.listen.port, 5002);
  assert.equal(config.storageRoot, '/tmp/from-env');
});

test('start-up stops on a bad variable with exit code 2, naming the variable and /listen/port, without a stack', async () => {
  const file = await configFile(BASE);
  const failed = await runCommand(process.execPath, [CLI, 'serve', '--config', file], {
    env: { ...process.env, PULLTHROUGH_LISTEN_PORT: 'abc' }, allowFailure: true, timeoutMs: 30_000,
  });
  assert.equal(failed.code, 2, failed.stderr);
  assert.match(failed.stderr, /PULLTHROUGH_LISTEN_PORT/);
  assert.match(failed.stderr, /\/listen\/port/);
  assert.doesNotMatch(failed.stderr, /\n\s+at /, 'no stack');
});

test('every key name splits back one way: no "_" in a key, no two keys of one object that differ only in case', () => {
  const keys = documentedKeys(ConfigSchema as SchemaNode).map((k) => k.replace(/\[\]/g, ''));
  for (const key of keys) assert.doesNotMatch(key, /_/, `${key}: its variable would read two ways`);
  const variables = keys.map((k) => k.toUpperCase());
  assert.equal(new Set(variables).size, variables.length, 'two keys share a variable');
});
