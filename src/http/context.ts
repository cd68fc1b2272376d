import type { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CacheOutcome } from '../registry/services.js';
import { ANONYMOUS, type ClientIdentity } from './auth/identity.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** How the request was served, for the access log line. */
    cacheOutcome: CacheOutcome | 'stale' | undefined;
    /** Body bytes actually handed to the socket. */
    bodyBytes: number;
    /** Who sent the request (`auth`), set by the first onRequest hook; read it with `clientOf`. */
    identity: ClientIdentity | null;
  }
}

/** Headers every answer about content carries, and the log's cache field. */
export function markCache(request: FastifyRequest, reply: FastifyReply, outcome: CacheOutcome | 'stale'): void {
  request.cacheOutcome = outcome;
  void reply.header('x-pullthrough-cache', outcome);
}

/** Counts what a streamed body delivered, for the log line. */
export function countBytes(request: FastifyRequest, stream: Readable): Readable {
  stream.on('data', (chunk: Buffer) => { request.bodyBytes += chunk.length; });
  // A 'data' listener starts the flow at once; paused, nothing is emitted until fastify's pipe resumes it.
  stream.pause();
  return stream;
}

/** Who sent the request: anonymous until (and unless) the onRequest hook identified someone. */
export function clientOf(request: FastifyRequest): ClientIdentity {
  return request.identity ?? ANONYMOUS;
}
