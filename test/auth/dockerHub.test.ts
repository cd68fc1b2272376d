/**
 * Docker Hub naming with Docker Hub's authentication: an upstream with
 * `dockerHub: true` that demands bearer tokens. `alpine` is
 * `library/alpine` toward the upstream (requests and token scope alike),
 * and `alpine` and `library/alpine` share one cache entry and one token.
 * (test/routing/dockerhub.test.ts covers the routing forms against an
 * anonymous registry.)
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { resolveConfig } from '../../src/config/load.js';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { manifestDigestOf } from '../fixtures/skopeo.js';
import { ask, basicHeader, startBearerUpstream, type BearerUpstream } from '../fixtures/upstreamAuth.js';

const MIRROR = { username: 'mirror', password: `hub-${randomBytes(12).toString('hex')}` };

let upstream: BearerUpstream;
let proxy: RunningProxy;
let alpine: BuiltImage;

before(async () => {
  upstream = await startBearerUpstream({ users: { [MIRROR.username]: MIRROR.password } });
  alpine = makeImage({ layerSizes: [32 * 1024] });
  upstream.fake.addImage('library/alpine', 'v1', alpine);
  proxy = await startProxy({ upstreams: [{ name: 'hub.test', url: upstream.fake.url, dockerHub: true, credentials: MIRROR }] });
});

after(async () => {
  await proxy?.stop();
  await upstream?.stop();
});

test('alpine and library/alpine: one upstream repository, one token, one cache entry', async () => {
  const first = await ask(proxy, '/v2/alpine/manifests/v1');
  assert.equal(first.status, 200, first.body.toString());
  assert.equal(manifestDigestOf(first.body), alpine.digest);
  assert.equal(first.headers['docker-content-digest'], alpine.digest);
  for (const blob of [alpine.config, ...alpine.layers]) {
    const answer = await ask(proxy, `/v2/alpine/blobs/${blob.digest}`);
    assert.equal(answer.status, 200);
    assert.ok(answer.body.equals(blob.data));
  }
  const paths = upstream.fake.requests().map((r) => r.path);
  assert.ok(paths.includes(`/v2/library/alpine/manifests/${alpine.digest}`), JSON.stringify(paths));
  // Besides the one GET /v2/ that learns the challenge before the first request.
  assert.deepEqual(paths.filter((p) => p !== '/v2/' && !p.startsWith('/v2/library/alpine/')), [], 'never /v2/alpine/ toward the upstream');
  const tokenRequests = upstream.tokens.requests();
  assert.deepEqual(tokenRequests.map((r) => r.scope), ['repository:library/alpine:pull']);
  assert.equal(tokenRequests[0]!.authorization, basicHeader(MIRROR));

  upstream.fake.clearRequests();
  const second = await ask(proxy, '/v2/library/alpine/manifests/v1');
  assert.equal(second.status, 200);
  assert.equal(second.headers['docker-content-digest'], alpine.digest);
  assert.ok(second.body.equals(first.body));
  assert.equal(second.headers['x-pullthrough-cache'], 'hit');
  const byDigest = await ask(proxy, `/v2/library/alpine/manifests/${alpine.digest}`);
  assert.equal(byDigest.headers['x-pullthrough-cache'], 'hit');
  for (const blob of [alpine.config, ...alpine.layers]) {
    const answer = await ask(proxy, `/v2/library/alpine/blobs/${blob.digest}`);
    assert.equal(answer.status, 200);
    assert.equal(answer.headers['x-pullthrough-cache'], 'hit');
  }
  assert.deepEqual(upstream.fake.requests({ method: 'GET' }).map((r) => r.path), [], 'the second name cost no upstream GET');
  // tagMaxAge is 0s in tests: the tag was checked, with a HEAD on library/alpine and the same token.
  assert.ok(upstream.fake.requests().every((r) => r.method === 'HEAD' && r.path === '/v2/library/alpine/manifests/v1'));
  assert.equal(upstream.tokens.requests().length, 1, 'and no second token');
});

test('Docker Hub is recognised by a URL on docker.io, not by any host name that ends in "docker.io"', () => {
  const dockerHub = (url: string): boolean => resolveConfig({
    listen: { port: 0 },
    storage: { root: '/nonexistent' },
    upstreams: [{ name: 'registry.corp', url }],
  }, 'dockerHub test', {}).upstreams[0]!.dockerHub;
  assert.equal(dockerHub('https://registry-1.docker.io'), true);
  assert.equal(dockerHub('https://docker.io'), true);
  assert.equal(dockerHub('https://REGISTRY-1.Docker.IO'), true);
  // Someone else's registries: `alpine` there is `alpine`, not `library/alpine`.
  assert.equal(dockerHub('https://mydocker.io'), false);
  assert.equal(dockerHub('https://registry.notdocker.io'), false);
  assert.equal(dockerHub('https://docker.io.evil.example'), false);
});
