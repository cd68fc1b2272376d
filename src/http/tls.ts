import { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import { createSecureContext, TLSSocket, type SecureContextOptions, type Server as TlsServer, type TlsOptions } from 'node:tls';
import type { Logger } from 'pino';
import type { TlsSettings } from '../config/settings.js';
import type { WatchedFiles } from './watchedFiles.js';

export interface TlsListenerOptions {
  readonly settings: TlsSettings;
  /** `certFile`, `keyFile` and, with mutual TLS, `clientCaFile`, in that order. */
  readonly files: WatchedFiles;
  readonly logger: Logger;
}

/**
 * HTTPS for a listener (the registry's, and the admin one): the options the
 * server starts with, and the reload of renewed files. A renewal swaps the
 * secure context: connections already open keep the certificate they were
 * made with, new ones get the new one. Files that do not make a usable
 * context (a half-written key, a key that does not match the certificate)
 * are logged and the old certificate stays.
 */
export interface TlsListener {
  /** For the server's constructor (fastify's `https`). */
  readonly serverOptions: TlsOptions;
  /** Applies every later change of the files to `server`. */
  attach(server: TlsServer): void;
  /** Stops watching the files. */
  close(): void;
}

/** The context options from the files' contents; throws when they do not make a usable context. */
function contextOptions(contents: readonly Buffer[]): SecureContextOptions {
  const [cert, key, ca] = contents;
  const options: SecureContextOptions = { cert, key, ...(ca ? { ca } : {}) };
  // createSecureContext parses the PEM and checks that the key belongs to the certificate.
  createSecureContext(options);
  return options;
}

function describe(cert: Buffer): { serial: string; subject: string; notAfter: string } {
  const x509 = new X509Certificate(cert);
  return { serial: x509.serialNumber, subject: x509.subject.replace(/\n/g, ', '), notAfter: x509.validTo };
}

export function createTlsListener({ settings, files, logger }: TlsListenerOptions): TlsListener {
  const initial = contextOptions(files.current());
  logger.info({ certificate: describe(initial.cert as Buffer), clientAuth: settings.clientAuth }, 'TLS certificate loaded');
  return {
    serverOptions: {
      ...initial,
      // Node's default cipher list; nothing older than TLS 1.2.
      minVersion: 'TLSv1.2',
      requestCert: settings.clientAuth !== undefined,
      // `require`: a client without a certificate signed by the CA fails the handshake.
      rejectUnauthorized: settings.clientAuth === 'require',
    },
    attach: (server) => {
      files.onChange((contents) => {
        let options: SecureContextOptions;
        try {
          options = contextOptions(contents);
        } catch (err) {
          logger.error({ files: files.paths, reason: (err as Error).message },
            'changed TLS files do not make a usable certificate: keeping the old one');
          return;
        }
        server.setSecureContext(options);
        logger.info({ certificate: describe(options.cert as Buffer) }, 'TLS certificate reloaded');
      });
    },
    close: () => files.close(),
  };
}

const commonNames = new WeakMap<Socket, string | null>();

/**
 * The subject CN of the client certificate on `socket`, when the client sent
 * one and it verified against the configured CA; undefined otherwise (plain
 * HTTP, no certificate, or one from another CA under `clientAuth: "request"`).
 * Read once per connection.
 */
export function verifiedCommonName(socket: Socket): string | undefined {
  if (!(socket instanceof TLSSocket) || !socket.authorized) return undefined;
  let name = commonNames.get(socket);
  if (name === undefined) {
    const subject = socket.getPeerCertificate().subject as Record<string, string | string[]> | undefined;
    const cn = subject?.['CN'];
    name = typeof cn === 'string' && cn !== '' ? cn : null;
    commonNames.set(socket, name);
  }
  return name ?? undefined;
}
