/**
 * Every JSON schema a route declares, in one place: the build compiles each
 * of them ahead of time (`cli/generate.ts`), and `../schemaCompilers.ts`
 * finds the compiled validator by the schema's JSON. Routes use these
 * objects, never a schema written inline.
 */

/** `?n=&last=` of a paginated list, and the `?ns=` every registry route may carry. */
const pageQuery = {
  type: 'object',
  properties: {
    n: { type: 'integer', minimum: 0 },
    last: { type: 'string', maxLength: 512 },
    ns: { type: 'string', maxLength: 255 },
  },
} as const;

export const ROUTE_SCHEMAS = {
  pageQuery,
  /** The query of every `/v2/<name>/...` request: a page, `ns`, and the referrers' `artifactType` filter. */
  registryQuery: {
    ...pageQuery,
    properties: { ...pageQuery.properties, artifactType: { type: 'string', maxLength: 255 } },
  },
  /** The internal fill endpoint's path parameter. */
  digestParams: {
    type: 'object',
    properties: { digest: { type: 'string', maxLength: 200 } },
    required: ['digest'],
  },
} as const;
