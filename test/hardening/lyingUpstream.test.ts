/**
 * An upstream that lies, over real HTTP (a real registry cannot be made to):
 * lengths that disagree with the bytes, bytes that disagree with the digest,
 * gzip on a blob, a redirect loop, a manifest whose Content-Type and
 * mediaType disagree, a lying Docker-Content-Digest, a 2 GiB "manifest", and
 * token services that answer HTML, never finish, or answer too much. Each:
 * a clear OCI error (or a cut-off body, never a complete wrong one), nothing
 * stored, and the next request goes upstream afresh and is cached.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { request } from '../../src/upstream/undici.js';
import { makeImage, MEDIA } from '../fixtures/images.js';
import { serveOnLoopback, type LoopbackServer } from '../fixtures/net.js';
import { getOutcome, type Outcome } from '../fixtures/outcome.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** The liar: a handler per path; paths without one are answered truthfully from `blobs` and `manifests`. */
let liar: LoopbackServer;
const lies = new Map<string, Handler>();
const blobs = new Map<string, Buffer>();
const manifests = new Map<string, { body: Buffer; mediaType: string }>();
const asked: string[] = [];
let proxy: RunningProxy;

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function truthful(req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0]!;
  const headers = { 'docker-distribution-api-version': 'registry/2.0' };
  if (path === '/v2/') {
    res.writeHead(200, { ...headers, 'content-type': 'application/json' }).end('{}');
    return;
  }
  const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path);
  if (blob && blobs.has(blob[1]!)) {
    const body = blobs.get(blob[1]!)!;
    res.writeHead(200, { ...headers, 'content-length': body.length, 'docker-content-digest': blob[1]!, 'content-type': 'application/octet-stream' });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  const manifest = /\/manifests\/([^/]+)$/.exec(path);
  const found = manifest && manifests.get(path);
  if (found) {
    res.writeHead(200, { ...headers, 'content-length': found.body.length, 'docker-content-digest': sha256(found.body), 'content-type': found.mediaType });
    res.end(req.method === 'HEAD' ? undefined : found.body);
    return;
  }
  res.writeHead(404, { ...headers, 'content-type': 'application/json' }).end('{"errors":[{"code":"NOT_FOUND","message":"no"}]}');
}

before(async () => {
  liar = await serveOnLoopback((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    asked.push(`${req.method} ${path}`);
    (lies.get(path) ?? truthful)(req, res);
  });
  proxy = await startProxy({
    upstreams: [{ name: 'liar.test', url: liar.url }],
    upstreamDefaults: { timeouts: { connect: '1s', headers: '1s', bodyIdle: '1s' }, notFoundTtl: '0s' },
  });
});

after(async () => {
  await proxy?.stop();
  await liar?.stop();
});

function get(path: string, headers: Record<string, string> = {}): Promise<Outcome> {
  return getOutcome(`${proxy.url}${path}`, headers);
}

async function settled(): Promise<void> {
  while (proxy.mirror.blobs.activeFills > 0) await new Promise((r) => setTimeout(r, 10));
}

