/**
 * The contract between the upstream client and whatever authenticates it.
 *
 * Until the authorizer has `learned` how the upstream authenticates, the
 * upstream client first asks `GET /v2/` (once, however many requests wait
 * for it) and hands the answer to `learn`: the first requests of new
 * repositories then carry their tokens instead of each taking a 401.
 *
 * The upstream client asks `authorize` for the Authorization header of every
 * request it sends to the upstream's own origin (never to a redirect target
 * on another host). When the upstream answers 401 it hands the challenge,
 * and the Authorization the refused request carried, to `challenged` and, if
 * that returns true, asks `authorize` again and retries the request once,
 * unless it would send exactly what was refused.
 *
 * Implementations are shared by every request of one upstream and must be
 * safe to call concurrently. They never see, and never use, the credentials
 * of pullthrough's own clients.
 */
export interface UpstreamAuthorizer {
  /**
   * True once the upstream has said how it authenticates: a challenge was
   * seen, or `GET /v2/` was answered without one.
   */
  readonly learned: boolean;

  /**
   * The upstream's answer to `GET /v2/`: the `WWW-Authenticate` values of
   * its 401, or none when it let an anonymous request in. Never does I/O.
   */
  learn(wwwAuthenticate: readonly string[]): void;

  /**
   * The Authorization header value for a pull of `repository` (the name as
   * the upstream knows it, e.g. `library/alpine`), or undefined to send none.
   */
  authorize(repository: string, signal?: AbortSignal): Promise<string | undefined>;

  /**
   * The upstream answered 401 with these `WWW-Authenticate` header values to
   * a request that carried `sent` as its Authorization (undefined: none).
   * Learn from them (drop the refused token, switch to Basic) and return
   * true when a retry may now succeed; false when it cannot (no credentials
   * for a Basic challenge, a valid token that grants nothing here, ...).
   */
  challenged(repository: string, wwwAuthenticate: readonly string[], sent: string | undefined, signal?: AbortSignal): Promise<boolean>;
}

export type { UpstreamCredentials } from '../../config/settings.js';
