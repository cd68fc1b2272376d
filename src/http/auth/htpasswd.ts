import { createHash } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { WatchedFiles } from '../watchedFiles.js';

/** A bcrypt hash as `htpasswd -B` writes it: `$2y$` (or `$2a$`/`$2b$`), cost, 53 characters of salt and hash. */
const BCRYPT = /^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/;

/**
 * The users of an htpasswd file: `name:hash` a line, `#` comments and blank
 * lines ignored. Entries that are not bcrypt (crypt, MD5, SHA-1, plain) are
 * refused: they are weak, and a mirror that silently accepted them would
 * invite their use. Problems are reported by line number only: a line may
 * hold a password hash, and none reaches a log.
 */
export function parseHtpasswd(text: string): { users: Map<string, string>; badLines: number[] } {
  const users = new Map<string, string>();
  const badLines: number[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const colon = trimmed.indexOf(':');
    const name = trimmed.slice(0, colon);
    const hash = trimmed.slice(colon + 1);
    if (colon <= 0 || !BCRYPT.test(hash)) badLines.push(i + 1);
    else users.set(name, hash);
  });
  return { users, badLines };
}

/**
 * Verified for nobody: compared against when the user is unknown, so an
 * unknown name costs what a known one does (cost 10, as `htpasswd -B`).
 * A literal, not `hashSync` at load: every process that loads the HTTP app
 * (each CLI command, `--version` included) would spend a bcrypt hash on it.
 */
const DUMMY_HASH = '$2b$10$y6aNH/CXHGqoLio27HKMVep7VkwFWw9rMsz3jEPiymRPK.MAl/MES';

/**
 * Checks user names and passwords against the htpasswd file, re-reading it
 * when it changes. bcrypt is deliberately slow (about 100 ms a check in pure
 * JS), and clients send Basic credentials on every request, so a pair that
 * verified is remembered, under a SHA-256 of the pair and never the
 * password itself, until the file changes.
 */
export class HtpasswdUsers {
  private users: Map<string, string>;
  private readonly verified = new LRUCache<string, true>({ max: 1000 });

  constructor(private readonly options: { readonly file: WatchedFiles; readonly logger: Logger }) {
    this.users = this.load(options.file.current()[0]!);
    options.file.onChange(([text]) => {
      this.users = this.load(text!);
      this.verified.clear();
      options.logger.info({ file: options.file.paths[0], users: this.users.size }, 'htpasswd file reloaded');
    });
  }

  get size(): number {
    return this.users.size;
  }

  /** True when `password` is `name`'s. The answer takes as long for an unknown name as for a wrong password. */
  async verify(name: string, password: string): Promise<boolean> {
    const key = createHash('sha256').update(name).update('\0').update(password).digest('base64');
    if (this.verified.has(key)) return true;
    const hash = this.users.get(name);
    // `$2y$` is the same algorithm as `$2b$` (PHP's name for the fixed variant).
    const matches = await bcrypt.compare(password, (hash ?? DUMMY_HASH).replace(/^\$2y\$/, '$2b$'));
    if (!matches || hash === undefined) return false;
    this.verified.set(key, true);
    return true;
  }

  private load(contents: Buffer): Map<string, string> {
    const { users, badLines } = parseHtpasswd(contents.toString('utf8'));
    if (badLines.length > 0) {
      this.options.logger.warn({ file: this.options.file.paths[0], lines: badLines },
        'htpasswd lines that are not "user:<bcrypt hash>" are ignored (make entries with htpasswd -B)');
    }
    return users;
  }
}
