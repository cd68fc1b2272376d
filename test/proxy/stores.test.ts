/**
 * The proxy stores as units, on the in-memory driver with a fake clock: no
 * disk, no docker-registry, no skopeo, no sleeping.
 *
 * - The proxy blob store against an in-process fake upstream whose bodies a
 *   test holds back and lets go: hits, one upstream GET for many concurrent
 *   GETs, access per repository, digest mismatches, late readers.
 * - The proxy manifest store and tag service, built by the composition root
 *   over the memory driver, against the fake upstream over loopback HTTP.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pino } from 'pino';
import { CachedBlobStatter } from '../../src/cache/cachedStatter.js';
import { MemoryBlobDescriptorService } from '../../src/cache/memory.js';
import { resolveConfig } from '../../src/config/load.js';
import { Mirror } from '../../src/mirror.js';
import { ProxyBlobStore } from '../../src/proxy/blobs.js';
import type { Descriptor } from '../../src/registry/descriptor.js';
import type { Digest } from '../../src/registry/digest.js';
import { RegistryError } from '../../src/registry/errors.js';
import { DEFAULT_MANIFEST_ACCEPT } from '../../src/registry/mediaTypes.js';
import type { RepositoryName, Tag } from '../../src/registry/names.js';
import type { BlobHandle, RepositoryRef } from '../../src/registry/services.js';
import { LocalBlobStore, StorageBlobStatter } from '../../src/storage/blobs.js';
import { UPLOADS_DIR, blobDataPath, layerLinkPath, manifestRevisionPath, tagPath } from '../../src/storage/layout.js';
import type { UpstreamClient } from '../../src/upstream/client.js';
import { FakeClock } from '../fixtures/clock.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { MemoryDriver } from '../fixtures/memoryDriver.js';
import { testConfigDocument } from '../fixtures/proxy.js';

const silent = pino({ level: 'silent' });

function repo(name: string): RepositoryRef {
  return { upstream: 'registry.test', name: name as RepositoryName };
}

function digestOf(bytes: Buffer): Digest {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
}

function registryError(code: string): (err: unknown) => boolean {
  return (err) => err instanceof RegistryError && err.code === code;
}

/** Lets every pending promise job and event-loop turn run, until `done` or a bound of turns. */
async function turns(done: () => boolean, max = 10_000): Promise<void> {
  for (let i = 0; i < max && !done(); i++) await new Promise((resolve) => setImmediate(resolve));
  assert.ok(done(), 'the condition never came true');
}

// ---------------------------------------------------------------- the proxy blob store

/**
 * The blob calls of an upstream, in process: which repositories hold which
 * blob, what it sends for a digest (the true bytes unless told otherwise),
 * and a gate that holds the second half of every body until `release`.
 */
class BlobUpstream {
  readonly gets: string[] = [];
  readonly heads: string[] = [];
  readonly settings = { name: 'registry.test', detachedFillTimeoutMs: 0 };
  private readonly served = new Map<Digest, Buffer>();
  private readonly holders = new Map<Digest, Set<string>>();
  private gate: Promise<void> = Promise.resolve();
  private open: () => void = () => undefined;

  /** `repositories` hold the blob; the upstream sends `served` for it (a wrong body, say). */
  add(bytes: Buffer, repositories: readonly string[], served = bytes): Digest {
    const digest = digestOf(bytes);
    this.served.set(digest, served);
    this.holders.set(digest, new Set(repositories));
    return digest;
  }

  /** From now on bodies stop halfway until `release`. */
  hold(): void {
    this.gate = new Promise((resolve) => { this.open = resolve; });
  }

  release(): void {
    this.open();
  }

  async headBlob(repository: string, digest: Digest): Promise<{ size: number } | undefined> {
    this.heads.push(repository);
    const body = this.served.get(digest);
    return body && this.holders.get(digest)?.has(repository) ? { size: body.length } : undefined;
  }

  async getBlob(repository: string, digest: Digest): Promise<{ size: number; body: Readable } | undefined> {
    this.gets.push(repository);
    const body = this.served.get(digest);
    if (!body || !this.holders.get(digest)?.has(repository)) return undefined;
    const gate = this.gate;
    const half = body.length >> 1;
    return {
      size: body.length,
      body: Readable.from((async function* halves() {
        yield body.subarray(0, half);
        await gate;
        yield body.subarray(half);
      })(), { objectMode: false }),
    };
  }
}

