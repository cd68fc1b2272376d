import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import { parseDigest } from '../../registry/digest.js';
import { RegistryError } from '../../registry/errors.js';
import { HELD_STATE_HEADER, INTERNAL_BLOBS_PATH, PEER_AUTH_HEADER, verifyPeerToken, type HeldBlobs } from '../../registry/heldBlobs.js';
import type { PeerEvents } from '../../registry/peerTelemetry.js';
import { sendStream } from '../sendStream.js';
import { ROUTE_SCHEMAS } from './schemas.js';

export interface InternalRoutesOptions {
  /** What this process holds: committed blobs and its own fills in progress. */
  readonly held: HeldBlobs;
  /** The shared secret (`peers.secretFile` / `peers.secretEnv`). */
  readonly secret: string;
  /** The time tokens are checked against (the mirror's clock). */
  readonly now: () => number;
  /** Told of the bytes sent (metrics). */
  readonly events?: Pick<PeerEvents, 'served'>;
}

const START_ONLY = /^bytes=(\d+)-$/;

/**
 * The internal fill endpoint: `GET /_pullthrough/internal/blobs/<digest>`
 * for other pullthrough processes (peers on other nodes, replicas without a
 * shared file system). It needs a token for that digest made with the
 * shared secret (`Pullthrough-Peer-Auth`, registry/heldBlobs.ts), answers by digest only,
 * and never starts a fill: a blob it neither holds nor is filling is a 404,
 * whatever the asker wants (so a peer can never make this one dial an
 * upstream, and nothing but blob bytes ever leaves through it).
 *
 * `Range: bytes=<start>-` resumes a transfer that broke off; it is honoured
 * when the size is known, else the whole blob is sent (200) and the caller
 * skips what it has.
 */
export function internalRoutes(options: InternalRoutesOptions): FastifyPluginAsync {
  const authentic = (request: FastifyRequest<{ Params: { digest: string } }>): boolean => {
    const given = request.headers[PEER_AUTH_HEADER];
    return verifyPeerToken(options.secret, request.params.digest, typeof given === 'string' ? given : undefined, options.now());
  };
  return async (app: FastifyInstance) => {
    app.get<{ Params: { digest: string } }>(`${INTERNAL_BLOBS_PATH}:digest`, {
      schema: { params: ROUTE_SCHEMAS.digestParams },
      onRequest: async (request) => {
        if (!authentic(request)) throw new RegistryError('UNAUTHORIZED', 'the internal endpoint needs a token made with the peers secret');
      },
    }, async (request, reply) => {
      const digest = parseDigest(request.params.digest).digest;
      const held = await options.held.find(digest);
      if (!held) throw new RegistryError('BLOB_UNKNOWN', 'blob not held here', { digest });
      const asked = START_ONLY.exec(request.headers.range ?? '');
      const wanted = asked ? Number(asked[1]) : 0;
      const start = held.size !== undefined && wanted < held.size ? wanted : 0;
      const stream = await held.open(start);
      void reply.type('application/octet-stream').headers({ 'docker-content-digest': digest, [HELD_STATE_HEADER]: held.state });
      if (held.size !== undefined) void reply.header('content-length', String(held.size - start));
      if (start > 0) void reply.code(206).header('content-range', `bytes ${start}-${held.size! - 1}/${held.size}`);
      const events = options.events;
      if (events) stream.on('data', (chunk: Buffer) => events.served(chunk.length));
      return sendStream(request, reply, stream);
    });
  };
}
