import type { UpstreamSettings } from '../config/settings.js';
import { RegistryError } from '../registry/errors.js';
import { parseDigest, type Digest } from '../registry/digest.js';
import { parseRepositoryName, parseTag, type RepositoryName, type Tag } from '../registry/names.js';
import type { RepositoryRef } from '../registry/services.js';

/** A parsed image reference: where it lives, and which tag or digest of it. */
export interface ImageReference {
  readonly route: Route;
  readonly tag: Tag | undefined;
  readonly digest: Digest | undefined;
}

export interface Route {
  readonly upstream: UpstreamSettings;
  readonly repository: RepositoryRef;
}

/** Routed names remembered (a few MiB at most). */
const MAX_ROUTED_NAMES = 10_000;

/** A host name with an optional port, as in a docker image reference's domain. */
const HOST = /^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?$/;

/**
 * Which upstream serves a request, in this order:
 *
 * 1. `?ns=<host>` (containerd appends it to every mirror request): the
 *    upstream whose name or alias is that host.
 * 2. A path prefix `/v2/<upstream-name>/<repo>/...` whose first segment is a
 *    configured upstream's name or alias (podman, override_path, skopeo).
 * 3. Otherwise the default upstream (dockerd's registry-mirrors).
 *
 * An `ns` naming no configured upstream is an error, and so is a first path
 * segment that can only be a registry host (it holds a `.` or `:`, or is
 * `localhost`) but names none: host names from requests are lookup keys,
 * never addresses to dial, and never part of a repository name sent to the
 * default upstream. With `ns`, a leading segment naming that same upstream
 * is a prefix (containerd's `override_path`) and is dropped.
 */
export class UpstreamRouter {
  private readonly byHost = new Map<string, UpstreamSettings>();
  private readonly fallback: UpstreamSettings;
  private readonly routed = new Map<string, Route>();

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
    // Every request routes its name; a pull asks for the same few names again and again. Only names that
    // routed are remembered, in a bounded table (cleared when full), so made-up names cost only the parse.
    const key = ns ? `${ns}\n${pathName}` : pathName;
    let found = this.routed.get(key);
    if (found === undefined) {
      found = this.routeName(pathName, ns);
      if (this.routed.size >= MAX_ROUTED_NAMES) this.routed.clear();
      this.routed.set(key, found);
    }
    return found;
  }

  private routeName(pathName: string, ns: string | undefined): Route {
    if (ns !== undefined && ns !== '') {
      const upstream = this.byName(ns);
      if (!upstream) {
        throw new RegistryError('NAME_UNKNOWN',
          `registry ${ns.slice(0, 100)} is not configured on this mirror; configured: ${this.names()}`);
      }
      // containerd adds `?ns=` also when the mirror URL carries the registry as a path
      // prefix (hosts.toml `override_path = true`): a leading name of that same upstream
      // is the prefix, not part of the repository name.
      const prefixed = this.prefixOf(pathName);
      return this.bind(upstream, prefixed?.upstream === upstream ? prefixed.rest : pathName);
    }
    const prefixed = this.prefixOf(pathName);
    if (prefixed) return this.bind(prefixed.upstream, prefixed.rest);
    // A first segment that can only be a registry host (as in docker's reference grammar:
    // it holds a '.' or ':', or is `localhost`) names a registry that is not configured.
    // It is refused, never handed to the default upstream as part of a repository name.
    // Anything else that is not even a host name is left to the name grammar (NAME_INVALID).
    const slash = pathName.indexOf('/');
    const first = slash > 0 ? pathName.slice(0, slash) : '';
    if (HOST.test(first) && (first.includes('.') || first.includes(':') || first === 'localhost')) {
      throw new RegistryError('NAME_UNKNOWN',
        `registry ${first.slice(0, 100)} is not configured on this mirror; configured: ${this.names()}`);
    }
    return this.bind(this.fallback, pathName);
  }

  /** The upstream named by the path's first segment, if any, and the rest of the path. */
  private prefixOf(pathName: string): { upstream: UpstreamSettings; rest: string } | undefined {
    const slash = pathName.indexOf('/');
    if (slash <= 0) return undefined;
    const upstream = this.byName(pathName.slice(0, slash));
    return upstream ? { upstream, rest: pathName.slice(slash + 1) } : undefined;
  }

  /**
   * An image reference as people write them: `alpine`, `alpine:3.20`,
   * `ghcr.io/org/app:1.2`, `registry.k8s.io/pause@sha256:...`. The registry
   * part is routed like a path prefix (a configured upstream's name or
   * alias), else the default upstream.
   */
  parseReference(reference: string): ImageReference {
    let rest = reference.trim();
    let digest: Digest | undefined;
    const at = rest.indexOf('@');
    if (at >= 0) {
      digest = parseDigest(rest.slice(at + 1)).digest;
      rest = rest.slice(0, at);
    }
    let tag: Tag | undefined;
    const colon = rest.lastIndexOf(':');
    if (colon > rest.lastIndexOf('/')) {
      tag = parseTag(rest.slice(colon + 1));
      rest = rest.slice(0, colon);
    }
    return { route: this.route(rest, undefined), tag, digest };
  }

  private bind(upstream: UpstreamSettings, name: string): Route {
    return { upstream, repository: { upstream: upstream.name, name: nameAtUpstream(upstream, parseRepositoryName(name)) } };
  }

  private names(): string {
    return this.upstreams.map((u) => u.name).join(', ');
  }
}

/** The repository name as the upstream knows it: Docker Hub keeps official images under `library/` (`alpine` is `library/alpine`). */
export function nameAtUpstream(upstream: UpstreamSettings, name: RepositoryName): RepositoryName {
  return upstream.dockerHub && !name.includes('/') ? `library/${name}` as RepositoryName : name;
}
