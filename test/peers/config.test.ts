/** The `peers` block: what it needs (Redis, one secret source, a long enough secret) and what it resolves to. */
import test from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config/load.js';
import { configErrorMessage } from '../fixtures/config.js';
import { tempDir } from '../fixtures/tools.js';

const base = {
  listen: { port: 5000 },
  storage: { root: '/tmp/pullthrough-peers-config' },
  upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }],
  redis: { url: 'redis://redis:6379' },
};
const SECRET = 'p'.repeat(32);

test('peers: the secret from a file (its newline dropped) or a variable; advertise as an origin; timeouts and penalty defaulted', async () => {
  const file = join(await tempDir('peers-config'), 'secret');
  await writeFile(file, `${SECRET}\n`);
  const fromFile = resolveConfig({ ...base, peers: { advertise: 'http://10.0.0.7:5000/', secretFile: file } }, 'test', {});
  assert.deepEqual(fromFile.peers, {
    advertise: 'http://10.0.0.7:5000', secret: SECRET, connectTimeoutMs: 1000, firstByteTimeoutMs: 2000, idleTimeoutMs: 10_000, penaltyMs: 300_000,
  });
  const fromEnv = resolveConfig({ ...base, peers: { advertise: 'http://10.0.0.7:5000', secretEnv: 'PEER_SECRET' } }, 'test', { PEER_SECRET: SECRET });
  assert.equal(fromEnv.peers?.secret, SECRET);
});

test('peers: refused without redis, without exactly one secret source, with a short secret, or an advertise with a path', () => {
  const { redis: _redis, ...noRedis } = base;
  assert.match(configErrorMessage(() => resolveConfig({ ...noRedis, peers: { advertise: 'http://a:5000', secretEnv: 'S' } }, 'test', { S: SECRET })),
    /\/peers: needs redis/);
  assert.match(configErrorMessage(() => resolveConfig({ ...base, peers: { advertise: 'http://a:5000' } }, 'test', {})),
    /exactly one of secretFile, secretEnv/);
  assert.match(configErrorMessage(() => resolveConfig({ ...base, peers: { advertise: 'http://a:5000', secretEnv: 'S' } }, 'test', {})),
    /environment variable S is not set/);
  assert.match(configErrorMessage(() => resolveConfig({ ...base, peers: { advertise: 'http://a:5000', secretEnv: 'S' } }, 'test', { S: 'short' })),
    /at least 16 characters/);
  assert.match(configErrorMessage(() => resolveConfig({ ...base, peers: { advertise: 'http://a:5000/path', secretEnv: 'S' } }, 'test', { S: SECRET })),
    /peers\/advertise/);
});
