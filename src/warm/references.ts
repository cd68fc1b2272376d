import { parseAllDocuments } from 'yaml';
import { parseDigest, type Digest } from '../registry/digest.js';

/**
 * Where `pullthrough warm` and `export` find image references: command-line
 * arguments, plain lists, lock files, docker-compose files and Kubernetes
 * manifests. Parsing here is only about finding the strings; each one is
 * routed and validated later by the server's own rules, so a bad reference
 * fails alone instead of stopping the whole run.
 */

/** One image reference as found, with where it was found (for messages). */
export interface ReferenceEntry {
  /** As written: `alpine:3.20`, `ghcr.io/org/app:1.2`, `registry.k8s.io/pause@sha256:…`. */
  readonly reference: string;
  /** From a lock file: the digest the reference was locked to. */
  readonly lockedDigest: Digest | undefined;
  /** `FILE:LINE`, `FILE: services.web.image`, or `argument`. */
  readonly source: string;
}

export class ReferenceSourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReferenceSourceError';
  }
}

/**
 * The variables a reference file may use, by name: only those the user gave
 * (`--env NAME`, `--env NAME=value`, `--env-file FILE`), never the whole
 * environment. A compose file is someone else's text, and a reference is
 * sent to an upstream: `image: app:${CORP_REGISTRY_PASSWORD}` must not send
 * the password as a tag.
 */
export type Variables = Readonly<Record<string, string>>;

/** The header line of a lock file written by `warm --lock`. */
export const LOCK_HEADER = '# pullthrough lock: <reference> <digest>, one image a line';

/** References given on the command line. */
export function fromArguments(references: readonly string[]): ReferenceEntry[] {
  return references.map((reference) => ({ reference, lockedDigest: undefined, source: 'argument' }));
}

/**
 * The references in a file's text. YAML whose documents are all mappings is
 * a docker-compose file or Kubernetes manifests; anything else is a plain
 * list or a lock file (one reference a line, optionally followed by its
 * digest; `#` starts a comment).
 */
export function parseReferenceFile(text: string, name: string, variables: Variables = {}): ReferenceEntry[] {
  const documents = structuredDocuments(text);
  const found = documents ? fromDocuments(documents, name, variables) : fromLines(text, name);
  if (found.length === 0) throw new ReferenceSourceError(`${name}: no image references found`);
  return found;
}

