import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import { parseDigest } from '../../registry/digest.js';
import { RegistryError } from '../../registry/errors.js';
import { parseManifestReference } from '../../registry/reference.js';
import type { RegistryServices } from '../services.js';
import { parseRegistryPath } from '../paths.js';
import { serveBlob } from './blobs.js';
import { serveManifest } from './manifests.js';
import { page, pageQuerySchema, type PageQuery } from './pagination.js';

interface RegistryQuery extends PageQuery {
  readonly ns?: string;
}

/**
 * The read side of the distribution API: `/v2/`, manifests, blobs, tag
 * lists and the catalog. Repository names may contain slashes, so one
 * wildcard route splits the path; every name, tag and digest is checked
 * against the grammar before anything touches storage.
 */
export const registryRoutes: FastifyPluginAsync<{ mirror: RegistryServices }> = async (app: FastifyInstance, { mirror }) => {
  app.get('/v2/', async (_request, reply) => reply.type('application/json').send('{}'));

  app.get<{ Querystring: PageQuery }>('/v2/_catalog', { schema: { querystring: pageQuerySchema } }, async (request, reply) => {
    const repositories = page(await mirror.catalog(), request.query, reply, '/v2/_catalog');
    return reply.type('application/json').send(JSON.stringify({ repositories }));
  });

  app.route<{ Params: { '*': string }; Querystring: RegistryQuery }>({
    method: ['GET', 'HEAD'],
    url: '/v2/*',
    schema: { querystring: pageQuerySchema },
    handler: async (request, reply) => {
      const path = parseRegistryPath(request.params['*']);
      switch (path.endpoint) {
        case 'manifest':
          return serveManifest(mirror, mirror.router.route(path.name, request.query.ns), path.reference, request, reply);
        case 'blob':
          return serveBlob(mirror, mirror.router.route(path.name, request.query.ns), path.digest, request, reply);
        case 'tags': {
          const route = mirror.router.route(path.name, request.query.ns);
          const tags = page(await mirror.tags.list(route.repository), request.query, reply,
            `/v2/${path.name}/tags/list${request.query.ns ? `?ns=${encodeURIComponent(request.query.ns)}` : ''}`);
          return reply.type('application/json').send(JSON.stringify({ name: path.name, tags }));
        }
        case 'upload':
          throw new RegistryError('UNSUPPORTED', 'pullthrough is a read-only mirror');
        default:
          throw new RegistryError('NAME_UNKNOWN', 'no such endpoint');
      }
    },
  });

  // A mirror takes no writes. Rejected before any body is read: first by the grammar of the name and
  // reference (NAME_INVALID, TAG_INVALID, DIGEST_INVALID, as the conformance tests expect), then as a write.
  app.route<{ Params: { '*': string }; Querystring: RegistryQuery }>({
    method: ['POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/v2/*',
    onRequest: async (request) => {
      checkWriteTarget(mirror, request.params['*'], request.query.ns);
      throw new RegistryError('UNSUPPORTED', 'pullthrough is a read-only mirror');
    },
    handler: async () => undefined,
  });
};

/** Throws the grammar's error for a write whose name, tag or digest is malformed. */
function checkWriteTarget(mirror: RegistryServices, path: string, ns: string | undefined): void {
  const target = parseRegistryPath(path);
  if (target.endpoint === 'unknown') return;
  mirror.router.route(target.name, ns);
  if (target.endpoint === 'manifest') parseManifestReference(target.reference);
  if (target.endpoint === 'blob') parseDigest(target.digest);
}