async function blobStored(digest: string): Promise<boolean> {
  const hex = digest.split(':')[1]!;
  return stat(join(proxy.root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data')).then(() => true, () => false);
}

async function nothingStored(digest: string): Promise<void> {
  await settled();
  assert.equal(await blobStored(digest), false, 'no blob under that digest');
  assert.deepEqual(await readdir(join(proxy.root, '_uploads')), [], 'no temp file left');
}

let counter = 0;

/** A blob the liar lies about with `lie`, then tells the truth: the lie is refused, the truth cached. */
async function blobLie(lie: (body: Buffer, res: ServerResponse) => void, expectCode?: string): Promise<void> {
  const body = randomBytes(256 * 1024);
  const digest = sha256(body);
  const path = `/v2/lies/blob${++counter}/blobs/${digest}`;
  lies.set(path, (_req, res) => lie(body, res));
  const lied = await get(`/v2/liar.test/lies/blob${counter}/blobs/${digest}`);
  assert.ok(lied.broken || lied.status >= 500, `a lie is never a complete answer: ${JSON.stringify(lied)}`);
  assert.ok(lied.status < 500 || lied.status === 502 || lied.status === 503, `a documented upstream status: ${lied.status}`);
  if (expectCode !== undefined) assert.equal(lied.code, expectCode);
  assert.notEqual(lied.digest, digest);
  await nothingStored(digest);

  lies.delete(path);
  blobs.set(digest, body);
  const before = asked.length;
  const truth = await get(`/v2/liar.test/lies/blob${counter}/blobs/${digest}`);
  assert.deepEqual(truth, { status: 200, broken: false, digest });
  assert.ok(asked.slice(before).some((a) => a === `GET ${path}`), 'went upstream afresh');
  await settled();
  assert.equal(await blobStored(digest), true, 'the true answer is cached');
}

test('Content-Length smaller than the bytes sent: refused, nothing stored, the next answer cached', async () => {
  await blobLie((body, res) => {
    res.writeHead(200, { 'content-length': body.length - 1000 });
    // node would refuse to write past its own Content-Length: write the rest on the socket itself.
    res.socket!.write(body.subarray(0, body.length - 1000));
    res.socket!.end(body.subarray(body.length - 1000));
  });
});

test('Content-Length larger than the bytes sent: refused, nothing stored, the next answer cached', async () => {
  await blobLie((body, res) => {
    res.writeHead(200, { 'content-length': body.length + 1000 });
    res.write(body, () => res.socket!.end());
  });
});

test('a blob longer than its digest allows: refused, nothing stored, the next answer cached', async () => {
  await blobLie((body, res) => {
    const longer = Buffer.concat([body, randomBytes(1000)]);
    res.writeHead(200, { 'content-length': longer.length }).end(longer);
  });
});

test('gzip Content-Encoding on a blob: the bytes as they would be stored do not match, refused, next answer cached', async () => {
  await blobLie((body, res) => {
    const gzipped = gzipSync(body);
    res.writeHead(200, { 'content-length': gzipped.length, 'content-encoding': 'gzip' }).end(gzipped);
  });
});

test('a redirect loop: 503 after maxRedirects, nothing stored, the next answer cached', async () => {
  await blobLie((_body, res) => {
    res.writeHead(302, { location: res.req.url! }).end();
  }, 'UNAVAILABLE');
});

test('an error body that never ends: only maxErrorBodySize of it is read, and the client gets 503 at once', async () => {
  const digest = sha256(randomBytes(32));
  let written = 0;
  lies.set(`/v2/lies/errorbody/blobs/${digest}`, (_req, res) => {
    res.writeHead(500, { 'content-type': 'application/json' });
    res.write('{"errors":[{"code":"UNKNOWN","message":"');
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    // Keeps writing for as long as anyone reads: whoever waits for its end waits forever.
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk)) written += chunk.length;
      if (!res.destroyed) res.once('drain', pump);
    };
    pump();
  });
  const lied = await get(`/v2/liar.test/lies/errorbody/blobs/${digest}`);
  assert.equal(lied.status, 503);
  assert.equal(lied.code, 'UNAVAILABLE');
  assert.ok(written < 64 * 1024 * 1024, `the mirror stopped reading (the liar wrote ${written} bytes)`);
});

function newManifest(): { body: Buffer; digest: string } {
  const image = makeImage({ layerSizes: [1000] });
  return { body: image.manifest, digest: image.digest };
}

