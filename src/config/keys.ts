/**
 * The configuration schema read as a tree of keys: what is below a key, the
 * key paths a reader documents, and the nearest known key to a typo. Built
 * by walking the JSON Schema that TypeBox produces, so everything here (the
 * environment variables, the README check, suggestions, redaction) follows
 * the schema with no list of keys of its own.
 */

/** The parts of a JSON Schema node this walk reads (TypeBox builds plain JSON Schema). */
export interface SchemaNode {
  readonly type?: string | readonly string[];
  readonly properties?: Readonly<Record<string, SchemaNode>>;
  readonly additionalProperties?: boolean | SchemaNode;
  readonly patternProperties?: Readonly<Record<string, SchemaNode>>;
  readonly items?: SchemaNode;
  readonly anyOf?: readonly SchemaNode[];
  readonly const?: unknown;
  readonly pattern?: string;
  readonly default?: unknown;
  /** Our own annotation: the form a value must have, in words, for error messages (schema.ts). */
  readonly expected?: string;
}

/** One step of a key path: a property name, or an array index. */
export type KeySegment = string | number;

/** `/upstreams/0/url`: the JSON pointer of a path, as validation errors name keys. */
export function pointerOf(path: readonly KeySegment[]): string {
  return path.length === 0 ? '/' : path.map((s) => `/${String(s).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

/** The segments of a JSON pointer (indices stay strings: the pointer does not say which are arrays). */
export function segmentsOf(pointer: string): string[] {
  return pointer.split('/').slice(1).filter((s) => s !== '').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** The members of a union, or the node itself. */
export function alternatives(node: SchemaNode): readonly SchemaNode[] {
  return node.anyOf ? node.anyOf.flatMap(alternatives) : [node];
}

function hasType(node: SchemaNode, type: string): boolean {
  return node.type === type || (Array.isArray(node.type) && node.type.includes(type));
}

/** The named properties of an object schema (of the object members of a union). */
export function propertiesOf(node: SchemaNode): Readonly<Record<string, SchemaNode>> | undefined {
  const objects = alternatives(node).filter((n) => n.properties !== undefined);
  if (objects.length === 0) return undefined;
  return Object.assign({}, ...objects.map((n) => n.properties)) as Record<string, SchemaNode>;
}

/** The schema of free-form map entries (`Type.Record`), when the object has them. */
function mapEntriesOf(node: SchemaNode): SchemaNode | undefined {
  for (const n of alternatives(node)) {
    if (n.patternProperties) return Object.values(n.patternProperties)[0];
    if (typeof n.additionalProperties === 'object') return n.additionalProperties;
  }
  return undefined;
}

/** The schema of an array's elements. */
export function itemsOf(node: SchemaNode): SchemaNode | undefined {
  return alternatives(node).find((n) => hasType(n, 'array'))?.items;
}

/**
 * The child of `node` that `segment` names: a property (matched without
 * regard to case when `ignoreCase`, as environment variable names are upper
 * case), a map entry, or an array element. Undefined when there is none.
 */
export function childOf(node: SchemaNode, segment: string, ignoreCase = false): { key: KeySegment; schema: SchemaNode } | undefined {
  const items = itemsOf(node);
  if (items) return /^(0|[1-9][0-9]*)$/.test(segment) ? { key: Number(segment), schema: items } : undefined;
  const properties = propertiesOf(node);
  if (properties) {
    const key = Object.keys(properties).find((k) => (ignoreCase ? k.toLowerCase() === segment.toLowerCase() : k === segment));
    if (key !== undefined) return { key, schema: properties[key]! };
  }
  const entries = mapEntriesOf(node);
  return entries ? { key: segment, schema: entries } : undefined;
}

/** The schema of the key at `path` (a JSON pointer's segments), or undefined when the schema has no such key. */
export function schemaAt(root: SchemaNode, path: readonly string[]): SchemaNode | undefined {
  let node: SchemaNode | undefined = root;
  for (const segment of path) {
    node = node && childOf(node, segment)?.schema;
  }
  return node;
}

/** True for a schema that holds keys or elements rather than a value. */
export function isContainer(node: SchemaNode): boolean {
  return propertiesOf(node) !== undefined || itemsOf(node) !== undefined;
}

/**
 * Every key a reader must be told about, as the README writes them:
 * `listen.port`, `upstreams[]` and `upstreams[].credentials.passwordFile`,
 * `pins`. An object contributes its keys (not itself); an array of objects
 * contributes itself (`upstreams[]`) and its elements' keys.
 */
export function documentedKeys(root: SchemaNode): string[] {
  const keys: string[] = [];
  const walk = (node: SchemaNode, prefix: string): void => {
    const properties = propertiesOf(node);
    if (properties) {
      for (const [name, child] of Object.entries(properties)) walk(child, prefix ? `${prefix}.${name}` : name);
      return;
    }
    const items = itemsOf(node);
    if (items && propertiesOf(items)) {
      keys.push(`${prefix}[]`);
      walk(items, `${prefix}[]`);
      return;
    }
    keys.push(prefix);
  };
  walk(root, '');
  return keys;
}

/** What a secret reads as wherever a configuration is shown. */
export const REDACTED = '<redacted>';

/** A key whose value is a secret itself (not the name of a file or variable holding one). */
export function isSecretKey(key: string): boolean {
  return /^(password|secret|token|secretAccessKey)$|(Password|Secret|Token)$/.test(key);
}

/** `redis://user:<redacted>@host:6379`: the password of any URL with credentials in it. */
export function redactUrlPassword(value: string): string {
  return value.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:)[^@/]*@/i, `$1${REDACTED}@`);
}

/** Edit distance of two words (case counts as no difference: suggestions are for typos). */
function distance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  let previous = Array.from({ length: y.length + 1 }, (_, i) => i);
  for (let i = 1; i <= x.length; i++) {
    const current = [i];
    for (let j = 1; j <= y.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[y.length]!;
}

/**
 * The known key nearest to `typed`, when it is near enough to be a typo of
 * it: the same word in another case, or at most a third of its letters
 * (and at least 2) changed.
 */
export function nearestKey(typed: string, known: readonly string[]): string | undefined {
  let best: { key: string; d: number } | undefined;
  for (const key of known) {
    const d = distance(typed, key);
    if (!best || d < best.d) best = { key, d };
  }
  if (!best) return undefined;
  return best.d <= Math.max(2, Math.floor(typed.length / 3)) ? best.key : undefined;
}
