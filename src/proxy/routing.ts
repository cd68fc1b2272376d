import type { UpstreamSettings } from '../config/load.js';
import { RegistryError } from '../registry/errors.js';
import { parseRepositoryName, type RepositoryName } from '../registry/names.js';
import type { RepositoryRef } from '../registry/services.js';

export interface Route {
  readonly upstream: UpstreamSettings;
  readonly repository: RepositoryRef;
}

/**
 * Which upstream serves a request, in this order:
 *
 * 1. `?ns=<host>` (containerd appends it to every mirror request): the
 *    upstream whose name or alias is that host.
 * 2. A path prefix `/v2/<upstream-name>/<repo>/...` whose first segment is a
 *    configured upstream's name or alias (podman, override_path, skopeo).
 * 3. Otherwise the default upstream (dockerd's registry-mirrors).
 *
 * An `ns` naming no configured upstream is an error: host names from requests
 * are lookup keys, never addresses to dial.
 */
export class UpstreamRouter {
  private readonly byHost = new Map<string, UpstreamSettings>();
  private readonly fallback: UpstreamSettings;

  constructor(readonly upstreams: readonly UpstreamSettings[], defaultUpstream: string) {
    for (const u of upstreams) {
      for (const host of [u.name, ...u.aliases]) this.byHost.set(host.toLowerCase(), u);
    }
    const fallback = upstreams.find((u) => u.name === defaultUpstream);
    if (!fallback) throw new Error(`default upstream ${defaultUpstream} is not configured`);
    this.fallback = fallback;
  }

  /** The upstream for a host name, e.g. an `ns` value or a reference's registry. */
  byName(host: string): UpstreamSettings | undefined {
    return this.byHost.get(host.toLowerCase());
  }

  get defaultUpstream(): UpstreamSettings {
    return this.fallback;
  }

  /** Routes a request for the (still unvalidated) name in the URL path. */
  route(pathName: string, ns: string | undefined): Route {
    if (ns !== undefined && ns !== '') {
      const upstream = this.byName(ns);
      if (!upstream) {
        throw new RegistryError('NAME_UNKNOWN',
          `registry ${ns.slice(0, 100)} is not configured on this mirror; configured: ${this.names()}`);
      }
      return this.bind(upstream, pathName);
    }
    const slash = pathName.indexOf('/');
    if (slash > 0) {
      const prefixed = this.byName(pathName.slice(0, slash));
      if (prefixed) return this.bind(prefixed, pathName.slice(slash + 1));
    }
    return this.bind(this.fallback, pathName);
  }

  private bind(upstream: UpstreamSettings, name: string): Route {
    return { upstream, repository: { upstream: upstream.name, name: upstreamName(upstream, parseRepositoryName(name)) } };
  }

  private names(): string {
    return this.upstreams.map((u) => u.name).join(', ');
  }
}

/** Docker Hub keeps official images under `library/`: `alpine` is `library/alpine`. */
export function upstreamName(upstream: UpstreamSettings, name: RepositoryName): RepositoryName {
  return upstream.dockerHub && !name.includes('/') ? `library/${name}` as RepositoryName : name;
}
