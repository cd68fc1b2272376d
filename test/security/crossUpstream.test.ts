/**
 * Review 2026-12-01, finding 9: a blob cached from one upstream, asked for
 * under another upstream's repository. Today the other upstream's HEAD
 * confirms it, which is enough while every client may pull from every
 * upstream (README "Security"). Where access rules restrict upstreams, the
 * `confirmByContent` option links it only after that upstream served the
 * same bytes: a liar that answers HEAD 200 to everything reads nothing.
 *
 * On the in-memory driver, with in-process upstreams: one honest, one that
 * lies (HEAD 200 for any digest, other bytes on GET), one that tells the
 * truth about this blob.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pino } from 'pino';
import { CachedBlobStatter } from '../../src/cache/cachedStatter.js';
import { MemoryBlobDescriptorService } from '../../src/cache/memory.js';
import { ProxyBlobStore } from '../../src/proxy/blobs.js';
import type { Digest } from '../../src/registry/digest.js';
import { RegistryError } from '../../src/registry/errors.js';
import type { RepositoryName } from '../../src/registry/names.js';
import type { RepositoryRef } from '../../src/registry/services.js';
import { LocalBlobStore, StorageBlobStatter } from '../../src/storage/blobs.js';
import { layerLinkPath } from '../../src/storage/layout.js';
import type { UpstreamClient } from '../../src/upstream/client.js';
import { FakeClock } from '../fixtures/clock.js';
import { MemoryDriver } from '../fixtures/memoryDriver.js';

/** The blob calls of an upstream, in process: `serve` decides what it sends for a digest (undefined: 404). */
class InProcessUpstream {
  readonly gets: Digest[] = [];
  readonly settings: { name: string; detachedFillTimeoutMs: number; maxBlobBytes: number };

  constructor(name: string, private readonly serve: (digest: Digest) => Buffer | undefined, private readonly headAll = false) {
    this.settings = { name, detachedFillTimeoutMs: 0, maxBlobBytes: 1 << 30 };
  }

  async headBlob(_repository: string, digest: Digest): Promise<{ size: number } | undefined> {
    if (this.headAll) return { size: 1 };
    const body = this.serve(digest);
    return body && { size: body.length };
  }

  async getBlob(_repository: string, digest: Digest): Promise<{ size: number; body: Readable } | undefined> {
    this.gets.push(digest);
    const body = this.serve(digest);
    return body && { size: body.length, body: Readable.from([body], { objectMode: false }) };
  }
}

function repo(upstream: string, name: string): RepositoryRef {
  return { upstream, name: name as RepositoryName };
}

const bytes = randomBytes(50_000);
const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;

function setup(confirmByContent: boolean): { blobs: ProxyBlobStore; driver: MemoryDriver; liar: InProcessUpstream; honest: InProcessUpstream } {
  const clock = new FakeClock();
  const driver = new MemoryDriver(() => clock.now());
  const local = new LocalBlobStore({ driver, descriptors: new CachedBlobStatter(new MemoryBlobDescriptorService(100), new StorageBlobStatter(driver)) });
  const upstreams = new Map([
    ['origin.test', new InProcessUpstream('origin.test', (d) => (d === digest ? bytes : undefined))],
    ['liar.test', new InProcessUpstream('liar.test', () => Buffer.alloc(bytes.length, 0x41), true)],
    ['honest.test', new InProcessUpstream('honest.test', (d) => (d === digest ? bytes : undefined))],
  ]);
  const blobs = new ProxyBlobStore({
    local, logger: pino({ level: 'silent' }), clock,
    upstreams: (name) => upstreams.get(name) as unknown as UpstreamClient,
    ...(confirmByContent ? { confirmByContent: (r: RepositoryRef) => r.upstream !== 'origin.test' } : {}),
  });
  return { blobs, driver, liar: upstreams.get('liar.test')!, honest: upstreams.get('honest.test')! };
}

async function cacheFromOrigin(blobs: ProxyBlobStore): Promise<void> {
  const got = await buffer((await (await blobs.get(repo('origin.test', 'team/app'), digest)).open()).stream);
  assert.ok(got.equals(bytes));
  while (blobs.activeFills > 0) await new Promise((r) => setImmediate(r));
}

test('without access rules, a HEAD confirms (today\'s rule, documented): the liar gets the cached blob', async () => {
  const { blobs } = setup(false);
  await cacheFromOrigin(blobs);
  const got = await buffer((await (await blobs.get(repo('liar.test', 'x/y'), digest)).open()).stream);
  assert.ok(got.equals(bytes), 'every client may pull from every upstream here: nothing is gained by the lie');
});

test('with confirmation by content, a liar upstream reads nothing cached from another upstream', async () => {
  const { blobs, driver, liar } = setup(true);
  await cacheFromOrigin(blobs);
  await assert.rejects(blobs.get(repo('liar.test', 'x/y'), digest), (err: unknown) => err instanceof RegistryError && err.code === 'BLOB_UNKNOWN');
  assert.deepEqual(liar.gets, [digest], 'it was asked for the bytes');
  assert.equal(await driver.stat(layerLinkPath(repo('liar.test', 'x/y'), digest)), undefined, 'and nothing was linked');
  assert.equal(await blobs.stat(repo('liar.test', 'x/y'), digest).then((d) => d && driver.stat(layerLinkPath(repo('liar.test', 'x/y'), digest))), undefined,
    'a HEAD does not link it either');
});

test('with confirmation by content, an upstream that serves the same bytes gets the blob linked, once', async () => {
  const { blobs, driver, honest } = setup(true);
  await cacheFromOrigin(blobs);
  const got = await buffer((await (await blobs.get(repo('honest.test', 'x/y'), digest)).open()).stream);
  assert.ok(got.equals(bytes));
  assert.ok(await driver.stat(layerLinkPath(repo('honest.test', 'x/y'), digest)), 'linked');
  await buffer((await (await blobs.get(repo('honest.test', 'x/y'), digest)).open()).stream);
  assert.equal(honest.gets.length, 1, 'linked: the next request is a hit');
});
