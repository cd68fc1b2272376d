import type { Logger } from 'pino';
import { ConfigError, type ResolvedConfig, type TlsSettings } from '../config/settings.js';
import { watchFiles } from '../config/watchedFiles.js';
import { createClientAccess, type ClientAccess } from '../http/auth/access.js';
import { createTlsListener, type TlsListener } from '../http/tls.js';
import { systemClock, type Clock } from '../registry/clock.js';

/** HTTPS for a listener from a `tls` block (`listen.tls`; the admin listener takes the same block), its files watched. */
export async function tlsListener(settings: TlsSettings, logger: Logger): Promise<TlsListener> {
  const paths = [settings.certFile, settings.keyFile, ...(settings.clientCaFile ? [settings.clientCaFile] : [])];
  const files = await watchFiles(paths, { logger });
  try {
    return createTlsListener({ settings, files, logger });
  } catch (err) {
    files.close();
    throw new ConfigError(`listen.tls: ${paths.join(', ')} do not make a usable certificate: ${(err as Error).message}`);
  }
}

export interface ListenerSecurity {
  readonly tls: TlsListener | undefined;
  readonly access: ClientAccess | undefined;
  /** Stops watching the certificate and htpasswd files. */
  close(): void;
}

/** What `listen.tls` and `auth` ask of the registry listener: HTTPS, and who may pull what. */
export async function listenerSecurity(config: ResolvedConfig, logger: Logger, clock: Clock = systemClock): Promise<ListenerSecurity> {
  const tls = config.listen.tls && await tlsListener(config.listen.tls, logger);
  const htpasswd = config.auth?.htpasswd && await watchFiles([config.auth.htpasswd.file], { logger });
  const access = config.auth && createClientAccess({ settings: config.auth, htpasswd, overTls: tls !== undefined, clock, logger });
  return {
    tls,
    access,
    close: () => {
      tls?.close();
      htpasswd?.close();
    },
  };
}