interface BlobFixture {
  readonly driver: MemoryDriver;
  readonly local: LocalBlobStore;
  readonly blobs: ProxyBlobStore;
  readonly upstream: BlobUpstream;
  /** Every descriptor the one commit told the evictor about. */
  readonly committed: Descriptor[];
}

function blobFixture(): BlobFixture {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const committed: Descriptor[] = [];
  const descriptors = new CachedBlobStatter(new MemoryBlobDescriptorService(100), new StorageBlobStatter(driver));
  const local = new LocalBlobStore({ driver, descriptors, onCommitted: (d) => committed.push(d) });
  const upstream = new BlobUpstream();
  const blobs = new ProxyBlobStore({ local, upstreams: () => upstream as unknown as UpstreamClient, logger: silent, clock });
  return { driver, local, blobs, upstream, committed };
}

/** Reads a handle whole; resolves with the bytes, or rejects if the stream errors. */
async function readAll(handle: BlobHandle, range?: { start: number; end: number }): Promise<Buffer> {
  return buffer((await handle.open(range && (() => range))).stream);
}

/** Waits until no fill runs: every fill has committed (or failed) and let go. */
async function fillsSettled(blobs: ProxyBlobStore): Promise<void> {
  await turns(() => blobs.activeFills === 0);
}

function uploadsLeft(driver: MemoryDriver): string[] {
  return driver.paths().filter((p) => p.startsWith(`${UPLOADS_DIR}/`));
}

test('a blob linked in the repository is a hit: bytes from storage, no upstream request', async () => {
  const { blobs, upstream } = blobFixture();
  const bytes = randomBytes(40_000);
  const digest = upstream.add(bytes, ['team/app']);
  assert.ok((await readAll(await blobs.get(repo('team/app'), digest))).equals(bytes));
  await fillsSettled(blobs);
  upstream.gets.length = 0;
  upstream.heads.length = 0;

  const handle = await blobs.get(repo('team/app'), digest);
  assert.equal(handle.cache, 'hit');
  assert.equal((await handle.open()).size, bytes.length);
  assert.ok((await readAll(handle)).equals(bytes));
  assert.ok((await readAll(handle, { start: 100, end: 199 })).equals(bytes.subarray(100, 200)));
  assert.deepEqual(await blobs.stat(repo('team/app'), digest), { digest, size: bytes.length, mediaType: 'application/octet-stream' });
  assert.deepEqual([upstream.gets, upstream.heads], [[], []]);
});

test('8 concurrent GETs of a cold blob: one upstream GET, followers stream before the end, every body exact, one commit', async () => {
  const { driver, local, blobs, upstream, committed } = blobFixture();
  const bytes = randomBytes(300_000);
  const digest = upstream.add(bytes, ['team/app']);
  upstream.hold();
  const handles = await Promise.all(Array.from({ length: 8 }, () => blobs.get(repo('team/app'), digest)));
  assert.deepEqual(handles.map((h) => h.cache).sort(), ['coalesced', 'coalesced', 'coalesced', 'coalesced', 'coalesced', 'coalesced', 'coalesced', 'miss']);

  const received = handles.map(() => [] as Buffer[]);
  const ended = await Promise.all(handles.map(async (h, i) => {
    const { stream, size } = await h.open();
    assert.equal(size, bytes.length, 'the upstream size is known from its headers');
    stream.on('data', (chunk: Buffer) => received[i]!.push(chunk));
    // Wrapped, so that awaiting the opens does not wait for the ends.
    return { done: new Promise<void>((resolve, reject) => { stream.once('end', resolve); stream.once('error', reject); }) };
  }));
  // Half the body is in: every reader has bytes, none has all of them.
  await turns(() => received.every((chunks) => chunks.length > 0));
  assert.ok(received.every((chunks) => Buffer.concat(chunks).length < bytes.length), 'nobody gets the last byte before the commit');
  upstream.release();
  await Promise.all(ended.map((e) => e.done));
  for (const chunks of received) assert.ok(Buffer.concat(chunks).equals(bytes));

  await fillsSettled(blobs);
  assert.equal(upstream.gets.length, 1);
  assert.deepEqual(upstream.heads, [], 'one repository: nothing to confirm');
  assert.ok(driver.peek(blobDataPath(digest))?.equals(bytes));
  assert.ok(driver.paths().includes(layerLinkPath(repo('team/app'), digest)));
  assert.deepEqual(committed, [{ digest, size: bytes.length, mediaType: 'application/octet-stream' }]);
  assert.deepEqual(uploadsLeft(driver), []);
  assert.equal(driver.openHandles, 0, 'the fill let go of its upload');
  assert.equal((await blobs.get(repo('team/app'), digest)).cache, 'hit');
  assert.ok(await local.stat(repo('team/app'), digest));
});

