/**
 * The bundle reader and writer on the in-memory storage driver: no disk, no
 * docker-registry, no skopeo. A good bundle imports; every refusal (a
 * flipped byte, a tar cut short, a missing blob, a name or link that climbs
 * out of the layout, a failing disk) leaves storage exactly as it was; an
 * imported blob is known to the descriptor cache as soon as the import
 * returns (the one commit); and export then import gives the same storage.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import pino from 'pino';
import * as tar from 'tar-stream';
import { BundleError, type BundleStorage } from '../../src/airgap/bundle.js';
import { exportBundle, planExport } from '../../src/airgap/export.js';
import { importBundle, type ImportReport } from '../../src/airgap/import.js';
import { REF_NAME, TAG_FETCHED_AT } from '../../src/airgap/ociLayout.js';
import { resolveConfig } from '../../src/config/load.js';
import { Mirror } from '../../src/mirror.js';
import { parseDigest, type Digest } from '../../src/registry/digest.js';
import { parseTag } from '../../src/registry/names.js';
import type { ReferrerDescriptor } from '../../src/registry/referrers.js';
import { FakeClock } from '../fixtures/clock.js';
import {
  COSIGN_SIGNATURE, blobsOf, makeArtifact, makeImage, makeIndex, manifestsOf, referrerEntry, type Built, type BuiltImage, type BuiltIndex,
} from '../fixtures/images.js';
import { MemoryDriver } from '../fixtures/memoryDriver.js';

const UPSTREAM = 'registry.test';
const LEARNED = Date.parse('2026-11-30T08:00:00Z');

interface Cache {
  readonly driver: MemoryDriver;
  readonly mirror: Mirror;
  readonly storage: BundleStorage;
}

/** A mirror on a fresh in-memory driver, as the commands build one: its local stores, no upstream contacted. */
function cache(): Cache {
  const config = resolveConfig({
    listen: { port: 5000 },
    storage: { root: '/nonexistent/pullthrough-airgap-unit' },
    upstreams: [{ name: UPSTREAM, url: 'http://127.0.0.1:9' }],
  }, 'test');
  const driver = new MemoryDriver();
  const mirror = new Mirror({ config, logger: pino({ level: 'silent' }), clock: new FakeClock() }, driver);
  return {
    driver, mirror,
    storage: { driver, manifests: mirror.localManifests, tags: mirror.localTags, blobs: mirror.localBlobs, referrers: mirror.localReferrers },
  };
}

async function importInto(c: Cache, bundle: Buffer): Promise<ImportReport> {
  return importBundle(c.storage, Readable.from([bundle]), {
    route: (name) => {
      const ref = c.mirror.router.parseReference(name);
      return { repository: ref.route.repository, tag: ref.tag, digest: ref.digest };
    },
    now: c.mirror.clock.now(),
  });
}

interface Entry {
  readonly name: string;
  readonly body?: Buffer;
  readonly type?: 'file' | 'symlink' | 'link' | 'directory';
  readonly linkname?: string;
}

