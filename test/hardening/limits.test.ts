/**
 * The listener's limits against hostile clients: malformed URLs and heads
 * get OCI error JSON, a slowloris head is cut by the head timeout while
 * normal pulls go on, idle connections are closed, a moving download is
 * never cut, and `n` is capped.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { Socket } from 'node:net';
import { request } from '../../src/upstream/undici.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { openSocket, parseAnswer, rawGet, rawRequest, readUntilClosed } from '../fixtures/rawHttp.js';
import { until } from '../fixtures/tools.js';

let fake: FakeUpstream;
let proxy: RunningProxy;
let port: number;
const image = makeImage({ layerSizes: [16 * 1024 * 1024] });

before(async () => {
  fake = await startFakeUpstream();
  fake.addImage('library/app', 'v1', image);
  for (const tag of ['a', 'b', 'c', 'd', 'e']) fake.addImage('library/app', tag, image);
  proxy = await startProxy({
    upstreams: [{ name: 'fake.test', url: fake.url }],
    limits: {
      headerSize: '8KiB', headersTimeout: '2s', requestTimeout: '3s', idleTimeout: '2s', keepAliveTimeout: '1s',
      maxConnections: 300, maxPageSize: 3,
    },
  });
  port = Number(proxy.host.split(':')[1]);
});

after(async () => {
  await proxy?.stop();
  await fake?.stop();
});

function connections(): Promise<number> {
  return new Promise((resolve, reject) => proxy.app.server.getConnections((err, count) => (err ? reject(err) : resolve(count))));
}

function ociError(body: string): string {
  const parsed = JSON.parse(body) as { errors: { code: string; message: string }[] };
  assert.ok(Array.isArray(parsed.errors) && parsed.errors.length === 1, body);
  assert.equal(typeof parsed.errors[0]!.message, 'string');
  return parsed.errors[0]!.code;
}

test('malformed percent-encodings answer OCI error JSON (400 NAME_INVALID), not fastify\'s own body', async () => {
  for (const path of ['/v2/library/app/manifests/%zz', '/v2/library/%ff/manifests/v1', '/v2/%', '/v2/a/blobs/sha256:%', '/v2/%E0%A4%A/tags/list']) {
    const answer = await rawGet(port, path);
    assert.equal(answer.status, 400, path);
    assert.match(answer.headers['content-type'] ?? '', /^application\/json/, path);
    assert.equal(answer.headers['docker-distribution-api-version'], 'registry/2.0', path);
    assert.equal(ociError(answer.body), 'NAME_INVALID', path);
    assert.doesNotMatch(answer.body, /FST_ERR/, path);
  }
});

test('a request head over limits.headerSize answers 431 with OCI error JSON', async () => {
  const answer = await rawGet(port, '/v2/', { 'x-filler': 'x'.repeat(10 * 1024) });
  assert.equal(answer.status, 431);
  assert.equal(ociError(answer.body), 'HEADER_TOO_LARGE');
});

test('garbage instead of HTTP answers 400 with OCI error JSON', async () => {
  const answer = await rawRequest(port, 'HELLO\x00 WORLD\r\n\r\n');
  assert.equal(answer.status, 400);
  assert.equal(ociError(answer.body), 'REQUEST_INVALID');
});

/** Pulls the image's manifest and layer as a client would, checking every byte. */
async function normalPull(): Promise<void> {
  const manifest = await request(`${proxy.url}/v2/fake.test/library/app/manifests/v1`, { headers: { accept: image.mediaType } });
  assert.equal(manifest.statusCode, 200);
  assert.equal(createHash('sha256').update(Buffer.from(await manifest.body.arrayBuffer())).digest('hex'), image.digest.slice(7));
  const layer = image.layers[0]!;
  const blob = await request(`${proxy.url}/v2/fake.test/library/app/blobs/${layer.digest}`);
  assert.equal(blob.statusCode, 200);
  const hash = createHash('sha256');
  for await (const chunk of blob.body) hash.update(chunk as Buffer);
  assert.equal(`sha256:${hash.digest('hex')}`, layer.digest);
}

