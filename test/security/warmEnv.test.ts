/**
 * Review 2026-12-01, finding 12: `pullthrough warm --from compose.yml`
 * interpolates only the variables given with `--env` or `--env-file`, so a
 * compose file naming `${CORP_REGISTRY_PASSWORD}` cannot send the password
 * upstream as a tag. Compose's defaults (`${VAR:-default}`) still work.
 * The real CLI against the real Distribution.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeImage } from '../fixtures/images.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { pushImage } from '../fixtures/seed.js';
import { runCommand, tempDir, toolSkip } from '../fixtures/tools.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const skip = toolSkip('docker-registry', 'skopeo');
const SECRET = 'Hunter2_secret';
let upstream: RunningRegistry;
let work: string;

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  await pushImage(upstream.host, 'team/app', 'v1', makeImage({ layerSizes: [256] }));
  work = await tempDir('env-work');
  await writeFile(join(work, 'config.json'), JSON.stringify({
    listen: { port: 5000 }, storage: { root: join(work, 'cache') }, upstreams: [{ name: 'registry.test', url: upstream.url }],
  }));
});

after(async () => {
  await upstream?.stop();
});

async function warm(compose: string, args: string[] = []): Promise<{ code: number; stderr: string }> {
  const file = join(work, `compose-${Math.random().toString(36).slice(2)}.yml`);
  await writeFile(file, compose);
  const result = await runCommand(process.execPath, [CLI, 'warm', '--config', 'config.json', '--from', file, ...args], {
    cwd: work, allowFailure: true, timeoutMs: 60_000, env: { ...process.env, CORP_REGISTRY_PASSWORD: SECRET, TAG: 'v1' },
  });
  return { code: result.code, stderr: result.stderr + result.stdout };
}

test('${SECRET} from the environment is not expanded: refused, and the upstream never sees it', { skip }, async () => {
  await upstream.clearRequests();
  const result = await warm('services:\n  app:\n    image: registry.test/team/app:${CORP_REGISTRY_PASSWORD}\n');
  assert.equal(result.code, 2, result.stderr);
  assert.match(result.stderr, /CORP_REGISTRY_PASSWORD.*is not given \(pass it with --env/);
  assert.ok(!result.stderr.includes(SECRET));
  const seen = await upstream.settledRequests();
  assert.ok(seen.every((r) => !r.path.includes(SECRET)), JSON.stringify(seen.map((r) => r.path)));
});

test('variables given with --env (value from the environment, or NAME=value) and compose defaults are expanded', { skip }, async () => {
  const compose = 'services:\n  app:\n    image: registry.test/team/app:${TAG}\n  other:\n    image: registry.test/team/app:${UNSET_TAG:-v1}\n';
  const named = await warm(compose, ['--env', 'TAG']);
  assert.equal(named.code, 0, named.stderr);
  const given = await warm(compose, ['--env', 'TAG=v1']);
  assert.equal(given.code, 0, given.stderr);
  const envFile = join(work, 'vars.env');
  await writeFile(envFile, '# for CI\nexport TAG="v1"\n');
  const fromFile = await warm(compose, ['--env-file', envFile]);
  assert.equal(fromFile.code, 0, fromFile.stderr);
});
