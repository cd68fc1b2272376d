/**
 * The configuration's part of the build (`cli/generate.ts`): the schema as
 * JSON and its validator as ajv standalone code, both stamped, for
 * `validator.ts` to load instead of building and compiling the schema in
 * every process. Leaves the pair alone when both carry the current stamp.
 */
import { Ajv } from 'ajv';
import standalone from 'ajv/dist/standalone/index.js';
import { generatedContent, replaceGenerated, stampLine } from './generated.js';
import { ConfigSchema } from './schema.js';
import { AJV_OPTIONS, GENERATED_SCHEMA, GENERATED_VALIDATOR, validatorStamp } from './validator.js';

export function generateConfigValidator(): void {
  const stamp = validatorStamp();
  const last = stampLine(stamp);
  // JSON keeps what keys.ts and the overrides read (types, properties, defaults, patterns, `expected`); typebox's symbols are only its own.
  const schemaFile = `${JSON.stringify({ stamp, schema: ConfigSchema })}\n`;
  // Both from the same schema, or neither: a pair is used only when both carry the current stamp.
  if (generatedContent(GENERATED_VALIDATOR).endsWith(last) && generatedContent(GENERATED_SCHEMA) === schemaFile) return;
  const ajv = new Ajv({ ...AJV_OPTIONS, code: { source: true } });
  replaceGenerated(GENERATED_VALIDATOR, `${standalone.default(ajv, ajv.compile(ConfigSchema))}\n${last}`);
  replaceGenerated(GENERATED_SCHEMA, schemaFile);
}
