import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { Client } from '../../src/upstream/undici.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage, type BuiltImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { DEFAULT_MANIFEST_ACCEPT } from '../../src/registry/mediaTypes.js';

let fake: FakeUpstream;
let proxy: RunningProxy;
let image: BuiltImage;
const REPO = 'api/app';

before(async () => {
  fake = await startFakeUpstream();
  image = makeImage({ layerSizes: [50_000] });
  fake.addImage(REPO, 'v1', image);
  for (const tag of ['a', 'b', 'c', 'd', 'e']) fake.setTag(REPO, tag, image.digest);
  proxy = await startProxy({ upstreams: [{ name: 'fake.test', url: fake.url }] });
});

after(async () => {
  await proxy?.stop();
  await fake?.stop();
});

function errorCode(body: string): string {
  return (JSON.parse(body) as { errors: { code: string }[] }).errors[0]!.code;
}

test('GET /v2/ answers {} with the API version header', async () => {
  const res = await proxy.app.inject({ method: 'GET', url: '/v2/' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.body, '{}');
  assert.match(String(res.headers['content-type']), /^application\/json/);
  assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
});

test('every response carries Docker-Distribution-API-Version, errors and unknown paths included', async () => {
  for (const url of ['/v2/Bad/manifests/x', '/nothing', '/v2/a/other/x', `/v2/${REPO}/manifests/v1`]) {
    const res = await proxy.app.inject({ method: 'GET', url });
    assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0', url);
  }
});

test('manifest GET: the media type, length, digest and ETag of the stored bytes', async () => {
  const res = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/manifests/v1` });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['content-type'], image.mediaType);
  assert.equal(res.headers['content-length'], String(image.manifest.length));
  assert.equal(res.headers['docker-content-digest'], image.digest);
  assert.equal(res.headers['etag'], `"${image.digest}"`);
  assert.ok(res.rawPayload.equals(image.manifest));
});

test('HEAD has the headers and no body, for manifests and blobs', async () => {
  const manifest = await proxy.app.inject({ method: 'HEAD', url: `/v2/${REPO}/manifests/${image.digest}` });
  assert.equal(manifest.statusCode, 200);
  assert.equal(manifest.headers['content-length'], String(image.manifest.length));
  assert.equal(manifest.headers['docker-content-digest'], image.digest);
  assert.equal(manifest.rawPayload.length, 0);
  const layer = image.layers[0]!;
  const blob = await proxy.app.inject({ method: 'HEAD', url: `/v2/${REPO}/blobs/${layer.digest}` });
  assert.equal(blob.statusCode, 200);
  assert.equal(blob.headers['content-length'], String(layer.size));
  assert.equal(blob.headers['accept-ranges'], 'bytes');
  assert.equal(blob.rawPayload.length, 0);
  const unknown = await proxy.app.inject({ method: 'HEAD', url: `/v2/${REPO}/blobs/sha256:${'0'.repeat(64)}` });
  assert.equal(unknown.statusCode, 404);
  assert.equal(unknown.rawPayload.length, 0);
});

test('If-None-Match with the digest answers 304 without a body', async () => {
  for (const ref of ['v1', image.digest]) {
    const res = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/manifests/${ref}`, headers: { 'if-none-match': `"${image.digest}"` } });
    assert.equal(res.statusCode, 304, ref);
    assert.equal(res.rawPayload.length, 0);
    assert.equal(res.headers['etag'], `"${image.digest}"`);
  }
  const other = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/manifests/v1`, headers: { 'if-none-match': '"sha256:other"' } });
  assert.equal(other.statusCode, 200);
});

test('blob Range: 206 with Content-Range, 416 when unsatisfiable', async () => {
  const layer = image.layers[0]!;
  const part = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/blobs/${layer.digest}`, headers: { range: 'bytes=10-19' } });
  assert.equal(part.statusCode, 206);
  assert.equal(part.headers['content-range'], `bytes 10-19/${layer.size}`);
  assert.ok(part.rawPayload.equals(layer.data.subarray(10, 20)));
  const past = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/blobs/${layer.digest}`, headers: { range: `bytes=${layer.size}-` } });
  assert.equal(past.statusCode, 416);
  assert.equal(errorCode(past.body), 'RANGE_INVALID');
});

test('Accept: a tag goes upstream with every type we serve, whatever the client sent; by digest its types are added; never converted', async () => {
  fake.clearRequests();
  const accept = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.example.thing+json'];
  const res = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/manifests/b`, headers: { accept: accept.join(', ') } });
  assert.equal(res.statusCode, 200);
  const head = fake.requests({ method: 'HEAD', path: `/v2/${REPO}/manifests/b` })[0]!;
  assert.equal(head.headers['accept'], DEFAULT_MANIFEST_ACCEPT.join(', '), 'the same Accept for every client: one record, one 404 memory');
  assert.ok(res.rawPayload.equals(image.manifest));

  fake.clearRequests();
  const child = makeImage({ layerSizes: [10] });
  fake.addManifest({ repository: REPO, reference: child.digest, mediaType: child.mediaType, body: child.manifest });
  const byDigest = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/manifests/${child.digest}`, headers: { accept: accept.join(', ') } });
  assert.equal(byDigest.statusCode, 200);
  const get = fake.requests({ method: 'GET', path: `/v2/${REPO}/manifests/${child.digest}` })[0]!;
  for (const type of [...accept, ...DEFAULT_MANIFEST_ACCEPT]) assert.ok(String(get.headers['accept']).includes(type), type);
});

test('Accept: a client that does not accept the tag\'s type gets MANIFEST_UNKNOWN, never another document', async () => {
  const res = await proxy.app.inject({
    method: 'GET', url: `/v2/${REPO}/manifests/c`, headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' },
  });
  assert.equal(res.statusCode, 404);
  assert.equal(errorCode(res.body), 'MANIFEST_UNKNOWN');
  const anything = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/manifests/c`, headers: { accept: 'application/json, */*' } });
  assert.equal(anything.statusCode, 200, '*/* accepts every type');
});

