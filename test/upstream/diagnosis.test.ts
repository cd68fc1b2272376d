/**
 * A misconfigured upstream URL, as a new user wrote one: a web server that
 * is not a registry, and `https://` for a plain-HTTP registry. The client's
 * error names the upstream, the URL tried and what came back; the log has
 * one warning per cause, not one per request.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../fixtures/clock.js';
import { serveOnLoopback, type LoopbackServer } from '../fixtures/net.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { toolSkip } from '../fixtures/tools.js';
import { ask, warnings } from '../fixtures/upstreamAuth.js';

const skip = toolSkip('docker-registry');

let website: LoopbackServer;
let websitePaths: string[];
let registry: RunningRegistry;
let proxy: RunningProxy;

before(async () => {
  if (skip) return;
  websitePaths = [];
  // A web server: a 404 page for what it does not have, a 200 page for /app/.
  website = await serveOnLoopback((req, res) => {
    websitePaths.push(req.url ?? '');
    const found = req.url?.includes('/spa/') ?? false;
    res.writeHead(found ? 200 : 404, { 'content-type': 'text/html; charset=utf-8' });
    res.end(found ? '<html><body>app</body></html>' : '<html><body>Not Found</body></html>');
  });
  registry = await startRegistry();
  const port = new URL(registry.url).port;
  proxy = await startProxy({
    clock: new FakeClock(),
    upstreams: [
      { name: 'website.test', url: website.url },
      { name: 'tls.test', url: `https://127.0.0.1:${port}` },
      { name: 'real.test', url: registry.url },
    ],
  });
});

after(async () => {
  await proxy?.stop();
  await registry?.stop();
  await website?.stop();
});

function warningsFor(upstream: string, cause: string): Record<string, unknown>[] {
  return warnings(proxy).filter((w) => w['upstream'] === upstream && w['cause'] === cause);
}

test('an upstream that is a web server, not a registry: 503 saying so with the URLs tried, warned once', { skip }, async () => {
  for (const path of ['/v2/website.test/team/app/manifests/v1', '/v2/website.test/team/app/manifests/v2', '/v2/website.test/spa/app/manifests/v1']) {
    const answer = await ask(proxy, path);
    assert.equal(answer.status, 503, `${path}: ${answer.body.toString()}`);
    assert.equal(answer.code, 'UNAVAILABLE');
    assert.match(answer.message ?? '', new RegExp(`^upstream website\\.test at ${website.url} does not answer like a registry: GET ${website.url}/v2/ gave 404 \\(text/html\\) \\(a registry answers 200 or 401\\)`));
    assert.match(answer.message ?? '', /check its url$/);
  }
  assert.equal(warningsFor('website.test', 'not-a-registry').length, 1, 'one warning for three requests');
  assert.equal(websitePaths.filter((p) => p === '/v2/').length, 1, 'the /v2/ check ran once, not per request');
});

test('https:// against a plain-HTTP registry: the URL tried and what to change, warned once', { skip }, async () => {
  const port = new URL(registry.url).port;
  for (const tag of ['v1', 'v2']) {
    const answer = await ask(proxy, `/v2/tls.test/team/app/manifests/${tag}`);
    assert.equal(answer.status, 503, answer.body.toString());
    assert.match(answer.message ?? '', new RegExp(
      `^upstream tls\\.test is unreachable at https://127\\.0\\.0\\.1:${port}/v2/team/app/manifests/${tag}: `
      + 'it does not answer in TLS; if it is a plain-HTTP registry, write its url with http:// \\([A-Z_]+\\)$'));
  }
  // The cause, explained once (the health change, 'upstream failing', is a line of its own).
  const tlsWarnings = warnings(proxy).filter((w) => w['upstream'] === 'tls.test' && w['cause'] !== undefined);
  assert.equal(tlsWarnings.length, 1, JSON.stringify(tlsWarnings));
  assert.match(String(tlsWarnings[0]!['url']), /^https:\/\/127\.0\.0\.1:/);
});

test('a real registry\'s 404 stays MANIFEST_UNKNOWN, with no warning', { skip }, async () => {
  const answer = await ask(proxy, '/v2/real.test/team/nothing/manifests/v1');
  assert.equal(answer.status, 404);
  assert.equal(answer.code, 'MANIFEST_UNKNOWN');
  assert.deepEqual(warnings(proxy).filter((w) => w['upstream'] === 'real.test'), []);
});
