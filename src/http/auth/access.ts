import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { AuthSettings } from '../../config/settings.js';
import type { Clock } from '../../registry/clock.js';
import { RegistryError } from '../../registry/errors.js';
import type { RepositoryRef } from '../../registry/services.js';
import { verifiedCommonName } from '../tls.js';
import type { WatchedFiles } from '../watchedFiles.js';
import { FailureThrottle } from './failures.js';
import { HtpasswdUsers } from './htpasswd.js';
import { ANONYMOUS, type ClientIdentity } from './identity.js';
import { ReadRules } from './rules.js';

/**
 * Who may read what, decided in the HTTP layer before any upstream or
 * storage access: `identify` on every request (an onRequest hook), then
 * `authorize` once the request is routed to an upstream and repository.
 */
export interface ClientAccess {
  /** Who sent the request. Rejects with 401 UNAUTHORIZED for credentials that do not check out. */
  identify(request: FastifyRequest): ClientIdentity | Promise<ClientIdentity>;
  /** Throws 401 UNAUTHORIZED (anonymous) or 403 DENIED unless `identity` may pull from `repository`. */
  authorize(identity: ClientIdentity, repository: RepositoryRef): void;
  /** For `/v2/` and `_catalog`: throws 401 UNAUTHORIZED when `identity` is anonymous and anonymous clients may pull nothing. */
  authorizeAny(identity: ClientIdentity): void;
  /** Whether `identity` may pull from `repository`: what `_catalog` lists. */
  mayPull(identity: ClientIdentity, repository: RepositoryRef): boolean;
}

/** Without `auth`: everyone pulls everything; a verified client certificate still names the client in the log. */
export const OPEN_ACCESS: ClientAccess = {
  // At once, not in a promise: this runs on every request (issue 19, the hot path).
  identify: (request) => certificateIdentity(request) ?? ANONYMOUS,
  authorize: () => undefined,
  authorizeAny: () => undefined,
  mayPull: () => true,
};

function certificateIdentity(request: FastifyRequest): ClientIdentity | undefined {
  const commonName = verifiedCommonName(request.raw.socket);
  return commonName === undefined ? undefined : { kind: 'certificate', commonName };
}

export interface ClientAccessOptions {
  readonly settings: AuthSettings;
  /** The htpasswd file, when `auth.htpasswd` is configured. */
  readonly htpasswd: WatchedFiles | undefined;
  /** True when the listener speaks TLS: Basic credentials over plain HTTP are worth a warning. */
  readonly overTls: boolean;
  readonly clock: Clock;
  readonly logger: Logger;
}

/** The `auth` block at work: htpasswd users, client certificates, the read rules, and slowed-down guessing. */
export function createClientAccess(options: ClientAccessOptions): ClientAccess {
  const { settings, logger } = options;
  const users = options.htpasswd && new HtpasswdUsers({ file: options.htpasswd, logger });
  if (users && !options.overTls) {
    logger.warn('auth.htpasswd without listen.tls: clients send their passwords in clear text');
  }
  const rules = new ReadRules(settings.rules);
  const throttle = new FailureThrottle({ clock: options.clock });
  const challenge = { 'www-authenticate': `Basic realm="${settings.htpasswd?.realm ?? 'pullthrough'}"` };
  const unauthorized = (message: string): RegistryError => new RegistryError('UNAUTHORIZED', message, undefined, challenge);
  const anonymousMayPull = rules.anonymousMayPullSomething();

  return {
    identify: async (request) => {
      const header = request.headers.authorization;
      if (header === undefined) return certificateIdentity(request) ?? ANONYMOUS;
      const address = request.raw.socket.remoteAddress ?? '';
      await throttle.wait(address);
      const credentials = basicCredentials(header);
      // One answer for every way of being wrong: no hint of which part was.
      if (!credentials || !users || !await users.verify(credentials.name, credentials.password)) {
        throttle.failed(address);
        throw unauthorized('authentication failed');
      }
      throttle.succeeded(address);
      return { kind: 'user', name: credentials.name };
    },
    authorize: (identity, repository) => {
      if (rules.mayPull(identity, repository)) return;
      if (identity.kind === 'anonymous') throw unauthorized('authentication required');
      throw new RegistryError('DENIED', `not allowed to pull ${repository.upstream}/${repository.name}`);
    },
    authorizeAny: (identity) => {
      if (identity.kind === 'anonymous' && !anonymousMayPull) throw unauthorized('authentication required');
    },
    mayPull: (identity, repository) => rules.mayPull(identity, repository),
  };
}

/** `Basic base64(name:password)`; undefined for any other scheme or a malformed value. */
function basicCredentials(header: string): { name: string; password: string } | undefined {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { name: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