test('tags/list and _catalog paginate with n, last and a Link header', async () => {
  const first = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/tags/list?n=2` });
  assert.deepEqual(JSON.parse(first.body), { name: REPO, tags: ['a', 'b'] });
  assert.equal(first.headers['link'], `</v2/${REPO}/tags/list?n=2&last=b>; rel="next"`);
  const next = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/tags/list?n=2&last=b` });
  assert.deepEqual(JSON.parse(next.body).tags, ['c', 'd']);
  const last = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/tags/list?n=10&last=d` });
  assert.deepEqual(JSON.parse(last.body).tags, ['e', 'v1']);
  assert.equal(last.headers['link'], undefined);
  const bad = await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/tags/list?n=-1` });
  assert.equal(bad.statusCode, 400);
  assert.equal(errorCode(bad.body), 'PAGINATION_NUMBER_INVALID');
  const catalog = await proxy.app.inject({ method: 'GET', url: '/v2/_catalog?n=1' });
  assert.deepEqual(JSON.parse(catalog.body), { repositories: [`fake.test/${REPO}`] });
});

test('writes answer 405 UNSUPPORTED', async () => {
  for (const [method, url] of [
    ['POST', `/v2/${REPO}/blobs/uploads/`], ['PUT', `/v2/${REPO}/manifests/v1`], ['PATCH', `/v2/${REPO}/blobs/uploads/abc`],
    ['DELETE', `/v2/${REPO}/manifests/${image.digest}`], ['DELETE', `/v2/${REPO}/blobs/${image.config.digest}`],
  ] as const) {
    const res = await proxy.app.inject({ method, url, payload: method === 'DELETE' ? undefined : 'data' });
    assert.equal(res.statusCode, 405, `${method} ${url}`);
    assert.equal(errorCode(res.body), 'UNSUPPORTED');
  }
});

