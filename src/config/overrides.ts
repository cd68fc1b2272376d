/**
 * Settings from outside the file: `PULLTHROUGH_<PATH>` environment
 * variables and the command line's shorthands (`serve --port`). Both become
 * `ConfigOverride`s, applied to the file's document before it is validated,
 * so one schema checks the result and an error names where a value came from.
 *
 * The variable of a key is its path in upper snake case, array elements by
 * index: `listen.port` is `PULLTHROUGH_LISTEN_PORT`, `upstreams[0].url` is
 * `PULLTHROUGH_UPSTREAMS_0_URL`. Keys are camelCase words with no `_`, so a
 * name splits back into its path one way only; the walk follows the schema
 * (keys.ts), so a key added there has its variable with no other change.
 */
import {
  alternatives, childOf, isContainer, itemsOf, nearestKey, pointerOf, propertiesOf,
  type KeySegment, type SchemaNode,
} from './keys.js';

export const ENV_PREFIX = 'PULLTHROUGH_';
/** Variables of ours that are not key paths. */
const RESERVED = new Set(['PULLTHROUGH_CONFIG']);

/** One value set from outside the file. */
export interface ConfigOverride {
  /** Where it came from, for messages: `PULLTHROUGH_LISTEN_PORT`, `--port`. */
  readonly origin: string;
  readonly path: readonly KeySegment[];
  /** Already parsed by the schema's type (a number, a boolean, a string, or JSON for a list). */
  readonly value: unknown;
}

/** `PULLTHROUGH_UPSTREAMS_0_URL` for `['upstreams', 0, 'url']`. */
export function variableName(path: readonly KeySegment[]): string {
  return ENV_PREFIX + path.map((s) => String(s).toUpperCase()).join('_');
}

const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/;

/**
 * `text` as the value the schema wants: a number for a number (`5001`), a
 * boolean for a boolean (`true`, `false`), else the text (durations and
 * sizes are strings). For a union (a size may be bytes) the first member the
 * text can be. Text that fits no member stays text, so validation reports
 * it with the key path (`must be an integer`). A list or object may be
 * given whole as JSON.
 */
export function parseValue(schema: SchemaNode, text: string): unknown {
  if (isContainer(schema) && /^\s*[[{]/.test(text)) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  }
  const members = alternatives(schema);
  const wants = (type: string): boolean => members.some((m) => m.type === type);
  if ((wants('integer') || wants('number')) && NUMBER.test(text.trim())) return Number(text.trim());
  if (wants('boolean') && /^(true|false)$/i.test(text.trim())) return text.trim().toLowerCase() === 'true';
  return text;
}

/**
 * The overrides the environment holds, and the variables that look meant
 * for us but name no key. A variable whose first word is, or is near, a
 * top-level key is ours: an unknown rest is a problem, with the nearest
 * variable that exists. Any other `PULLTHROUGH_…` name (a test's own
 * switch) is not ours, and neither is a variable that a `…Env` key of
 * `document` or of the overrides names: it holds a secret, not a setting.
 */
export function environmentOverrides(
  root: SchemaNode, env: NodeJS.ProcessEnv, document: unknown,
): { overrides: ConfigOverride[]; problems: string[] } {
  const found: { variable: string; override?: ConfigOverride; problem?: string }[] = [];
  const topLevel = Object.keys(propertiesOf(root) ?? {});
  for (const [variable, text] of Object.entries(env)) {
    if (!variable.startsWith(ENV_PREFIX) || text === undefined || RESERVED.has(variable)) continue;
    const words = variable.slice(ENV_PREFIX.length).split('_');
    const first = words[0] ?? '';
    const ours = topLevel.some((k) => k.toLowerCase() === first.toLowerCase()) || nearestKey(first, topLevel) !== undefined;
    if (!ours) continue;
    const path = pathOf(root, words);
    found.push('problem' in path
      ? { variable, problem: `${variable}: ${path.problem}` }
      : { variable, override: { origin: variable, path: path.path, value: parseValue(path.schema, text) } });
  }
  const secrets = secretVariablesIn(document);
  for (const { override } of found) {
    const key = override?.path[override.path.length - 1];
    if (typeof key === 'string' && /Env$/.test(key) && typeof override!.value === 'string') secrets.add(override!.value);
  }
  const kept = found.filter((f) => !secrets.has(f.variable));
  return {
    overrides: kept.flatMap((f) => (f.override ? [f.override] : [])),
    problems: kept.flatMap((f) => (f.problem ? [f.problem] : [])),
  };
}

/** The key path that a variable's words name, following the schema; or why there is none. */
function pathOf(root: SchemaNode, words: readonly string[]): { path: KeySegment[]; schema: SchemaNode } | { problem: string } {
  const path: KeySegment[] = [];
  let node = root;
  for (const [i, word] of words.entries()) {
    const child = childOf(node, word, true);
    if (!child) {
      const where = path.length === 0 ? 'the configuration' : pointerOf(path);
      if (itemsOf(node)) return { problem: `${where} is a list: name an element by its index (${variableName([...path, 0])})` };
      const known = Object.keys(propertiesOf(node) ?? {});
      if (known.length === 0) return { problem: `${where} has no keys below it` };
      const near = nearestKey(word, known);
      const hint = near ? `did you mean ${variableName([...path, near, ...words.slice(i + 1)])}?` : `its keys are ${known.join(', ')}`;
      return { problem: `${where} has no key ${word.toLowerCase()}; ${hint}` };
    }
    path.push(child.key);
    node = child.schema;
  }
  return { path, schema: node };
}

/** The variables that `…Env` keys (`passwordEnv`) name: they hold secrets. */
function secretVariablesIn(document: unknown): Set<string> {
  const names = new Set<string>();
  const walk = (value: unknown): void => {
    if (Array.isArray(value)) value.forEach(walk);
    else if (value !== null && typeof value === 'object') {
      for (const [key, child] of Object.entries(value)) {
        if (/Env$/.test(key) && typeof child === 'string') names.add(child);
        walk(child);
      }
    }
  };
  walk(document);
  return names;
}

/** Index order, so that `…_0_…` and `…_1_…` fill a new list in turn. */
function compareSegments(a: readonly KeySegment[], b: readonly KeySegment[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x === y) continue;
    if (typeof x === 'number' && typeof y === 'number') return x - y;
    return String(x) < String(y) ? -1 : 1;
  }
  return a.length - b.length;
}