test('a Docker-Content-Digest that does not match the body: 502, nothing stored, the next answer cached', async () => {
  const { body, digest } = newManifest();
  const lying = sha256(randomBytes(32));
  const tagPath = '/v2/lies/digest/manifests/v1';
  // HEAD by tag names a digest; GET by that digest sends other bytes.
  lies.set(tagPath, (_req, res) => {
    res.writeHead(200, { 'content-length': body.length, 'docker-content-digest': lying, 'content-type': MEDIA.ociManifest }).end(_req.method === 'HEAD' ? undefined : body);
  });
  lies.set(`/v2/lies/digest/manifests/${lying}`, (_req, res) => {
    res.writeHead(200, { 'content-length': body.length, 'docker-content-digest': lying, 'content-type': MEDIA.ociManifest }).end(body);
  });
  const lied = await get('/v2/liar.test/lies/digest/manifests/v1', { accept: MEDIA.ociManifest });
  assert.equal(lied.status, 502);
  assert.equal(lied.code, 'UPSTREAM_INVALID');
  assert.equal(await manifestRevisions('lies/digest'), 0, 'nothing stored');

  lies.clear();
  manifests.set(tagPath, { body, mediaType: MEDIA.ociManifest });
  manifests.set(`/v2/lies/digest/manifests/${digest}`, { body, mediaType: MEDIA.ociManifest });
  const truth = await get('/v2/liar.test/lies/digest/manifests/v1', { accept: MEDIA.ociManifest });
  assert.deepEqual(truth, { status: 200, broken: false, digest });
  assert.equal(await manifestRevisions('lies/digest'), 1, 'the true manifest is cached');
});

test('a manifest whose Content-Type disagrees with its mediaType: 502, nothing stored, the next answer cached', async () => {
  const { body, digest } = newManifest();
  const path = `/v2/lies/mediatype/manifests/${digest}`;
  lies.set(path, (req, res) => {
    // The body says OCI image manifest; the header says Docker schema 2.
    res.writeHead(200, { 'content-length': body.length, 'docker-content-digest': digest, 'content-type': MEDIA.dockerManifest })
      .end(req.method === 'HEAD' ? undefined : body);
  });
  const lied = await get(`/v2/liar.test/lies/mediatype/manifests/${digest}`, { accept: `${MEDIA.ociManifest}, ${MEDIA.dockerManifest}` });
  assert.equal(lied.status, 502, JSON.stringify(lied));
  assert.equal(lied.code, 'UPSTREAM_INVALID');
  assert.equal(await manifestRevisions('lies/mediatype'), 0, 'nothing stored');

  lies.delete(path);
  manifests.set(path, { body, mediaType: MEDIA.ociManifest });
  const truth = await get(`/v2/liar.test/lies/mediatype/manifests/${digest}`, { accept: MEDIA.ociManifest });
  assert.deepEqual(truth, { status: 200, broken: false, digest });
  assert.equal(await manifestRevisions('lies/mediatype'), 1, 'the true manifest is cached');
});

async function manifestRevisions(repository: string): Promise<number> {
  const dir = join(proxy.root, 'repositories', 'liar.test', repository, '_manifests', 'revisions', 'sha256');
  return (await readdir(dir).catch(() => [])).length;
}

function rssMiB(): number {
  return process.memoryUsage.rss() / 2 ** 20;
}

/** A "manifest" of 2 GiB: announced by Content-Length, or chunked with none; the liar writes until it is cut off. */
function hugeManifest(announce: boolean): Handler {
  return (_req, res) => {
    const chunk = Buffer.alloc(64 * 1024, 0x7b);
    res.writeHead(200, {
      'content-type': MEDIA.ociManifest,
      ...(announce ? { 'content-length': String(2 * 2 ** 30) } : {}),
    });
    let sent = 0;
    const pump = (): void => {
      while (!res.destroyed && sent < 2 * 2 ** 30) {
        sent += chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          return;
        }
      }
      if (!res.destroyed) res.end();
    };
    res.on('close', () => { sent = Infinity; });
    pump();
  };
}

