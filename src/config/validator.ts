/**
 * The configuration validator. Compiling the schema with ajv costs a few
 * hundred milliseconds of CPU in every process that reads a configuration:
 * each CLI command, each test file. So the build (`npm run build`) writes
 * ajv's standalone code for it beside this module, stamped with a hash of
 * the schema and the options; without that file, or with a stamp that does
 * not match (the schema changed since, or only `tsc` ran), the schema is
 * compiled here as before. Either way the same ajv code validates.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { Ajv, type Options, type ValidateFunction } from 'ajv';
import { ConfigSchema, type Config } from './schema.js';

export const AJV_OPTIONS: Options = { allErrors: true, useDefaults: true, strict: false };

/** Where the build writes the standalone validator: next to this module, in `dist/`. */
export const GENERATED_VALIDATOR = new URL('./configValidator.generated.cjs', import.meta.url);

/** Identifies the schema and options a generated validator was made from. */
export function validatorStamp(): string {
  return createHash('sha256').update(JSON.stringify({ options: AJV_OPTIONS, schema: ConfigSchema })).digest('hex');
}

type StampedValidator = ValidateFunction<Config> & { readonly stamp?: string };

export function configValidator(): ValidateFunction<Config> {
  const generated = loadGenerated();
  if (generated?.stamp === validatorStamp()) return generated;
  return new Ajv(AJV_OPTIONS).compile<Config>(ConfigSchema);
}

function loadGenerated(): StampedValidator | undefined {
  try {
    return createRequire(import.meta.url)(GENERATED_VALIDATOR.pathname) as StampedValidator;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return undefined;
    throw err;
  }
}
