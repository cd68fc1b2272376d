import test from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface Generated { readonly stamp: string; readonly schema: unknown }
const DIST = new URL('../../', import.meta.url).pathname;
const CONFIG_DIR = join(DIST, 'src', 'config');

/**
 * Records the package of every ESM import a process resolves (a module
 * hook), and every CommonJS file in its require cache (what packages
 * require in turn, and what our modules load with createRequire), and
 * writes both to stdout at exit.
 */
const RECORDER = `
import { createRequire, register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
const seen = new Set();
const { port1, port2 } = new MessageChannel();
port1.on('message', (name) => seen.add(name));
port1.unref();
register('data:text/javascript,' + encodeURIComponent(\`
  let port;
  export function initialize(data) { port = data.port; }
  export async function resolve(specifier, context, next) {
    const resolved = await next(specifier, context);
    const m = /node_modules\\\\/((@[^/]+\\\\/)?[^/]+)/.exec(resolved.url);
    if (m) port.postMessage(m[1]);
    return resolved;
  }\`), { parentURL: import.meta.url, data: { port: port2 }, transferList: [port2] });
const required = createRequire(process.cwd() + '/').cache;
process.on('exit', () => process.stdout.write(JSON.stringify({ imported: [...seen], required: Object.keys(required) })));
`;

interface LoadedModules {
  /** Packages our ESM imports resolved to. */
  readonly imported: readonly string[];
  /** CommonJS files under node_modules, as `package/path/in/it.js`. */
  readonly required: readonly string[];
}

let loadedByMirror: Promise<LoadedModules> | undefined;

/** What a process loads when it builds a mirror from the embedded default (what `serve` does before it listens, and all that warm, export, import and gc do): one process, asked once for the tests below. */
function modulesLoadedByMirror(): Promise<LoadedModules> {
  loadedByMirror ??= recordMirrorBuild();
  return loadedByMirror;
}

async function recordMirrorBuild(): Promise<LoadedModules> {
  const script = `
    const { loadConfig } = await import(${JSON.stringify(join(CONFIG_DIR, 'load.js'))});
    const { Mirror } = await import(${JSON.stringify(join(DIST, 'src', 'mirror.js'))});
    const { default: pino } = await import('pino');
    const config = loadConfig(undefined, {});
    await Mirror.create({ config: { ...config, storageRoot: process.env.ROOT }, logger: pino({ level: 'silent' }) });
  `;
  const root = await mkdtemp(join(DIST, '.idle-'));
  try {
    const { stdout } = await run(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(RECORDER)}`, '--input-type=module', '-e', script], {
      cwd: DIST, env: { ...process.env, ROOT: root },
    });
    const { imported, required } = JSON.parse(stdout) as { imported: string[]; required: string[] };
    const inPackages = required.filter((file) => file.includes('/node_modules/'))
      .map((file) => file.slice(file.lastIndexOf('/node_modules/') + '/node_modules/'.length));
    return { imported, required: inPackages };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

test('a mirror on the filesystem loads neither typebox, ajv, the AWS SDK, the public suffix list nor fastify (issue 19: idle memory)', async () => {
  const { imported: loaded } = await modulesLoadedByMirror();
  // The hook sees the packages our modules import (pino always among them); what a package requires in turn is not
  // an import of ours and is not listed (http/schemaCompilers checks fastify's ajv). fastify comes with the listener
  // (serve builds it after the mirror), so commands that serve nothing do without it.
  assert.ok(loaded.includes('pino'), `pino recorded: ${loaded.join(', ')}`);
  for (const absent of ['@sinclair/typebox', 'ajv', '@aws-sdk/client-s3', 'tldts', 'fastify']) assert.ok(!loaded.includes(absent), `${absent} not loaded: ${loaded.join(', ')}`);
});

test('a mirror loads undici\'s dispatchers, not its index (fetch, WebSocket, EventSource, the mocks: a fifth of a command\'s CPU)', async () => {
  const { required } = await modulesLoadedByMirror();
  const undici = required.filter((file) => file.startsWith('undici/'));
  for (const present of ['undici/lib/dispatcher/agent.js', 'undici/lib/api/api-request.js', 'undici/lib/core/connect.js']) {
    assert.ok(undici.includes(present), `${present} required: ${undici.join(', ')}`);
  }
  for (const absent of ['undici/index.js', 'undici/lib/web/fetch/index.js', 'undici/lib/web/websocket/websocket.js', 'undici/lib/mock/mock-agent.js']) {
    assert.ok(!undici.includes(absent), `${absent} not required`);
  }
});

test('a mirror loads prom-client\'s metric classes, not its index, the process metrics or OpenTelemetry (only a listener serving /metrics does)', async () => {
  const { required } = await modulesLoadedByMirror();
  for (const present of ['prom-client/lib/registry.js', 'prom-client/lib/counter.js', 'prom-client/lib/histogram.js']) {
    assert.ok(required.includes(present), `${present} required`);
  }
  for (const absent of ['prom-client/index.js', 'prom-client/lib/defaultMetrics.js', 'prom-client/lib/pushgateway.js', 'prom-client/lib/cluster.js']) {
    assert.ok(!required.includes(absent), `${absent} not required`);
  }
  assert.deepEqual(required.filter((file) => file.startsWith('@opentelemetry/')), []);
});

for (const [variant, damage] of [
  ['that do not match the schema module (only tsc ran since a change)', (g: Generated) => JSON.stringify({ ...g, stamp: 'stale' })],
  ['that cannot be read (a damaged file)', (g: Generated) => JSON.stringify(g).slice(0, 100)],
] as const) test(`with generated files ${variant}, the schema is built and compiled as before, and validates the same`, async () => {
  // A copy of the configuration's schema modules beside dist/, whose generated schema file is changed.
  const dir = await mkdtemp(join(DIST, '.stale-'));
  try {
    for (const file of ['validator.js', 'schema.js', 'configValidator.generated.cjs']) await copyFile(join(CONFIG_DIR, file), join(dir, file));
    const generated = JSON.parse(await readFile(join(CONFIG_DIR, 'configSchema.generated.json'), 'utf8')) as Generated;
    await writeFile(join(dir, 'configSchema.generated.json'), damage(generated));
    const fresh = await import(join(CONFIG_DIR, 'validator.js')) as typeof import('../../src/config/validator.js');
    const stale = await import(join(dir, 'validator.js')) as typeof import('../../src/config/validator.js');
    const fromFiles = await fresh.loadConfigSchema();
    const compiled = await stale.loadConfigSchema();
    assert.deepEqual(JSON.parse(JSON.stringify(compiled.schema)), generated.schema, 'the built schema is the generated one');
    assert.notEqual(compiled.validate, fromFiles.validate);
    for (const document of [
      { listen: { port: 5000 }, storage: { root: '/x' }, upstreams: [{ name: 'a', url: 'https://a' }] },
      { listen: { port: 'x' }, storage: {}, upstreams: 'none' },
    ]) {
      const a = fromFiles.validate(structuredClone(document));
      const b = compiled.validate(structuredClone(document));
      assert.equal(a, b);
      assert.deepEqual(compiled.validate.errors?.map((e) => e.instancePath), fromFiles.validate.errors?.map((e) => e.instancePath));
    }
    assert.equal(fromFiles.validate({ listen: { port: 'x' } }), false, 'the generated validator refuses a bad document');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
