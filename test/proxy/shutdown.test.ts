import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { startFakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { freePort, waitForHttp } from '../fixtures/net.js';
import { testConfigDocument } from '../fixtures/proxy.js';
import { tempDir, trackChildProcess } from '../fixtures/tools.js';

const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

test('SIGTERM: stops accepting, lets a running response and its fill finish, exits 0', { timeout: 60_000 }, async () => {
  const fake = await startFakeUpstream();
  const repository = 'slow/app';
  const image = makeImage({ layerSizes: [2_000_000] });
  fake.addImage(repository, 'v1', image);
  const layer = image.layers[0]!;
  // The upstream takes a while to start answering, so the fill is still running when SIGTERM comes.
  const blobPath = `/v2/${repository}/blobs/${layer.digest}`;
  fake.addFault({ path: blobPath }, { slowFirstByte: 1000 });
  const root = await tempDir('shutdown');
  const port = await freePort();
  const configPath = join(root, 'config.json');
  const doc = testConfigDocument({ upstreams: [{ name: 'fake.test', url: fake.url }] }, join(root, 'data'));
  await writeFile(configPath, JSON.stringify({ ...doc, listen: { host: '127.0.0.1', port } }));
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  trackChildProcess(child);
  let output = '';
  child.stdout.on('data', (c: Buffer) => { output += c.toString(); });
  child.stderr.on('data', (c: Buffer) => { output += c.toString(); });
  try {
    await waitForHttp(`http://127.0.0.1:${port}/v2/`);
    const pending = request(`http://127.0.0.1:${port}${blobPath}`);
    // SIGTERM once the fill has asked the upstream: it is running, and its first byte is a second away.
    while (fake.requests({ method: 'GET', path: blobPath }).length === 0) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGTERM');
    const res = await pending;
    const hash = createHash('sha256');
    for await (const chunk of res.body) hash.update(chunk as Buffer);
    assert.equal(res.statusCode, 200);
    assert.equal(`sha256:${hash.digest('hex')}`, layer.digest, 'the running response completed');
    const [code] = await once(child, 'exit') as [number | null];
    assert.equal(code, 0, output);
    assert.match(output, /shutting down/);
    assert.ok(output.indexOf('shutting down') < output.indexOf(`"url":"${blobPath}"`), 'the response finished after the shutdown began');
    await assert.rejects(request(`http://127.0.0.1:${port}/v2/`), 'no longer accepting');
    const hex = layer.digest.split(':')[1]!;
    const stored = await readFile(join(root, 'data', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'));
    assert.equal(stored.length, layer.size, 'the fill was committed before the process exited');
    assert.deepEqual(await readdir(join(root, 'data', '_uploads')), []);
  } finally {
    child.kill('SIGKILL');
    await fake.stop();
  }
});
