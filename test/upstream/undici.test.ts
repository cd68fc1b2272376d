/**
 * src/upstream/undici.ts loads undici's dispatcher modules without its index
 * (fetch, WebSocket and the rest). These tests hold it to the installed
 * undici: the same objects the index exports, and `request` answering as
 * undici's does; an undici upgrade that moves a module fails here first.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as slim from '../../src/upstream/undici.js';
import { serveOnLoopback } from '../fixtures/net.js';

const undiciIndex = createRequire(import.meta.url)('undici') as typeof import('undici');

test('every export is the object undici\'s index exports', () => {
  assert.equal(slim.Agent, undiciIndex.Agent);
  assert.equal(slim.Client, undiciIndex.Client);
  assert.equal(slim.Pool, undiciIndex.Pool);
  assert.equal(slim.buildConnector, undiciIndex.buildConnector);
  assert.equal(slim.getGlobalDispatcher, undiciIndex.getGlobalDispatcher);
  for (const method of ['request', 'stream', 'pipeline', 'upgrade', 'connect'] as const) {
    assert.equal(typeof slim.Agent.prototype[method], 'function', `${method} on every dispatcher`);
    assert.equal(slim.Agent.prototype[method], undiciIndex.Dispatcher.prototype[method]);
  }
});

test('request: the URL\'s path and query on the dispatcher given, GET by default and PUT with a body, as undici\'s request', async () => {
  const seen: { method: string | undefined; url: string | undefined; body: string }[] = [];
  const server = await serveOnLoopback((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.setEncoding('utf8').on('data', (chunk: string) => { body += chunk; }).on('end', () => {
      seen.push({ method: req.method, url: req.url, body });
      res.writeHead(201, { 'x-seen': String(seen.length) }).end('answered');
    });
  });
  const agent = new slim.Agent();
  try {
    for (const call of [
      (url: string) => slim.request(`${url}/v2/a/b/tags/list?n=2&last=x`, { dispatcher: agent }),
      (url: string) => slim.request(new URL(`${url}/upload`), { body: 'bytes' }),
      (url: string) => undiciIndex.request(`${url}/upload`, { body: 'bytes' }),
      (url: string) => slim.request(`${url}/probe`, { method: 'HEAD' }),
    ]) {
      const res = await call(server.url);
      assert.equal(res.statusCode, 201);
      assert.equal(res.headers['x-seen'], String(seen.length));
      await res.body.text();
    }
    assert.deepEqual(seen, [
      { method: 'GET', url: '/v2/a/b/tags/list?n=2&last=x', body: '' },
      { method: 'PUT', url: '/upload', body: 'bytes' },
      { method: 'PUT', url: '/upload', body: 'bytes' },
      { method: 'HEAD', url: '/probe', body: '' },
    ]);
  } finally {
    await agent.close();
    await server.stop();
  }
});
