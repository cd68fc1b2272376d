/**
 * Start-up failures in words: the one place where an operating-system error
 * of a start-up step (listening, preparing the storage root, ...) becomes a
 * line that names the key to change. `serve` wraps each step in one of the
 * functions below; a new listener or file is one more wrapped call.
 */
import { variableName } from '../config/overrides.js';

/** A start-up step failed for a reason outside the configuration's syntax: exit code 1, one line, no stack. */
export class StartupError extends Error {
  constructor(message: string, options: { cause: unknown }) {
    super(message, options);
    this.name = 'StartupError';
  }
}

function codeOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function uid(): string {
  return String(process.getuid?.() ?? 'this user');
}

/** Where a listener was told to listen: its configuration key (`listen`, `admin.listen`), host and port. */
export interface ListenAddress {
  readonly key: string;
  readonly host: string;
  readonly port: number;
  /** A command-line flag that sets the port, if there is one (`--port`). */
  readonly portFlag?: string;
}

/** Runs a start-up step; an error that `words` can explain becomes a `StartupError` with that explanation. */
async function explained<T>(step: () => Promise<T>, words: (err: unknown) => string | undefined): Promise<T> {
  try {
    return await step();
  } catch (err) {
    const message = words(err);
    throw message ? new StartupError(message, { cause: err }) : err;
  }
}

/** Runs `listen`; an error binding the address becomes a `StartupError` naming the key. */
export function listening<T>(address: ListenAddress, listen: () => Promise<T>): Promise<T> {
  return explained(listen, (err) => listenErrorWords(err, address));
}

function listenErrorWords(err: unknown, a: ListenAddress): string | undefined {
  const portKey = `${a.key}.port`;
  const portVariable = variableName([...a.key.split('.'), 'port']);
  const setPort = `set ${portKey}${a.portFlag ? ` (or ${a.portFlag}, ${portVariable})` : ` (or ${portVariable})`}`;
  switch (codeOf(err)) {
    case 'EADDRINUSE':
      return `${portKey} ${a.port} is in use on ${a.host}: another process listens there; stop it, or ${setPort} to a free port`;
    case 'EACCES':
      return `${portKey} ${a.port} is a privileged port and uid ${uid()} may not listen on it: ${setPort} to 1024 or above, or grant CAP_NET_BIND_SERVICE`;
    case 'EADDRNOTAVAIL':
      return `${a.key}.host ${a.host} is not an address of this machine: set ${a.key}.host to one of its addresses, or 0.0.0.0 for all`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `${a.key}.host ${a.host} does not resolve to an address: set ${a.key}.host to an address, or 0.0.0.0 for all`;
    default:
      return undefined;
  }
}

/** Runs `prepare` (creating the storage root's directories); a file-system error becomes a `StartupError` naming `storage.root`. */
export function preparingStorage<T>(root: string, prepare: () => Promise<T>): Promise<T> {
  return explained(prepare, (err) => storageErrorWords(err, root));
}

function storageErrorWords(err: unknown, root: string): string | undefined {
  const path = (err as NodeJS.ErrnoException).path ?? root;
  const change = 'or set storage.root (or --root, PULLTHROUGH_STORAGE_ROOT) to a directory it can write';
  switch (codeOf(err)) {
    case 'EACCES':
    case 'EPERM':
      return `storage.root ${root} is not writable by uid ${uid()} (${codeOf(err)} on ${path}): give uid ${uid()} write access to it, ${change}`;
    case 'EROFS':
      return `storage.root ${root} is on a read-only file system (${path}): ${change.replace(/^or /, '')}`;
    case 'ENOTDIR':
    case 'EEXIST':
      return `storage.root ${root} is not a directory (${path} is a file): ${change.replace(/^or /, '')}`;
    case 'ENOSPC':
      return `storage.root ${root} has no space left (${path}): free some, ${change}`;
    default:
      return undefined;
  }
}
