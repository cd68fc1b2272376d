import type { FastifyReply, FastifyRequest } from 'fastify';
import { parseDigest } from '../../registry/digest.js';
import { MEDIA_TYPES } from '../../registry/mediaTypes.js';
import { ARTIFACT_TYPE_FILTER, ofArtifactType, referrersIndexBody } from '../../registry/referrers.js';
import type { Route } from '../../routing/router.js';
import { markResolution } from '../context.js';
import type { RegistryServices } from '../services.js';

/**
 * GET (and HEAD) of `/v2/<name>/referrers/<digest>` (OCI distribution-spec
 * 1.1): an image index of the manifests whose `subject` is `<digest>`, each
 * with its `artifactType` and annotations; with `?artifactType=`, only
 * those of that type and `OCI-Filters-Applied: artifactType`. None is an
 * empty index (200), never a 404: a 404 would send clients to the
 * referrers tag instead.
 */
export async function serveReferrers(
  mirror: RegistryServices, route: Route, digestText: string, artifactType: string | undefined,
  request: FastifyRequest, reply: FastifyReply,
): Promise<void> {
  const subject = parseDigest(digestText).digest;
  const result = await mirror.referrers.list(route.repository, subject);
  markResolution(request, reply, result);
  const referrers = artifactType === undefined ? result.referrers : ofArtifactType(result.referrers, artifactType);
  if (artifactType !== undefined) void reply.header('oci-filters-applied', ARTIFACT_TYPE_FILTER);
  const body = referrersIndexBody(referrers);
  void reply.headers({ 'content-type': MEDIA_TYPES.ociIndex, 'content-length': String(body.length) });
  if (request.method === 'HEAD') return reply.send();
  request.bodyBytes = body.length;
  return reply.send(body);
}