/**
 * Sets each override in `document` (changed in place), making the objects
 * and list elements it needs. Returns where each value came from, by JSON
 * pointer (the keys set and the containers made for them), and the
 * overrides that cannot be applied: an index that would leave a gap in a list.
 */
export function applyOverrides(
  document: Record<string, unknown>, overrides: readonly ConfigOverride[],
): { origins: Map<string, string>; problems: string[] } {
  const origins = new Map<string, string>();
  const problems: string[] = [];
  for (const override of [...overrides].sort((a, b) => compareSegments(a.path, b.path))) {
    let container: Record<string, unknown> | unknown[] = document;
    let failed = false;
    for (let i = 0; i < override.path.length - 1 && !failed; i++) {
      const segment = override.path[i]!;
      const next = override.path[i + 1]!;
      const existing = (container as Record<string, unknown>)[segment];
      if (existing !== null && typeof existing === 'object') {
        container = existing as Record<string, unknown> | unknown[];
        continue;
      }
      if (!fitsIndex(container, segment)) {
        problems.push(gapProblem(override, i, container));
        failed = true;
        break;
      }
      const made: Record<string, unknown> | unknown[] = typeof next === 'number' ? [] : {};
      (container as Record<string, unknown>)[segment] = made;
      const pointer = pointerOf(override.path.slice(0, i + 1));
      if (!origins.has(pointer)) origins.set(pointer, override.origin);
      container = made;
    }
    if (failed) continue;
    const last = override.path[override.path.length - 1]!;
    if (!fitsIndex(container, last)) {
      problems.push(gapProblem(override, override.path.length - 1, container));
      continue;
    }
    (container as Record<string, unknown>)[last] = override.value;
    origins.set(pointerOf(override.path), override.origin);
  }
  return { origins, problems };
}

/** An array may grow by one element at a time; any other container takes any key. */
function fitsIndex(container: Record<string, unknown> | unknown[], segment: KeySegment): boolean {
  return !Array.isArray(container) || (typeof segment === 'number' && segment <= container.length);
}

function gapProblem(override: ConfigOverride, at: number, container: Record<string, unknown> | unknown[]): string {
  const list = pointerOf(override.path.slice(0, at));
  const length = Array.isArray(container) ? container.length : 0;
  return `${override.origin}: ${list} has ${length} ${length === 1 ? 'entry' : 'entries'}, so the next one is index ${length}, not ${String(override.path[at])}`;
}