/** The parsed documents when the text is YAML (or JSON) made of mappings; undefined for a plain list. */
function structuredDocuments(text: string): Record<string, unknown>[] | undefined {
  const documents = parseAllDocuments(text);
  const list = Array.isArray(documents) ? documents : [documents];
  if (list.some((d) => d.errors.length > 0)) return undefined;
  const values = list.map((d) => d.toJS() as unknown).filter((v) => v !== null && v !== undefined);
  if (values.length === 0 || !values.every(isMapping)) return undefined;
  return values as Record<string, unknown>[];
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A plain list or a lock file. */
function fromLines(text: string, name: string): ReferenceEntry[] {
  const found: ReferenceEntry[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.replace(/(^|\s)#.*$/, '').trim();
    if (!line) return;
    const fields = line.split(/\s+/);
    const source = `${name}:${index + 1}`;
    if (fields.length > 2) throw new ReferenceSourceError(`${source}: expected "<reference>" or "<reference> <digest>", got "${line}"`);
    let lockedDigest: Digest | undefined;
    if (fields[1] !== undefined) {
      try {
        lockedDigest = parseDigest(fields[1]).digest;
      } catch {
        throw new ReferenceSourceError(`${source}: "${fields[1]}" is not a digest (a lock line is "<reference> <digest>")`);
      }
    }
    found.push({ reference: fields[0]!, lockedDigest, source });
  });
  return found;
}

function fromDocuments(documents: readonly Record<string, unknown>[], name: string, variables: Variables): ReferenceEntry[] {
  const found: ReferenceEntry[] = [];
  const add = (reference: string, where: string): void => {
    found.push({ reference: interpolate(reference, `${name}: ${where}`, variables), lockedDigest: undefined, source: `${name}: ${where}` });
  };
  documents.forEach((doc, i) => {
    const prefix = documents.length > 1 ? `document ${i + 1}: ` : '';
    if (isMapping(doc['services'])) composeImages(doc['services'], (ref, where) => add(ref, prefix + where));
    walkKubernetes(doc, '', (ref, where) => add(ref, prefix + where));
  });
  return found;
}

/** docker-compose: `services.<name>.image`; services that only `build` have none. */
function composeImages(services: Record<string, unknown>, add: (reference: string, where: string) => void): void {
  for (const [service, definition] of Object.entries(services)) {
    if (isMapping(definition) && typeof definition['image'] === 'string') add(definition['image'], `services.${service}.image`);
  }
}

const CONTAINER_LISTS = new Set(['containers', 'initContainers', 'ephemeralContainers']);

/**
 * Kubernetes: every `image` of every entry of a `containers`,
 * `initContainers` or `ephemeralContainers` list, wherever it sits (Pod,
 * Deployment, StatefulSet, DaemonSet, Job, CronJob's jobTemplate, a `List`'s
 * items, a CRD embedding a pod template), and image volumes
 * (`volumes[].image.reference`). Walking the whole tree rather than known
 * paths is what makes new and custom kinds work.
 */
function walkKubernetes(node: unknown, path: string, add: (reference: string, where: string) => void, depth = 0): void {
  if (depth > 64) return;
  if (Array.isArray(node)) {
    node.forEach((child, i) => walkKubernetes(child, `${path}[${i}]`, add, depth + 1));
    return;
  }
  if (!isMapping(node)) return;
  for (const [key, value] of Object.entries(node)) {
    const here = path ? `${path}.${key}` : key;
    if (CONTAINER_LISTS.has(key) && Array.isArray(value)) {
      value.forEach((c, i) => {
        if (isMapping(c) && typeof c['image'] === 'string') add(c['image'], `${here}[${i}].image`);
      });
    }
    if (key === 'volumes' && Array.isArray(value)) {
      value.forEach((v, i) => {
        const image = isMapping(v) ? v['image'] : undefined;
        if (isMapping(image) && typeof image['reference'] === 'string') add(image['reference'], `${here}[${i}].image.reference`);
      });
    }
    if (key !== 'services') walkKubernetes(value, here, add, depth + 1);
  }
}

/**
 * docker-compose variable interpolation in an image: `${VAR}`, `${VAR:-default}`,
 * `${VAR-default}`, `${VAR:?message}`, `$VAR` and `$$`, from `variables`
 * only (see `Variables`): a variable not given is unset, so its default
 * applies, and without one the reference is refused.
 */
export function interpolate(value: string, where: string, variables: Variables): string {
  return value.replace(/\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g,
    (match, dollar: string, braced: string | undefined, op: string | undefined, arg: string | undefined, bare: string | undefined) => {
      if (dollar === '$') return '$';
      const name = braced ?? bare!;
      const set = Object.hasOwn(variables, name) ? variables[name] : undefined;
      const empty = set === undefined || (op?.startsWith(':') === true && set === '');
      if (op === ':-' || op === '-') return empty ? arg ?? '' : set!;
      if (op === ':?' || op === '?') {
        if (empty) throw new ReferenceSourceError(`${where}: ${arg || `variable ${name} is not set`}`);
        return set!;
      }
      if (set === undefined) {
        throw new ReferenceSourceError(`${where}: variable ${name} in "${match}" is not given (pass it with --env ${name} or --env-file; the environment is not read)`);
      }
      return set;
    });
}

/**
 * An env file, as docker compose reads one: `NAME=value` a line, `#`
 * comments and blank lines ignored, an optional `export `, and one pair of
 * surrounding quotes removed from the value.
 */
export function parseEnvFile(text: string, name: string): Record<string, string> {
  const variables: Record<string, string> = {};
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!match) throw new ReferenceSourceError(`${name}:${index + 1}: expected NAME=value`);
    variables[match[1]!] = match[2]!.replace(/^(["'])(.*)\1$/, '$2');
  });
  return variables;
}

/** The text of a lock file: `<reference> <digest>` a line, in the given order. */
export function formatLock(entries: readonly { reference: string; digest: Digest }[]): string {
  return [LOCK_HEADER, ...entries.map((e) => `${e.reference} ${e.digest}`)].join('\n') + '\n';
}
