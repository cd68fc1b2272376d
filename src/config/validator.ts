/**
 * The configuration schema and its validator, as every process that reads a
 * configuration uses them. Building the schema (typebox) and compiling it
 * (ajv) cost a few hundred milliseconds of CPU and about 20 MiB of memory
 * that a running server never gives back (issue 19, idle memory). So the
 * build (`npm run build`) writes both beside this module: the schema as
 * JSON and ajv's standalone code for it, each stamped with a hash of the
 * compiled schema module, the ajv options and the versions of ajv and
 * typebox (either may change what the same module produces). Without them,
 * unreadable, or with a stamp that does not match (the schema or a
 * dependency changed since, or only `tsc` ran), the
 * schema module and ajv are loaded and compiled here as before. Either way
 * the same schema and the same ajv code validate.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Options, ValidateFunction } from 'ajv';
import type { SchemaNode } from './keys.js';
import type { Config } from './schema.js';

export const AJV_OPTIONS: Options = { allErrors: true, useDefaults: true, strict: false };

/** Where the build writes the standalone validator and the schema: next to this module, in `dist/`. */
export const GENERATED_VALIDATOR = new URL('./configValidator.generated.cjs', import.meta.url);
export const GENERATED_SCHEMA = new URL('./configSchema.generated.json', import.meta.url);
/** The compiled schema module: its bytes stand for the schema in the stamp, so that checking it loads nothing. */
const SCHEMA_MODULE = new URL('./schema.js', import.meta.url);

const requireHere = createRequire(import.meta.url);

/** Identifies the schema module, options and libraries the generated files were made from. */
export function validatorStamp(): string {
  return createHash('sha256')
    .update(JSON.stringify({ options: AJV_OPTIONS, ajv: packageVersion('ajv'), typebox: packageVersion('@sinclair/typebox') }))
    .update(readFileSync(SCHEMA_MODULE))
    .digest('hex');
}

/** A package's version, read from its package.json as a file (the package itself is not loaded for it). */
function packageVersion(name: string): string {
  // From the package's main file up to the nearest package.json of that name: no exports map has a say in this.
  for (let dir = dirname(requireHere.resolve(name)); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (manifest.name === name) return manifest.version ?? '';
    } catch {
      // no package.json at this level
    }
  }
  return '';
}

export interface ConfigSchemaParts {
  readonly schema: SchemaNode;
  readonly validate: ValidateFunction<Config>;
}

type StampedValidator = ValidateFunction<Config> & { readonly stamp?: string };

/** The generated schema and validator when both carry the current stamp; else built and compiled now. */
export async function loadConfigSchema(): Promise<ConfigSchemaParts> {
  const stamp = validatorStamp();
  const validate = loadGenerated();
  const generated = readGeneratedSchema();
  if (validate?.stamp === stamp && generated?.stamp === stamp) return { schema: generated.schema, validate };
  const [{ ConfigSchema }, { Ajv }] = await Promise.all([import('./schema.js'), import('ajv')]);
  return { schema: ConfigSchema as SchemaNode, validate: new Ajv(AJV_OPTIONS).compile<Config>(ConfigSchema) };
}

/** The generated validator; undefined when it is missing or cannot be loaded (then the schema is compiled here). */
function loadGenerated(): StampedValidator | undefined {
  try {
    return requireHere(fileURLToPath(GENERATED_VALIDATOR)) as StampedValidator;
  } catch {
    return undefined;
  }
}

/** The generated schema; undefined when it is missing or damaged (then the schema module is loaded). */
function readGeneratedSchema(): { stamp: string; schema: SchemaNode } | undefined {
  try {
    return JSON.parse(readFileSync(GENERATED_SCHEMA, 'utf8')) as { stamp: string; schema: SchemaNode };
  } catch {
    return undefined;
  }
}
