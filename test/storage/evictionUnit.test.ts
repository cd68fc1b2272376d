/**
 * Eviction as a unit, on the in-memory driver with a fake clock: which
 * images and blobs a run removes (least recently used first, between the
 * watermarks, never pinned, recent or in-use content, idle ones after
 * maxIdle), what it tells the caches, and how the one commit wakes the
 * evictor. Last-use times are set by the clock, never waited for.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { buffer } from 'node:stream/consumers';
import { pino } from 'pino';
import { CachedBlobStatter } from '../../src/cache/cachedStatter.js';
import { MemoryBlobDescriptorService } from '../../src/cache/memory.js';
import type { Descriptor } from '../../src/registry/descriptor.js';
import { MEDIA_TYPES } from '../../src/registry/mediaTypes.js';
import type { Digest } from '../../src/registry/digest.js';
import type { RepositoryName } from '../../src/registry/names.js';
import type { RepositoryRef } from '../../src/registry/services.js';
import { encodeReferrersRecord, referrersTag } from '../../src/registry/referrers.js';
import { encodeTagRecord } from '../../src/registry/tagRecord.js';
import { LocalBlobStore, StorageBlobStatter } from '../../src/storage/blobs.js';
import { collectGarbage, type EvictionPolicy, type EvictionReport } from '../../src/storage/eviction.js';
import { Evictor } from '../../src/storage/evictor.js';
import { blobDataPath, layerLinkPath, manifestRevisionPath, referrersRecordPath, tagPath } from '../../src/storage/layout.js';
import { UsageRecorder, type UseTimes } from '../../src/storage/usage.js';
import { BucketUsageRecord } from '../../src/storage/usageRecord.js';
import { FakeClock } from '../fixtures/clock.js';
import { MemoryDriver } from '../fixtures/memoryDriver.js';
import { until } from '../fixtures/tools.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const OCI_MANIFEST = MEDIA_TYPES.ociManifest;
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

function repo(name: string): RepositoryRef {
  return { upstream: 'registry.test', name: name as RepositoryName };
}

function digestOf(bytes: Buffer): Digest {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
}

/** An image as stored: its manifest, config and layers in `blobs/`, links, a revision and a tag. */
interface StoredImage {
  readonly repository: RepositoryRef;
  readonly tag: string;
  readonly digest: Digest;
  /** Manifest, config and layers. */
  readonly blobs: Digest[];
  readonly layers: Digest[];
  /** Bytes of all its blobs. */
  readonly bytes: number;
  /** `<upstream>/<name>@<digest>`, as the report names it. */
  readonly id: string;
}

function manifestOf(config: Buffer, layers: readonly Buffer[]): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(config), size: config.length },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digestOf(l), size: l.length })),
  }));
}

/**
 * Writes an image into storage as the proxy stores leave it, last used at
 * `usedAt` (the revision's and every file's modification time).
 */
async function storeImage(driver: MemoryDriver, name: string, options: { usedAt: number; layers?: Buffer[]; tag?: string }): Promise<StoredImage> {
  const repository = repo(name);
  const tag = options.tag ?? 'v1';
  const layers = options.layers ?? [randomBytes(10_000)];
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', image: name, nonce: randomBytes(8).toString('hex') }));
  const manifest = manifestOf(config, layers);
  const digest = digestOf(manifest);
  const content = [manifest, config, ...layers];
  const paths: string[] = [];
  const put = async (path: string, data: Buffer | string): Promise<void> => {
    await driver.putContent(path, data);
    paths.push(path);
  };
  for (const data of content) await put(blobDataPath(digestOf(data)), data);
  for (const data of [config, ...layers]) await put(layerLinkPath(repository, digestOf(data)), digestOf(data));
  await put(manifestRevisionPath(repository, digest), JSON.stringify({ mediaType: OCI_MANIFEST, size: manifest.length }));
  await put(tagPath(repository, tag), encodeTagRecord({ descriptor: { digest, mediaType: OCI_MANIFEST, size: manifest.length }, fetchedAt: options.usedAt }));
  await driver.touch(paths, options.usedAt);
  return {
    repository, tag, digest,
    blobs: content.map(digestOf),
    layers: layers.map(digestOf),
    bytes: content.reduce((n, b) => n + b.length, 0),
    id: `${repository.upstream}/${repository.name}@${digest}`,
  };
}

/** True when every file of the image is still in storage. */
function kept(driver: MemoryDriver, image: StoredImage): boolean {
  const paths = new Set(driver.paths());
  return image.blobs.every((d) => paths.has(blobDataPath(d)))
    && paths.has(manifestRevisionPath(image.repository, image.digest))
    && paths.has(tagPath(image.repository, image.tag));
}

