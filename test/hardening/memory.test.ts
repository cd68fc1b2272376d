/**
 * Bounded memory, measured on the server process itself (`/proc/<pid>/status`
 * of a `pullthrough serve` child): 64 clients read a cached 64 MiB blob and 8
 * follow a cold fill of another, each slowly (a few hundred KiB/s) for about
 * 10 s, then at full speed. Each streaming response holds a fixed number of
 * chunks, and a slow follower makes the fill buffer nothing for it (it reads
 * the file at its own pace), so the peak stays under the bound the README
 * states, whatever the clients do. A check of a bound, not a timing.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { request } from '../../src/upstream/undici.js';
import { testConfigDocument } from '../fixtures/proxy.js';
import { pushBlob } from '../fixtures/push.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { startServer, type RunningServer } from '../fixtures/server.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

/**
 * The README's bound ("Memory"): a streaming response holds at most about
 * 3 MiB (a 1 MiB chunk read ahead, one being written, socket buffers),
 * whatever the blob's size, plus a fixed 64 MiB for everything else.
 */
const PER_RESPONSE_MIB = 3;
const FIXED_MIB = 64;
const BLOB = 64 * 1024 * 1024;
const HOT_CLIENTS = 64;
const COLD_CLIENTS = 8;
/** Read slowly up to here: about 10 s at 300 KiB/s. */
const SLOW_BYTES = 3 * 1024 * 1024;
const SLOW_RATE = 300 * 1024;

const skip = toolSkip('docker-registry');
let upstream: RunningRegistry;
let server: RunningServer;
let hot: string;
let cold: string;

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  hot = await pushBlob(upstream.url, 'memory/hot', randomBytes(BLOB));
  cold = await pushBlob(upstream.url, 'memory/cold', randomBytes(BLOB));
  const document = testConfigDocument({ upstreams: [{ name: 'registry.test', url: upstream.url }] }, await tempDir('memory'));
  server = await startServer({ ...document, log: { level: 'warn' } });
});

after(async () => {
  await server?.stop();
  await upstream?.stop();
});

/** A field of /proc/<pid>/status in MiB (VmRSS now, VmHWM the peak so far). */
async function procMiB(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
  return kib / 1024;
}

/** Reads the blob, slowly up to SLOW_BYTES, then at full speed; resolves with its digest. */
async function slowRead(digest: string, repository: string): Promise<string> {
  const res = await request(`${server.url}/v2/registry.test/${repository}/blobs/${digest}`);
  assert.equal(res.statusCode, 200);
  const hash = createHash('sha256');
  let received = 0;
  const started = Date.now();
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer);
    received += (chunk as Buffer).length;
    if (received < SLOW_BYTES) {
      const due = started + (received / SLOW_RATE) * 1000;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }
  assert.equal(received, BLOB);
  return `sha256:${hash.digest('hex')}`;
}

test(`peak RSS of the server grows by at most ${PER_RESPONSE_MIB} MiB a response (+${FIXED_MIB} MiB) with ${HOT_CLIENTS} slow readers of a cached 64 MiB blob and ${COLD_CLIENTS} of a cold fill`, { skip }, async () => {
  // The hot blob cached first, at full speed.
  const warm = await request(`${server.url}/v2/registry.test/memory/hot/blobs/${hot}`);
  const warmHash = createHash('sha256');
  for await (const chunk of warm.body) warmHash.update(chunk as Buffer);
  assert.equal(`sha256:${warmHash.digest('hex')}`, hot);
  const baseline = await procMiB(server.pid, 'VmRSS');

  let sampled = baseline;
  const sampler = setInterval(() => {
    void procMiB(server.pid, 'VmRSS').then((rss) => { sampled = Math.max(sampled, rss); }, () => undefined);
  }, 200);
  try {
    const digests = await Promise.all([
      ...Array.from({ length: HOT_CLIENTS }, () => slowRead(hot, 'memory/hot')),
      ...Array.from({ length: COLD_CLIENTS }, () => slowRead(cold, 'memory/cold')),
    ]);
    assert.deepEqual(digests, [...Array<string>(HOT_CLIENTS).fill(hot), ...Array<string>(COLD_CLIENTS).fill(cold)], 'every body hashes right');
  } finally {
    clearInterval(sampler);
  }
  const peak = Math.max(sampled, await procMiB(server.pid, 'VmHWM'));
  const bound = baseline + FIXED_MIB + PER_RESPONSE_MIB * (HOT_CLIENTS + COLD_CLIENTS);
  // What the README quotes: the figures of a run.
  console.log(`# memory: baseline ${baseline.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB (bound ${bound.toFixed(0)} MiB), ${HOT_CLIENTS + COLD_CLIENTS} clients x 64 MiB`);
  assert.ok(peak < bound, `peak RSS ${peak.toFixed(0)} MiB (baseline ${baseline.toFixed(0)} MiB) is over the bound of ${bound.toFixed(0)} MiB`);
});
