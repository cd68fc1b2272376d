import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Digest } from '../registry/digest.js';
import type { RepositoryRef } from '../registry/services.js';
import type { StorageDriver } from './driver.js';
import type { ImageReference } from '../routing/router.js';

/**
 * Pins kept in the storage root (`<root>/pins.json`), beside the ones in the
 * configuration: `pullthrough warm --pin` records what it warmed here, so
 * that protecting an image from eviction needs no configuration edit and no
 * restart, and travels with the storage it protects.
 *
 * ```json
 * { "pins": [ { "pin": "ghcr.io/org/app@sha256:…", "reference": "ghcr.io/org/app:1.2", "pinnedAt": "2026-…" } ] }
 * ```
 *
 * `pin` has the configuration's form (`<upstream>/<repo>[:tag|@digest]`).
 * Warming the same `reference` again replaces its entry, so a tag that moved
 * does not keep its old image pinned forever.
 */
export const PINS_FILE = 'pins.json';

export interface StoredPin {
  readonly pin: string;
  readonly reference: string;
  readonly pinnedAt: string;
}

/** Reads the pins file; missing or unreadable is no pins. */
export async function readStoredPins(driver: StorageDriver): Promise<StoredPin[]> {
  const content = await driver.getContent(PINS_FILE);
  return content ? parsePinsFile(content) : [];
}

/**
 * Adds pins (replacing entries of the same reference) with one atomic write.
 * Two warms pinning at the same moment may lose one's entries (read, then
 * write); pins are for images chosen on purpose, rarely written at once.
 */
export async function addStoredPins(driver: StorageDriver, pins: readonly { pin: string; reference: string }[], now = new Date()): Promise<void> {
  const byReference = new Map((await readStoredPins(driver)).map((p) => [p.reference, p]));
  for (const p of pins) byReference.set(p.reference, { pin: p.pin, reference: p.reference, pinnedAt: now.toISOString() });
  const document = { pins: [...byReference.values()].sort((a, b) => a.reference.localeCompare(b.reference)) };
  await driver.putContent(PINS_FILE, JSON.stringify(document, null, 2) + '\n');
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

/** How often the file is looked at again for changes. */
const RECHECK_MS = 1000;

/**
 * The pins file as eviction sees it. `matches` is synchronous because the
 * eviction policy's `isPinned` is; it looks at the file at most once a
 * second (one stat, and a read only when it changed), which in practice is
 * once per eviction run: never on the request path. A `warm --pin` beside a
 * running server is therefore seen by that server's next eviction run.
 */
export class PinsFile {
  private pins: ImageReference[] = [];
  private checkedAt = -Infinity;
  private version = '';
  private readonly path: string;

  constructor(root: string, private readonly parse: (pin: string) => ImageReference, private readonly logger?: Logger) {
    this.path = join(root, PINS_FILE);
  }

  /** A pin without tag or digest keeps the whole repository, as in the configuration. */
  matches(repository: RepositoryRef, tags: readonly string[], digest: Digest): boolean {
    return this.current().some((pin) => {
      const r = pin.route.repository;
      if (r.upstream !== repository.upstream || r.name !== repository.name) return false;
      if (pin.digest) return pin.digest === digest;
      if (pin.tag) return tags.includes(pin.tag);
      return true;
    });
  }

  private current(): ImageReference[] {
    const now = Date.now();
    if (now - this.checkedAt < RECHECK_MS) return this.pins;
    this.checkedAt = now;
    let version = '';
    try {
      const info = statSync(this.path);
      version = `${info.mtimeMs}:${info.size}`;
    } catch {
      // No pins file: no stored pins.
    }
    if (version !== this.version) {
      this.version = version;
      this.pins = version ? this.load() : [];
    }
    return this.pins;
  }

  private load(): ImageReference[] {
    let stored: StoredPin[];
    try {
      stored = parsePinsFile(readFileSync(this.path));
    } catch {
      return [];
    }
    const parsed: ImageReference[] = [];
    for (const p of stored) {
      try {
        parsed.push(this.parse(p.pin));
      } catch (err) {
        // An upstream removed from the configuration leaves its pins behind: harmless, worth a word.
        this.logger?.warn({ pin: p.pin, err: (err as Error).message }, `ignoring a pin in ${PINS_FILE}`);
      }
    }
    return parsed;
  }
}
