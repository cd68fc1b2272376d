/**
 * The folders are the layers (STYLE.md, ARCHITECTURE.md): a module imports
 * only from its own layer or the layers below it, and nothing outside
 * storage/, config/ and cli/ touches the file system. Checked over the
 * source text, so a new file is covered the day it is added.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const SRC = join(ROOT, 'src');

/**
 * Each layer's rank: a module may import from a rank at most its own. Side
 * by side at the bottom, the shared vocabulary (registry/) and the settings
 * types (config/settings.ts, which import nothing of ours).
 */
const LAYERS: readonly { readonly layer: string; readonly rank: number; readonly matches: (path: string) => boolean }[] = [
  { layer: 'config/settings', rank: 0, matches: (p) => p === 'config/settings.ts' },
  { layer: 'registry', rank: 0, matches: (p) => p.startsWith('registry/') },
  { layer: 'storage', rank: 1, matches: (p) => p.startsWith('storage/') },
  { layer: 'cache', rank: 2, matches: (p) => p.startsWith('cache/') },
  { layer: 'upstream', rank: 3, matches: (p) => p.startsWith('upstream/') },
  { layer: 'proxy', rank: 4, matches: (p) => p.startsWith('proxy/') },
  { layer: 'routing', rank: 5, matches: (p) => p.startsWith('routing/') },
  { layer: 'warm', rank: 6, matches: (p) => p.startsWith('warm/') },
  { layer: 'airgap', rank: 6, matches: (p) => p.startsWith('airgap/') },
  { layer: 'http', rank: 6, matches: (p) => p.startsWith('http/') },
  { layer: 'admin', rank: 6, matches: (p) => p.startsWith('admin/') },
  { layer: 'mirror', rank: 7, matches: (p) => p === 'mirror.ts' },
  { layer: 'config', rank: 8, matches: (p) => p.startsWith('config/') },
  { layer: 'cli', rank: 9, matches: (p) => p.startsWith('cli/') || p === 'cli.ts' },
];

function layerOf(path: string): { layer: string; rank: number } {
  const found = LAYERS.find((l) => l.matches(path));
  if (!found) throw new Error(`src/${path} is in no layer: add its folder to LAYERS (and to ARCHITECTURE.md's map)`);
  return found;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** Relative specifiers of static imports, re-exports and dynamic imports. */
function importsOf(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g)) found.push(m[1]!);
  return found;
}

const files = sourceFiles(SRC).map((file) => ({ file, path: relative(SRC, file), text: readFileSync(file, 'utf8') }));

test('every module imports only from its own layer or the layers below it', () => {
  const upward: string[] = [];
  for (const { file, path, text } of files) {
    const from = layerOf(path);
    for (const specifier of importsOf(text)) {
      const target = relative(SRC, resolve(dirname(file), specifier.replace(/\.js$/, '.ts')));
      const to = layerOf(target);
      if (to.rank > from.rank) upward.push(`src/${path} (${from.layer}) imports src/${target} (${to.layer})`);
    }
  }
  assert.deepEqual(upward, []);
});

test('the settings types import nothing of ours', () => {
  const settings = files.find((f) => f.path === 'config/settings.ts');
  assert.ok(settings);
  assert.deepEqual(importsOf(settings.text), []);
});

test('nothing outside storage/, config/ and cli/ imports node:fs: every byte goes through the driver', () => {
  const offenders = files
    .filter(({ text }) => /from\s+['"](node:)?fs(\/promises)?['"]/.test(text))
    .map(({ path }) => path)
    .filter((path) => !/^(storage|config|cli)\//.test(path));
  assert.deepEqual(offenders, []);
});

/** Libraries whose index loads much we never use, and the one module that loads the parts we do. */
const LOADED_IN_PARTS: readonly (readonly [library: string, module: string])[] = [
  ['undici', 'upstream/undici.ts'],
  ['prom-client', 'admin/promClient.ts'],
];

test('undici and prom-client are loaded by one module each (the rest import their types): their indexes cost every process start-up', () => {
  for (const [library, module] of LOADED_IN_PARTS) {
    // A static import of its values, or a dynamic one (the lazy loading the commands do elsewhere); `typeof import(…)` is a type.
    const valueImport = new RegExp(`^import\\s+(?!type\\b)[^;]*from\\s+['"]${library}['"]|(?<!typeof\\s+)import\\(\\s*['"]${library}['"]`, 'm');
    const offenders = files.filter(({ text }) => valueImport.test(text)).map(({ path }) => path).filter((path) => path !== module);
    assert.deepEqual(offenders, [], `${library} outside ${module}`);
  }
});

test('the layer checker sees an upward import when there is one', () => {
  // The checker itself must be able to fail: a storage module importing the proxy is upward.
  assert.ok(layerOf('proxy/blobs.ts').rank > layerOf('storage/blobs.ts').rank);
  assert.deepEqual(importsOf(`import { x } from '../proxy/blobs.js';\nconst m = await import('./y.js');`), ['../proxy/blobs.js', './y.js']);
});
