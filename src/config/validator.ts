/**
 * The configuration schema and its validator, as every process that reads a
 * configuration uses them. Building the schema (typebox) and compiling it
 * (ajv) cost a few hundred milliseconds of CPU and about 20 MiB of memory
 * that a running server never gives back (issue 19, idle memory). So the
 * build (`npm run build`) writes both beside this module: the schema as
 * JSON and ajv's standalone code for it, each stamped with a hash of the
 * compiled schema module and the ajv options. Without them, or with a stamp
 * that does not match (the schema changed since, or only `tsc` ran), the
 * schema module and ajv are loaded and compiled here as before. Either way
 * the same schema and the same ajv code validate.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Options, ValidateFunction } from 'ajv';
import type { SchemaNode } from './keys.js';
import type { Config } from './schema.js';

export const AJV_OPTIONS: Options = { allErrors: true, useDefaults: true, strict: false };

/** Where the build writes the standalone validator and the schema: next to this module, in `dist/`. */
export const GENERATED_VALIDATOR = new URL('./configValidator.generated.cjs', import.meta.url);
export const GENERATED_SCHEMA = new URL('./configSchema.generated.json', import.meta.url);
/** The compiled schema module: its bytes stand for the schema in the stamp, so that checking it loads nothing. */
const SCHEMA_MODULE = new URL('./schema.js', import.meta.url);

/** Identifies the schema module and options the generated files were made from. */
export function validatorStamp(): string {
  return createHash('sha256').update(JSON.stringify(AJV_OPTIONS)).update(readFileSync(SCHEMA_MODULE)).digest('hex');
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

function loadGenerated(): StampedValidator | undefined {
  try {
    return createRequire(import.meta.url)(GENERATED_VALIDATOR.pathname) as StampedValidator;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return undefined;
    throw err;
  }
}

function readGeneratedSchema(): { stamp: string; schema: SchemaNode } | undefined {
  try {
    return JSON.parse(readFileSync(GENERATED_SCHEMA, 'utf8')) as { stamp: string; schema: SchemaNode };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
