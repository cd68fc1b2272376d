/**
 * What the logs say to an operator: the per-request line names the upstream
 * and repository and counts every body byte delivered (the `/v2/` ping and
 * error bodies included, a HEAD none); the CLI's start-up line says what is
 * on, and with `admin.listen` the operator's endpoints move off the
 * registry port.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { request } from '../../src/upstream/undici.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { scrape } from '../fixtures/metrics.js';
import { freePort } from '../fixtures/net.js';
import { startProxy, testConfigDocument } from '../fixtures/proxy.js';
import { tempDir, trackChildProcess } from '../fixtures/tools.js';
import { ask } from '../fixtures/upstreamAuth.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

async function fakeWithImage(): Promise<{ fake: FakeUpstream; manifest: Buffer }> {
  const fake = await startFakeUpstream();
  stops.push(() => fake.stop());
  const image = makeImage({ layerSizes: [1024] });
  fake.addImage('team/app', 'v1', image);
  return { fake, manifest: image.manifest };
}

test('the request line names upstream and repository, and counts every body byte delivered', async () => {
  const { fake, manifest } = await fakeWithImage();
  const proxy = await startProxy({ upstreams: [{ name: 'logs.test', url: fake.url }] });
  stops.push(() => proxy.stop());
  const lines = (): Record<string, unknown>[] => proxy.logs().filter((l) => l['msg'] === 'request');

  assert.equal((await ask(proxy, '/v2/')).status, 200);
  const got = await ask(proxy, '/v2/logs.test/team/app/manifests/v1');
  assert.equal(got.status, 200);
  const headed = await ask(proxy, '/v2/logs.test/team/app/manifests/v1', 'HEAD');
  assert.equal(headed.status, 200);
  const missing = await ask(proxy, '/v2/logs.test/team/app/manifests/nope');
  assert.equal(missing.status, 404);
  const invalid = await ask(proxy, '/v2/BAD/manifests/v1');
  assert.equal(invalid.status, 400);
  // The line is written when the response has closed: a moment after the client has it.
  for (let i = 0; lines().length < 5 && i < 200; i++) await new Promise((resolve) => setTimeout(resolve, 10));

  const byUrl = new Map(lines().map((l) => [`${String(l['method'])} ${String(l['url'])}`, l]));
  assert.equal(byUrl.get('GET /v2/')!['bytes'], 2, 'the ping body "{}"');
  const manifestLine = byUrl.get('GET /v2/logs.test/team/app/manifests/v1')!;
  assert.equal(manifestLine['upstream'], 'logs.test');
  assert.equal(manifestLine['repository'], 'team/app');
  assert.equal(manifestLine['bytes'], manifest.length);
  const headLine = byUrl.get('HEAD /v2/logs.test/team/app/manifests/v1')!;
  assert.equal(headLine['bytes'], 0, 'a HEAD delivers no body');
  assert.equal(headLine['repository'], 'team/app');
  const missingLine = byUrl.get('GET /v2/logs.test/team/app/manifests/nope')!;
  assert.equal(missingLine['bytes'], missing.body.length, 'an error body counts');
  assert.equal(missingLine['status'], 404);
  assert.equal(missingLine['upstream'], 'logs.test');
  assert.equal(byUrl.get('GET /v2/BAD/manifests/v1')!['bytes'], invalid.body.length);
});

test('the CLI: the start-up line says what is on, and admin.listen moves the operator endpoints', async () => {
  const { fake } = await fakeWithImage();
  const root = await tempDir('logs-cli');
  const [port, adminPort] = [await freePort(), await freePort()];
  const document = {
    ...testConfigDocument({ upstreams: [{ name: 'on.test', url: fake.url }, { name: 'off.test', url: fake.url, offline: true }] }, root),
    listen: { host: '127.0.0.1', port },
    storage: { root, maxSize: '2GiB' },
    admin: { listen: { host: '127.0.0.1', port: adminPort } },
  };
  const configPath = join(root, 'config.json');
  await writeFile(configPath, JSON.stringify(document));
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  trackChildProcess(child);
  stops.push(async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  });
  const serving = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no start-up line within 20 s')), 20_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      if (parsed['msg'] !== 'pullthrough is serving') return;
      clearTimeout(timer);
      resolve(parsed);
    });
    child.once('exit', (code) => reject(new Error(`pullthrough exited (${code})`)));
  });
  assert.deepEqual(serving['upstreams'], ['on.test', 'off.test']);
  assert.deepEqual(serving['offline'], ['off.test']);
  assert.equal(serving['maxSize'], 2 * 1024 ** 3);
  assert.equal(serving['redis'], null);
  assert.equal(serving['tls'], false);
  assert.equal(serving['admin'], `127.0.0.1:${adminPort}`);
  assert.equal(serving['listen'], `127.0.0.1:${port}`);
  assert.match(String(serving['version']), /^\d+\.\d+\.\d+/);

  const m = await scrape(`http://127.0.0.1:${adminPort}`);
  assert.deepEqual(m.samples('pullthrough_build_info').map((s) => s.labels?.['version']), [serving['version']]);
  const onRegistryPort = await request(`http://127.0.0.1:${port}/metrics`);
  await onRegistryPort.body.text();
  assert.equal(onRegistryPort.statusCode, 404);
});
