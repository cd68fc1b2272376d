/**
 * What `pullthrough config check` and `config show` add to loading: the
 * files a configuration names, checked without being used, and the
 * configuration in effect with its secrets taken out. Both go by key names,
 * so keys added to the schema are covered when they follow the naming: a
 * `…File` key names a file to read, and `password`, `secret`, `token` (or a
 * key ending in one of them) hold a secret.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { isSecretKey, pointerOf, redactUrlPassword, REDACTED, type KeySegment } from './keys.js';
import { fileErrorWords } from './load.js';

/** A copy of `document` in which every secret reads `"<redacted>"`. */
export function redactSecrets(document: unknown): unknown {
  if (Array.isArray(document)) return document.map(redactSecrets);
  if (document !== null && typeof document === 'object') {
    return Object.fromEntries(Object.entries(document).map(([key, value]) => [
      key, isSecretKey(key) && value !== undefined ? REDACTED : redactSecrets(value),
    ]));
  }
  return typeof document === 'string' ? redactUrlPassword(document) : document;
}

/** Every `…File` key of the document whose file cannot be read: `/upstreams/0/credentials/passwordFile: cannot read …`. */
export function unreadableFiles(document: unknown): { pointer: string; message: string }[] {
  const problems: { pointer: string; message: string }[] = [];
  const walk = (value: unknown, path: KeySegment[]): void => {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, [...path, i]));
    else if (value !== null && typeof value === 'object') {
      for (const [key, child] of Object.entries(value)) {
        if (/File$/.test(key) && typeof child === 'string') {
          const why = whyUnreadable(child);
          if (why) problems.push({ pointer: pointerOf([...path, key]), message: `cannot read ${child} (${why})` });
        } else {
          walk(child, [...path, key]);
        }
      }
    }
  };
  walk(document, []);
  return problems;
}

function whyUnreadable(path: string): string | undefined {
  try {
    if (!statSync(path).isFile()) return 'not a regular file';
    accessSync(path, constants.R_OK);
    return undefined;
  } catch (err) {
    return fileErrorWords(err);
  }
}
