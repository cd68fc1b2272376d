import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolveConfig } from '../../src/config/load.js';

const README = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');

/** Every ```json block of the README that looks like configuration (it has a top-level key of ours). */
function configBlocks(): Record<string, unknown>[] {
  const blocks = [...README.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]!) as Record<string, unknown>);
  return blocks.filter((b) => ['storage', 'upstreams', 'upstreamDefaults', 'listen', 'pins'].some((k) => k in b));
}

test('every configuration example in the README is valid against the schema', () => {
  const blocks = configBlocks();
  assert.ok(blocks.length >= 4, `found ${blocks.length} examples`);
  for (const block of blocks) {
    // The examples show what differs from the defaults; fill in what they leave out.
    const document = {
      listen: { port: 5000 },
      upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }, { name: 'ghcr.io', url: 'https://ghcr.io' },
        { name: 'registry.k8s.io', url: 'https://registry.k8s.io' }],
      ...block,
      storage: { root: '/tmp/pullthrough-readme', ...(block['storage'] as object | undefined) },
    };
    // Secrets the examples name by file are read from the environment here, so the test needs no files.
    const withoutFileSecrets = JSON.parse(JSON.stringify(document).replace(/"passwordFile":"[^"]*"/g, '"passwordEnv":"README_SECRET"')) as unknown;
    assert.doesNotThrow(() => resolveConfig(withoutFileSecrets, 'README', { README_SECRET: 'x', CORP_REGISTRY_PASSWORD: 'x', REDIS_PASSWORD: 'x' }),
      JSON.stringify(block).slice(0, 200));
  }
});
