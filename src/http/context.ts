import type { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { CacheOutcome, RepositoryRef } from '../registry/services.js';
import type { RequestKind } from '../registry/telemetry.js';
import type { Route } from '../routing/router.js';
import { ANONYMOUS, type ClientIdentity } from './auth/identity.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** How the request was served, for the access log line. */
    cacheOutcome: CacheOutcome | 'stale' | undefined;
    /** Body bytes actually handed to the socket. */
    bodyBytes: number;
    /** True when the body is a stream whose bytes `countBytes` counts. */
    streamedBody: boolean;
    /** What a registry request asked for, once its path is parsed: for the log line and the metrics. */
    requestKind: RequestKind | undefined;
    /** The repository a request was routed to. */
    repository: RepositoryRef | undefined;
    /** The registry error a request was answered with. */
    failure: { readonly code: string; readonly message: string } | undefined;
    /** Who sent the request (`auth`), set by the first onRequest hook; read it with `clientOf`. */
    identity: ClientIdentity | null;
  }
}

/** Records where a registry request was routed (the log line, the metrics), and passes the route on. */
export function routed(request: FastifyRequest, route: Route): Route {
  request.repository = route.repository;
  return route;
}

/** Headers every answer about content carries, and the log's cache field. */
export function markCache(request: FastifyRequest, reply: FastifyReply, outcome: CacheOutcome | 'stale'): void {
  request.cacheOutcome = outcome;
  void reply.header('x-pullthrough-cache', outcome);
}

/** How an answer from a record was served: its cache outcome, or stale (with `Warning: 110`) when the upstream failed. */
export function markResolution(request: FastifyRequest, reply: FastifyReply, resolution: { cache: CacheOutcome; stale: boolean }): void {
  markCache(request, reply, resolution.stale ? 'stale' : resolution.cache);
  if (resolution.stale) void reply.header('warning', '110 pullthrough "Response is Stale"');
}

/** Counts what a streamed body delivered, for the log line. */
export function countBytes(request: FastifyRequest, stream: Readable): Readable {
  request.streamedBody = true;
  stream.on('data', (chunk: Buffer) => { request.bodyBytes += chunk.length; });
  // A 'data' listener starts the flow at once; paused, nothing is emitted until fastify's pipe resumes it.
  stream.pause();
  return stream;
}

/** Who sent the request: anonymous until (and unless) the onRequest hook identified someone. */
export function clientOf(request: FastifyRequest): ClientIdentity {
  return request.identity ?? ANONYMOUS;
}
