/**
 * The OCI distribution error table, in one place. Layers throw
 * `RegistryError`s; exactly one fastify error handler turns them into
 * `{"errors":[{code,message,detail}]}` with the status below.
 */
export const ERROR_STATUS = {
  NAME_INVALID: 400,
  TAG_INVALID: 400,
  DIGEST_INVALID: 400,
  MANIFEST_INVALID: 400,
  SIZE_INVALID: 400,
  PAGINATION_NUMBER_INVALID: 400,
  BLOB_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  NAME_UNKNOWN: 404,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  RANGE_INVALID: 416,
  TOOMANYREQUESTS: 429,
  UNAVAILABLE: 503,
  /** An upstream sent bytes that do not match the digest they were asked for. */
  UPSTREAM_INVALID: 502,
  /** The client did not send its request (its head) in time: `limits.headersTimeout` / `requestTimeout`. */
  REQUEST_TIMEOUT: 408,
  /** The request line and headers exceed `limits.headerSize`. */
  HEADER_TOO_LARGE: 431,
  /** Not HTTP we can parse (a malformed request line or header). */
  REQUEST_INVALID: 400,
  /** Anything we did not expect; the message never carries internals. */
  UNKNOWN: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class RegistryError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: unknown,
    /** Extra response headers, e.g. Retry-After or WWW-Authenticate. */
    readonly headers?: Readonly<Record<string, string>>,
  ) {
    super(message);
    this.name = 'RegistryError';
    this.status = ERROR_STATUS[code];
  }
}

/** The upstream could not be reached or failed; callers may fall back to what is cached. */
export class UpstreamUnavailable extends RegistryError {
  constructor(message: string, detail?: unknown) {
    super('UNAVAILABLE', message, detail);
    this.name = 'UpstreamUnavailable';
  }
}

/** The upstream is configured offline: it is never contacted, so a miss cannot be filled. */
export class UpstreamOffline extends UpstreamUnavailable {
  constructor(upstream: string) {
    super(`not cached, and this mirror is offline: upstream ${upstream} is not contacted`, { upstream, offline: true });
    this.name = 'UpstreamOffline';
  }
}

/**
 * The upstream is known to be down (src/upstream/health.ts): the request was
 * not sent. Callers serve what is cached, or fail at once.
 */
export class UpstreamDown extends UpstreamUnavailable {
  constructor(upstream: string, retryInMs: number | undefined) {
    super(`upstream ${upstream} is down; it is asked again ${retryInMs === undefined ? 'soon' : `in ${Math.ceil(retryInMs / 1000)} s`}`,
      { upstream, down: true });
    this.name = 'UpstreamDown';
  }
}

/** errno codes of a local write that failed because of the storage itself: full, over quota, read-only, failing. */
const STORAGE_CODES: ReadonlySet<string> = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EACCES', 'EPERM', 'EMFILE', 'ENFILE']);

/**
 * The mirror's own storage could not take a write (a full disk, an I/O
 * error): 503, never blamed on the upstream, and never a 500. `reason` is
 * the errno code.
 */
export class StorageUnavailable extends RegistryError {
  constructor(message: string, readonly reason: string, retryAfterSeconds?: number) {
    super('UNAVAILABLE', message, { storage: reason },
      retryAfterSeconds === undefined ? undefined : { 'retry-after': String(retryAfterSeconds) });
    this.name = 'StorageUnavailable';
  }

  /** The typed error for a failed local write, or undefined when `err` is no storage failure. */
  static from(err: unknown, what: string): StorageUnavailable | undefined {
    if (err instanceof StorageUnavailable) return err;
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    if (code === undefined || !STORAGE_CODES.has(code)) return undefined;
    const words = code === 'ENOSPC' || code === 'EDQUOT' ? 'the mirror\'s storage is full' : 'the mirror\'s storage failed';
    return new StorageUnavailable(`${words}: could not write ${what} (${code})`, code);
  }
}

/** The upstream answered 429; callers may fall back to what is cached. */
export class UpstreamRateLimited extends RegistryError {
  constructor(message: string, retryAfterSeconds: number | undefined) {
    super('TOOMANYREQUESTS', message, undefined,
      retryAfterSeconds === undefined ? undefined : { 'retry-after': String(retryAfterSeconds) });
    this.name = 'UpstreamRateLimited';
  }
}

/**
 * True for the failures that a cached answer may stand in for
 * (stale-if-error): the upstream, or its token service, unreachable, failing
 * or rate-limiting. Decided by code, so every layer's typed error counts.
 */
export function isUpstreamFailure(err: unknown): err is RegistryError {
  return err instanceof RegistryError && (err.code === 'UNAVAILABLE' || err.code === 'TOOMANYREQUESTS');
}
