/**
 * The build step after tsc (`npm run build`): writes what processes would
 * otherwise compile at every start, each file stamped so that a stale one is
 * never used (`config/validator.ts`, `http/schemaCompilers.ts`).
 */
import { StandaloneValidator } from '@fastify/ajv-compiler';
import { generateConfigValidator } from '../config/generateValidator.js';
import { generatedContent, replaceGenerated, stampLine } from '../config/generated.js';
import { FASTIFY_AJV_OPTIONS, GENERATED_ROUTE_VALIDATORS, routeValidatorStamp, schemaKey } from '../http/schemaCompilers.js';
import { ROUTE_SCHEMAS } from '../http/routes/schemas.js';

/** One module whose `validators` table holds ajv's standalone code for each route schema, compiled by fastify's compiler with fastify's options. */
function generateRouteValidators(): void {
  const last = stampLine(routeValidatorStamp());
  if (generatedContent(GENERATED_ROUTE_VALIDATORS).endsWith(last)) return;
  const entries: string[] = [];
  const compile = StandaloneValidator({
    readMode: false,
    storeFunction: (route, code) => {
      // Each standalone module runs in a function of its own, with its own `module`.
      entries.push(`validators[${JSON.stringify(schemaKey(route.schema))}] = (function (module) {\n${code}\nreturn module.exports;\n})({ exports: {} });`);
    },
  })({}, FASTIFY_AJV_OPTIONS);
  for (const schema of Object.values(ROUTE_SCHEMAS)) compile({ schema });
  replaceGenerated(GENERATED_ROUTE_VALIDATORS, `'use strict';\nconst validators = {};\n${entries.join('\n')}\nmodule.exports.validators = validators;\n${last}`);
}

generateConfigValidator();
generateRouteValidators();