/** True when nothing of the image is left: no revision, no tag, no link, none of its blobs. */
function gone(driver: MemoryDriver, image: StoredImage): boolean {
  const paths = driver.paths();
  const prefix = `repositories/${image.repository.upstream}/${image.repository.name}/`;
  return !paths.some((p) => p.startsWith(prefix)) && image.blobs.every((d) => !paths.includes(blobDataPath(d)));
}

function policy(overrides: Partial<EvictionPolicy>): EvictionPolicy {
  return {
    maxBytes: undefined,
    highWatermark: 0.9,
    lowWatermark: 0.7,
    maxIdleMs: undefined,
    graceMs: 10 * MINUTE,
    isPinned: () => false,
    inUse: () => false,
    ...overrides,
  };
}

/** Five images of about equal size, `team/a` used least recently, `team/e` most, all well outside the grace. */
async function fiveImages(clock: FakeClock, driver: MemoryDriver): Promise<StoredImage[]> {
  const images: StoredImage[] = [];
  for (const [i, name] of ['team/a', 'team/b', 'team/c', 'team/d', 'team/e'].entries()) {
    images.push(await storeImage(driver, name, { usedAt: clock.now() - (10 - i) * HOUR }));
  }
  return images;
}

/** The ids of the images a run removed, least recently used first. */
function ids(report: EvictionReport): string[] {
  return report.removedImages.map((i) => i.id);
}

function totalBytes(images: readonly StoredImage[]): number {
  return images.reduce((n, i) => n + i.bytes, 0);
}

test('over the high watermark, images go least recently used first until use is under the low watermark', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const images = await fiveImages(clock, driver);
  const [a, b, c, d, e] = images as [StoredImage, StoredImage, StoredImage, StoredImage, StoredImage];
  // All five are 100%: over 90%; without a and b, 60%, under 70%; without a alone, 80%.
  const report = await collectGarbage(driver, policy({ maxBytes: totalBytes(images) }), { dryRun: false, now: clock.now(), inUseIsKnown: true });

  assert.deepEqual(ids(report), [a.id, b.id]);
  assert.equal(report.totalBytes, totalBytes(images));
  assert.equal(report.freedBytes, a.bytes + b.bytes);
  assert.equal(report.removedBlobs, a.blobs.length + b.blobs.length);
  assert.equal(report.dryRun, false);
  assert.ok(gone(driver, a) && gone(driver, b), 'revisions, tags, links and blobs of a and b are removed');
  for (const image of [c, d, e]) assert.ok(kept(driver, image), `${image.repository.name} is kept`);
});

