import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Descriptor } from '../../registry/descriptor.js';
import { RegistryError } from '../../registry/errors.js';
import { acceptedManifestTypes } from '../../registry/mediaTypes.js';
import { parseManifestReference, type ManifestReference } from '../../registry/reference.js';
import type { RegistryServices } from '../services.js';
import type { Route } from '../../routing/router.js';
import { markCache, markResolution } from '../context.js';

/** True when `If-None-Match` names this digest (quoted or not, weak or not, or `*`). */
function notModified(ifNoneMatch: string | undefined, digest: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(',').some((tag) => {
    const t = tag.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
    return t === digest || t === '*';
  });
}

function descriptorHeaders(reply: FastifyReply, d: Descriptor): void {
  void reply.headers({
    'content-type': d.mediaType,
    'content-length': String(d.size),
    'docker-content-digest': d.digest,
    etag: `"${d.digest}"`,
  });
}

/**
 * The reference of a read: one that is neither a valid tag nor a digest names
 * no manifest, so it is MANIFEST_UNKNOWN (404, as Distribution answers and
 * the OCI conformance tests expect), with the grammar's reason as detail. It
 * still never reaches storage or the upstream.
 */
function referenceToRead(reference: string): ManifestReference {
  try {
    return parseManifestReference(reference);
  } catch (err) {
    if (!(err instanceof RegistryError)) throw err;
    throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { reference: reference.slice(0, 200), reason: err.code });
  }
}

/**
 * GET and HEAD of `/v2/<name>/manifests/<reference>`. By tag: the tag
 * service resolves it (HEAD upstream, or the fresh record), then the manifest
 * store serves that digest. By digest: the manifest store alone. Bytes go out
 * exactly as stored.
 */
export async function serveManifest(
  mirror: RegistryServices, route: Route, reference: string, request: FastifyRequest, reply: FastifyReply,
): Promise<void> {
  const accept = acceptedManifestTypes(request.headers.accept);
  const head = request.method === 'HEAD';
  const ref = referenceToRead(reference);
  let known: Descriptor | undefined;
  if (ref.digest !== undefined) {
    if (head) {
      const found = await mirror.manifests.stat(route.repository, ref.digest, accept);
      if (!found) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { digest: ref.digest });
      markCache(request, reply, found.cache ?? 'hit');
      known = found;
    }
  } else {
    const resolution = await mirror.tags.resolve(route.repository, ref.tag, accept);
    mirror.requestEvents?.pulled(route.repository, ref.tag);
    known = resolution.descriptor;
    markResolution(request, reply, resolution);
  }
  if (known && head) {
    descriptorHeaders(reply, known);
    return reply.send();
  }
  if (known && notModified(request.headers['if-none-match'], known.digest)) {
    return reply.code(304).headers({ 'docker-content-digest': known.digest, etag: `"${known.digest}"` }).send();
  }
  const digest = known?.digest ?? ref.digest!;
  const { manifest, cache } = await mirror.manifests.get(route.repository, digest, accept);
  if (request.cacheOutcome === undefined || cache !== 'hit') markCache(request, reply, cache);
  if (notModified(request.headers['if-none-match'], manifest.digest)) {
    return reply.code(304).headers({ 'docker-content-digest': manifest.digest, etag: `"${manifest.digest}"` }).send();
  }
  descriptorHeaders(reply, { digest: manifest.digest, size: manifest.body.length, mediaType: manifest.mediaType });
  return reply.send(manifest.body);
}
