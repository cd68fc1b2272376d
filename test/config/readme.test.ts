import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { documentedKeys, type SchemaNode } from '../../src/config/keys.js';
import { resolveConfig } from '../../src/config/load.js';
import { ConfigSchema } from '../../src/config/schema.js';
import { runCommand } from '../fixtures/tools.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const CLI = join(ROOT, 'dist/src/cli.js');

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
    assert.doesNotThrow(() => resolveConfig(withoutFileSecrets, 'README', { README_SECRET: 'x', CORP_REGISTRY_PASSWORD: 'x', REDIS_PASSWORD: 'x', S3_SECRET_ACCESS_KEY: 'x' }),
      JSON.stringify(block).slice(0, 200));
  }
});

/** The keys named in the first column of the README's configuration tables (`| key | default | meaning |`). */
function documentedInReadme(): Set<string> {
  const keys = new Set<string>();
  let inKeyTable = false;
  for (const line of README.split('\n')) {
    if (/^\|\s*key\s*\|\s*default\s*\|\s*meaning\s*\|/.test(line)) {
      inKeyTable = true;
      continue;
    }
    if (!line.startsWith('|')) {
      inKeyTable = false;
      continue;
    }
    if (!inKeyTable || /^\|\s*-/.test(line)) continue;
    const firstCell = line.split('|')[1] ?? '';
    for (const m of firstCell.matchAll(/`([^`]+)`/g)) keys.add(m[1]!);
  }
  return keys;
}

test('the README\'s configuration tables list every key of the schema, and only keys of the schema', () => {
  const schemaKeys = documentedKeys(ConfigSchema as SchemaNode);
  const inReadme = documentedInReadme();
  const missing = schemaKeys.filter((k) => !inReadme.has(k));
  assert.deepEqual(missing, [], 'schema keys without a row in a README "| key | default | meaning |" table (write the full path, e.g. `upstreams[].timeouts.connect`)');
  // A row may also name an object whose keys have rows of their own (`redis`).
  const stale = [...inReadme].filter((k) => !schemaKeys.includes(k) && !schemaKeys.some((s) => s.startsWith(`${k}.`)));
  assert.deepEqual(stale, [], 'README rows naming no key of the schema');
});

test('every pullthrough command the README shows exists, and `npx pullthrough` runs it from the clone', async () => {
  const commands = new Set<string>();
  // As code: inline (`pullthrough gc …`) or a line of a shell block.
  const shell = [...README.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!).join('\n');
  for (const m of README.matchAll(/`(?:npx )?pullthrough ((?:config )?[a-z]+)\b/g)) commands.add(m[1]!);
  for (const m of shell.matchAll(/^(?:npx )?pullthrough ((?:config )?[a-z]+)\b/gm)) commands.add(m[1]!);
  assert.ok(commands.has('serve') && commands.has('config check') && commands.has('export'), [...commands].join(', '));
  // The commands the CLI has, as its help lists them (two runs, not one per command).
  const listed = async (args: string[], prefix: string): Promise<string[]> => {
    const help = await runCommand(process.execPath, [CLI, ...args, '--help']);
    const section = help.stdout.split(/^Commands:$/m)[1] ?? '';
    return [...section.matchAll(/^ {2}([a-z]+)/gm)].map((m) => `${prefix}${m[1]!}`);
  };
  const known = new Set([...await listed([], ''), ...await listed(['config'], 'config ')]);
  assert.deepEqual([...commands].filter((c) => !known.has(c)), [], `the CLI has: ${[...known].join(', ')}`);
  // What the README tells a new user to type after the quick start (--offline: the clone's own bin, never the registry).
  const viaNpx = await runCommand('npx', ['--offline', 'pullthrough', '--version'], { cwd: ROOT, allowFailure: true, timeoutMs: 60_000 });
  assert.equal(viaNpx.code, 0, viaNpx.stderr);
  assert.equal(viaNpx.stdout.trim(), (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
});