test('bytes in _uploads count toward maxSize: a fill in progress makes room by evicting, it is never evicted itself', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const images = await fiveImages(clock, driver);
  const [a, b] = images as [StoredImage, StoredImage];
  // The blobs alone are 85% of the cap, under the high watermark; an upload of a third of an image pushes them over.
  const maxBytes = Math.ceil(totalBytes(images) / 0.85);
  const upload = await driver.createUpload();
  await upload.write([Buffer.alloc(Math.ceil(a.bytes / 3))], 0);
  const report = await collectGarbage(driver, policy({ maxBytes }), { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.equal(report.uploadBytes, Math.ceil(a.bytes / 3));
  assert.equal(report.totalBytes, totalBytes(images) + report.uploadBytes);
  assert.deepEqual(report.removedImages.map((i) => i.id), [a.id, b.id], 'the least recently used images made room, down to the low watermark');
  assert.ok(driver.paths().includes(`_uploads/${upload.name}`), 'the upload stays');
});

test('under the high watermark nothing goes, however old', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const images = await fiveImages(clock, driver);
  const before = driver.paths();
  const report = await collectGarbage(driver, policy({ maxBytes: Math.ceil(totalBytes(images) / 0.85) }), { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(ids(report), []);
  assert.equal(report.freedBytes, 0);
  assert.deepEqual(driver.paths(), before);
});

test('a dry run reports what a run would remove and removes nothing', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const images = await fiveImages(clock, driver);
  const before = driver.paths();
  const dry = await collectGarbage(driver, policy({ maxBytes: totalBytes(images) }), { dryRun: true, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(driver.paths(), before);
  assert.equal(driver.counts.get('delete') ?? 0, 0);
  const real = await collectGarbage(driver, policy({ maxBytes: totalBytes(images) }), { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual({ ...dry, dryRun: false }, real);
});

test('a pinned image is never removed: the next least recently used goes instead', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const images = await fiveImages(clock, driver);
  const [a, b, c] = images as [StoredImage, StoredImage, StoredImage];
  const pinnedChecks: string[] = [];
  const report = await collectGarbage(driver, policy({
    maxBytes: totalBytes(images),
    isPinned: (repository, tags, digest) => {
      pinnedChecks.push(`${repository.name}:${tags.join(',')}@${digest}`);
      return repository.name === 'team/a';
    },
  }), { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(ids(report), [b.id, c.id]);
  assert.ok(kept(driver, a));
  assert.ok(pinnedChecks.includes(`team/a:v1@${a.digest}`), 'the pin check sees the repository, its tags and the digest');
});

test('a blob shared with a retained image stays, and so does its link there', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const shared = randomBytes(10_000);
  const old = await storeImage(driver, 'team/old', { usedAt: clock.now() - 5 * HOUR, layers: [shared] });
  const fresh = await storeImage(driver, 'team/fresh', { usedAt: clock.now() - 2 * HOUR, layers: [shared, randomBytes(10_000)] });
  const removed: { digest: Digest; repositories: string[] }[] = [];
  const report = await collectGarbage(driver, policy({ maxIdleMs: 3 * HOUR }), {
    dryRun: false,
    now: clock.now(),
    inUseIsKnown: true,
    hooks: { blobRemoved: (digest, repositories) => { removed.push({ digest, repositories: repositories.map((r) => r.name) }); } },
  });
  assert.deepEqual(ids(report), [old.id]);
  const sharedDigest = digestOf(shared);
  assert.ok(driver.paths().includes(blobDataPath(sharedDigest)));
  assert.ok(driver.paths().includes(layerLinkPath(fresh.repository, sharedDigest)));
  assert.ok(kept(driver, fresh));
  assert.ok(!removed.some((r) => r.digest === sharedDigest), 'the shared layer is not reported removed');
  // The old image's own blobs went, each reported with the repositories that linked it.
  const own = old.blobs.filter((d) => d !== sharedDigest);
  assert.deepEqual(removed.map((r) => r.digest).sort(), [...own].sort());
  for (const r of removed) assert.deepEqual(r.repositories, r.digest === old.digest ? [] : ['team/old']);
});

test('an index keeps its children and their blobs; it goes as one image with them', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const amd = await storeImage(driver, 'team/multi', { usedAt: clock.now() - 3 * HOUR, tag: 'amd64' });
  const arm = await storeImage(driver, 'team/multi', { usedAt: clock.now() - 3 * HOUR, tag: 'arm64' });
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [amd, arm].map((child) => ({ mediaType: OCI_MANIFEST, digest: child.digest, size: 100 })),
  }));
  const indexDigest = digestOf(index);
  await driver.putContent(blobDataPath(indexDigest), index);
  await driver.putContent(manifestRevisionPath(repo('team/multi'), indexDigest), '{}');
  // The children's tags are removed, so that only the index is tagged (as a pull by tag of an index leaves it).
  await driver.delete(tagPath(repo('team/multi'), 'amd64'));
  await driver.delete(tagPath(repo('team/multi'), 'arm64'));
  await driver.putContent(tagPath(repo('team/multi'), 'v1'), encodeTagRecord({ descriptor: { digest: indexDigest, mediaType: OCI_INDEX, size: index.length }, fetchedAt: 0 }));
  // One child was used recently (a pull of one platform): the whole image counts as used then.
  await driver.touch([blobDataPath(indexDigest), manifestRevisionPath(repo('team/multi'), indexDigest)], clock.now() - 4 * HOUR);
  await driver.touch([manifestRevisionPath(repo('team/multi'), arm.digest)], clock.now() - HOUR);
  const other = await storeImage(driver, 'team/other', { usedAt: clock.now() - 2 * HOUR });

  const all = amd.bytes + arm.bytes + index.length + other.bytes;
  // Over 90% of the cap; without team/other under 70%.
  const report = await collectGarbage(driver, policy({ maxBytes: Math.floor(all / 0.92) }), { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(ids(report), [`registry.test/team/other@${other.digest}`], 'the index counts as used an hour ago');

  const idle = await collectGarbage(driver, policy({ maxIdleMs: 30 * MINUTE }), { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(ids(idle), [`registry.test/team/multi@${indexDigest}`], 'one image, not three');
  assert.equal(idle.removedBlobs, 1 + amd.blobs.length + arm.blobs.length);
  assert.deepEqual(driver.paths(), []);
});

test('pullthrough gc (blind to the server\'s readers): nothing used within the grace goes, not a recent image, not a blob just committed', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const old = await storeImage(driver, 'team/old', { usedAt: clock.now() - 2 * HOUR });
  const recent = await storeImage(driver, 'team/recent', { usedAt: clock.now() - 5 * MINUTE });
  const orphanOld = randomBytes(5000);
  const orphanNew = randomBytes(5000);
  await driver.putContent(blobDataPath(digestOf(orphanOld)), orphanOld);
  await driver.touch([blobDataPath(digestOf(orphanOld))], clock.now() - 2 * HOUR);
  await driver.putContent(blobDataPath(digestOf(orphanNew)), orphanNew);

  // A cap that everything is far over: only the grace protects.
  const gc = { dryRun: false, inUseIsKnown: false } as const;
  const report = await collectGarbage(driver, policy({ maxBytes: 1000, graceMs: 10 * MINUTE }), { ...gc, now: clock.now() });
  assert.deepEqual(ids(report), [old.id]);
  assert.ok(kept(driver, recent));
  assert.ok(!driver.paths().includes(blobDataPath(digestOf(orphanOld))), 'an old unreferenced blob is garbage');
  assert.ok(driver.paths().includes(blobDataPath(digestOf(orphanNew))), 'a blob just committed keeps its place');
  assert.deepEqual(report.kept.map((k) => `${k.reason}: ${k.image?.id ?? k.blob}`).sort(),
    [`within the grace: ${digestOf(orphanNew)}`, `within the grace: ${recent.id}`].sort(), 'and the report says why');

  // Once the grace has passed, the orphan goes too; the recent image by the size cap.
  await clock.advance(11 * MINUTE);
  const later = await collectGarbage(driver, policy({ maxBytes: 1000, graceMs: 10 * MINUTE }), { ...gc, now: clock.now() });
  assert.deepEqual(ids(later), [recent.id]);
  assert.deepEqual(driver.paths(), []);
});

test('in the server, the size cap holds whatever the age: only pinned images and blobs in use stay, and the report says which', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const images = await fiveImages(clock, driver);
  const [a, b, c, d, e] = images as [StoredImage, StoredImage, StoredImage, StoredImage, StoredImage];
  // e was pulled a minute ago, well within the 10-minute grace; its layer is still being read.
  await driver.touch([manifestRevisionPath(e.repository, e.digest), ...e.blobs.map(blobDataPath)], clock.now() - MINUTE);
  const reading = e.layers[0]!;
  // A cap that c alone (pinned) keeps use above the low watermark of.
  const stuck = policy({
    maxBytes: c.bytes, isPinned: (repository) => repository.name === 'team/c', inUse: (digest) => digest === reading,
  });
  const report = await collectGarbage(driver, stuck, { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(ids(report), [a.id, b.id, d.id, e.id], 'the image used a minute ago goes too');
  assert.ok(kept(driver, c));
  assert.ok(driver.paths().includes(blobDataPath(reading)), 'the layer being read stays under its reader');
  assert.deepEqual(report.kept.map((k) => `${k.reason}: ${k.image?.id}${k.blob ? ` ${k.blob}` : ''}`), [`pinned: ${c.id}`, `in use: ${e.id} ${reading}`]);
  assert.deepEqual(report.heldInUse, [reading]);
  assert.equal(report.targetBytes, Math.floor(c.bytes * 0.7));
});

test('maxIdle removes images not used for that long, whatever the size, as the clock moves', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const idle = await storeImage(driver, 'team/idle', { usedAt: clock.now() - 8 * DAY });
  const weekly = await storeImage(driver, 'team/weekly', { usedAt: clock.now() - 6 * DAY });
  const daily = await storeImage(driver, 'team/daily', { usedAt: clock.now() - HOUR });
  const idlePolicy = policy({ maxIdleMs: 7 * DAY });

  const first = await collectGarbage(driver, idlePolicy, { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(ids(first), [idle.id]);
  assert.ok(kept(driver, weekly) && kept(driver, daily));

  await clock.advance(DAY);
  const second = await collectGarbage(driver, idlePolicy, { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(ids(second), [weekly.id]);
  assert.ok(kept(driver, daily));
});

test('the caches are told of every removed manifest revision and blob', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const image = await storeImage(driver, 'team/a', { usedAt: clock.now() - 2 * DAY });
  const manifests: string[] = [];
  const blobs: string[] = [];
  await collectGarbage(driver, policy({ maxIdleMs: DAY }), {
    dryRun: false,
    now: clock.now(),
    inUseIsKnown: true,
    hooks: {
      manifestRemoved: (repository, digest) => { manifests.push(`${repository.name}@${digest}`); },
      blobRemoved: (digest) => { blobs.push(digest); },
    },
  });
  assert.deepEqual(manifests, [`team/a@${image.digest}`]);
  assert.deepEqual(blobs.sort(), [...image.blobs].sort());
});

// ---------------------------------------------------------------- the evictor and the one commit

interface EvictorFixture {
  readonly clock: FakeClock;
  readonly driver: MemoryDriver;
  readonly evictor: Evictor;
  readonly usage: UsageRecorder;
  readonly local: LocalBlobStore;
  /** How many runs have begun (each prepares its policy first). */
  runs(): number;
}

function evictorFixture(overrides: Partial<EvictionPolicy>, driver: MemoryDriver, clock: FakeClock): EvictorFixture {
  let runs = 0;
  const usage = new UsageRecorder({ driver, intervalMs: 0, clock });
  const evictor = new Evictor({
    driver,
    // In use, as the composition root says it: read through the local store (unless a test says otherwise).
    policy: policy({ inUse: (d) => local.isReading(d), ...overrides, prepare: async () => { runs++; } }),
    usage,
    hooks: {},
    logger: pino({ level: 'silent' }),
    intervalMs: HOUR,
    clock,
  });
  const descriptors = new CachedBlobStatter(new MemoryBlobDescriptorService(100), new StorageBlobStatter(driver));
  // Wired as the composition root wires it: the one commit tells the evictor what it added, the last reader what it let go.
  const local: LocalBlobStore = new LocalBlobStore({
    driver, descriptors, usage, onCommitted: (d) => evictor.added(d.size), onReleased: (d) => evictor.released(d),
  });
  return { clock, driver, evictor, usage, local, runs: () => runs };
}

/**
 * Lets whatever runs were started (by start-up, a timer or a commit) begin
 * and finish, then checks how many have begun in all.
 */
async function settled(f: EvictorFixture, runs: number): Promise<void> {
  for (let i = 0; i < 50; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    await f.evictor.idle();
  }
  assert.equal(f.runs(), runs, 'runs begun');
}

async function commitBlob(local: LocalBlobStore, bytes: Buffer, repositories: RepositoryRef[]): Promise<Descriptor> {
  const descriptor: Descriptor = { digest: digestOf(bytes), size: bytes.length, mediaType: 'application/octet-stream' };
  const upload = await local.createUpload();
  await upload.write([bytes], 0);
  await local.commit(upload, descriptor, repositories);
  await upload.close();
  return descriptor;
}

test('the one commit tells the evictor: bytes that cross the high watermark start a run; the same bytes again do not', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const images = await fiveImages(clock, driver);
  const [a, b, c] = images as [StoredImage, StoredImage, StoredImage];
  // Five images of a fifth of T each, under a cap of 1.5 T: the high watermark is 1.35 T, the low one 1.05 T.
  const T = totalBytes(images);
  const f = evictorFixture({ maxBytes: Math.ceil(T * 1.5) }, driver, clock);
  f.evictor.start();
  await settled(f, 1);
  assert.ok(images.every((i) => kept(driver, i)), 'the first run learns the size and removes nothing');

  // A small commit stays under the watermark: no run.
  await commitBlob(f.local, randomBytes(1000), [repo('team/new')]);
  await settled(f, 1);

  // A fill of 0.4 T pushes use over the high watermark: the commit starts a run at once, which takes
  // the two oldest images to get under the low one (the new blob is in its grace period, so it stays).
  const big = randomBytes(Math.ceil(T * 0.4));
  await clock.advance(MINUTE);
  const descriptor = await commitBlob(f.local, big, [repo('team/new')]);
  await settled(f, 2);
  assert.ok(gone(driver, a) && gone(driver, b), 'a and b made room');
  assert.ok(kept(driver, c));
  assert.ok(driver.paths().includes(blobDataPath(descriptor.digest)), 'the blob just committed is in its grace period');

  // The same bytes committed again (another repository): nothing is added, so nothing to tell the evictor.
  await commitBlob(f.local, big, [repo('team/again')]);
  await settled(f, 2);
  assert.ok(driver.paths().includes(layerLinkPath(repo('team/again'), descriptor.digest)));
  await f.evictor.stop();
});

test('the evictor runs on its interval by the clock, and a use recorded since the last run counts', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const stale = await storeImage(driver, 'team/stale', { usedAt: clock.now() - 3 * HOUR });
  const usedNow = await storeImage(driver, 'team/used', { usedAt: clock.now() - 3 * HOUR });
  const f = evictorFixture({ maxIdleMs: 4 * HOUR }, driver, clock);
  f.evictor.start();
  await settled(f, 1);
  assert.ok(kept(driver, stale) && kept(driver, usedNow));

  // A pull of team/used, noted in memory only; the next run flushes it before it looks.
  f.usage.used(manifestRevisionPath(usedNow.repository, usedNow.digest));
  await clock.advance(HOUR);
  await settled(f, 2);
  assert.ok(gone(driver, stale), 'idle for 4 hours at the second run');
  assert.ok(kept(driver, usedNow), 'used an hour ago, by the flushed record');

  // Four more intervals: idle for 4 hours at the last one (runs that come while one is running are folded into one).
  await clock.advance(4 * HOUR);
  for (let i = 0; i < 50; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    await f.evictor.idle();
  }
  assert.ok(f.runs() > 2);
  assert.ok(gone(driver, usedNow));
  await f.evictor.stop();
});

test('a run held above the low watermark by a blob being read runs again as soon as its last reader lets go', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const images = await fiveImages(clock, driver);
  const [a, , c] = images as [StoredImage, StoredImage, StoredImage];
  const f = evictorFixture({ maxBytes: c.bytes, isPinned: (repository) => repository.name === 'team/c' }, driver, clock);
  const layer = (image: StoredImage): Digest => image.layers[0]!;
  // A client streaming a's layer, and not reading on yet.
  const reader = await f.local.open(layer(a), a.repository);
  f.evictor.start();
  await settled(f, 1);
  assert.ok(!driver.paths().includes(manifestRevisionPath(a.repository, a.digest)), 'a itself went');
  assert.ok(driver.paths().includes(blobDataPath(a.layers[0]!)), 'its layer stays while it is read');

  // Another blob's reader letting go changes nothing the run waits for.
  await buffer(await f.local.open(layer(c), c.repository));
  await settled(f, 1);

  const bytes = await buffer(reader);
  assert.equal(digestOf(bytes), a.layers[0], 'the reader got every byte');
  await settled(f, 2);
  assert.ok(!driver.paths().includes(blobDataPath(a.layers[0]!)), 'released, and removed by the run that followed');
  assert.ok(kept(driver, c));
  await f.evictor.stop();
});

/** A signature of `subject` as the referrers service leaves it: the referrer, the index under the referrers tag, the referrers record. */
async function storeSignature(driver: MemoryDriver, subject: StoredImage, usedAt: number): Promise<Digest[]> {
  const layer = randomBytes(100);
  const empty = Buffer.from('{}');
  const signature = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf(empty), size: 2 },
    layers: [{ mediaType: 'application/octet-stream', digest: digestOf(layer), size: layer.length }],
    subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: 100 },
  }));
  const descriptor = { mediaType: OCI_MANIFEST, digest: digestOf(signature), size: signature.length };
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [descriptor] }));
  const { repository } = subject;
  const paths: string[] = [];
  const put = async (path: string, data: Buffer | string): Promise<void> => {
    await driver.putContent(path, data);
    paths.push(path);
  };
  for (const data of [signature, index, empty, layer]) await put(blobDataPath(digestOf(data)), data);
  for (const data of [empty, layer]) await put(layerLinkPath(repository, digestOf(data)), digestOf(data));
  await put(manifestRevisionPath(repository, digestOf(signature)), JSON.stringify({ mediaType: OCI_MANIFEST, size: signature.length }));
  await put(manifestRevisionPath(repository, digestOf(index)), JSON.stringify({ mediaType: OCI_INDEX, size: index.length }));
  const tag = referrersTag(subject.digest);
  const indexDescriptor = { digest: digestOf(index), mediaType: OCI_INDEX, size: index.length };
  await put(tagPath(repository, tag), encodeTagRecord({ descriptor: indexDescriptor, fetchedAt: usedAt }));
  await put(referrersRecordPath(repository, subject.digest), encodeReferrersRecord({ referrers: [descriptor], fetchedAt: usedAt, source: 'tag' }));
  await driver.touch(paths, usedAt);
  return [signature, index, empty, layer].map(digestOf);
}