test('slowloris: 200 connections trickling their heads a byte a second are cut by headersTimeout (408 OCI JSON) while pulls go on', async () => {
  const head = `GET /v2/ HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ${'y'.repeat(200)}\r\n\r\n`;
  const sockets: Socket[] = [];
  const answers: Promise<string>[] = [];
  const timers: NodeJS.Timeout[] = [];
  for (let i = 0; i < 200; i++) {
    const socket = await openSocket(port);
    sockets.push(socket);
    answers.push(readUntilClosed(socket));
    let sent = 0;
    const timer = setInterval(() => {
      if (socket.destroyed || sent >= head.length) return;
      socket.write(head[sent++]!);
    }, 1000);
    timers.push(timer);
  }
  try {
    // While all 200 hold their connections, a normal pull (cold, then warm) works.
    await normalPull();
    await normalPull();
    const texts = await Promise.all(answers);
    // Each was answered 408 and closed by the server, long before its head could have been complete (200+ s).
    for (const text of texts) {
      const answer = parseAnswer(text);
      assert.equal(answer.status, 408, text.slice(0, 200));
      assert.equal(ociError(answer.body), 'REQUEST_TIMEOUT');
    }
  } finally {
    for (const timer of timers) clearInterval(timer);
    for (const socket of sockets) socket.destroy();
  }
});

test('a download slower than requestTimeout and idleTimeout, still moving, is not cut', async () => {
  const layer = image.layers[0]!;
  const res = await request(`${proxy.url}/v2/fake.test/library/app/blobs/${layer.digest}`, { highWaterMark: 64 * 1024 });
  assert.equal(res.statusCode, 200);
  const hash = createHash('sha256');
  let received = 0;
  // 16 MiB at about 2 MiB/s: some 8 s, past the 3 s request timeout and many 2 s idle windows' worth.
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer);
    received += (chunk as Buffer).length;
    if (received % (256 * 1024) < (chunk as Buffer).length) await new Promise((r) => setTimeout(r, 125));
  }
  assert.equal(`sha256:${hash.digest('hex')}`, layer.digest);
});

test('a reader that stops reading is cut after idleTimeout; an idle keep-alive connection after keepAliveTimeout', async () => {
  const layer = image.layers[0]!;
  await until('earlier connections closed', async () => await connections() === 0);
  const stalled = await openSocket(port);
  stalled.write(`GET /v2/fake.test/library/app/blobs/${layer.digest} HTTP/1.1\r\nhost: x\r\n\r\n`);
  // Reads nothing: the server's writes back up, nothing moves, and the idle timeout closes the socket.
  stalled.pause();
  await until('connection opened', async () => await connections() === 1);
  await until('the stalled connection cut by the server', async () => await connections() === 0, 30_000);
  const cut = readUntilClosed(stalled);
  stalled.resume();
  assert.ok((await cut).length < layer.size, 'the body was cut off');

  const idle = await openSocket(port);
  const text = readUntilClosed(idle);
  idle.write('GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n');
  const answer = parseAnswer(await text);
  assert.equal(answer.status, 200, 'answered, then closed once idle');
});

test('n in tags/list and _catalog is capped by limits.maxPageSize, with a Link to the rest', async () => {
  const res = await request(`${proxy.url}/v2/fake.test/library/app/tags/list?n=1000`);
  assert.equal(res.statusCode, 200);
  const body = await res.body.json() as { tags: string[] };
  assert.deepEqual(body.tags, ['a', 'b', 'c']);
  assert.match(String(res.headers['link']), /n=3&last=c/);
  const catalog = await request(`${proxy.url}/v2/_catalog?n=99999`);
  assert.equal(catalog.statusCode, 200);
  assert.ok(((await catalog.body.json()) as { repositories: string[] }).repositories.length <= 3);
});

test('a connection past limits.maxConnections is closed at once; the ones within still work', async () => {
  const small = await startProxy({ upstreams: [{ name: 'fake.test', url: fake.url }], limits: { maxConnections: 4 } });
  const smallPort = Number(small.host.split(':')[1]);
  const held: Socket[] = [];
  try {
    for (let i = 0; i < 4; i++) held.push(await openSocket(smallPort));
    const extra = await openSocket(smallPort);
    const text = readUntilClosed(extra);
    extra.write('GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n');
    assert.equal(await text, '', 'closed without an answer');
    const within = readUntilClosed(held[0]!);
    held[0]!.write('GET /v2/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    assert.equal(parseAnswer(await within).status, 200);
  } finally {
    for (const socket of held) socket.destroy();
    await small.stop();
  }
});
