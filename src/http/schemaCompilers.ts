/**
 * How fastify compiles our route schemas (`routes/schemas.ts`). Its default
 * validator loads ajv (about a hundred modules) and compiles every schema
 * when a listener is built: a tenth of a second of CPU at every start, and
 * again for every app a test process builds. So the build writes ajv's
 * standalone code for each schema, made by fastify's own compiler with
 * fastify's own options,
 * beside this module (`cli/generate.ts`), stamped with a hash of the schemas
 * and the versions of ajv and the compiler. A schema without generated code
 * (only `tsc` ran, or a stamp that does not match) is compiled as fastify
 * would, by one validator pool for the whole process. Either way the same
 * ajv code validates.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { FastifyServerOptions } from 'fastify';
import { ROUTE_SCHEMAS } from './routes/schemas.js';

type CompilersFactory = NonNullable<NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']>;
type BuildValidator = NonNullable<CompilersFactory['buildValidator']>;
type BuildSerializer = NonNullable<CompilersFactory['buildSerializer']>;
type RouteValidator = ReturnType<ReturnType<BuildValidator>>;

/** fastify's `ajv` server option as it stands when none is given: what the generated code was compiled under. */
export const FASTIFY_AJV_OPTIONS = { customOptions: {}, plugins: [] };

/** Where the build writes the validators: next to this module, in `dist/`. */
export const GENERATED_ROUTE_VALIDATORS = new URL('./routeValidators.generated.cjs', import.meta.url);

const requireHere = createRequire(import.meta.url);

/** The key a schema's generated validator is filed under: its JSON (fastify may hand the compiler a copy). */
export function schemaKey(schema: unknown): string {
  return JSON.stringify(schema);
}

/** Identifies the schemas and the libraries the generated code was made from. */
export function routeValidatorStamp(): string {
  const version = (name: string): string => (requireHere(`${name}/package.json`) as { version: string }).version;
  return createHash('sha256')
    .update(JSON.stringify({ schemas: ROUTE_SCHEMAS, ajv: version('ajv'), compiler: version('@fastify/ajv-compiler'), options: FASTIFY_AJV_OPTIONS }))
    .digest('hex');
}

interface GeneratedValidators {
  readonly stamp: string;
  readonly validators: Readonly<Record<string, RouteValidator>>;
}

/** The generated validators when they carry the current stamp; an empty table otherwise. */
function loadGenerated(): ReadonlyMap<string, RouteValidator> {
  try {
    const generated = requireHere(fileURLToPath(GENERATED_ROUTE_VALIDATORS)) as GeneratedValidators;
    if (generated.stamp === routeValidatorStamp()) return new Map(Object.entries(generated.validators));
  } catch {
    // not generated (only tsc ran) or unreadable: compiled at start-up below
  }
  return new Map();
}

let generated: ReadonlyMap<string, RouteValidator> | undefined;
let validatorPool: BuildValidator | undefined;
let serializerPool: BuildSerializer | undefined;

/**
 * fastify's `buildValidator`: the generated code for a schema of ours, else
 * fastify's own compiler, made once per process (its Ajv keeps what it
 * compiled, so every later app reuses it).
 */
const buildValidator: BuildValidator = (externalSchemas, ajvOptions) => (route) => {
  generated ??= loadGenerated();
  // Generated under fastify's default ajv options and no shared schemas: an app configured otherwise compiles.
  const asGenerated = schemaKey(ajvOptions) === schemaKey(FASTIFY_AJV_OPTIONS) && Object.keys(externalSchemas ?? {}).length === 0;
  const found = asGenerated ? generated.get(schemaKey(route.schema)) : undefined;
  if (found) return found;
  validatorPool ??= (requireHere('@fastify/ajv-compiler') as typeof import('@fastify/ajv-compiler')).AjvCompiler();
  return validatorPool(externalSchemas, ajvOptions)(route);
};

/**
 * fastify's `buildSerializer`, loaded only for a route that declares a
 * response schema (none does: replies are JSON.stringify'd or streamed). Its
 * default loads fast-json-stringify, and with it ajv, at every start.
 */
const buildSerializer: BuildSerializer = (externalSchemas, options) => (route) => {
  serializerPool ??= (requireHere('@fastify/fast-json-stringify-compiler') as typeof import('@fastify/fast-json-stringify-compiler')).SerializerSelector();
  return serializerPool(externalSchemas, options)(route);
};

/** The `schemaController` option of every fastify app we build. */
export const SCHEMA_CONTROLLER = { compilersFactory: { buildValidator, buildSerializer } };
