import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import { parseDigest } from '../../registry/digest.js';
import { RegistryError } from '../../registry/errors.js';
import type { RepositoryName } from '../../registry/names.js';
import { parseManifestReference } from '../../registry/reference.js';
import type { Route } from '../../routing/router.js';
import type { ClientAccess } from '../auth/access.js';
import type { RegistryServices } from '../services.js';
import { parseRegistryPath } from '../paths.js';
import { serveBlob } from './blobs.js';
import { serveManifest } from './manifests.js';
import { serveReferrers } from './referrers.js';
import { page, type PageQuery } from './pagination.js';
import { ROUTE_SCHEMAS } from './schemas.js';
import { clientOf, markCache, routed } from '../context.js';

interface RegistryQuery extends PageQuery {
  readonly ns?: string;
  /** The referrers filter; empty is none. */
  readonly artifactType?: string;
}

/**
 * The read side of the distribution API: `/v2/`, manifests, blobs, tag
 * lists, referrers and the catalog. Repository names may contain slashes, so one
 * wildcard route splits the path; every name, tag and digest is checked
 * against the grammar before anything touches storage.
 */
export const registryRoutes: FastifyPluginAsync<{ mirror: RegistryServices; access: ClientAccess; maxPageSize: number }> = async (app: FastifyInstance, { mirror, access, maxPageSize }) => {
  /** Which upstream and repository the request is for, and whether its client may pull from there: before any upstream or storage access. */
  const route = (request: FastifyRequest<{ Querystring: RegistryQuery }>, name: string): Route => {
    const found = routed(request, mirror.router.route(name, request.query.ns));
    access.authorize(clientOf(request), found.repository);
    return found;
  };

  app.get('/v2/', async (request, reply) => {
    access.authorizeAny(clientOf(request));
    return reply.type('application/json').send('{}');
  });

  app.get<{ Querystring: PageQuery }>('/v2/_catalog', { schema: { querystring: ROUTE_SCHEMAS.pageQuery } }, async (request, reply) => {
    request.requestKind = 'catalog';
    // The catalog lists what is cached: always a hit.
    markCache(request, reply, 'hit');
    access.authorizeAny(clientOf(request));
    // Only what this client may pull is listed. Upstream names hold no '/': the first segment is the upstream.
    const readable = (await mirror.catalog()).filter((entry) => {
      const slash = entry.indexOf('/');
      return access.mayPull(clientOf(request), { upstream: entry.slice(0, slash), name: entry.slice(slash + 1) as RepositoryName });
    });
    const repositories = page(readable, request.query, reply, '/v2/_catalog', maxPageSize);
    return reply.type('application/json').send(JSON.stringify({ repositories }));
  });

  app.route<{ Params: { '*': string }; Querystring: RegistryQuery }>({
    method: ['GET', 'HEAD'],
    url: '/v2/*',
    schema: { querystring: ROUTE_SCHEMAS.registryQuery },
    handler: async (request, reply) => {
      const path = parseRegistryPath(request.params['*']);
      switch (path.endpoint) {
        case 'manifest':
        case 'blob': {
          request.requestKind = path.endpoint;
          const target = route(request, path.name);
          return path.endpoint === 'manifest'
            ? serveManifest(mirror, target, path.reference, request, reply)
            : serveBlob(mirror, target, path.digest, request, reply);
        }
        case 'tags': {
          request.requestKind = 'tags';
          const target = route(request, path.name);
          // A tag list always asks the upstream (and adds the tags recorded here).
          markCache(request, reply, 'miss');
          const tags = page(await mirror.tags.list(target.repository), request.query, reply,
            `/v2/${path.name}/tags/list${request.query.ns ? `?ns=${encodeURIComponent(request.query.ns)}` : ''}`, maxPageSize);
          return reply.type('application/json').send(JSON.stringify({ name: path.name, tags }));
        }
        case 'referrers': {
          request.requestKind = 'referrers';
          return serveReferrers(mirror, route(request, path.name), path.digest, request.query.artifactType || undefined, request, reply);
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
      // onRequest comes before the query schema: `?ns=a&ns=b` is an array here, and only a string is a lookup key.
      const ns: unknown = request.query.ns;
      checkWriteTarget(mirror, request.params['*'], typeof ns === 'string' ? ns : undefined);
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
