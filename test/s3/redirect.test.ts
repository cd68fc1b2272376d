/**
 * Redirect mode (cached blob GETs answer 307 to a presigned URL of the
 * object) with skopeo, and the store becoming unreachable: pulls fail with
 * 503, never 500, and /readyz names S3.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { request } from '../../src/upstream/undici.js';
import { FakeClock } from '../fixtures/clock.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { s3StorageConfig, s3Store, type S3Store } from '../fixtures/s3.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { pullWithSkopeo } from '../fixtures/skopeo.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const skip = toolSkip('docker-registry', 'skopeo');

let upstream: RunningRegistry;
let images: SeededImage[];
let store: S3Store;

before(async () => {
  if (skip) return;
  store = await s3Store();
  upstream = await startRegistry();
  images = await seedImages(upstream.host, { layerSize: 200 * 1024, layers: 2, kinds: ['oci-image', 'docker-list'] });
});

after(async () => {
  await upstream?.stop();
});

interface LoggedRequest { method: string; url: string; status: number; bytes?: number }

function blobRequests(proxy: RunningProxy): LoggedRequest[] {
  return (proxy.logs().filter((l) => l['msg'] === 'request') as unknown as LoggedRequest[]).filter((l) => l.url.includes('/blobs/'));
}

test('redirect mode: skopeo follows the 307 to the store and gets the right bytes; pullthrough serves none of them', { skip }, async () => {
  const bucket = await store.createBucket();
  const proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url }], storage: s3StorageConfig(store, bucket, { redirect: true }) });
  try {
    for (const image of images) {
      const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, await tempDir('s3-redirect-cold'));
      assert.equal(pulled.manifestDigest, image.digest, 'a cold pull streams through pullthrough as always');
    }
    const cold = blobRequests(proxy).length;
    await upstream.clearRequests();
    for (const image of images) {
      const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, await tempDir('s3-redirect-warm'));
      assert.equal(pulled.manifestDigest, image.digest);
    }
    const warm = blobRequests(proxy).slice(cold).filter((r) => r.method === 'GET');
    assert.ok(warm.length >= images.length * 2, `blob GETs: ${warm.length}`);
    for (const r of warm) {
      assert.equal(r.status, 307, r.url);
      assert.equal(r.bytes ?? 0, 0, `${r.url}: no blob bytes through pullthrough`);
    }
    assert.deepEqual((await upstream.settledRequests()).filter((e) => e.path.includes('/blobs/') && e.method === 'GET'), []);
    const digest = images[0]!.blobDigests[0]!;
    const res = await request(`${proxy.url}/v2/${images[0]!.repository}/blobs/${digest}`);
    assert.equal(res.statusCode, 307);
    const location = new URL(String(res.headers['location']));
    assert.equal(location.origin, new URL(store.endpoint).origin, 'to the store');
    assert.match(location.search, /X-Amz-Expires=300/, 'a short-lived presigned URL (redirectExpiry 5m)');
    assert.equal(res.headers['cache-control'], 'no-store');
    await res.body.dump();
  } finally {
    await proxy.stop();
  }
});

/** A TCP relay to the store that can be cut: the store "unreachable" without stopping the shared one. */
async function relayTo(endpoint: string): Promise<{ url: string; cut: () => Promise<void> }> {
  const target = new URL(endpoint);
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstreamSocket = connect(Number(target.port), target.hostname);
    for (const s of [client, upstreamSocket]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstreamSocket).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${address.port}`,
    cut: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

test('S3 unreachable: cached descriptors do not serve bytes, so pulls fail with 503 (not 500), and /readyz names S3', { skip }, async () => {
  const bucket = await store.createBucket();
  const relay = await relayTo(store.endpoint);
  // The readiness verdict is reused for a moment: the fake clock moves past that instead of a sleep.
  const clock = new FakeClock(Date.now());
  const proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: upstream.url }], storage: s3StorageConfig(store, bucket, { endpoint: relay.url }), clock });
  try {
    const image = images.find((i) => i.kind === 'oci-image')!;
    const pulled = await pullWithSkopeo(`${proxy.host}/${image.repository}:${image.tag}`, await tempDir('s3-down'));
    assert.equal(pulled.manifestDigest, image.digest);
    assert.equal((await request(`${proxy.adminUrl}/readyz`)).statusCode, 200);
    await relay.cut();
    await clock.advance(60_000);
    const digest = image.blobDigests[0]!;
    const res = await request(`${proxy.url}/v2/${image.repository}/blobs/${digest}`);
    assert.equal(res.statusCode, 503);
    const body = await res.body.json() as { errors: { code: string; message: string }[] };
    assert.equal(body.errors[0]!.code, 'UNAVAILABLE');
    assert.match(body.errors[0]!.message, /S3/);
    const ready = await request(`${proxy.adminUrl}/readyz`);
    assert.equal(ready.statusCode, 503);
    const verdict = await ready.body.json() as { checks: Record<string, { ok: boolean; error?: string }> };
    assert.equal(verdict.checks['storage']!.ok, false);
    assert.match(verdict.checks['storage']!.error!, /S3/, 'the probe names S3');
  } finally {
    await proxy.stop();
  }
});
