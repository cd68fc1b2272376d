import pino, { type Logger } from 'pino';

/**
 * Paths that must never reach a log line: client credentials in request
 * headers (Basic credentials carry the password), and any upstream secret wherever a configuration object is logged.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'headers.authorization',
  'headers["proxy-authorization"]',
  'req.headers["pullthrough-peer-auth"]',
  'headers["pullthrough-peer-auth"]',
  'secret',
  '*.headers.authorization',
  'authorization',
  'password',
  '*.password',
  'credentials.password',
  '*.credentials.password',
  'upstreams[*].credentials.password',
  'token',
  '*.token',
  'secretAccessKey',
  '*.secretAccessKey',
  '*.credentials.secretAccessKey',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, destination);
}
