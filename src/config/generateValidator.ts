/**
 * Build step (`npm run build`, after tsc): writes the configuration schema
 * as JSON and its validator as ajv standalone code, both stamped, for
 * `validator.ts` to load instead of building and compiling the schema in
 * every process. Leaves a file alone when it already carries the current
 * stamp.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import standalone from 'ajv/dist/standalone/index.js';
import { ConfigSchema } from './schema.js';
import { AJV_OPTIONS, GENERATED_SCHEMA, GENERATED_VALIDATOR, validatorStamp } from './validator.js';

const stamp = validatorStamp();

function current(file: URL): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Written whole, then renamed: a process starting meanwhile reads the old file or the new one. */
function replace(file: URL, content: string): void {
  const temp = new URL(`${file.href}.${process.pid}.tmp`);
  writeFileSync(temp, content);
  renameSync(temp, file);
}

const stampLine = `module.exports.stamp = ${JSON.stringify(stamp)};\n`;
// JSON keeps what keys.ts and the overrides read (types, properties, defaults, patterns, `expected`); typebox's symbols are only its own.
const schemaFile = `${JSON.stringify({ stamp, schema: ConfigSchema })}\n`;
// Both from the same schema, or neither: a pair is used only when both carry the current stamp.
if (!current(GENERATED_VALIDATOR).endsWith(stampLine) || current(GENERATED_SCHEMA) !== schemaFile) {
  const ajv = new Ajv({ ...AJV_OPTIONS, code: { source: true } });
  replace(GENERATED_VALIDATOR, `${standalone.default(ajv, ajv.compile(ConfigSchema))}\n${stampLine}`);
  replace(GENERATED_SCHEMA, schemaFile);
}
