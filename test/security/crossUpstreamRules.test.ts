/**
 * Review 2026-12-01, finding 9, end to end: with access rules (issue 15), a
 * blob cached from upstream A is linked into a repository of upstream B only
 * after B served the same bytes. The mirror turns `confirmByContent` on
 * because its rules restrict something (bob may not read a.test).
 *
 * A is Debian's docker-registry; C is the same registry under another
 * upstream name (a real upstream that has the same bytes). B is a liar no
 * real registry can be: HEAD 200 for any blob, other bytes on GET.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import type { Digest } from '../../src/registry/digest.js';
import type { RepositoryName } from '../../src/registry/names.js';
import { blobDataPath, layerLinkPath } from '../../src/storage/layout.js';
import { writeHtpasswd } from '../fixtures/certs.js';
import { basicAuth } from '../fixtures/https.js';
import { makeImage } from '../fixtures/images.js';
import { serveOnLoopback, type LoopbackServer } from '../fixtures/net.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { pushImage } from '../fixtures/seed.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo', 'htpasswd');
const image = makeImage({ layerSizes: [64 * 1024] });
const layer = image.layers[0]!;
const alice = basicAuth('alice', 'alice-pw');
const bob = basicAuth('bob', 'bob-pw');

let registry: RunningRegistry;
let liar: LoopbackServer;
const liarGets: string[] = [];
let proxy: RunningProxy;

before(async () => {
  if (skip) return;
  registry = await startRegistry();
  await pushImage(registry.host, 'team/app', 'v1', image);
  await pushImage(registry.host, 'mirror/app', 'v1', image);
  liar = await serveOnLoopback((req, res) => {
    req.resume();
    const url = req.url ?? '/';
    if (url === '/v2/') {
      res.writeHead(200, { 'docker-distribution-api-version': 'registry/2.0', 'content-type': 'application/json' });
      res.end('{}');
      return;
    }
    if (!url.includes('/blobs/')) {
      res.writeHead(404, { 'docker-distribution-api-version': 'registry/2.0', 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}');
      return;
    }
    // The lie: every digest exists, with the size asked about; the bytes are not the digest's.
    if (req.method === 'GET') liarGets.push(url);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': layer.size, 'docker-distribution-api-version': 'registry/2.0' });
    res.end(req.method === 'HEAD' ? undefined : Buffer.alloc(layer.size, 0x41));
  });
  const htpasswd = join(await tempDir('rules-htpasswd'), 'htpasswd');
  await writeHtpasswd(htpasswd, { alice: 'alice-pw', bob: 'bob-pw' });
  proxy = await startProxy({
    upstreams: [
      { name: 'a.test', url: registry.url },
      { name: 'b.test', url: liar.url },
      { name: 'c.test', url: registry.url },
    ],
    auth: {
      htpasswd: { file: htpasswd, realm: 'pullthrough' },
      rules: [
        { users: ['alice'], repositories: ['a.test/**'] },
        { users: ['bob'], repositories: ['b.test/**', 'c.test/**'] },
      ],
    },
  });
});

after(async () => {
  await proxy?.stop();
  await liar?.stop();
  await registry?.stop();
});

async function get(path: string, authorization: string): Promise<{ status: number; body: Buffer; code: string | undefined }> {
  const res = await request(`${proxy.url}${path}`, { headers: { authorization } });
  const body = Buffer.from(await res.body.arrayBuffer());
  let code: string | undefined;
  if (res.statusCode >= 400) code = (JSON.parse(body.toString('utf8')) as { errors?: { code?: string }[] }).errors?.[0]?.code;
  return { status: res.statusCode, body, code };
}

async function exists(relative: string): Promise<boolean> {
  return stat(join(proxy.root, relative)).then(() => true, () => false);
}

const repository = (upstream: string, name: string): { upstream: string; name: RepositoryName } => ({ upstream, name: name as RepositoryName });

test('access rules: a liar upstream claiming a blob cached from another upstream gets nothing; one that serves the same bytes gets it linked', { skip }, async () => {
  const digest = layer.digest as Digest;
  const cached = await get(`/v2/a.test/team/app/blobs/${digest}`, alice);
  assert.equal(cached.status, 200);
  assert.ok(cached.body.equals(layer.data), 'alice pulled the layer from a.test: it is cached');
  for (let i = 0; i < 200 && !(await exists(blobDataPath(digest))); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(await exists(blobDataPath(digest)), 'the blob is committed in storage');

  assert.equal((await get(`/v2/a.test/team/app/blobs/${digest}`, bob)).status, 403, 'the rules keep bob from a.test');

  const lied = await get(`/v2/b.test/x/y/blobs/${digest}`, bob);
  assert.equal(lied.status, 404, 'the liar\'s HEAD is not enough: its bytes were compared and differ');
  assert.equal(lied.code, 'BLOB_UNKNOWN');
  assert.ok(!lied.body.includes(layer.data.subarray(0, 64)), 'none of the cached bytes reached bob');
  assert.deepEqual(liarGets, [`/v2/x/y/blobs/${digest}`], 'the liar was asked for the bytes, once');
  assert.equal(await exists(layerLinkPath(repository('b.test', 'x/y'), digest)), false, 'nothing was linked into the liar\'s repository');

  const honest = await get(`/v2/c.test/mirror/app/blobs/${digest}`, bob);
  assert.equal(honest.status, 200, 'c.test served the same bytes');
  assert.ok(honest.body.equals(layer.data));
  assert.equal(await exists(layerLinkPath(repository('c.test', 'mirror/app'), digest)), true, 'and the blob is linked there');
  const gets = (await registry.settledRequests()).filter((e) => e.method === 'GET' && e.path === `/v2/mirror/app/blobs/${digest}`);
  assert.equal(gets.length, 1, 'confirmed by one GET from c.test');

  const again = await get(`/v2/b.test/x/y/blobs/${digest}`, bob);
  assert.equal(again.status, 404, 'the honest link is c.test\'s, not the liar\'s');
});
