/**
 * Review 2026-12-01, finding 6: a tag's `fetchedAt` in the future must not
 * make it fresh for ever. Whoever writes a bundle, or can write to Redis,
 * could otherwise pin a tag of any upstream to a digest of their choice,
 * and an online mirror would never ask the upstream again.
 *
 * Against the real Distribution, on the mirror's fake clock: the upstream's
 * tag points at one image; a bundle (or Redis) claims, as of 2099, that it
 * points at another. After tagMaxAge the mirror asks the upstream, and
 * serves the upstream's answer.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import pino from 'pino';
import * as tar from 'tar-stream';
import { request } from '../../src/upstream/undici.js';
import { Redis } from 'ioredis';
import { importBundle } from '../../src/airgap/import.js';
import { REF_NAME, TAG_FETCHED_AT } from '../../src/airgap/ociLayout.js';
import { resolveConfig } from '../../src/config/load.js';
import { Mirror } from '../../src/mirror.js';
import { encodeTagRecord } from '../../src/registry/tagRecord.js';
import type { Digest } from '../../src/registry/digest.js';
import { FakeClock } from '../fixtures/clock.js';
import { blobsOf, makeImage, manifestsOf, type BuiltImage } from '../fixtures/images.js';
import { startProxy, testConfigDocument, type RunningProxy } from '../fixtures/proxy.js';
import { findRedis, randomPrefix } from '../fixtures/redis.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { pushImage } from '../fixtures/seed.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const redis = await findRedis();
const skip = toolSkip('docker-registry', 'skopeo');
const UPSTREAM = 'registry.test';
const FUTURE = '2099-01-01T00:00:00Z';
let upstream: RunningRegistry;
const proxies: RunningProxy[] = [];

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
});

after(async () => {
  for (const p of proxies) await p.stop();
  await upstream?.stop();
});

/** An OCI layout tar naming `image` as `<UPSTREAM>/<repository>:v1`, learned (it says) in 2099. */
async function futureBundle(repository: string, image: BuiltImage): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => { chunks.push(c as Buffer); });
  const ended = new Promise<void>((resolve) => pack.on('end', () => resolve()));
  const add = (name: string, body: Buffer): Promise<void> => new Promise((resolve, reject) => {
    pack.entry({ name, size: body.length, mode: 0o644 }, body, (err) => (err ? reject(err) : resolve()));
  });
  await add('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
  for (const m of manifestsOf(image)) await add(`blobs/sha256/${m.digest.slice(7)}`, m.body);
  for (const b of blobsOf(image)) await add(`blobs/sha256/${b.digest.slice(7)}`, b.data);
  await add('index.json', Buffer.from(JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: image.mediaType, digest: image.digest, size: image.size,
      annotations: { [REF_NAME]: `${UPSTREAM}/${repository}:v1`, [TAG_FETCHED_AT]: FUTURE } }],
  })));
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

async function served(proxy: RunningProxy, repository: string): Promise<string> {
  const res = await request(`${proxy.url}/v2/${repository}/manifests/v1`);
  await res.body.dump();
  assert.equal(res.statusCode, 200);
  return String(res.headers['docker-content-digest']);
}

async function headsFor(repository: string): Promise<number> {
  return (await upstream.settledRequests()).filter((e) => e.method === 'HEAD' && e.path.startsWith(`/v2/${repository}/manifests/`)).length;
}

test('a bundle claiming a tag was learned in 2099: imported as learned now, revalidated after tagMaxAge', { skip }, async () => {
  const repository = 'future/bundle';
  const [truth, planted] = [makeImage({ layerSizes: [512] }), makeImage({ layerSizes: [512] })];
  await pushImage(upstream.host, repository, 'v1', truth);
  const clock = new FakeClock();
  const root = await tempDir('future-root');
  const config = resolveConfig(testConfigDocument({ upstreams: [{ name: UPSTREAM, url: upstream.url }] }, root), 'test');
  const importer = new Mirror({ config, logger: pino({ level: 'silent' }), clock });
  await importer.driver.init();
  await importBundle(
    { driver: importer.driver, manifests: importer.localManifests, tags: importer.localTags, blobs: importer.localBlobs, referrers: importer.localReferrers },
    Readable.from([await futureBundle(repository, planted)]),
    { route: (name) => { const r = importer.router.parseReference(name); return { repository: r.route.repository, tag: r.tag, digest: r.digest }; }, now: clock.now() },
  );
  await importer.close(0);

  const proxy = await startProxy({ root, upstreams: [{ name: UPSTREAM, url: upstream.url }], upstreamDefaults: { tagMaxAge: '1s' }, clock });
  proxies.push(proxy);
  await upstream.clearRequests();
  assert.equal(await served(proxy, repository), planted.digest, 'within tagMaxAge of the import, the bundle answers');
  assert.equal(await headsFor(repository), 0);
  await clock.advance(2000);
  assert.equal(await served(proxy, repository), truth.digest, 'after it, the upstream is asked');
  assert.equal(await headsFor(repository), 1);
});

test('a Redis tag record claiming 2099 is not fresh: the upstream is asked, and its answer replaces the record', { skip: skip || redis.skip }, async () => {
  const repository = 'future/redis';
  const truth = makeImage({ layerSizes: [512] });
  const planted = makeImage({ layerSizes: [512] });
  await pushImage(upstream.host, repository, 'v1', truth);
  const prefix = randomPrefix();
  const client = new Redis(redis.url!);
  try {
    const key = `${prefix}tag:${UPSTREAM}/${repository}:v1`;
    await client.set(key, encodeTagRecord({
      descriptor: { digest: planted.digest as Digest, mediaType: planted.mediaType, size: planted.size }, fetchedAt: Date.parse(FUTURE),
    }));
    const clock = new FakeClock();
    const proxy = await startProxy({
      upstreams: [{ name: UPSTREAM, url: upstream.url }], upstreamDefaults: { tagMaxAge: '1s' }, clock,
      redis: { url: redis.url!, keyPrefix: prefix },
    });
    proxies.push(proxy);
    await upstream.clearRequests();
    assert.equal(await served(proxy, repository), truth.digest);
    assert.equal(await headsFor(repository), 1);
    const record = JSON.parse((await client.get(key))!) as { digest: string; fetchedAt: string };
    assert.equal(record.digest, truth.digest);
    assert.equal(Date.parse(record.fetchedAt), clock.now(), 'the record in Redis is the revalidated one');
  } finally {
    client.disconnect();
  }
});
