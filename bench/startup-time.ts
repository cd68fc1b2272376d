/**
 * Start-up time against the number of cached blobs: fills a storage root
 * with N small blobs (and a repository linking them), then times
 * `Mirror.start()` plus the first `/v2/` answer, several times. Start-up
 * must not walk the tree, so the figure should not grow with N.
 *
 *   node dist/bench/startup-time.js [--blobs 100000]
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { resolveConfig } from '../src/config/load.js';
import { createLogger } from '../src/config/logger.js';
import { buildApp } from '../src/http/app.js';
import { Mirror } from '../src/mirror.js';
import { tempDir } from '../test/fixtures/tools.js';

async function fill(root: string, count: number): Promise<void> {
  const repo = join(root, 'repositories', 'docker.io', 'library', 'filler', '_layers', 'sha256');
  await mkdir(repo, { recursive: true });
  for (let i = 0; i < count; i++) {
    const body = Buffer.from(`blob ${i}`);
    const hex = createHash('sha256').update(body).digest('hex');
    const dir = join(root, 'blobs', 'sha256', hex.slice(0, 2), hex);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'data'), body);
    await writeFile(join(repo, hex), `sha256:${hex}`);
  }
}

async function startOnce(root: string): Promise<number> {
  const config = resolveConfig({
    listen: { host: '127.0.0.1', port: 0 },
    storage: { root },
    log: { level: 'silent' },
    upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }],
  }, 'startup-time');
  const begin = performance.now();
  const mirror = await Mirror.create({ config, logger: createLogger('silent') });
  await mirror.start();
  const app = buildApp({ mirror, logger: createLogger('silent'), limits: config.limits });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const res = await app.inject({ method: 'GET', url: '/v2/' });
  const elapsed = performance.now() - begin;
  if (res.statusCode !== 200) throw new Error(`/v2/ answered ${res.statusCode}`);
  await app.close();
  await mirror.close(0);
  return elapsed;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const countFlag = process.argv.indexOf('--blobs');
const count = countFlag > 0 ? Number(process.argv[countFlag + 1]) : 100_000;
for (const n of [0, count]) {
  const root = await tempDir('startup');
  await fill(root, n);
  const times: number[] = [];
  for (let i = 0; i < 5; i++) times.push(await startOnce(root));
  process.stdout.write(`${n} blobs: start-up to first answer, median of 5: ${median(times).toFixed(1)} ms\n`);
}