test('a 2 GiB manifest, announced or chunked: refused (502 UPSTREAM_INVALID), RSS unchanged beyond noise, nothing stored', async () => {
  for (const announce of [true, false]) {
    const digest = sha256(randomBytes(32));
    const repository = `lies/huge${announce ? 'announced' : 'chunked'}`;
    lies.set(`/v2/${repository}/manifests/${digest}`, hugeManifest(announce));
    const before = rssMiB();
    const lied = await get(`/v2/liar.test/${repository}/manifests/${digest}`, { accept: MEDIA.ociManifest });
    assert.equal(lied.status, 502, JSON.stringify(lied));
    assert.equal(lied.code, 'UPSTREAM_INVALID');
    // At most maxManifestSize (4 MiB) is ever held; 64 MiB is far above that and far below 2 GiB.
    assert.ok(rssMiB() - before < 64, `RSS grew from ${before.toFixed(0)} to ${rssMiB().toFixed(0)} MiB`);
    assert.equal(await manifestRevisions(repository), 0);
  }
});

/** An upstream that wants a Bearer token from `tokenHandler`. */
async function withTokenService(tokenHandler: Handler): Promise<{ upstream: LoopbackServer; tokens: LoopbackServer; proxy: RunningProxy; good: () => void }> {
  let goodToken = false;
  const tokens = await serveOnLoopback((req, res) => {
    if (goodToken) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"good-token","expires_in":300}');
      return;
    }
    tokenHandler(req, res);
  });
  const body = randomBytes(4096);
  const digest = sha256(body);
  const upstream = await serveOnLoopback((req, res) => {
    if (req.headers.authorization !== 'Bearer good-token') {
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="${tokens.url}/token",service="liar",scope="repository:x/y:pull"`,
        'docker-distribution-api-version': 'registry/2.0', 'content-type': 'application/json',
      }).end('{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}');
      return;
    }
    res.writeHead(200, { 'content-length': body.length, 'docker-content-digest': digest }).end(req.method === 'HEAD' ? undefined : body);
  });
  const running = await startProxy({
    upstreams: [{ name: 'token.test', url: upstream.url, trustedRealms: ['127.0.0.1'] }],
    upstreamDefaults: { timeouts: { connect: '1s', headers: '1s', bodyIdle: '1s' }, maxTokenResponseSize: '64KiB' },
  });
  return { upstream, tokens, proxy: running, good: () => { goodToken = true; blobDigest = digest; } };
}

let blobDigest = '';

for (const [name, handler] of [
  ['answers HTML', (_req: IncomingMessage, res: ServerResponse) => { res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>login</body></html>'); }],
  ['never ends its answer', (_req: IncomingMessage, res: ServerResponse) => { res.writeHead(200, { 'content-type': 'application/json' }); res.write('{"token":"'); }],
  ['answers more than maxTokenResponseSize', (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'x'.repeat(200 * 1024) }));
  }],
] as const) {
  test(`a token service that ${name}: 503 UNAVAILABLE, nothing stored; once it answers, the blob is served and cached`, async () => {
    const setup = await withTokenService(handler);
    try {
      const digest = sha256(randomBytes(1));
      const lied = await request(`${setup.proxy.url}/v2/token.test/x/y/blobs/${digest}`);
      assert.equal(lied.statusCode, 503);
      const bodyText = await lied.body.text();
      assert.equal((JSON.parse(bodyText) as { errors: { code: string }[] }).errors[0]!.code, 'UNAVAILABLE', bodyText);
      assert.deepEqual(await readdir(join(setup.proxy.root, '_uploads')).catch(() => []), []);
      setup.good();
      const truth = await request(`${setup.proxy.url}/v2/token.test/x/y/blobs/${blobDigest}`);
      assert.equal(truth.statusCode, 200);
      assert.equal(sha256(Buffer.from(await truth.body.arrayBuffer())), blobDigest);
    } finally {
      await setup.proxy.stop();
      await setup.upstream.stop();
      await setup.tokens.stop();
    }
  });
}