/** A tar of `entries`, in order. */
async function tarOf(entries: readonly Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => { chunks.push(c as Buffer); });
  const ended = new Promise<void>((resolve) => pack.on('end', () => resolve()));
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const header = { name: e.name, type: e.type ?? 'file', mode: 0o644, mtime: new Date(0), size: e.body?.length ?? 0, ...(e.linkname ? { linkname: e.linkname } : {}) };
      pack.entry(header, e.body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

function blobName(digest: string): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

/** An OCI layout as its own entries, written by hand (not by the code under test): oci-layout, manifests, blobs, index.json last. */
function layoutEntries(images: readonly { ref: string; image: Built }[]): Entry[] {
  const entries: Entry[] = [{ name: 'oci-layout', body: Buffer.from('{"imageLayoutVersion":"1.0.0"}') }];
  const seen = new Set<string>();
  for (const { image } of images) {
    for (const item of [...manifestsOf(image).map((m) => ({ digest: m.digest, data: m.body })), ...blobsOf(image)]) {
      if (seen.has(item.digest)) continue;
      seen.add(item.digest);
      entries.push({ name: blobName(item.digest), body: item.data });
    }
  }
  const manifests = images.map(({ ref, image }) => ({
    mediaType: image.mediaType, digest: image.digest, size: image.size,
    annotations: { [REF_NAME]: ref, [TAG_FETCHED_AT]: new Date(LEARNED).toISOString() },
  }));
  entries.push({ name: 'index.json', body: Buffer.from(JSON.stringify({ schemaVersion: 2, manifests })) });
  return entries;
}

function dataPath(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
}

/** The paths a storage holding exactly `image` in `team/<name>` under tag v1 has. */
function expectedPaths(name: string, image: BuiltImage | BuiltIndex): string[] {
  const repo = `repositories/${UPSTREAM}/team/${name}`;
  const paths = [`${repo}/_manifests/tags/v1`];
  for (const m of manifestsOf(image)) paths.push(`${repo}/_manifests/revisions/sha256/${m.digest.slice(7)}`, dataPath(m.digest));
  for (const b of blobsOf(image)) paths.push(`${repo}/_layers/sha256/${b.digest.slice(7)}`, dataPath(b.digest));
  return paths.sort();
}

const index = makeIndex({ layerSizes: [8 * 1024, 4 * 1024] });
const single = makeImage({ layerSizes: [16 * 1024] });
const goodEntries = layoutEntries([{ ref: `${UPSTREAM}/team/app:v1`, image: index }]);
const lastLayer = index.children[0]!.layers.at(-1)!;

/** Imports `bundle` into `c`, expecting a refusal matching `reason`, and storage exactly as before. */
async function refused(c: Cache, bundle: Buffer, reason: RegExp): Promise<void> {
  const before = c.driver.paths();
  await assert.rejects(importInto(c, bundle), (err: unknown) => {
    assert.ok(err instanceof BundleError, `a BundleError, not ${String(err)}`);
    assert.match(err.message, reason);
    return true;
  });
  assert.deepEqual(c.driver.paths(), before, 'storage unchanged');
}

test('a good bundle imports: every manifest, blob, link and the tag, with nothing left in _uploads', async () => {
  const c = cache();
  const report = await importInto(c, await tarOf(goodEntries));
  assert.equal(report.images.length, 1);
  assert.equal(report.manifests, 3);
  assert.equal(report.blobs, blobsOf(index).length);
  assert.equal(report.blobs, 6, 'two children, each a config and two layers');
  assert.equal(report.newBytes, report.bytes);
  assert.equal(report.unnamed, 0);
  assert.deepEqual(c.driver.paths(), expectedPaths('app', index));

  const repository = c.mirror.router.parseReference(`${UPSTREAM}/team/app:v1`).route.repository;
  const tag = await c.storage.tags.get(repository, parseTag('v1'));
  assert.equal(tag?.descriptor.digest, index.digest);
  assert.equal(tag?.fetchedAt, LEARNED, 'the time the tag was learned travels with the bundle');
  for (const m of manifestsOf(index)) {
    const stored = await c.storage.manifests.get(repository, m.digest as Digest);
    assert.ok(stored.manifest.body.equals(m.body), 'bit-exact');
    assert.equal(stored.manifest.mediaType, m.mediaType);
  }
  for (const b of blobsOf(index)) assert.ok((await c.driver.getContent(dataPath(b.digest)))?.equals(b.data), `blob ${b.digest}`);

  // The same bundle again: everything is already there, and nothing changes.
  const again = await importInto(c, await tarOf(goodEntries));
  assert.equal(again.newBytes, 0);
  assert.deepEqual(c.driver.paths(), expectedPaths('app', index));
});

test('an imported blob is in the descriptor cache as soon as the import returns (the one commit)', async () => {
  const c = cache();
  await importInto(c, await tarOf(goodEntries));
  const repository = c.mirror.router.parseReference(`${UPSTREAM}/team/app:v1`).route.repository;
  const stats = c.driver.counts.get('stat') ?? 0;
  for (const b of blobsOf(index)) {
    const digest = parseDigest(b.digest).digest;
    assert.deepEqual(await c.storage.blobs.statGlobal(digest), { digest, size: b.size, mediaType: 'application/octet-stream' });
    assert.equal((await c.storage.blobs.stat(repository, digest))?.size, b.size, 'linked into the repository');
  }
  assert.equal(c.driver.counts.get('stat') ?? 0, stats, 'answered by the cache tiers, not by a storage stat');
});

test('a bundle with one flipped byte in a layer is refused, and storage is left as it was (empty, then populated)', async () => {
  const bundle = await tarOf(goodEntries);
  const header = bundle.indexOf(Buffer.from(blobName(lastLayer.digest)));
  assert.ok(header > 0);
  const flipped = Buffer.from(bundle);
  flipped[header + 512 + 1000]! ^= 0x01;
  const reason = new RegExp(`${blobName(lastLayer.digest)} does not match its digest`);

  const empty = cache();
  await refused(empty, flipped, reason);
  assert.deepEqual(empty.driver.paths(), []);

  const populated = cache();
  await importInto(populated, await tarOf(layoutEntries([{ ref: `${UPSTREAM}/team/other:v1`, image: single }])));
  await refused(populated, flipped, reason);
  assert.deepEqual(populated.driver.paths(), expectedPaths('other', single));
});

test('a tar cut short is refused (inside an entry, or at an entry boundary), storage unchanged', async () => {
  const bundle = await tarOf(goodEntries);
  const c = cache();
  await refused(c, bundle.subarray(0, Math.floor(bundle.length * 0.6)), /truncated/);
  await refused(c, bundle.subarray(0, bundle.indexOf(Buffer.from(blobName(lastLayer.digest)))), /truncated/);
  await refused(c, bundle.subarray(0, 700), /truncated/);
  await refused(c, Buffer.from('not a tar at all, just some text that is long enough to be looked at'.repeat(10)), /truncated|not a tar|OCI image layout/);
  assert.deepEqual(c.driver.paths(), []);
});

test('a bundle missing a blob its manifest needs is refused, naming the blob, storage unchanged', async () => {
  const c = cache();
  const entries = goodEntries.filter((e) => e.name !== blobName(lastLayer.digest));
  await refused(c, await tarOf(entries), new RegExp(`blob ${lastLayer.digest} .*is missing from the bundle`));
  // A blob of the wrong size under the right name cannot be made (it would not hash to its name): a missing manifest can.
  const noChild = goodEntries.filter((e) => e.name !== blobName(index.children[1]!.digest));
  const report = await importInto(c, await tarOf(noChild));
  assert.equal(report.manifests, 2, 'an index travels with the children that were cached (warm --platform)');
});

test('tar-slip names and links out of the layout are refused, storage unchanged; harmless links elsewhere are ignored', async () => {
  const body = Buffer.from('owned');
  const [layout, ...rest] = goodEntries;
  const withEntry = (entry: Entry): Promise<Buffer> => tarOf([layout!, entry, ...rest]);
  const c = cache();
  await refused(c, await withEntry({ name: '../../etc/cron.d/evil', body }), /outside the layout/);
  await refused(c, await withEntry({ name: '/etc/cron.d/evil', body }), /outside the layout/);
  await refused(c, await withEntry({ name: 'blobs/../../evil', body }), /outside the layout/);
  await refused(c, await withEntry({ name: 'legacy/layer.tar', type: 'symlink', linkname: '/etc/shadow' }), /outside the layout/);
  await refused(c, await withEntry({ name: 'legacy/layer.tar', type: 'symlink', linkname: '../../etc/shadow' }), /outside the layout/);
  await refused(c, await withEntry({ name: 'hard', type: 'link', linkname: '../outside' }), /outside the layout/);
  // A link standing in for content the layout reads, even one pointing inside the archive.
  const linkedLayer = goodEntries.filter((e) => e.name !== blobName(lastLayer.digest));
  linkedLayer.splice(1, 0, { name: blobName(lastLayer.digest), type: 'symlink', linkname: '../../oci-layout' });
  await refused(c, await tarOf(linkedLayer), /is a symlink, not a file/);
  await refused(c, await tarOf([...goodEntries.slice(0, -1), { name: 'index.json', type: 'symlink', linkname: '/etc/passwd' }]), /outside the layout/);
  assert.deepEqual(c.driver.paths(), []);

  // `docker save` writes legacy links into blobs/: not ours to read, and no reason to refuse.
  const dockerSave = await withEntry({ name: 'abc123/layer.tar', type: 'symlink', linkname: `../${blobName(lastLayer.digest)}` });
  await importInto(c, dockerSave);
  assert.deepEqual(c.driver.paths(), expectedPaths('app', index));
});

test('a disk that fails while staging fails the import with that error (not "truncated"), and leaves nothing', async () => {
  const c = cache();
  const full = new Error('ENOSPC: no space left on device');
  c.driver.failWrites = full;
  await assert.rejects(importInto(c, await tarOf(goodEntries)), (err: unknown) => err === full);
  c.driver.failWrites = undefined;
  assert.deepEqual(c.driver.paths(), []);
});

test('an image whose name routes nowhere refuses the whole bundle; an unnamed entry is skipped', async () => {
  const c = cache();
  const other = layoutEntries([{ ref: `${UPSTREAM}/team/app:v1`, image: index }, { ref: 'elsewhere.test/team/x:v1', image: single }]);
  await refused(c, await tarOf(other), /refused, nothing was imported:\n.*elsewhere\.test/);

  const unnamed = layoutEntries([{ ref: `${UPSTREAM}/team/other:v1`, image: single }]);
  const indexJson = JSON.parse(unnamed.at(-1)!.body!.toString()) as { manifests: { annotations?: unknown }[] };
  indexJson.manifests.push({ ...indexJson.manifests[0]!, annotations: {} });
  const report = await importInto(c, await tarOf([...unnamed.slice(0, -1), { name: 'index.json', body: Buffer.from(JSON.stringify(indexJson)) }]));
  assert.equal(report.unnamed, 1);
  assert.deepEqual(c.driver.paths(), expectedPaths('other', single));
});

/** Everything written to a Writable. */
function collector(): { out: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const out = new Writable({ write(chunk: Buffer, _enc, done) { chunks.push(chunk); done(); } });
  return { out, bytes: () => Buffer.concat(chunks) };
}

test('export then import gives the same storage; the same images always make the same bundle bytes', async () => {
  const source = cache();
  await importInto(source, await tarOf(layoutEntries([{ ref: `${UPSTREAM}/team/app:v1`, image: index }, { ref: `${UPSTREAM}/team/other:v1`, image: single }])));
  const router = source.mirror.router;
  const images = ['app', 'other'].map((name) => {
    const ref = router.parseReference(`${UPSTREAM}/team/${name}:v1`);
    return { refName: `${UPSTREAM}/team/${name}:v1`, repository: ref.route.repository, digest: (name === 'app' ? index : single).digest as Digest, tagFetchedAt: LEARNED };
  });
  const plan = await planExport(source.storage, images);
  assert.deepEqual(plan.report, {
    images: 2, referrers: 0, manifests: 4, blobs: 8,
    bytes: [...manifestsOf(index), ...manifestsOf(single)].reduce((n, m) => n + m.body.length, 0)
      + [...blobsOf(index), ...blobsOf(single)].reduce((n, b) => n + b.size, 0),
  });
  const first = collector();
  await exportBundle(source.storage, plan, first.out);
  const second = collector();
  await exportBundle(source.storage, await planExport(source.storage, images), second.out);
  assert.ok(first.bytes().equals(second.bytes()), 'deterministic');

  const target = cache();
  await importInto(target, first.bytes());
  assert.deepEqual(target.driver.paths(), source.driver.paths());
  for (const path of source.driver.paths()) {
    assert.deepEqual(await target.driver.getContent(path), await source.driver.getContent(path), path);
  }
});

test('referrers: import records them by subject (added to a list storage knew); export --referrers carries them on', async () => {
  const signature = makeArtifact({ artifactType: COSIGN_SIGNATURE, subject: single });
  const older = makeArtifact({ artifactType: COSIGN_SIGNATURE, subject: single });
  const source = cache();
  const repository = source.mirror.router.parseReference(`${UPSTREAM}/team/app:v1`).route.repository;
  const report = await importInto(source, await tarOf(layoutEntries([
    { ref: `${UPSTREAM}/team/app:v1`, image: single }, { ref: `${UPSTREAM}/team/app@${signature.digest}`, image: signature },
  ])));
  assert.equal(report.referrers, 1);
  const recorded = await source.mirror.localReferrers.get(repository, single.digest as Digest);
  assert.deepEqual(recorded, { referrers: [referrerEntry(signature)], fetchedAt: source.mirror.clock.now(), source: 'bundle' });

  const image = { refName: `${UPSTREAM}/team/app:v1`, repository, digest: single.digest as Digest, tagFetchedAt: LEARNED };
  const refName = (_r: unknown, tag: string | undefined, digest: Digest): string => `${UPSTREAM}/team/app${tag ? `:${tag}` : `@${digest}`}`;
  const without = await planExport(source.storage, [image]);
  assert.equal(without.report.referrers, 0);
  assert.equal(without.manifests.has(signature.digest as Digest), false, 'referrers travel only when asked for');
  const plan = await planExport(source.storage, [image], { referrers: { refName } });
  assert.equal(plan.report.referrers, 1);
  assert.deepEqual([...plan.top.keys()].map((i) => i.refName), [image.refName, `${UPSTREAM}/team/app@${signature.digest}`]);
  const bundle = collector();
  await exportBundle(source.storage, plan, bundle.out);

  // The target already knew one referrer of the image, learned upstream earlier: it keeps it, and its time.
  const target = cache();
  const known = [referrerEntry(older) as unknown as ReferrerDescriptor];
  await target.mirror.localReferrers.put(repository, single.digest as Digest, { referrers: known, fetchedAt: LEARNED, source: 'api' });
  await importInto(target, bundle.bytes());
  assert.deepEqual(await target.mirror.localReferrers.get(repository, single.digest as Digest),
    { referrers: [referrerEntry(older), referrerEntry(signature)], fetchedAt: LEARNED, source: 'api' });
  assert.ok(await target.mirror.localManifests.stat(repository, signature.digest as Digest));
});

test('export refuses an image that is not completely cached, and a cached blob that no longer matches its digest', async () => {
  const c = cache();
  await importInto(c, await tarOf(layoutEntries([{ ref: `${UPSTREAM}/team/other:v1`, image: single }])));
  const repository = c.mirror.router.parseReference(`${UPSTREAM}/team/other:v1`).route.repository;
  const image = { refName: `${UPSTREAM}/team/other:v1`, repository, digest: single.digest as Digest, tagFetchedAt: undefined };
  const layer = single.layers[0]!;

  const corrupt = Buffer.from(layer.data);
  corrupt[100]! ^= 0xff;
  await c.driver.putContent(dataPath(layer.digest), corrupt);
  const out = collector();
  await assert.rejects(exportBundle(c.storage, await planExport(c.storage, [image]), out.out), /is corrupt/);

  await c.driver.delete(dataPath(layer.digest));
  await assert.rejects(planExport(c.storage, [image]), (err: unknown) => err instanceof BundleError && /blob .* is missing/.test(err.message));
});
