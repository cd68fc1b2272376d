/**
 * The authorizer with the real upstream client against a real Distribution
 * 2.8 registry that demands bearer tokens from the fixture token server.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { resolveConfig, type UpstreamSettings } from '../../src/config/load.js';
import { RegistryError } from '../../src/registry/errors.js';
import type { Digest } from '../../src/registry/digest.js';
import { UpstreamAuthError } from '../../src/upstream/auth/authError.js';
import { authorizerFor } from '../../src/upstream/auth/authorizerFor.js';
import type { UpstreamCredentials } from '../../src/upstream/auth/authorizer.js';
import { systemClock } from '../../src/registry/clock.js';
import { UpstreamClient } from '../../src/upstream/client.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { startTokenServer, type RunningTokenServer } from '../fixtures/tokenServer.js';
import { toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo', 'openssl');
const ALICE = { username: 'alice', password: 'correct horse battery staple' };
const ACCEPT = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'];

let tokens: RunningTokenServer;
let registry: RunningRegistry;
let image: SeededImage;

before(async () => {
  if (skip) return;
  tokens = await startTokenServer({ users: { [ALICE.username]: ALICE.password }, denyRepositories: ['seed/denied'] });
  registry = await startRegistry({ token: tokens });
  [image] = await seedImages(registry.host, { kinds: ['oci-image'], creds: ALICE, layerSize: 64 * 1024 });
  tokens.clearRequests();
});

after(async () => {
  await registry?.stop();
  await tokens?.stop();
});

/** Settings as the configuration loader makes them, so this test does not track their fields. */
function settings(credentials: UpstreamCredentials | undefined): UpstreamSettings {
  const config = resolveConfig({
    listen: { port: 0 },
    storage: { root: '/nonexistent' },
    upstreams: [{ name: 'registry.test', url: registry.url, ...(credentials ? { credentials } : {}) }],
    upstreamDefaults: { timeouts: { connect: '2s', headers: '3s', bodyIdle: '3s' } },
  }, 'auth-distribution test', {});
  return config.upstreams[0]!;
}

function client(credentials: UpstreamCredentials | undefined): { client: UpstreamClient; logs: () => string } {
  let raw = '';
  const logger: Logger = pino({ level: 'debug' }, new Writable({
    write(chunk: Buffer, _encoding, callback) {
      raw += chunk.toString();
      callback();
    },
  }));
  const s = settings(credentials);
  return { client: new UpstreamClient(s, { authorizer: authorizerFor(s, logger), logger, clock: systemClock }), logs: () => raw };
}

test('with credentials: manifests and blobs pull, one token per repository, credentials only to the token server', { skip }, async () => {
  const { client: c, logs } = client(ALICE);
  try {
    const fetched = await c.getManifest(image.repository, image.tag, ACCEPT);
    assert.ok(fetched);
    assert.deepEqual(fetched.body, image.manifest);
    const head = await c.headManifest(image.repository, image.digest, ACCEPT);
    assert.equal(head?.digest, image.digest);
    const blobDigest = image.blobDigests[0]! as Digest;
    const blob = await c.getBlob(image.repository, blobDigest);
    assert.ok(blob);
    const hash = createHash('sha256');
    for await (const chunk of blob.body) hash.update(chunk as Buffer);
    assert.equal(`sha256:${hash.digest('hex')}`, blobDigest);
    await Promise.all(Array.from({ length: 20 }, () => c.headManifest(image.repository, image.tag, ACCEPT)));

    const requests = tokens.requests();
    assert.equal(requests.length, 1, 'one token for the repository, shared by every request');
    assert.equal(requests[0]!.scope, `repository:${image.repository}:pull`);
    assert.equal(requests[0]!.account, ALICE.username);
    assert.equal(requests[0]!.status, 200);
    assert.ok(!logs().includes(ALICE.password));
  } finally {
    tokens.clearRequests();
    await c.close();
  }
});

test('a repository the token server grants nothing on: DENIED, without a second token', { skip }, async () => {
  const { client: c } = client(ALICE);
  try {
    await assert.rejects(c.getManifest('seed/denied', 'v1', ACCEPT), (err: unknown) => {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.code, 'DENIED');
      return true;
    });
    await assert.rejects(c.getManifest('seed/denied', 'v1', ACCEPT), /denied/);
    assert.equal(tokens.requests().length, 1, 'insufficient_scope does not refresh the token');
  } finally {
    tokens.clearRequests();
    await c.close();
  }
});

test('wrong credentials: a typed "unauthorized" error that names no secret', { skip }, async () => {
  const { client: c, logs } = client({ username: ALICE.username, password: 'wrong password' });
  try {
    await assert.rejects(c.getManifest(image.repository, image.tag, ACCEPT), (err: unknown) => {
      assert.ok(err instanceof UpstreamAuthError, String(err));
      assert.equal(err.kind, 'unauthorized');
      assert.ok(!err.message.includes('wrong password'));
      return true;
    });
    assert.ok(!logs().includes('wrong password'));
  } finally {
    tokens.clearRequests();
    await c.close();
  }
});

test('no credentials where the token server requires them: "denied"', { skip }, async () => {
  const { client: c } = client(undefined);
  try {
    await assert.rejects(c.headManifest(image.repository, image.tag, ACCEPT), (err: unknown) => {
      assert.ok(err instanceof UpstreamAuthError, String(err));
      assert.equal(err.kind, 'denied');
      return true;
    });
    assert.equal(tokens.requests()[0]!.authorization, undefined);
  } finally {
    tokens.clearRequests();
    await c.close();
  }
});