test('a signature goes with the image it signs: kept by the image\'s pin, removed with it, never taking the image with it alone', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const image = await storeImage(driver, 'team/signed', { usedAt: clock.now() - 5 * HOUR });
  const signature = await storeSignature(driver, image, clock.now() - 5 * HOUR);
  const pinned = await collectGarbage(driver, policy({
    maxIdleMs: HOUR, isPinned: (repository, tags) => repository.name === 'team/signed' && tags.includes('v1'),
  }), { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(pinned.removedImages, [], 'the pin on the tag keeps the image and its signature');
  assert.ok(kept(driver, image));
  for (const d of signature) assert.ok(driver.paths().includes(blobDataPath(d)));

  const idle = await collectGarbage(driver, policy({ maxIdleMs: HOUR }), { dryRun: false, now: clock.now(), inUseIsKnown: true });
  assert.deepEqual(idle.removedImages.map((i) => i.id), [image.id], 'one image: the signature and the referrers tag index are part of it');
  assert.equal(idle.removedBlobs, image.blobs.length + signature.length);
  assert.deepEqual(driver.paths(), [], 'revisions, both tags, the referrers record, links and blobs');
});

// ---------------------------------------------------------------- last-use times beside the storage (S3)

/** Times that cannot be read now, as `RedisUseTimes` answers while Redis is away or slower than its timeout. */
const UNKNOWN_TIMES: UseTimes = {
  record: async () => undefined,
  lastUsed: async () => undefined,
  forget: async () => undefined,
};

test('a run that cannot read the last-use times removes no image by age or size, only unreferenced blobs past the grace', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  // Written days ago, and (the times would say, could they be read) used a minute ago.
  const images = [await storeImage(driver, 'team/hot', { usedAt: clock.now() - 3 * DAY }), await storeImage(driver, 'team/warm', { usedAt: clock.now() - 2 * DAY })];
  const garbage = randomBytes(500);
  await driver.putContent(blobDataPath(digestOf(garbage)), garbage);
  await driver.touch([blobDataPath(digestOf(garbage))], clock.now() - DAY);
  const report = await collectGarbage(driver, policy({ maxIdleMs: DAY, maxBytes: images[0]!.bytes }), {
    dryRun: false, now: clock.now(), inUseIsKnown: true, useTimes: UNKNOWN_TIMES,
  });
  assert.equal(report.lastUseUnknown, true);
  assert.deepEqual(ids(report), [], 'neither maxIdle nor the size cap removed an image on write times');
  for (const image of images) assert.ok(kept(driver, image), `${image.repository.name} is kept`);
  assert.ok(!driver.paths().includes(blobDataPath(digestOf(garbage))), 'a blob no image references, past the grace, still goes');
  assert.equal(report.freedBytes, garbage.length);

  const known = await collectGarbage(driver, policy({ maxIdleMs: DAY }), { dryRun: false, now: clock.now(), inUseIsKnown: true, useTimes: new BucketUsageRecord(driver) });
  assert.equal(known.lastUseUnknown, false);
  assert.equal(known.removedImages.length, 2, 'with times known (none recorded), the write times stand and both are idle');
});

