import test from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig, resolveConfig } from '../../src/config/load.js';
import { configErrorMessage } from '../fixtures/config.js';

const run = promisify(execFile);
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

function minimal(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listen: { port: 5000 },
    storage: { root: '/tmp/x' },
    upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }],
    ...extra,
  };
}


test('the embedded default: port 5000, ./data, docker.io at registry-1.docker.io, Docker Hub naming', () => {
  const config = loadConfig(undefined, {});
  assert.equal(config.listen.port, 5000);
  assert.equal(config.storageRoot, join(process.cwd(), 'data'));
  assert.equal(config.defaultUpstream, 'docker.io');
  assert.equal(config.upstreams.length, 1);
  assert.equal(config.upstreams[0]!.url.href, 'https://registry-1.docker.io/');
  assert.equal(config.upstreams[0]!.dockerHub, true);
  assert.ok(config.upstreams[0]!.timeouts.headersMs <= 10_000, 'a hung upstream fails a metadata request within about 10 s');
});

test('defaults are applied and durations parsed', () => {
  const config = resolveConfig(minimal({ upstreamDefaults: { tagMaxAge: '5m' } }), 'test');
  assert.equal(config.listen.host, '0.0.0.0');
  assert.equal(config.upstreams[0]!.tagMaxAgeMs, 300_000);
  assert.equal(config.upstreams[0]!.timeouts.connectMs, 5000);
  assert.equal(config.shutdownGraceMs, 30_000);
});

test('a wrong type names its key path', () => {
  assert.match(configErrorMessage(() => resolveConfig(minimal({ listen: { port: 'x' } }), 'f.json')), /\/listen\/port: must be a whole number/);
  assert.match(configErrorMessage(() => resolveConfig(minimal({ upstreamDefaults: { tagMaxAge: 'soon' } }), 'f.json')), /\/upstreamDefaults\/tagMaxAge/);
});

test('a missing key names its key path', () => {
  const doc = minimal();
  delete doc['storage'];
  assert.match(configErrorMessage(() => resolveConfig(doc, 'f.json')), /\/storage: missing required key/);
  const noUrl = minimal({ upstreams: [{ name: 'docker.io' }] });
  assert.match(configErrorMessage(() => resolveConfig(noUrl, 'f.json')), /\/upstreams\/0\/url: missing required key/);
});

test('an unknown key names its key path', () => {
  assert.match(configErrorMessage(() => resolveConfig(minimal({ listn: {} }), 'f.json')), /\/listn: unknown key/);
  const typo = minimal({ upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io', timout: {} }] });
  assert.match(configErrorMessage(() => resolveConfig(typo, 'f.json')), /\/upstreams\/0\/timout: unknown key/);
});

test('the default upstream must exist, and names and aliases are unique', () => {
  assert.match(configErrorMessage(() => resolveConfig(minimal({ defaultUpstream: 'ghcr.io' }), 'f')), /\/defaultUpstream/);
  const dup = minimal({ upstreams: [
    { name: 'docker.io', url: 'https://registry-1.docker.io' },
    { name: 'mirror.example', url: 'https://m.example', aliases: ['docker.io'] },
  ] });
  assert.match(configErrorMessage(() => resolveConfig(dup, 'f')), /docker\.io names more than one upstream/);
});

test('credentials: password, passwordFile or passwordEnv, exactly one', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pt-config-'));
  await writeFile(join(dir, 'secret'), 'from-file\n');
  const base = { name: 'r.example', url: 'https://r.example' };
  const withCreds = (credentials: object) => minimal({ upstreams: [{ ...base, credentials }] });
  assert.equal(resolveConfig(withCreds({ username: 'u', passwordFile: join(dir, 'secret') }), 'f').upstreams[0]!.credentials?.password, 'from-file');
  assert.equal(resolveConfig(withCreds({ username: 'u', passwordEnv: 'PT_SECRET' }), 'f', { PT_SECRET: 'from-env' }).upstreams[0]!.credentials?.password, 'from-env');
  assert.match(configErrorMessage(() => resolveConfig(withCreds({ username: 'u', passwordEnv: 'PT_MISSING' }), 'f', {})), /passwordEnv: environment variable PT_MISSING is not set/);
  assert.match(configErrorMessage(() => resolveConfig(withCreds({ username: 'u', password: 'a', passwordEnv: 'B' }), 'f', {})), /exactly one of/);
  assert.match(configErrorMessage(() => resolveConfig(withCreds({ username: 'u' }), 'f', {})), /exactly one of/);
});

test('start-up stops on a bad configuration, exit code 2, naming the key path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pt-config-'));
  const file = join(dir, 'bad.json');
  await writeFile(file, JSON.stringify(minimal({ listen: { port: 5000, hots: 'x' } })));
  const failure = await run(process.execPath, [CLI, 'serve', '--config', file]).then(() => undefined, (err: { code: number; stderr: string }) => err);
  assert.ok(failure, 'the server must not start');
  assert.equal(failure.code, 2);
  assert.match(failure.stderr, /\/listen\/hots: unknown key/);
  assert.doesNotMatch(failure.stderr, /at .*\.js:\d+/, 'no stack trace for a configuration error');

  const viaEnv = await run(process.execPath, [CLI, 'serve'], { env: { ...process.env, PULLTHROUGH_CONFIG: join(dir, 'missing.json') } })
    .then(() => undefined, (err: { code: number; stderr: string }) => err);
  assert.equal(viaEnv?.code, 2);
  assert.match(viaEnv?.stderr ?? '', /missing\.json/);
});

