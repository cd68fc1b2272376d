/**
 * The one error type the upstream authorizer throws. It is a
 * `RegistryError`, so the upstream client passes it through untouched and
 * the HTTP layer answers with its code.
 */
import { RegistryError, type ErrorCode } from '../../registry/errors.js';

/**
 * Why a token could not be had:
 * - `unauthorized`: the token service refused the configured credentials
 *   (wrong username or password): an operator must fix the configuration;
 * - `denied`: it refused an anonymous request, or would not grant access;
 * - `unavailable`: it could not be reached, timed out, failed (5xx, 429) or
 *   sent something unreadable: trying again later may work.
 */
export type UpstreamAuthErrorKind = 'unauthorized' | 'denied' | 'unavailable';

const CODES: Record<UpstreamAuthErrorKind, ErrorCode> = {
  // Our own client did nothing wrong and cannot fix it by logging in to us,
  // so never 401 (which would make docker prompt for credentials).
  unauthorized: 'DENIED',
  denied: 'DENIED',
  unavailable: 'UNAVAILABLE',
};

/**
 * Getting upstream authorization failed. The message names the upstream
 * and the token service (origin and path only) and never contains a
 * username, password or token.
 *
 * When the token service failed (`unavailable`), the message the client
 * gets says only that: what went wrong (refused, timed out, which status,
 * not JSON) is `reason`, for the log. Told to an anonymous client, it would
 * let anyone who can choose the realm (the upstream) probe what the mirror's
 * host can reach.
 */
export class UpstreamAuthError extends RegistryError {
  constructor(
    readonly kind: UpstreamAuthErrorKind,
    message: string,
    detail?: { upstream: string; status?: number },
    /** What exactly failed, for the log; never in a response. */
    readonly reason?: string,
  ) {
    super(CODES[kind], message, detail);
    this.name = 'UpstreamAuthError';
  }

  /** A failed token service: one message for every way of failing, the reason kept for the log. */
  static unavailable(upstream: string, reason: string): UpstreamAuthError {
    return new UpstreamAuthError('unavailable', `upstream ${upstream}: the token service failed`, { upstream }, reason);
  }
}
