/**
 * Which token realms may see an upstream's credentials.
 *
 * The realm comes from the upstream's own 401, so a registry (or anyone able
 * to tamper with a plain-HTTP answer) chooses where we would send the
 * password. We send it only where the upstream's operator plausibly is: the
 * same host, the same registrable domain, or a realm the configuration names.
 */
import { createRequire } from 'node:module';

/**
 * tldts holds the public suffix list: about 14 MiB of a process's memory,
 * needed only once a token upstream with credentials names a realm on another
 * host. Loaded (synchronously, once) at that first question, not at start-up
 * (issue 19, idle memory).
 */
type Tldts = typeof import('tldts');
let tldts: Tldts | undefined;
function publicSuffixes(): Tldts {
  return tldts ??= createRequire(import.meta.url)('tldts') as Tldts;
}

/**
 * True when credentials configured for `upstreamUrl` may be sent to `realm`:
 *
 * - the realm is listed in `configuredRealms` (see `matchesConfiguredRealm`);
 *   this is the only way to trust a plain-HTTP realm of an HTTPS upstream;
 * - otherwise the realm must be http(s), must not downgrade an HTTPS upstream
 *   to HTTP, and either
 *   - has the upstream's host name (ports are ignored, as for cookies: one
 *     host, one operator; `registry.corp:5000` may use `registry.corp:5001`), or
 *   - shares its registrable domain by the public suffix list, private
 *     section included (`registry-1.docker.io` and `auth.docker.io` share
 *     `docker.io`; `a.github.io` and `b.github.io` do not share anything).
 *     IP addresses, `localhost` and single-label names have no registrable
 *     domain, so for them only the same host name counts.
 *
 * Pure; never throws.
 */
export function isTrustedRealm(upstreamUrl: URL, realm: URL, configuredRealms: readonly string[]): boolean {
  if (configuredRealms.some((entry) => matchesConfiguredRealm(realm, entry))) return true;
  if (realm.protocol !== 'https:' && realm.protocol !== 'http:') return false;
  if (upstreamUrl.protocol === 'https:' && realm.protocol !== 'https:') return false;
  const upstreamHost = normalizeHost(upstreamUrl.hostname);
  const realmHost = normalizeHost(realm.hostname);
  if (upstreamHost === '' || realmHost === '') return false;
  if (upstreamHost === realmHost) return true;
  return sameRegistrableDomain(upstreamHost, realmHost);
}

/**
 * One `trustedRealms` entry against a realm URL. An entry with a scheme is a
 * URL: the origin must match, and when it has a path other than `/`, the
 * realm's path must equal it (`https://auth.corp/token`). An entry without a
 * scheme is a host: `auth.corp` matches that host name on any port and
 * scheme, `auth.corp:8443` only that port. Comparisons ignore case; an
 * unparseable entry matches nothing.
 */
export function matchesConfiguredRealm(realm: URL, entry: string): boolean {
  const trimmed = entry.trim();
  if (trimmed === '') return false;
  if (trimmed.includes('://')) {
    const url = tryUrl(trimmed);
    if (!url || url.origin !== realm.origin) return false;
    return url.pathname === '/' || url.pathname === realm.pathname;
  }
  const url = tryUrl(`http://${trimmed}`);
  if (!url || url.pathname !== '/' || url.username || url.password) return false;
  if (normalizeHost(url.hostname) !== normalizeHost(realm.hostname)) return false;
  // Read the port from the entry text: URL drops a port that is the scheme's default (`:80`).
  const port = /:([0-9]+)$/.exec(trimmed)?.[1];
  return port === undefined || Number(port) === Number(effectivePort(realm));
}

function sameRegistrableDomain(a: string, b: string): boolean {
  // IPs have no registrable domain; tldts already answers null, but say so explicitly.
  const { getDomain, parse } = publicSuffixes();
  if (parse(a).isIp || parse(b).isIp) return false;
  const options = { allowPrivateDomains: true } as const;
  const domainA = getDomain(a, options);
  return domainA !== null && domainA === getDomain(b, options);
}

/** Lower-case (URL already does) and without the trailing dot of a fully qualified name. */
function normalizeHost(host: string): string {
  return host.toLowerCase().replace(/\.$/, '');
}

function effectivePort(url: URL): string {
  if (url.port !== '') return url.port;
  return url.protocol === 'https:' ? '443' : url.protocol === 'http:' ? '80' : '';
}

function tryUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}