test('a blob stored for one repository is served to another only if linked there or the upstream confirms it', async () => {
  const { driver, local, blobs, upstream } = blobFixture();
  const bytes = randomBytes(20_000);
  const digest = upstream.add(bytes, ['team/app', 'team/other']);
  await readAll(await blobs.get(repo('team/app'), digest));
  await fillsSettled(blobs);
  upstream.gets.length = 0;

  // The upstream says team/secret has no such blob: the bytes in storage do not change that.
  await assert.rejects(blobs.get(repo('team/secret'), digest), registryError('BLOB_UNKNOWN'));
  assert.equal(await blobs.stat(repo('team/secret'), digest), undefined);
  assert.ok(!driver.paths().includes(layerLinkPath(repo('team/secret'), digest)));
  assert.deepEqual(upstream.heads, ['team/secret', 'team/secret']);

  // team/other has it upstream: one HEAD confirms, the stored bytes serve, and it is linked from now on.
  upstream.heads.length = 0;
  const other = await blobs.get(repo('team/other'), digest);
  assert.ok((await readAll(other)).equals(bytes));
  assert.deepEqual(upstream.heads, ['team/other']);
  assert.deepEqual(upstream.gets, [], 'no second fetch of bytes already stored');
  assert.ok(driver.paths().includes(layerLinkPath(repo('team/other'), digest)));
  assert.equal((await blobs.get(repo('team/other'), digest)).cache, 'hit');
  assert.deepEqual(upstream.heads, ['team/other'], 'linked: no more HEADs');

  // The same upstream name in another upstream's namespace is another repository.
  assert.equal(await local.stat({ upstream: 'elsewhere.test', name: 'team/app' as RepositoryName }, digest), undefined);
});

test('while a fill runs, a GET from another repository joins it only after the upstream confirms; a refused one is never linked', async () => {
  const { driver, blobs, upstream } = blobFixture();
  const bytes = randomBytes(100_000);
  const digest = upstream.add(bytes, ['team/app', 'team/other']);
  upstream.hold();
  const first = await blobs.get(repo('team/app'), digest);
  const joined = await blobs.get(repo('team/other'), digest);
  assert.equal(joined.cache, 'coalesced');
  await assert.rejects(blobs.get(repo('team/secret'), digest), registryError('BLOB_UNKNOWN'));
  const reading = Promise.all([readAll(first), readAll(joined)]);
  upstream.release();
  for (const body of await reading) assert.ok(body.equals(bytes));
  await fillsSettled(blobs);
  assert.equal(upstream.gets.length, 1);
  const links = driver.paths().filter((p) => p.includes('/_layers/'));
  assert.deepEqual(links, [layerLinkPath(repo('team/app'), digest), layerLinkPath(repo('team/other'), digest)].sort(),
    'the one commit linked both repositories that asked and were confirmed, and nothing else');
});

test('a HEAD on a cold blob costs one upstream HEAD and stores nothing', async () => {
  const { driver, blobs, upstream } = blobFixture();
  const bytes = randomBytes(1000);
  const digest = upstream.add(bytes, ['team/app']);
  // The answer says the upstream was asked (the request's outcome is a miss).
  assert.deepEqual(await blobs.stat(repo('team/app'), digest), { digest, size: 1000, mediaType: 'application/octet-stream', cache: 'miss' });
  assert.equal(await blobs.stat(repo('team/secret'), digest), undefined);
  assert.deepEqual(upstream.gets, []);
  assert.deepEqual(driver.paths(), []);
});