test('the evictor logs once when the last-use times cannot be read, and once when they can again', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  let lines = '';
  const logger = pino({ level: 'debug' }, { write: (line: string) => { lines += line; } });
  let unknown = true;
  const times: UseTimes = { ...UNKNOWN_TIMES, lastUsed: async () => (unknown ? undefined : new Map()) };
  const evictor = new Evictor({
    driver, policy: policy({ maxIdleMs: DAY }), usage: new UsageRecorder({ driver, intervalMs: 0, clock, times }),
    hooks: {}, logger, intervalMs: HOUR, clock,
  });
  evictor.start();
  await evictor.idle();
  for (let i = 0; i < 2; i++) {
    evictor.trigger();
    await evictor.idle();
  }
  unknown = false;
  evictor.trigger();
  await evictor.idle();
  await evictor.stop();
  const messages = lines.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string });
  const warned = messages.filter((m) => m.msg.startsWith('eviction cannot read the last-use times'));
  assert.equal(warned.length, 1, 'three runs without the times: one warning');
  assert.equal(warned[0]!.level, 40);
  assert.equal(messages.filter((m) => m.msg === 'eviction reads the last-use times again').length, 1);
});

test('a run forgets recorded paths that no longer exist and blob uses older than the grace; revision uses stay', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const image = await storeImage(driver, 'team/kept', { usedAt: clock.now() - 2 * HOUR });
  const revision = manifestRevisionPath(image.repository, image.digest);
  const [recentBlob, oldBlob] = image.blobs.map(blobDataPath) as [string, string];
  const removedElsewhere = blobDataPath(digestOf(randomBytes(8)));
  const removedRevision = manifestRevisionPath(repo('team/gone'), image.digest);
  const record = new BucketUsageRecord(driver);
  await record.record(new Set([revision, oldBlob, removedElsewhere, removedRevision]), clock.now() - HOUR);
  await record.record(new Set([recentBlob]), clock.now() - MINUTE);

  const report = await collectGarbage(driver, policy({ maxIdleMs: DAY }), { dryRun: false, now: clock.now(), inUseIsKnown: true, useTimes: record });
  assert.deepEqual(ids(report), []);
  await record.record(new Set(), clock.now());
  const left = (await new BucketUsageRecord(driver).lastUsed())!;
  assert.deepEqual(Object.fromEntries(left), { [revision]: clock.now() - HOUR, [recentBlob]: clock.now() - MINUTE },
    'gone: paths the scan did not find, and a blob use past the grace (10 minutes)');
});

