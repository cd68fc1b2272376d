import { createHash } from 'node:crypto';
import { S3Client } from '@aws-sdk/client-s3';
import { RegistryError } from '../../registry/errors.js';

/** What the S3 driver needs to reach its bucket (`storage.s3`, resolved). */
export interface S3ClientSettings {
  readonly region: string;
  readonly endpoint: string | undefined;
  readonly forcePathStyle: boolean;
  /** Undefined: the AWS SDK's default credential chain. */
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string } | undefined;
}

/** Told of every S3 request the client sends, by command name (`GetObject`, `UploadPart`, ...): metrics and tests. */
export type S3RequestListener = (command: string) => void;

/** Connecting longer than this means the store is unreachable: fail the request (503) instead of hanging a pull. */
const CONNECT_TIMEOUT_MS = 3000;
/** Longest silence on an S3 socket. */
const SOCKET_TIMEOUT_MS = 30_000;

/**
 * An S3 client for the bucket of the S3 driver.
 *
 * - Checksums only where S3 requires them: S3-compatible stores (Swift's
 *   s3api among them) reject the SDK's aws-chunked streaming uploads.
 * - `DeleteObjects` gets a `Content-MD5`, which S3 has always required and
 *   the SDK no longer sends (it sends a CRC32 the older stores do not know).
 * - Each request attempt is reported to `onRequest`, so that what an
 *   operation costs can be counted.
 */
export function createS3Client(settings: S3ClientSettings, onRequest?: S3RequestListener): S3Client {
  const client = new S3Client({
    region: settings.region,
    ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
    forcePathStyle: settings.forcePathStyle,
    ...(settings.credentials ? { credentials: settings.credentials } : {}),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, socketTimeout: SOCKET_TIMEOUT_MS },
    // One retry: an unreachable store should fail a pull in seconds, not after a long back-off.
    maxAttempts: 2,
  });
  client.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName === 'DeleteObjectsCommand') addContentMd5(args.request);
    return next(args);
  }, { step: 'build', name: 'pullthroughContentMd5', priority: 'low' });
  if (onRequest) {
    client.middlewareStack.add((next, context) => async (args) => {
      onRequest((context.commandName ?? 'unknown').replace(/Command$/, ''));
      return next(args);
    }, { step: 'finalizeRequest', name: 'pullthroughRequestCount', priority: 'low' });
  }
  return client;
}

interface HttpRequestLike {
  headers: Record<string, string>;
  body?: unknown;
}

function addContentMd5(request: unknown): void {
  const r = request as HttpRequestLike;
  if (typeof r.body !== 'string' && !(r.body instanceof Uint8Array)) return;
  for (const name of Object.keys(r.headers)) {
    if (/^x-amz-(checksum-|sdk-checksum-algorithm)/i.test(name)) delete r.headers[name];
  }
  r.headers['content-md5'] = createHash('md5').update(r.body).digest('base64');
}

interface S3ErrorLike {
  name?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
}

/** True for "no such key" in its several spellings (GetObject's NoSuchKey, HeadObject's bare 404). */
export function isNotFound(err: unknown): boolean {
  const e = err as S3ErrorLike;
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404;
}

/** The store failed or could not be reached: a 503 for the client (never a 500), naming S3. */
export class StorageUnavailable extends RegistryError {
  constructor(message: string, override readonly cause?: unknown) {
    super('UNAVAILABLE', message);
    this.name = 'StorageUnavailable';
  }
}

/** What a failed S3 request becomes: its own error when it is already ours, else StorageUnavailable naming the operation. */
export function storageFailure(operation: string, key: string, err: unknown): Error {
  if (err instanceof RegistryError) return err;
  const e = err as S3ErrorLike & { message?: string };
  const what = e.code ?? e.name ?? 'error';
  const status = e.$metadata?.httpStatusCode;
  return new StorageUnavailable(`S3 ${operation} of ${key} failed (${what}${status ? ` ${status}` : ''}${e.message && e.message !== what ? `: ${e.message}` : ''})`, err);
}
