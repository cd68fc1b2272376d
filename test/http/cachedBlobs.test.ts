/**
 * Cached blobs as the blob route sends them (`sendStream`): the file's reads
 * reuse the chunks the socket has written (issue 19), over HTTP and HTTPS,
 * and nothing else changes: exact bytes, Range, keep-alive after a whole
 * response, the byte count of the log line, a client that leaves mid-body
 * (the file is closed), a file cut short mid-body (the response is cut off
 * and the blob re-verified).
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, readlink, truncate } from 'node:fs/promises';
import { get } from 'node:https';
import { join } from 'node:path';
import { Client, request } from '../../src/upstream/undici.js';
import { ChunkPool } from '../../src/registry/chunkPool.js';
import type { Digest } from '../../src/registry/digest.js';
import { createTestCa } from '../fixtures/certs.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { isOnPath, until } from '../fixtures/tools.js';

const MIB = 1024 * 1024;
/** 16 reads of 1 MiB and a short one. */
const SIZE = 16 * MIB + 12345;

let fake: FakeUpstream;
let proxy: RunningProxy;
let tlsProxy: RunningProxy | undefined;
let caFile: string;

before(async () => {
  fake = await startFakeUpstream();
  proxy = await startProxy({ upstreams: [{ name: 'fake.test', url: fake.url }] });
  if (isOnPath('openssl')) {
    const ca = await createTestCa();
    const server = await ca.issue({ commonName: '127.0.0.1', use: 'server' });
    caFile = ca.certFile;
    tlsProxy = await startProxy({ upstreams: [{ name: 'fake.test', url: fake.url }], tls: { certFile: server.certFile, keyFile: server.keyFile } });
  }
});

after(async () => {
  await tlsProxy?.stop();
  await proxy?.stop();
  await fake?.stop();
});

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** A blob of SIZE random bytes, fetched through `through` once so that it is committed; its URL there and its data file. */
async function cachedBlob(through: RunningProxy, repository: string): Promise<{ bytes: Buffer; digest: string; url: string; data: string }> {
  const bytes = randomBytes(SIZE);
  const digest = fake.addBlob(bytes);
  const url = `${through.url}/v2/fake.test/${repository}/blobs/${digest}`;
  const fill = through === proxy ? Buffer.from(await (await request(url)).body.arrayBuffer()) : await httpsBody(url);
  assert.equal(sha256(fill), digest);
  await until('committed', () => through.mirror.blobs.activeFills === 0 && through.mirror.localBlobs.isReading(digest as Digest) === false);
  const hex = digest.slice(7);
  return { bytes, digest, url, data: join(through.root, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data') };
}

/** A GET over HTTPS, trusting the test CA: the whole body. */
function httpsBody(url: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    get(url, { ca: readFileSync(caFile) }, (answer) => {
      const chunks: Buffer[] = [];
      answer.on('data', (c: Buffer) => chunks.push(c));
      answer.on('end', () => resolve(Buffer.concat(chunks)));
      answer.on('error', reject);
    }).on('error', reject);
  });
}

/** Counts the chunk pool's reads and the distinct buffers they read into, while `run` runs. */
async function countingReads(run: () => Promise<void>): Promise<{ reads: number; buffers: number }> {
  const take = ChunkPool.prototype.take;
  const seen = new Set<ArrayBufferLike>();
  let reads = 0;
  ChunkPool.prototype.take = function counted(this: ChunkPool): Buffer {
    const buffer = take.call(this);
    reads += 1;
    seen.add(buffer.buffer);
    return buffer;
  };
  try {
    await run();
  } finally {
    ChunkPool.prototype.take = take;
  }
  return { reads, buffers: seen.size };
}

/** Open descriptors of this process on `path`. */
async function openDescriptors(path: string): Promise<number> {
  let count = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    if (await readlink(`/proc/self/fd/${fd}`).catch(() => '') === path) count += 1;
  }
  return count;
}

test('a cached blob is read into the same few buffers, handed back once the socket wrote them, and arrives intact', async () => {
  const blob = await cachedBlob(proxy, 'cached/reuse');
  let body: Buffer = Buffer.alloc(0);
  const { reads, buffers } = await countingReads(async () => {
    const res = await request(blob.url);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-length'], String(SIZE));
    // Every header the route and the hooks set, now written by sendStream itself.
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.equal(res.headers['docker-content-digest'], blob.digest);
    assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
    assert.equal(res.headers['x-pullthrough-cache'], 'hit');
    assert.equal(res.headers['accept-ranges'], 'bytes');
    body = Buffer.from(await res.body.arrayBuffer());
  });
  assert.equal(sha256(body), blob.digest);
  assert.equal(reads, 17, 'one read per MiB and the short last one');
  assert.ok(buffers <= 3, `${reads} reads into ${buffers} buffers`);
  const line = proxy.requests().filter((l) => l.url.endsWith(blob.digest)).at(-1) as unknown as Record<string, unknown>;
  assert.equal(line['bytes'], SIZE, 'the log line counts every byte');
  assert.equal(line['aborted'], undefined);
});