test('freedBytes and removedBlobs count what was deleted, not a doomed blob that the re-check kept', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const [a, b] = [await storeImage(driver, 'team/a', { usedAt: clock.now() - 3 * DAY }), await storeImage(driver, 'team/b', { usedAt: clock.now() - 3 * DAY })];
  const readElsewhere = b.layers[0]!;
  const report = await collectGarbage(driver, policy({ maxIdleMs: DAY, inUseElsewhere: async (d) => d === readElsewhere }), {
    dryRun: false, now: clock.now(), inUseIsKnown: true,
  });
  assert.equal(report.removedImages.length, 2);
  assert.ok(driver.paths().includes(blobDataPath(readElsewhere)), 'a replica was reading it: kept');
  const layerBytes = (await driver.stat(blobDataPath(readElsewhere)))!.size;
  assert.equal(report.freedBytes, a.bytes + b.bytes - layerBytes);
  assert.equal(report.removedBlobs, a.blobs.length + b.blobs.length - 1);
});

test('a blob that a re-verification removes is subtracted from the estimate and the ledger', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const ledger = new BucketUsageRecord(driver);
  const usage = new UsageRecorder({ driver, intervalMs: 0, clock, times: ledger });
  const evictor = new Evictor({ driver, policy: policy({ maxIdleMs: DAY }), usage, hooks: {}, logger: pino({ level: 'silent' }), intervalMs: HOUR, clock, ledger });
  const local = new LocalBlobStore({
    driver, usage, descriptors: new CachedBlobStatter(new MemoryBlobDescriptorService(100), new StorageBlobStatter(driver)),
    onCommitted: (d) => evictor.added(d.size), onRemoved: (_, bytes) => evictor.removed(bytes),
  });
  const kept = await commitBlob(local, randomBytes(3000), [repo('team/a')]);
  const damaged = await commitBlob(local, randomBytes(5000), [repo('team/a')]);
  await ledger.set(kept.size + damaged.size);
  evictor.start();
  await evictor.idle();
  assert.equal(evictor.usedBytes, kept.size + damaged.size, 'from the ledger');
  await driver.putContent(blobDataPath(damaged.digest), randomBytes(5000));
  assert.equal(await local.reverify(damaged.digest, repo('team/a'), 'test'), 'removed');
  assert.equal(evictor.usedBytes, kept.size);
  await usage.flush();
  assert.equal(await new BucketUsageRecord(driver).read(), kept.size, 'the ledger a start-up reads');
  await evictor.stop();
});

