/**
 * Build step (`npm run build`, after tsc): writes the configuration
 * validator as ajv standalone code, stamped, for `validator.ts` to load
 * instead of compiling the schema in every process. Does nothing when the
 * file there already carries the current stamp.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import standalone from 'ajv/dist/standalone/index.js';
import { ConfigSchema } from './schema.js';
import { AJV_OPTIONS, GENERATED_VALIDATOR, validatorStamp } from './validator.js';

const stamp = validatorStamp();
const stampLine = `module.exports.stamp = ${JSON.stringify(stamp)};\n`;
const current = (() => {
  try {
    return readFileSync(GENERATED_VALIDATOR, 'utf8');
  } catch {
    return '';
  }
})();
if (!current.endsWith(stampLine)) {
  const ajv = new Ajv({ ...AJV_OPTIONS, code: { source: true } });
  const code = standalone.default(ajv, ajv.compile(ConfigSchema));
  // Written whole, then renamed: a process starting meanwhile loads the old file or the new one.
  const temp = new URL(`${GENERATED_VALIDATOR.href}.${process.pid}.tmp`);
  writeFileSync(temp, `${code}\n${stampLine}`);
  renameSync(temp, GENERATED_VALIDATOR);
}
