/**
 * Start-up never contacts an upstream (nor its token service): neither the
 * in-process server nor the CLI, with credentials configured and a `/v2/`
 * request answered.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { FakeClock } from '../fixtures/clock.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { freePort, waitForHttp } from '../fixtures/net.js';
import { startProxy, testConfigDocument } from '../fixtures/proxy.js';
import { tempDir, trackChildProcess } from '../fixtures/tools.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const CREDENTIALS = { username: 'mirror', password: 'startup-secret' };

const fakes: FakeUpstream[] = [];
after(async () => {
  for (const fake of fakes) await fake.stop();
});

/** An anonymous upstream and one demanding Basic credentials, both recording every request. */
async function upstreams(): Promise<{ fakes: FakeUpstream[]; config: { name: string; url: string; [key: string]: unknown }[] }> {
  const open = await startFakeUpstream();
  const locked = await startFakeUpstream({ auth: { basic: CREDENTIALS } });
  fakes.push(open, locked);
  return {
    fakes: [open, locked],
    config: [
      { name: 'open.test', url: open.url },
      { name: 'locked.test', url: locked.url, credentials: { username: CREDENTIALS.username, passwordEnv: 'PULLTHROUGH_STARTUP_PW' } },
    ],
  };
}

/**
 * Real time for a request that start-up might have set going in the
 * background to reach a fake upstream's socket. It waits on I/O, not on a
 * policy: policy timers are covered by moving the mirror's fake clock.
 */
const SETTLE_MS = 300;

test('in process: start-up and /v2/ send nothing upstream, nor does an hour of policy timers', async () => {
  const { fakes: seen, config } = await upstreams();
  process.env['PULLTHROUGH_STARTUP_PW'] = CREDENTIALS.password;
  const clock = new FakeClock(Date.now());
  const proxy = await startProxy({ upstreams: config, clock }).finally(() => delete process.env['PULLTHROUGH_STARTUP_PW']);
  try {
    for (const path of ['/v2/', '/v2']) {
      const res = await fetch(`${proxy.url}${path}`);
      assert.equal(res.status, 200, path);
    }
    await clock.advance(3600_000);
    await sleep(SETTLE_MS);
    for (const fake of seen) assert.deepEqual(fake.requests(), [], fake.url);
  } finally {
    await proxy.stop();
  }
});

// On the real clock: the point is the real command in its own process.
test('the CLI: start-up and /v2/ send nothing upstream', async () => {
  const { fakes: seen, config } = await upstreams();
  const dir = await tempDir('startup-cli');
  const document = testConfigDocument({ upstreams: config }, join(dir, 'data'));
  const port = await freePort();
  const configPath = join(dir, 'config.json');
  await writeFile(configPath, JSON.stringify({ ...document, listen: { host: '127.0.0.1', port } }));
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PULLTHROUGH_STARTUP_PW: CREDENTIALS.password },
  });
  trackChildProcess(child);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const early = exited.then(() => { throw new Error(`pullthrough exited during start-up: ${stderr}`); });
    early.catch(() => undefined);
    await Promise.race([waitForHttp(`http://127.0.0.1:${port}/v2/`, { timeoutMs: 15_000 }), early]);
    const res = await fetch(`http://127.0.0.1:${port}/v2/`);
    assert.equal(res.status, 200);
    await sleep(SETTLE_MS);
    for (const fake of seen) assert.deepEqual(fake.requests(), [], fake.url);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  }
});