test('a use flushed while a run reads the times survives the run\'s forgetting of old blob uses', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const image = await storeImage(driver, 'team/kept', { usedAt: clock.now() - 2 * HOUR });
  const blob = blobDataPath(image.layers[0]!);
  const record = new BucketUsageRecord(driver);
  await record.record(new Set([blob]), clock.now() - HOUR);
  await clock.advance(MINUTE);
  // A replica's (or this process's timer's) flush lands between the run's read of the times and its forgets.
  const racing: UseTimes = {
    record: (paths, time) => record.record(paths, time),
    forget: (paths, before) => record.forget(paths, before),
    lastUsed: async () => {
      const times = await record.lastUsed();
      await new BucketUsageRecord(driver).record(new Set([blob]), clock.now());
      return times;
    },
  };
  await collectGarbage(driver, policy({ maxIdleMs: DAY }), { dryRun: false, now: clock.now(), inUseIsKnown: true, useTimes: racing });
  await record.record(new Set(), clock.now());
  assert.equal((await new BucketUsageRecord(driver).lastUsed())!.get(blob), clock.now(), 'the newer use stays');
});

test('with a ledger and nothing to evict, the size is walked again once a day: what the ledger missed is not reported forever', async () => {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const ledger = new BucketUsageRecord(driver);
  const usage = new UsageRecorder({ driver, intervalMs: 0, clock, times: ledger });
  const evictor = new Evictor({ driver, policy: policy({}), usage, hooks: {}, logger: pino({ level: 'silent' }), intervalMs: HOUR, clock, ledger });
  const image = await storeImage(driver, 'team/a', { usedAt: clock.now() });
  // A ledger that missed some bytes (a crash lost its last flush): start-up trusts it, and walks nothing.
  await ledger.set(image.bytes - 100);
  evictor.start();
  await evictor.idle();
  assert.equal(evictor.usedBytes, image.bytes - 100, 'from the ledger');
  await clock.advance(23 * HOUR);
  assert.equal(evictor.usedBytes, image.bytes - 100, 'not walked within the day');
  await clock.advance(HOUR);
  await until('walked again', () => evictor.usedBytes === image.bytes);
  assert.equal(await new BucketUsageRecord(driver).read(), image.bytes, 'and the ledger a start-up reads is right again');
  await evictor.stop();
});