test('malformed names, tags and digests get the right code and status, and never reach storage or the upstream', async () => {
  // Fills an earlier test left running would commit (an upload renamed into blobs/) during this one: let them settle.
  while (proxy.mirror.blobs.activeFills > 0) await new Promise((r) => setTimeout(r, 10));
  const before = await readdir(proxy.root, { recursive: true });
  fake.clearRequests();
  const cases: [string, string, string, number][] = [
    ['GET', '/v2/UPPER/manifests/v1', 'NAME_INVALID', 400],
    ['GET', '/v2/a/..%2f..%2fetc/manifests/v1', 'NAME_INVALID', 400],
    ['GET', '/v2/a/%2e%2e/manifests/v1', 'NAME_INVALID', 400],
    ['GET', '/v2/a\\b/manifests/v1', 'NAME_INVALID', 400],
    ['GET', '/v2/a%00b/manifests/v1', 'NAME_INVALID', 400],
    ['GET', `/v2/${'a'.repeat(256)}/manifests/v1`, 'NAME_INVALID', 400],
    // A read of a reference that is neither a tag nor a digest names no manifest (the conformance tests expect 404).
    ['GET', `/v2/${REPO}/manifests/-bad`, 'MANIFEST_UNKNOWN', 404],
    ['HEAD', `/v2/${REPO}/manifests/-bad`, '', 404],
    ['GET', `/v2/${REPO}/manifests/${'t'.repeat(129)}`, 'MANIFEST_UNKNOWN', 404],
    ['GET', `/v2/${REPO}/manifests/sha256:XYZ`, 'MANIFEST_UNKNOWN', 404],
    ['GET', `/v2/${REPO}/blobs/sha256:${'a'.repeat(63)}`, 'DIGEST_INVALID', 400],
    ['GET', `/v2/${REPO}/blobs/latest`, 'DIGEST_INVALID', 400],
    ['GET', `/v2/${REPO}/blobs/md5:${'a'.repeat(32)}`, 'UNSUPPORTED', 405],
    // A write is checked by the grammar first: a malformed reference is its grammar's 400, only a valid one 405.
    ['PUT', `/v2/${REPO}/manifests/sha256:totallywrong`, 'DIGEST_INVALID', 400],
    ['PUT', `/v2/${REPO}/manifests/-bad`, 'TAG_INVALID', 400],
    ['PUT', '/v2/UPPER/manifests/v1', 'NAME_INVALID', 400],
    ['DELETE', `/v2/${REPO}/blobs/sha256:${'a'.repeat(63)}`, 'DIGEST_INVALID', 400],
  ];
  // Over a real socket: inject() would normalise dot segments before the server saw them.
  const client = new Client(proxy.url);
  try {
    for (const [method, url, code, status] of cases) {
      const res = await client.request({ method, path: url, ...(method === 'PUT' ? { body: '{}' } : {}) });
      const body = await res.body.text();
      assert.equal(res.statusCode, status, `${method} ${url}`);
      if (method === 'HEAD') continue;
      assert.equal(errorCode(body), code, `${method} ${url}`);
      assert.doesNotMatch(body, /at .+\.js/, 'no stack trace');
    }
  } finally {
    await client.close();
  }
  assert.deepEqual(fake.requests(), []);
  assert.deepEqual(await readdir(proxy.root, { recursive: true }), before);
});

test('client credentials are never forwarded upstream and never logged', async () => {
  fake.clearRequests();
  const res = await proxy.app.inject({
    method: 'GET', url: `/v2/${REPO}/manifests/c`, headers: { authorization: 'Basic c2VjcmV0LXVzZXI6aHVudGVyMg==' },
  });
  assert.equal(res.statusCode, 200);
  for (const r of fake.requests()) assert.equal(r.headers['authorization'], undefined);
  assert.doesNotMatch(proxy.rawLogs(), /c2VjcmV0LXVzZXI6aHVudGVyMg|hunter2/);
});

test('one log line per request: method, url, status, bytes, duration and cache outcome', async () => {
  const before = proxy.logs().filter((l) => l['msg'] === 'request').length;
  await proxy.app.inject({ method: 'GET', url: `/v2/${REPO}/blobs/${image.config.digest}` });
  const lines = proxy.logs().filter((l) => l['msg'] === 'request');
  assert.equal(lines.length, before + 1);
  const line = lines.at(-1)!;
  assert.equal(line['method'], 'GET');
  assert.equal(line['url'], `/v2/${REPO}/blobs/${image.config.digest}`);
  assert.equal(line['status'], 200);
  assert.equal(line['bytes'], image.config.size);
  assert.equal(typeof line['ms'], 'number');
  assert.ok(['hit', 'miss', 'coalesced'].includes(String(line['cache'])));
});
