/**
 * A forgiving parser for `WWW-Authenticate` (RFC 9110 §11.6.1):
 *
 *   WWW-Authenticate = #challenge
 *   challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *   auth-param       = token BWS "=" BWS ( token / quoted-string )
 *
 * Commas separate both challenges and the parameters inside one, so the
 * grammar is only unambiguous with look-ahead: a token followed by `=` and a
 * value is a parameter of the current challenge, any other token starts a
 * new challenge. Upstream registries are not always tidy, so anything the
 * grammar does not allow is skipped rather than thrown at.
 */

/** One challenge of a `WWW-Authenticate` header. */
export interface Challenge {
  /** The auth scheme, lower-cased: `bearer`, `basic`, or whatever else the server sent. */
  readonly scheme: string;
  /** Parameters with lower-cased names and unquoted values; when a name repeats, the first wins. */
  readonly params: Record<string, string>;
  /** The token68 form (`Negotiate abc==`), present only when the challenge used it instead of parameters. */
  readonly token68?: string;
}

/** RFC 9110 tchar: what a scheme name, parameter name or bare value may consist of. */
const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
/** RFC 9110 token68, anchored with the sticky flag so it only matches where we point it. */
const TOKEN68 = /[A-Za-z0-9\-._~+/]+=*/y;

/**
 * Every challenge in `headerValues`, in order. Several header values and
 * several challenges per value are both allowed; never throws, whatever the
 * input: unparseable pieces are dropped.
 */
export function parseChallenges(headerValues: readonly string[]): Challenge[] {
  const out: Challenge[] = [];
  for (const value of headerValues) {
    if (typeof value === 'string') out.push(...parseOne(value));
  }
  return out;
}

/** A challenge while it is being read: params collected in a Map so `__proto__` stays an ordinary key. */
interface Draft {
  scheme: string;
  params: Map<string, string>;
  token68?: string;
}

function parseOne(s: string): Challenge[] {
  const drafts: Draft[] = [];
  let current: Draft | undefined;
  let i = 0;
  while (i < s.length) {
    i = skipSeparators(s, i);
    if (i >= s.length) break;
    const nameEnd = readToken(s, i);
    if (nameEnd === i) {
      // Not a token: stray quote, '=', control character... skip the piece.
      i = skipGarbage(s, i);
      continue;
    }
    const name = s.slice(i, nameEnd);
    const param = readParamValue(s, nameEnd);
    if (param) {
      // A parameter outside any challenge has no owner: consume and drop it.
      if (current && !current.params.has(name.toLowerCase())) current.params.set(name.toLowerCase(), param.value);
      i = param.end;
      continue;
    }
    current = { scheme: name.toLowerCase(), params: new Map() };
    drafts.push(current);
    i = readToken68(s, nameEnd, current);
  }
  return drafts.map(finish);
}

function finish(draft: Draft): Challenge {
  const params = Object.fromEntries(draft.params) as Record<string, string>;
  return draft.token68 === undefined ? { scheme: draft.scheme, params } : { scheme: draft.scheme, params, token68: draft.token68 };
}

function isWhitespace(c: string | undefined): boolean {
  return c === ' ' || c === '\t';
}

function skipWhitespace(s: string, i: number): number {
  while (isWhitespace(s[i])) i++;
  return i;
}

function skipSeparators(s: string, i: number): number {
  while (isWhitespace(s[i]) || s[i] === ',') i++;
  return i;
}

function readToken(s: string, i: number): number {
  while (i < s.length && TCHAR.test(s[i]!)) i++;
  return i;
}

/** Skips one unparseable piece: a whole quoted string, or a single character. */
function skipGarbage(s: string, i: number): number {
  return s[i] === '"' ? readQuoted(s, i).end : i + 1;
}

/**
 * After a name ending at `i`: `BWS "=" BWS (token / quoted-string)`, or
 * undefined when what follows is not a parameter value (so the name is a
 * scheme, or the start of a token68).
 */
function readParamValue(s: string, i: number): { value: string; end: number } | undefined {
  let j = skipWhitespace(s, i);
  if (s[j] !== '=') return undefined;
  j = skipWhitespace(s, j + 1);
  if (s[j] === '"') return readQuoted(s, j);
  const end = readToken(s, j);
  // `name=` with nothing usable after it is not a parameter (`abc==` is a token68).
  return end === j ? undefined : { value: s.slice(j, end), end };
}

/**
 * A quoted-string starting at the quote at `i`: backslash escapes the next
 * character. An unterminated string runs to the end of the value rather
 * than failing the whole header.
 */
function readQuoted(s: string, i: number): { value: string; end: number } {
  let value = '';
  let j = i + 1;
  while (j < s.length) {
    const c = s[j]!;
    if (c === '"') return { value, end: j + 1 };
    if (c === '\\' && j + 1 < s.length) {
      value += s[j + 1];
      j += 2;
      continue;
    }
    value += c;
    j++;
  }
  return { value, end: j };
}

/**
 * Right after a scheme, whitespace then a token68 that ends the challenge
 * (followed only by whitespace, a comma or the end) belongs to it. Anything
 * else is left for the main loop: parameters, or the next challenge.
 */
function readToken68(s: string, afterScheme: number, draft: Draft): number {
  const start = skipWhitespace(s, afterScheme);
  if (start === afterScheme) return afterScheme;
  TOKEN68.lastIndex = start;
  const match = TOKEN68.exec(s);
  if (!match) return afterScheme;
  const end = TOKEN68.lastIndex;
  const next = skipWhitespace(s, end);
  if (next < s.length && s[next] !== ',') return afterScheme;
  draft.token68 = match[0];
  return end;
}
