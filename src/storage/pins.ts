import type { Logger } from 'pino';
import type { Digest } from '../registry/digest.js';
import type { RepositoryRef } from '../registry/services.js';
import type { StorageDriver } from './driver.js';
import { PINS_PATH } from './layout.js';

/**
 * Pins: images eviction never removes. They come from the configuration
 * (`pins`) and from the storage root (`pins.json`), where `pullthrough warm
 * --pin` records what it warmed, so that protecting an image needs no
 * configuration edit and no restart, and travels with the storage it
 * protects:
 *
 * ```json
 * { "pins": [ { "pin": "ghcr.io/org/app@sha256:…", "reference": "ghcr.io/org/app:1.2", "pinnedAt": "2026-…" } ] }
 * ```
 *
 * `pin` has the configuration's form (`<upstream>/<repo>[:tag|@digest]`).
 * Warming the same `reference` again replaces its entry, so a tag that moved
 * does not keep its old image pinned forever.
 */

/** A pin as eviction matches it, once the routing has read its text. */
export interface PinRule {
  readonly repository: RepositoryRef;
  readonly tag: string | undefined;
  readonly digest: Digest | undefined;
}

/** The one pin matcher. A pin without tag or digest keeps the whole repository. */
export function pinMatches(pin: PinRule, repository: RepositoryRef, tags: readonly string[], digest: Digest): boolean {
  if (pin.repository.upstream !== repository.upstream || pin.repository.name !== repository.name) return false;
  if (pin.digest) return pin.digest === digest;
  if (pin.tag) return tags.includes(pin.tag);
  return true;
}

export interface StoredPin {
  readonly pin: string;
  readonly reference: string;
  readonly pinnedAt: string;
}

/** Reads the pins file; missing or unreadable is no pins. */
export async function readStoredPins(driver: StorageDriver): Promise<StoredPin[]> {
  const content = await driver.getContent(PINS_PATH);
  return content ? parsePinsFile(content) : [];
}

/**
 * Adds pins (replacing entries of the same reference) with one atomic write.
 * Two warms pinning at the same moment may lose one's entries (read, then
 * write); pins are for images chosen on purpose, rarely written at once.
 */
export async function addStoredPins(driver: StorageDriver, pins: readonly { pin: string; reference: string }[], nowMs: number): Promise<void> {
  const byReference = new Map((await readStoredPins(driver)).map((p) => [p.reference, p]));
  const pinnedAt = new Date(nowMs).toISOString();
  for (const p of pins) byReference.set(p.reference, { pin: p.pin, reference: p.reference, pinnedAt });
  const document = { pins: [...byReference.values()].sort((a, b) => a.reference.localeCompare(b.reference)) };
  await driver.putContent(PINS_PATH, JSON.stringify(document, null, 2) + '\n');
}

function parsePinsFile(content: Buffer): StoredPin[] {
  try {
    const value = JSON.parse(content.toString('utf8')) as { pins?: unknown };
    if (!Array.isArray(value.pins)) return [];
    return value.pins.filter((p): p is StoredPin => typeof p === 'object' && p !== null
      && typeof (p as StoredPin).pin === 'string' && typeof (p as StoredPin).reference === 'string')
      .map((p) => ({ pin: p.pin, reference: p.reference, pinnedAt: typeof p.pinnedAt === 'string' ? p.pinnedAt : '' }));
  } catch {
    return [];
  }
}

export interface PinSetOptions {
  readonly driver: StorageDriver;
  /** The pins of the configuration, already read. */
  readonly configured: readonly PinRule[];
  /** Reads a stored pin's text (the routing of a reference); throws for one that no longer routes. */
  readonly parse: (pin: string) => PinRule;
  readonly logger?: Logger;
}

/**
 * The pins eviction honours: the configuration's and the pins file's.
 * `refresh` (before each eviction run: never on the request path) looks at
 * the file once, and reads it only when it changed; `matches` is then
 * synchronous. A `warm --pin` beside a running server is therefore seen by
 * that server's next eviction run.
 */
export class PinSet {
  private stored: PinRule[] = [];
  private version = '';

  constructor(private readonly options: PinSetOptions) {}

  async refresh(): Promise<void> {
    const info = await this.options.driver.stat(PINS_PATH);
    const version = info ? `${info.modifiedMs}:${info.size}` : '';
    if (version === this.version) return;
    this.version = version;
    this.stored = version ? this.parseAll(await readStoredPins(this.options.driver)) : [];
  }

  matches(repository: RepositoryRef, tags: readonly string[], digest: Digest): boolean {
    return this.options.configured.some((p) => pinMatches(p, repository, tags, digest))
      || this.stored.some((p) => pinMatches(p, repository, tags, digest));
  }

  private parseAll(stored: readonly StoredPin[]): PinRule[] {
    const parsed: PinRule[] = [];
    for (const p of stored) {
      try {
        parsed.push(this.options.parse(p.pin));
      } catch (err) {
        // An upstream removed from the configuration leaves its pins behind: harmless, worth a word.
        this.options.logger?.warn({ pin: p.pin, err: (err as Error).message }, `ignoring a pin in ${PINS_PATH}`);
      }
    }
    return parsed;
  }
}
