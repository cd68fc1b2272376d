import type { RepositoryRef } from './services.js';

/**
 * What the layers report while they work, for the operator's side (admin/:
 * metrics, upstream health, the status page). Each layer is handed the sink
 * it reports to at construction; the defaults below ignore everything, so a
 * layer built without one (a unit test, `pullthrough gc`) pays nothing.
 *
 * Contract for every implementation: cheap (the request methods run on the
 * hot path of every cached pull), synchronous, and never throwing.
 */

/** The kinds of registry request that are counted. */
export type RequestKind = 'manifest' | 'blob' | 'tags' | 'referrers' | 'catalog';

/** How a request was answered: from the cache, from a fetch, by joining one, stale, or with an error. */
export type RequestOutcome = 'hit' | 'miss' | 'coalesced' | 'stale' | 'error';

/** A request that ended with an error status, for the status page's "last errors". */
export interface FailedRequest {
  readonly at: number;
  readonly method: string;
  /** The request path, without the query string, cut to a readable length. */
  readonly path: string;
  readonly status: number;
  readonly code: string | undefined;
  readonly message: string | undefined;
  readonly upstream: string | undefined;
}

/** Reported by the HTTP layer, once per answered registry request. */
export interface RequestEvents {
  /**
   * One answered request. Positional on purpose: it runs for every cached
   * pull, and an object per call would be an allocation per request.
   */
  served(kind: RequestKind, method: string, outcome: RequestOutcome, repository: RepositoryRef | undefined, bytes: number, seconds: number): void;
  /** A manifest asked for by tag and found: how clients start a pull, for "most pulled images". */
  pulled(repository: RepositoryRef, tag: string): void;
  failed(request: FailedRequest): void;
}

export type UpstreamRequestKind = 'manifest' | 'blob' | 'tags';

/** Reported by one upstream's client. */
export interface UpstreamEvents {
  /** The upstream answered (after redirects and one auth retry); `message` is its own error text, if it sent one. */
  responded(method: string, kind: UpstreamRequestKind, status: number, message: string | undefined): void;
  /** No answer: connection refused or reset, a timeout, a broken body. */
  unreachable(method: string, kind: UpstreamRequestKind, reason: string): void;
  /** Body bytes received from the upstream. */
  fetched(kind: UpstreamRequestKind, bytes: number): void;
  /** One exchange with a token service. */
  tokenFetched(ok: boolean): void;
}

/** Reported by the blob fills of one upstream. */
export interface FillEvents {
  /** The first body byte arrived, `seconds` after the upstream GET was sent. */
  firstByte(seconds: number): void;
  /** Bytes written into the fill's upload (the same bytes the upstream sent). */
  received(bytes: number): void;
  /** The fill committed (`ok`) or failed, `seconds` after the GET was sent. */
  finished(ok: boolean, seconds: number, reason: string | undefined): void;
}

/** Reported by eviction, once per run. */
export interface EvictionEvents {
  evicted(run: { readonly freedBytes: number; readonly removedBlobs: number; readonly usedBytes: number }): void;
}

const ignore = (): void => undefined;

export const NO_REQUEST_EVENTS: RequestEvents = { served: ignore, pulled: ignore, failed: ignore };
export const NO_UPSTREAM_EVENTS: UpstreamEvents = { responded: ignore, unreachable: ignore, fetched: ignore, tokenFetched: ignore };
export const NO_FILL_EVENTS: FillEvents = { firstByte: ignore, received: ignore, finished: ignore };
export const NO_EVICTION_EVENTS: EvictionEvents = { evicted: ignore };
