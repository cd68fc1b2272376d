/**
 * The contract between the upstream client and whatever authenticates it.
 *
 * The upstream client asks `authorize` for the Authorization header of every
 * request it sends to the upstream's own origin (never to a redirect target
 * on another host). When the upstream answers 401 it hands the challenge to
 * `challenged` and, if that returns true, asks `authorize` again and retries
 * the request once.
 *
 * Implementations are shared by every request of one upstream and must be
 * safe to call concurrently. They never see, and never use, the credentials
 * of pullthrough's own clients.
 */
export interface UpstreamAuthorizer {
  /**
   * The Authorization header value for a pull of `repository` (the name as
   * the upstream knows it, e.g. `library/alpine`), or undefined to send none.
   */
  authorize(repository: string, signal?: AbortSignal): Promise<string | undefined>;

  /**
   * The upstream answered 401 with these `WWW-Authenticate` header values.
   * Learn from them (fetch or refresh a token, switch to Basic) and return
   * true when a retry may now succeed; false when it cannot (no credentials
   * for a Basic challenge, a token already refreshed once, ...).
   */
  challenged(repository: string, wwwAuthenticate: readonly string[], signal?: AbortSignal): Promise<boolean>;
}

export type { UpstreamCredentials } from '../../config/settings.js';
