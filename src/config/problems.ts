/**
 * Configuration problems in words: each names the key path (and the
 * variable or flag that set it), says what form the value must have, and
 * for an unknown key suggests the nearest known one.
 */
import type { ErrorObject } from 'ajv';
import { alternatives, isSecretKey, nearestKey, propertiesOf, redactUrlPassword, schemaAt, segmentsOf, type SchemaNode } from './keys.js';
import { ConfigError } from './settings.js';

/**
 * What is wrong with one configuration, gathered so that every problem is
 * reported at once. `origins` maps a JSON pointer to the variable or flag
 * that set it, so a message can name both.
 */
export class ConfigProblems {
  private readonly lines: string[] = [];

  constructor(private readonly source: string, private readonly origins: ReadonlyMap<string, string> = new Map()) {}

  /** A problem of the key at `pointer` (`/upstreams/0/url`). */
  add(pointer: string, message: string): void {
    this.lines.push(`${this.where(pointer)}: ${message}`);
  }

  /** A problem that already says where it is (a variable that names no key). */
  addLine(line: string): void {
    this.lines.push(line);
  }

  get count(): number {
    return this.lines.length;
  }

  /** Throws every problem so far as one `ConfigError`, if there is any. */
  throwIfAny(): void {
    if (this.lines.length > 0) {
      throw new ConfigError(`invalid configuration in ${this.source}:\n${this.lines.join('\n')}`, [...this.lines]);
    }
  }

  /** `/listen/port (PULLTHROUGH_LISTEN_PORT)`; a key inside something an override made names that override. */
  private where(pointer: string): string {
    const exact = this.origins.get(pointer);
    if (exact) return `${pointer} (${exact})`;
    // The innermost container an override made holds the key.
    const made = [...this.origins.keys()].filter((m) => pointer.startsWith(`${m}/`)).sort((a, b) => b.length - a.length)[0];
    return made ? `${pointer} (in ${made}, added by ${this.origins.get(made)!})` : pointer;
  }
}

const TYPE_WORDS: Record<string, string> = {
  integer: 'a whole number',
  number: 'a number',
  boolean: 'true or false',
  string: 'a string',
  object: 'an object of keys',
  array: 'a list',
};

/** What a schema node accepts, in words. */
function expectedOf(node: SchemaNode | undefined): string | undefined {
  if (!node) return undefined;
  if (node.expected) return node.expected;
  const members = alternatives(node);
  if (members.length > 1 && members.every((m) => m.const !== undefined)) {
    return `one of ${members.map((m) => JSON.stringify(m.const)).join(', ')}`;
  }
  // A string of a pattern that says nothing of its form in words is not described as "a string": it is one.
  const described = members.map((m) => m.expected ?? (typeof m.type === 'string' && m.pattern === undefined ? TYPE_WORDS[m.type] : undefined));
  return described.every((d) => d !== undefined) ? [...new Set(described)].join(', or ') : undefined;
}

/** The value as it may be shown: never the value of a key that may hold a secret. */
function shown(value: unknown, pointer: string): string {
  const key = segmentsOf(pointer).pop() ?? '';
  if (isSecretKey(key)) return 'a secret value';
  const text = JSON.stringify(typeof value === 'string' ? redactUrlPassword(value) : value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Adds the schema's verdict to `problems`: one line per key, in words. The
 * members of a union (a size is text or bytes) fail one by one; they make
 * one line saying what the key accepts.
 */
export function addSchemaErrors(problems: ConfigProblems, root: SchemaNode, document: unknown, errors: readonly ErrorObject[]): void {
  const byKey = new Map<string, ErrorObject[]>();
  for (const e of errors) {
    const pointer = e.instancePath || '/';
    byKey.set(pointer, [...(byKey.get(pointer) ?? []), e]);
  }
  for (const [pointer, keyErrors] of byKey) {
    const union = keyErrors.find((e) => e.keyword === 'anyOf');
    const rest = union ? keyErrors.filter((e) => !e.schemaPath.startsWith(union.schemaPath)) : keyErrors;
    if (union) problems.add(pointer, formMessage(root, document, pointer));
    for (const e of rest) addOne(problems, root, document, pointer, e);
  }
}

function addOne(problems: ConfigProblems, root: SchemaNode, document: unknown, pointer: string, e: ErrorObject): void {
  const base = pointer === '/' ? '' : pointer;
  if (e.keyword === 'additionalProperties') {
    const key = String(e.params['additionalProperty']);
    const known = Object.keys(propertiesOf(schemaAt(root, segmentsOf(pointer)) ?? {}) ?? {});
    const near = nearestKey(key, known);
    problems.add(`${base}/${key}`, `unknown key${near ? `; did you mean ${near}?` : known.length ? ` (known here: ${known.join(', ')})` : ''}`);
  } else if (e.keyword === 'required') {
    problems.add(`${base}/${String(e.params['missingProperty'])}`, 'missing required key');
  } else if (e.keyword === 'type' || e.keyword === 'pattern' || e.keyword === 'const') {
    problems.add(pointer, formMessage(root, document, pointer));
  } else {
    problems.add(pointer, e.message ?? 'invalid');
  }
}

/** `"10 min" is not a duration: …`, or `must be a whole number, got "abc"`. */
function formMessage(root: SchemaNode, document: unknown, pointer: string): string {
  const expected = expectedOf(schemaAt(root, segmentsOf(pointer)));
  const value = valueAt(document, segmentsOf(pointer));
  return `must be ${expected ?? 'of another form'}, got ${shown(value, pointer)}`;
}

function valueAt(document: unknown, path: readonly string[]): unknown {
  let value = document;
  for (const segment of path) value = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[segment] : undefined;
  return value;
}