test('upstream health, revalidateTimeout and staleWhileRevalidate: defaults, per-upstream overrides, and nonsense refused', () => {
  const config = resolveConfig(minimal({
    upstreams: [
      { name: 'docker.io', url: 'https://registry-1.docker.io' },
      { name: 'ghcr.io', url: 'https://ghcr.io', revalidateTimeout: '1s', staleWhileRevalidate: '10m', health: { failures: 5 } },
    ],
  }), 'test');
  const [hub, ghcr] = config.upstreams;
  assert.deepEqual(hub!.health, { failures: 3, backoffMs: 5000, maxBackoffMs: 60_000 });
  assert.equal(hub!.revalidateTimeoutMs, 3000);
  assert.equal(hub!.staleWhileRevalidateMs, 0, 'stale-while-revalidate is off by default');
  assert.deepEqual(ghcr!.health, { failures: 5, backoffMs: 5000, maxBackoffMs: 60_000 }, 'the rest from upstreamDefaults');
  assert.equal(ghcr!.revalidateTimeoutMs, 1000);
  assert.equal(ghcr!.staleWhileRevalidateMs, 600_000);
  assert.match(configErrorMessage(() => resolveConfig(minimal({ upstreamDefaults: { health: { backoff: '1m', maxBackoff: '5s' } } }), 'f')),
    /\/upstreams\/0\/health\/maxBackoff: must not be shorter than backoff/);
  assert.match(configErrorMessage(() => resolveConfig(minimal({ upstreamDefaults: { revalidateTimeout: '0s' } }), 'f')), /revalidateTimeout: must be more than 0/);
  assert.match(configErrorMessage(() => resolveConfig(minimal({ upstreamDefaults: { health: { failures: 0 } } }), 'f')), /\/upstreamDefaults\/health\/failures/);
});

test('security defaults: maxBlobSize 20GiB, umask 027, no private redirects; each can be set', () => {
  const config = resolveConfig(minimal(), 'test', {});
  const u = config.upstreams[0]!;
  assert.equal(u.maxBlobBytes, 20 * 2 ** 30);
  assert.deepEqual([u.allowedRedirectHosts, u.allowPrivateRedirects], [[], false]);
  assert.equal(config.storage.umask, 0o027);
  const set = resolveConfig(minimal({
    storage: { root: '/tmp/x', umask: '077' },
    upstreamDefaults: { maxBlobSize: '1GiB' },
    upstreams: [{ name: 'registry.corp', url: 'https://registry.corp', allowedRedirectHosts: ['minio.corp'], allowPrivateRedirects: true, maxBlobSize: '2GiB' }],
  }), 'test', {});
  assert.equal(set.storage.umask, 0o077);
  assert.equal(set.upstreams[0]!.maxBlobBytes, 2 * 2 ** 30);
  assert.deepEqual(set.upstreams[0]!.allowedRedirectHosts, ['minio.corp']);
  assert.equal(set.upstreams[0]!.allowPrivateRedirects, true);
});

test('the replicas\' deployment configuration needs the Redis password from REDIS_PASSWORD, and the compose file sets one', async () => {
  const replica = new URL('../../../deploy/replica.config.json', import.meta.url);
  assert.match(configErrorMessage(() => loadConfig(replica.pathname, {})), /redis\/passwordEnv: environment variable REDIS_PASSWORD is not set/);
  assert.equal(loadConfig(replica.pathname, { REDIS_PASSWORD: 's3cret' }).redis?.password, 's3cret');
  const compose = await readFile(new URL('../../../docker-compose.yml', import.meta.url), 'utf8');
  assert.match(compose, /--requirepass/);
  assert.match(compose, /REDIS_PASSWORD: \$\{REDIS_PASSWORD:\?/);
});
