import type { FastifyReply, FastifyRequest } from 'fastify';
import { parseDigest } from '../../registry/digest.js';
import { RegistryError } from '../../registry/errors.js';
import type { RegistryServices } from '../services.js';
import type { Route } from '../../routing/router.js';
import { markCache } from '../context.js';
import { sendStream } from '../sendStream.js';
import { parseRange } from '../range.js';

/**
 * GET and HEAD of `/v2/<name>/blobs/<digest>`, with one `Range`. A HEAD on a
 * miss costs one upstream HEAD; a GET on a miss joins or starts the one fill
 * of that digest and streams as bytes arrive.
 */
export async function serveBlob(
  mirror: RegistryServices, route: Route, digestText: string, request: FastifyRequest, reply: FastifyReply,
): Promise<void> {
  const digest = parseDigest(digestText).digest;
  void reply.headers({ 'docker-content-digest': digest, 'accept-ranges': 'bytes', etag: `"${digest}"` });
  if (request.method === 'HEAD') {
    const descriptor = await mirror.blobs.stat(route.repository, digest);
    if (!descriptor) throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
    markCache(request, reply, descriptor.cache ?? 'hit');
    return reply.type('application/octet-stream').header('content-length', String(descriptor.size)).send();
  }

  const blob = await mirror.blobs.get(route.repository, digest);
  markCache(request, reply, blob.cache);
  if (blob.redirect) {
    // The store serves the bytes (and any Range) itself; the URL expires soon, so nobody may cache this answer.
    return reply.code(307).headers({ location: await blob.redirect(), 'cache-control': 'no-store' }).send();
  }
  const rangeHeader = request.headers.range;
  // The size a range is measured against is the blob's own (the open file's, or the fill's), never a cached one.
  const { stream, size, range } = await blob.open(rangeHeader === undefined ? undefined : (blobSize) => {
    const wanted = parseRange(rangeHeader, blobSize);
    if (wanted.kind === 'unsatisfiable') {
      throw new RegistryError('RANGE_INVALID', 'requested range not satisfiable', { size: blobSize }, { 'content-range': `bytes */${blobSize}` });
    }
    return wanted.kind === 'range' ? wanted.range : undefined;
  });
  void reply.type('application/octet-stream');
  if (range) {
    const { start, end } = range;
    void reply.code(206).headers({ 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': String(end - start + 1) });
  } else if (size !== undefined) {
    void reply.header('content-length', String(size));
  }
  return sendStream(request, reply, stream);
}
