/**
 * The `Link` header of a paged upstream answer (RFC 8288), read the way the
 * distribution spec uses it for tag lists: `<url>; rel="next"`.
 *
 * The header is the upstream's to write, so it is read in one linear pass
 * (no backtracking regex over the whole value), and only a target of
 * reasonable length counts.
 */

/** The longest link target we follow. */
const MAX_TARGET = 2048;

/** The target of the first `rel="next"` link, or undefined. */
export function nextPageLink(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  for (const link of header.split(',')) {
    const start = link.indexOf('<');
    // Only whitespace may come before the target.
    if (start < 0 || link.slice(0, start).trim() !== '') continue;
    const end = link.indexOf('>', start + 1);
    if (end < 0 || end - start - 1 > MAX_TARGET) continue;
    const target = link.slice(start + 1, end);
    if (target === '' || target.includes('<')) continue;
    if (link.slice(end + 1).split(';').some(isRelNext)) return target;
  }
  return undefined;
}

function isRelNext(param: string): boolean {
  const eq = param.indexOf('=');
  if (eq < 0 || param.slice(0, eq).trim().toLowerCase() !== 'rel') return false;
  const value = param.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
  return value.toLowerCase().split(/\s+/).includes('next');
}
