import test from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AjvCompiler } from '@fastify/ajv-compiler';
import { ROUTE_SCHEMAS } from '../../src/http/routes/schemas.js';
import { FASTIFY_AJV_OPTIONS, SCHEMA_CONTROLLER } from '../../src/http/schemaCompilers.js';

const run = promisify(execFile);
const DIST = new URL('../../', import.meta.url).pathname;
const HTTP_DIR = join(DIST, 'src', 'http');

/** Queries and parameters as fastify hands them to a validator: strings, repeated keys as arrays, and missing ones. */
const SAMPLES: readonly Record<string, unknown>[] = [
  {}, { n: '5' }, { n: '-1' }, { n: 'abc' }, { n: ['3'] }, { n: ['3', '4'] }, { n: '2.5' }, { last: 'a/b:c' },
  { last: 'x'.repeat(513) }, { ns: 'docker.io' }, { ns: ['a', 'b'] }, { artifactType: 'application/x' },
  { digest: 'sha256:abc' }, { digest: 'x'.repeat(201) }, { other: 'kept' },
];

type Validate = ((data: unknown) => unknown) & { errors?: unknown };

function outcome(validate: Validate, sample: Record<string, unknown>): { valid: unknown; data: unknown; errors: unknown } {
  const data = structuredClone(sample);
  const valid = validate(data);
  return { valid, data, errors: validate.errors ?? null };
}

test('every route schema is validated by the generated code exactly as fastify\'s own compiler validates it: result, errors, coerced values', () => {
  const ours = SCHEMA_CONTROLLER.compilersFactory.buildValidator({}, FASTIFY_AJV_OPTIONS);
  const fastifys = AjvCompiler()({}, FASTIFY_AJV_OPTIONS);
  for (const [name, schema] of Object.entries(ROUTE_SCHEMAS)) {
    const generated = ours({ schema, httpPart: 'querystring' }) as Validate;
    const compiled = fastifys({ schema, httpPart: 'querystring' }) as Validate;
    assert.notEqual(generated, compiled, `${name}: not compiled here`);
    for (const sample of SAMPLES) assert.deepEqual(outcome(generated, sample), outcome(compiled, sample), `${name} with ${JSON.stringify(sample)}`);
    const otherOptions = SCHEMA_CONTROLLER.compilersFactory.buildValidator({}, { customOptions: { coerceTypes: false }, plugins: [] })({ schema }) as Validate;
    assert.notEqual(otherOptions, generated, `${name}: an app with other ajv options does not get code generated under the defaults`);
    if ('n' in schema.properties) assert.equal(otherOptions({ n: '5' }), false, `${name}: its own options hold (no coercion of '5')`);
  }
});

test('a listener is built without loading ajv or fast-json-stringify\'s compiler (the route schemas were compiled by the build)', async () => {
  const script = `
    import { createRequire } from 'node:module';
    const { startProxy } = await import(${JSON.stringify(join(DIST, 'test', 'fixtures', 'proxy.js'))});
    const proxy = await startProxy({ upstreams: [{ name: 'registry.test', url: 'http://127.0.0.1:9' }] });
    const answer = await proxy.app.inject({ method: 'GET', url: '/v2/_catalog?n=-1' });
    await proxy.stop();
    const loaded = Object.keys(createRequire(import.meta.url).cache);
    process.stdout.write(JSON.stringify({ status: answer.statusCode, loaded }));
  `;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: DIST });
  const { status, loaded } = JSON.parse(stdout) as { status: number; loaded: string[] };
  assert.equal(status, 400, 'the catalog query is still validated');
  for (const module of ['/node_modules/ajv/dist/ajv.js', '/node_modules/fast-json-stringify/index.js']) {
    assert.ok(!loaded.some((file) => file.endsWith(module)), `${module} not loaded`);
  }
});

test('without the generated file (only tsc ran), schemas are compiled by fastify\'s compiler, once per process, and validate the same', async () => {
  // A copy of the module and the schemas it imports, beside dist/, with no generated validators next to it.
  const dir = await mkdtemp(join(DIST, '.schemas-'));
  try {
    await mkdir(join(dir, 'routes'));
    await copyFile(join(HTTP_DIR, 'schemaCompilers.js'), join(dir, 'schemaCompilers.js'));
    await copyFile(join(HTTP_DIR, 'routes', 'schemas.js'), join(dir, 'routes', 'schemas.js'));
    const copy = await import(join(dir, 'schemaCompilers.js')) as typeof import('../../src/http/schemaCompilers.js');
    const build = (): Validate => copy.SCHEMA_CONTROLLER.compilersFactory.buildValidator({}, FASTIFY_AJV_OPTIONS)({ schema: ROUTE_SCHEMAS.pageQuery }) as Validate;
    const first = build();
    assert.equal(build(), first, 'a second app reuses what the first compiled');
    const generated = SCHEMA_CONTROLLER.compilersFactory.buildValidator({}, FASTIFY_AJV_OPTIONS)({ schema: ROUTE_SCHEMAS.pageQuery }) as Validate;
    assert.notEqual(first, generated);
    for (const sample of SAMPLES) assert.deepEqual(outcome(first, sample), outcome(generated, sample), JSON.stringify(sample));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