test('bytes that do not match the digest: readers error before the last byte, nothing is committed, the next GET tries again', async () => {
  const { driver, local, blobs, upstream, committed } = blobFixture();
  const bytes = randomBytes(50_000);
  const wrong = Buffer.from(bytes);
  wrong[25_000] = wrong[25_000]! ^ 0xff;
  const digest = upstream.add(bytes, ['team/app'], wrong);
  upstream.hold();
  const handles = await Promise.all([blobs.get(repo('team/app'), digest), blobs.get(repo('team/app'), digest)]);
  const readers = await Promise.all(handles.map(async (handle) => {
    const { stream } = await handle.open();
    const reader = { got: 0, end: new Promise((resolve, reject) => { stream.once('end', resolve); stream.once('error', reject); }) };
    stream.on('data', (chunk: Buffer) => { reader.got += chunk.length; });
    return reader;
  }));
  upstream.release();
  for (const reader of readers) {
    await assert.rejects(reader.end, registryError('UPSTREAM_INVALID'));
    assert.ok(reader.got < bytes.length, `a reader got ${reader.got} of ${bytes.length} bytes: never a complete wrong body`);
  }
  // A handle of the failed fill opened afterwards fails the same way, and never serves a byte.
  await assert.rejects(readAll(handles[0]!), registryError('UPSTREAM_INVALID'));
  await fillsSettled(blobs);
  assert.deepEqual(driver.paths(), [], 'no blob, no link, no upload left');
  assert.deepEqual(committed, [], 'the evictor heard of nothing');
  assert.equal(driver.openHandles, 0);
  assert.equal(await local.stat(repo('team/app'), digest), undefined);
  assert.equal(await local.statGlobal(digest), undefined);

  // The failure is not remembered: once the upstream sends the right bytes, the next GET fills.
  upstream.add(bytes, ['team/app']);
  assert.ok((await readAll(await blobs.get(repo('team/app'), digest))).equals(bytes));
  assert.equal(upstream.gets.length, 2);
});

test('a handle taken while the fill ran, opened after it committed and let go, reads the committed bytes', async () => {
  const { driver, blobs, upstream } = blobFixture();
  const bytes = randomBytes(80_000);
  const digest = upstream.add(bytes, ['team/app', 'team/other']);
  upstream.hold();
  const first = await blobs.get(repo('team/app'), digest);
  const late = await blobs.get(repo('team/app'), digest);
  const lateOther = await blobs.get(repo('team/other'), digest);
  const reading = readAll(first);
  upstream.release();
  assert.ok((await reading).equals(bytes));
  await fillsSettled(blobs);
  assert.equal(driver.openHandles, 0, 'the upload is closed: late readers must read storage');

  assert.ok((await readAll(late)).equals(bytes));
  assert.ok((await readAll(lateOther)).equals(bytes));
  assert.ok((await readAll(late, { start: 5, end: 79_999 })).equals(bytes.subarray(5)));
  assert.ok((await readAll(lateOther, { start: 0, end: 0 })).equals(bytes.subarray(0, 1)));
  assert.equal(upstream.gets.length, 1);
});

test('a reader that joins after the commit, while an earlier reader still holds the upload, reads every byte', async () => {
  const { driver, blobs, upstream } = blobFixture();
  const bytes = randomBytes(200_000);
  const digest = upstream.add(bytes, ['team/app']);
  upstream.hold();
  const first = await blobs.get(repo('team/app'), digest);
  // Opened, but not read: this reader holds the upload open past the commit.
  const { stream: holding } = await first.open();
  const late = await blobs.get(repo('team/app'), digest);
  upstream.release();
  await turns(() => blobs.activeFills === 0);
  assert.equal(driver.openHandles, 1, 'the first reader still holds the upload');
  assert.ok((await readAll(late)).equals(bytes));
  assert.ok((await buffer(holding)).equals(bytes));
  await turns(() => driver.openHandles === 0);
});

test('a blob already in storage is not committed twice: the upload is dropped and the evictor hears of it once', async () => {
  const { driver, local, committed } = blobFixture();
  const bytes = randomBytes(10_000);
  const digest = digestOf(bytes);
  const descriptor: Descriptor = { digest, size: bytes.length, mediaType: 'application/octet-stream' };
  for (const name of ['team/a', 'team/b']) {
    const upload = await local.createUpload();
    await upload.write([bytes], 0);
    await local.commit(upload, descriptor, [repo(name)]);
    await upload.close();
  }
  assert.deepEqual(committed, [descriptor]);
  assert.deepEqual(uploadsLeft(driver), []);
  assert.ok(driver.peek(blobDataPath(digest))?.equals(bytes));
  assert.ok(await local.stat(repo('team/a'), digest));
  assert.ok(await local.stat(repo('team/b'), digest));
  assert.deepEqual(await local.statGlobal(digest), descriptor);
});

// ---------------------------------------------------------------- manifests and tags

const ACCEPT = DEFAULT_MANIFEST_ACCEPT;

interface MirrorFixture {
  readonly mirror: Mirror;
  readonly clock: FakeClock;
  readonly driver: MemoryDriver;
  close(): Promise<void>;
}

