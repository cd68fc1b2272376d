import type { OutgoingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { isRecycling, type RecyclingReadable } from '../registry/chunkPool.js';
import { countBytes } from './context.js';

/**
 * Sends a streamed body with the status and headers set on `reply`.
 *
 * A stream that lends its chunks (a file in storage, `RecyclingReadable`) is
 * written to the response here, not piped by fastify: this is the one writer
 * that knows when the socket is done with a chunk (the write's callback,
 * without an error), so it hands the chunk back then, and the file's next
 * read reuses it. Any other stream goes through fastify's send.
 */
export function sendStream(request: FastifyRequest, reply: FastifyReply, stream: Readable): Promise<void> | FastifyReply {
  if (!isRecycling(stream)) return reply.send(countBytes(request, stream));
  return sendRecycling(request, reply, stream);
}

/**
 * Resolves once the first chunk is read (or the stream ended, or the client
 * left); the rest is written afterwards. Until then fastify owns the reply, so
 * a file that fails at its first read is answered with an error as any other
 * failure (nothing was written yet); from the first chunk on, the reply is
 * hijacked, and an error cuts the response off, as fastify's send does when
 * the headers are out. Writes follow the response's backpressure (the
 * stream pauses until `drain`), so a response holds the chunk being written
 * and the one read ahead. A client that leaves destroys the stream, which
 * closes the file.
 */
function sendRecycling(request: FastifyRequest, reply: FastifyReply, stream: RecyclingReadable): Promise<void> {
  const res = reply.raw;
  request.streamedBody = true;
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    /** From here on the response is ours: fastify sends nothing more. */
    const takeOver = (): void => {
      if (settled) return;
      settled = true;
      reply.hijack();
      if (!res.destroyed) res.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders);
      resolve();
    };
    const onDrain = (): void => { stream.resume(); };
    stream.on('data', (chunk: Buffer) => {
      takeOver();
      request.bodyBytes += chunk.length;
      // Handed back only after a write that completed: an error (the socket destroyed) may leave it held.
      const more = res.write(chunk, (err) => { if (!err) stream.recycle(chunk); });
      if (!more) stream.pause();
    });
    res.on('drain', onDrain);
    stream.once('end', () => {
      takeOver();
      res.end();
    });
    stream.once('error', (err: Error) => {
      if (!settled) {
        settled = true;
        reject(err);
        return;
      }
      reply.log.warn({ err }, 'response terminated with an error with headers already sent');
      res.destroy();
    });
    res.once('close', () => {
      res.off('drain', onDrain);
      // The client left before the end (or after it: then the stream is done and this does nothing).
      if (!stream.destroyed) stream.destroy();
      takeOver();
    });
  });
}
