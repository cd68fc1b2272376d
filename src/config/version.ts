import { readFileSync } from 'node:fs';

/**
 * pullthrough's version, from the package.json shipped beside `dist/` (read
 * once, at start). The CLI prints it (`--version`, the start-up line) and
 * hands it to whatever shows it further (a status page, a build-info metric).
 */
export const PACKAGE_VERSION: string = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