test('over HTTPS too: the buffers are reused and the bytes are right', { skip: !isOnPath('openssl') && 'needs openssl' }, async () => {
  const blob = await cachedBlob(tlsProxy!, 'cached/tls');
  let body: Buffer = Buffer.alloc(0);
  const { reads, buffers } = await countingReads(async () => { body = await httpsBody(blob.url); });
  assert.equal(sha256(body), blob.digest);
  assert.equal(reads, 17);
  assert.ok(buffers <= 3, `${reads} reads into ${buffers} buffers`);
});

test('Range of a cached blob across chunk boundaries: 206, Content-Range, exactly those bytes; then the connection is reused', async () => {
  const blob = await cachedBlob(proxy, 'cached/range');
  const client = new Client(new URL(proxy.url).origin, { pipelining: 1 });
  let connections = 0;
  const counter = (): void => { connections += 1; };
  proxy.app.server.on('connection', counter);
  try {
    const start = MIB - 100;
    const end = 3 * MIB + 100;
    const ranged = await client.request({ method: 'GET', path: new URL(blob.url).pathname, headers: { range: `bytes=${start}-${end}` } });
    assert.equal(ranged.statusCode, 206);
    assert.equal(ranged.headers['content-range'], `bytes ${start}-${end}/${SIZE}`);
    assert.equal(ranged.headers['content-length'], String(end - start + 1));
    assert.ok(Buffer.from(await ranged.body.arrayBuffer()).equals(blob.bytes.subarray(start, end + 1)));

    const whole = await client.request({ method: 'GET', path: new URL(blob.url).pathname });
    assert.equal(sha256(Buffer.from(await whole.body.arrayBuffer())), blob.digest);
    const head = await client.request({ method: 'HEAD', path: new URL(blob.url).pathname });
    assert.equal(head.headers['content-length'], String(SIZE));
    await head.body.dump();
    assert.equal(connections, 1, 'every answer on one keep-alive connection');
  } finally {
    proxy.app.server.off('connection', counter);
    await client.close();
  }
});

test('a client that leaves mid-body: the file is closed, the blob no longer read, the log line says aborted', async () => {
  const blob = await cachedBlob(proxy, 'cached/abort');
  const res = await request(blob.url);
  assert.equal(res.statusCode, 200);
  for await (const chunk of res.body) {
    assert.ok((chunk as Buffer).length > 0);
    break;
  }
  // Leaving the loop destroyed the body, and undici closes the connection.
  await until('the blob is no longer read', () => !proxy.mirror.localBlobs.isReading(blob.digest as Digest));
  assert.equal(await openDescriptors(blob.data), 0, 'the data file is closed');
  await until('the request is logged', () => proxy.requests().some((l) => l.url.endsWith(blob.digest) && (l as unknown as Record<string, unknown>)['aborted'] === true));
  const line = proxy.requests().filter((l) => l.url.endsWith(blob.digest)).at(-1) as unknown as Record<string, unknown>;
  assert.ok(Number(line['bytes']) < SIZE, `${String(line['bytes'])} bytes handed to the socket`);
});

test('a cached file cut short while it is sent: the response is cut off, never ended short, and the blob is re-verified and removed', { timeout: 30_000 }, async () => {
  const blob = await cachedBlob(proxy, 'cached/short');
  const res = await request(blob.url, { highWaterMark: 64 * 1024 });
  assert.equal(res.statusCode, 200);
  let received = 0;
  let cut = false;
  try {
    for await (const chunk of res.body) {
      if (received === 0) await truncate(blob.data, 2 * MIB);
      received += (chunk as Buffer).length;
    }
  } catch {
    cut = true;
  }
  assert.ok(cut, `the body broke off after ${received} bytes`);
  assert.ok(received < SIZE);
  await until('re-verified and removed', () => proxy.logs().some((l) => l['digest'] === blob.digest && String(l['msg']).includes('removed')));
  assert.equal(await openDescriptors(blob.data), 0);
});
