import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { startFakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { freePort, waitForHttp } from '../fixtures/net.js';
import { testConfigDocument } from '../fixtures/proxy.js';
import { tempDir, trackChildProcess } from '../fixtures/tools.js';

const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

async function serve(configPath: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath], { stdio: 'ignore' });
  trackChildProcess(child);
  await waitForHttp(`http://127.0.0.1:${port}/v2/`);
  return child;
}

test('SIGKILL during a fill, then a restart: no corrupt blob, no leftovers, the next pull is correct', { timeout: 60_000 }, async () => {
  const fake = await startFakeUpstream();
  const image = makeImage({ layerSizes: [4_000_000] });
  fake.addImage('crash/app', 'v1', image);
  const layer = image.layers[0]!;
  // Half the blob arrives, then the upstream goes silent: the fill is mid-way when the process dies.
  fake.addFault({ path: `/v2/crash/app/blobs/${layer.digest}`, once: true }, { stall: { afterBytes: 2_000_000 } });
  const root = await tempDir('crash');
  const data = join(root, 'data');
  const port = await freePort();
  const configPath = join(root, 'config.json');
  await writeFile(configPath, JSON.stringify({
    ...testConfigDocument({ upstreams: [{ name: 'fake.test', url: fake.url }], upstreamDefaults: { timeouts: { connect: '2s', headers: '3s', bodyIdle: '30s' } } }, data),
    listen: { host: '127.0.0.1', port },
  }));
  let child = await serve(configPath, port);
  try {
    const res = await request(`http://127.0.0.1:${port}/v2/crash/app/blobs/${layer.digest}`);
    let received = 0;
    const reading = (async () => {
      for await (const chunk of res.body) received += (chunk as Buffer).length;
    })().catch(() => undefined);
    while (received < 1_000_000) await new Promise((r) => setTimeout(r, 10));
    assert.equal((await readdir(join(data, '_uploads'))).length, 1, 'the fill is in flight');
    child.kill('SIGKILL');
    await once(child, 'exit');
    await reading;

    const hex = layer.digest.split(':')[1]!;
    await assert.rejects(stat(join(data, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data')), 'no blob under its final name');

    child = await serve(configPath, port);
    assert.deepEqual(await readdir(join(data, '_uploads')), [], 'the restart removed the dead fill');
    const again = await request(`http://127.0.0.1:${port}/v2/crash/app/blobs/${layer.digest}`);
    const hash = createHash('sha256');
    for await (const chunk of again.body) hash.update(chunk as Buffer);
    assert.equal(`sha256:${hash.digest('hex')}`, layer.digest);
    assert.equal((await stat(join(data, 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'))).size, layer.size);
  } finally {
    child.kill('SIGKILL');
    await fake.stop();
  }
});