/** The composition root over the memory driver and a fake clock, with one upstream: the fake. */
async function mirrorOver(fake: FakeUpstream, upstreamDefaults: Record<string, unknown>, driver?: MemoryDriver, clock = new FakeClock()): Promise<MirrorFixture> {
  const memory = driver ?? new MemoryDriver(() => clock.now());
  const config = resolveConfig(testConfigDocument({ upstreams: [{ name: 'registry.test', url: fake.url }], upstreamDefaults }, '/nonexistent/pullthrough-stores-test'), 'test');
  const mirror = new Mirror({ config, logger: silent, clock }, memory);
  await memory.init();
  return { mirror, clock, driver: memory, close: () => mirror.close(0) };
}

function manifestRequests(fake: FakeUpstream, method?: string): string[] {
  return fake.requests({ ...(method ? { method } : {}), path: /\/manifests\// }).map((r) => `${r.method} ${r.path}`);
}

test('a manifest by digest: fetched upstream by that digest, verified, stored bit-exact with its media type, then a hit', async () => {
  const fake = await startFakeUpstream();
  const image = makeImage({ layerSizes: [100] });
  fake.addImage('team/app', 'v1', image);
  const { mirror, driver, close } = await mirrorOver(fake, {});
  try {
    const digest = image.digest as Digest;
    const results = await Promise.all([1, 2, 3].map(() => mirror.manifests.get(repo('team/app'), digest, ACCEPT)));
    for (const { manifest } of results) {
      assert.ok(manifest.body.equals(image.manifest), 'bit-exact');
      assert.equal(manifest.mediaType, image.mediaType);
      assert.equal(manifest.digest, digest);
    }
    assert.deepEqual(results.map((r) => r.cache).sort(), ['coalesced', 'coalesced', 'miss']);
    assert.deepEqual(manifestRequests(fake), [`GET /v2/team/app/manifests/${digest}`], 'one GET, by digest, never by tag');
    assert.ok(driver.paths().includes(manifestRevisionPath(repo('team/app'), digest)));
    assert.ok(driver.peek(blobDataPath(digest))?.equals(image.manifest));

    fake.clearRequests();
    const again = await mirror.manifests.get(repo('team/app'), digest, ['application/vnd.oci.image.manifest.v1+json']);
    assert.equal(again.cache, 'hit');
    assert.ok(again.manifest.body.equals(image.manifest));
    assert.deepEqual(await mirror.manifests.stat(repo('team/app'), digest, ACCEPT), { digest, size: image.manifest.length, mediaType: image.mediaType });
    assert.deepEqual(manifestRequests(fake), []);

    // Another repository of the same upstream does not get it from storage: it asks its own upstream repository.
    await assert.rejects(mirror.manifests.get(repo('team/secret'), digest, ACCEPT), registryError('MANIFEST_UNKNOWN'));
    assert.deepEqual(manifestRequests(fake), [`GET /v2/team/secret/manifests/${digest}`]);
  } finally {
    await close();
    await fake.stop();
  }
});

test('a manifest whose bytes do not hash to the digest asked for is refused and stored nowhere', async () => {
  const fake = await startFakeUpstream();
  const real = makeImage({ layerSizes: [100] });
  const impostor = makeImage({ layerSizes: [100] });
  fake.addManifest({ repository: 'team/app', reference: real.digest, mediaType: real.mediaType, body: impostor.manifest });
  const { mirror, driver, close } = await mirrorOver(fake, {});
  try {
    await assert.rejects(mirror.manifests.get(repo('team/app'), real.digest as Digest, ACCEPT), registryError('UPSTREAM_INVALID'));
    assert.deepEqual(driver.paths(), []);
    // Nothing remembered: the next GET asks again.
    await assert.rejects(mirror.manifests.get(repo('team/app'), real.digest as Digest, ACCEPT), registryError('UPSTREAM_INVALID'));
    assert.equal(manifestRequests(fake, 'GET').length, 2);
  } finally {
    await close();
    await fake.stop();
  }
});

test('a tag is fresh for tagMaxAge on the clock: no upstream request inside it, one HEAD after it, and a moved tag is seen', async () => {
  const fake = await startFakeUpstream();
  const one = makeImage({ layerSizes: [100] });
  const two = makeImage({ layerSizes: [100] });
  fake.addImage('team/app', 'v1', one);
  fake.addImage('team/app', 'v2', two);
  const { mirror, clock, close } = await mirrorOver(fake, { tagMaxAge: '1m' });
  const v1 = 'v1' as Tag;
  try {
    const first = await mirror.tags.resolve(repo('team/app'), v1, ACCEPT);
    assert.equal(first.descriptor.digest, one.digest);
    assert.equal(first.stale, false);
    assert.deepEqual(manifestRequests(fake), ['HEAD /v2/team/app/manifests/v1']);

    fake.setTag('team/app', 'v1', two.digest);
    await clock.advance(59_000);
    fake.clearRequests();
    const fresh = await mirror.tags.resolve(repo('team/app'), v1, ACCEPT);
    assert.equal(fresh.descriptor.digest, one.digest, 'still fresh: the record answers');
    assert.equal(fresh.cache, 'hit');
    assert.deepEqual(manifestRequests(fake), []);

    await clock.advance(1_000);
    const moved = await mirror.tags.resolve(repo('team/app'), v1, ACCEPT);
    assert.equal(moved.descriptor.digest, two.digest);
    assert.equal(moved.cache, 'miss');
    assert.deepEqual(manifestRequests(fake), ['HEAD /v2/team/app/manifests/v1']);

    // Unchanged after another expiry: one HEAD, and the record answers as a hit.
    await clock.advance(60_000);
    const same = await mirror.tags.resolve(repo('team/app'), v1, ACCEPT);
    assert.equal(same.descriptor.digest, two.digest);
    assert.equal(same.cache, 'hit');
    assert.equal(manifestRequests(fake).length, 2);

    await assert.rejects(mirror.tags.resolve(repo('team/app'), 'nope' as Tag, ACCEPT), registryError('MANIFEST_UNKNOWN'));
  } finally {
    await close();
    await fake.stop();
  }
});

test('when the upstream fails, an expired tag record answers stale until maxStale; then the failure shows', async () => {
  const fake = await startFakeUpstream();
  const image = makeImage({ layerSizes: [100] });
  fake.addImage('team/app', 'v1', image);
  const { mirror, clock, driver, close } = await mirrorOver(fake, { tagMaxAge: '1m', maxStale: '10m' });
  const v1 = 'v1' as Tag;
  try {
    await mirror.tags.resolve(repo('team/app'), v1, ACCEPT);
    assert.ok(driver.paths().includes(tagPath(repo('team/app'), v1)), 'the record is in storage too');
    fake.addFault({ path: /\/manifests\// }, { status: { code: 503 } });

    await clock.advance(2 * 60_000);
    const stale = await mirror.tags.resolve(repo('team/app'), v1, ACCEPT);
    assert.equal(stale.stale, true);
    assert.equal(stale.descriptor.digest, image.digest);

    await clock.advance(8 * 60_000 + 1);
    await assert.rejects(mirror.tags.resolve(repo('team/app'), v1, ACCEPT), registryError('UNAVAILABLE'));

    // A tag never recorded has nothing to fall back on.
    await assert.rejects(mirror.tags.resolve(repo('team/app'), 'v2' as Tag, ACCEPT), registryError('UNAVAILABLE'));
    // Three 503s in a row: the upstream is down, and asked again only by the probe after the back-off.
    const health = mirror.upstream('registry.test')!.health;
    assert.equal(health.state.status, 'down');

    // The upstream is back: the probe finds it, and the next resolve asks it and is fresh again.
    fake.clearFaults();
    await clock.advance(5_000);
    await turns(() => health.state.status === 'up');
    const back = await mirror.tags.resolve(repo('team/app'), v1, ACCEPT);
    assert.equal(back.stale, false);
    assert.equal(back.descriptor.digest, image.digest);
  } finally {
    await close();
    await fake.stop();
  }
});

test('a tag record in storage outlives the process: a new mirror on the same storage answers it stale while the upstream is down', async () => {
  const fake = await startFakeUpstream();
  const image = makeImage({ layerSizes: [100] });
  fake.addImage('team/app', 'v1', image);
  const clock = new FakeClock();
  const first = await mirrorOver(fake, { tagMaxAge: '1m' }, undefined, clock);
  await first.mirror.tags.resolve(repo('team/app'), 'v1' as Tag, ACCEPT);
  await first.close();

  fake.addFault({}, { status: { code: 502 } });
  await clock.advance(5 * 60_000);
  const second = await mirrorOver(fake, { tagMaxAge: '1m' }, first.driver, clock);
  try {
    const resolved = await second.mirror.tags.resolve(repo('team/app'), 'v1' as Tag, ACCEPT);
    assert.equal(resolved.descriptor.digest, image.digest);
    assert.equal(resolved.stale, true);
  } finally {
    await second.close();
    await fake.stop();
  }
});
