/**
 * The egress policy: where an upstream may make pullthrough connect.
 *
 * An upstream chooses URLs for us: redirect targets (a CDN for blobs),
 * token realms and their redirects. Left alone, a malicious or compromised
 * upstream could point them at anything the mirror's host can reach (a cloud
 * metadata service, a cluster service, an admin API on loopback) and read the
 * answer back through the mirror. So every connection an upstream's agents
 * make is checked where it is made, in undici's connector: an IP literal
 * before connecting, a host name in the `lookup` the socket uses, against
 * every address it resolves to. A name that resolves to a public address when
 * it is checked and a private one when it is dialled (DNS rebinding) cannot
 * get past it: the check is on the address the socket connects to.
 *
 * Refused: loopback, "this network", link-local, RFC 1918 private, CGNAT,
 * benchmarking, documentation and reserved ranges, multicast and broadcast;
 * for IPv6 also unique-local, link- and site-local, NAT64, 6to4 and every
 * IPv4-mapped or -compatible form. Allowed regardless: the host names the
 * configuration names (the upstream's own URL, its `allowedRedirectHosts`,
 * the hosts of its `trustedRealms`), whatever they resolve to, since an
 * operator chose them; and every address when `allowPrivateRedirects` is set.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { buildConnector, type Connector, type ConnectorOptions } from './undici.js';
import type { UpstreamSettings } from '../config/settings.js';

const PRIVATE_V4 = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) PRIVATE_V4.addSubnet(network, prefix, 'ipv4');

const PRIVATE_V6 = new BlockList();
for (const [network, prefix] of [
  // ::/8 holds the unspecified and loopback addresses and the IPv4-mapped and -compatible forms.
  ['::', 8], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['100::', 64], ['2001:db8::', 32], ['2002::', 16],
  ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const) PRIVATE_V6.addSubnet(network, prefix, 'ipv6');

/** True for an address on the public internet; false for every range listed above (and for anything not an IP). */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !PRIVATE_V4.check(address, 'ipv4');
  if (family === 6) return !PRIVATE_V6.check(address, 'ipv6');
  return false;
}

/** A connection the egress policy refused; its message names the host (the upstream's choice), never the address it resolved to. */
export class EgressRefused extends Error {
  readonly code = 'EGRESS_REFUSED';
  constructor(readonly host: string, readonly address: string) {
    super(`${host} is not a public address; pullthrough does not connect there unless the upstream's allowedRedirectHosts or allowPrivateRedirects allows it`);
    this.name = 'EgressRefused';
  }
}

export interface EgressPolicyOptions {
  /**
   * Host names (or IP literals) named by the configuration: connections to
   * them are allowed whatever they resolve to. `*.example.corp` matches
   * every name below `example.corp`.
   */
  readonly allowedHosts: readonly string[];
  /** Every address is allowed (an on-prem registry whose object store is private). */
  readonly allowPrivate: boolean;
}

/** Lower case, no brackets around an IPv6 literal, no trailing dot. */
function normalizeHost(host: string): string {
  const lower = host.toLowerCase().replace(/\.$/, '');
  return lower.startsWith('[') && lower.endsWith(']') ? lower.slice(1, -1) : lower;
}

/** The host name of a configured entry: a URL (`https://auth.corp/token`), `host:port`, or a host. */
function hostOfEntry(entry: string): string | undefined {
  const trimmed = entry.trim();
  if (trimmed.startsWith('*.')) return trimmed.toLowerCase();
  try {
    return normalizeHost(new URL(trimmed.includes('://') ? trimmed : `http://${trimmed}`).hostname);
  } catch {
    return undefined;
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** Where the agents of one upstream may connect; see the module comment. */
export class EgressPolicy {
  private readonly exact = new Set<string>();
  private readonly suffixes: string[] = [];

  constructor(private readonly options: EgressPolicyOptions) {
    for (const entry of options.allowedHosts) {
      const host = hostOfEntry(entry);
      if (host === undefined) continue;
      if (host.startsWith('*.')) this.suffixes.push(host.slice(1));
      else this.exact.add(host);
    }
  }

  /** The policy of a configured upstream: its own host, its `allowedRedirectHosts` and `trustedRealms`, `allowPrivateRedirects`. */
  static forUpstream(settings: UpstreamSettings): EgressPolicy {
    return new EgressPolicy({
      allowedHosts: [settings.url.hostname, ...settings.allowedRedirectHosts, ...settings.trustedRealms],
      allowPrivate: settings.allowPrivateRedirects,
    });
  }

  /** True when the configuration names this host, so any address it has is fine. */
  isAllowedHost(host: string): boolean {
    const name = normalizeHost(host);
    return this.options.allowPrivate || this.exact.has(name) || this.suffixes.some((s) => name.endsWith(s));
  }

  /** The refusal for connecting to `address` on behalf of `host`, or undefined when allowed. */
  refusal(host: string, address: string): EgressRefused | undefined {
    if (this.isAllowedHost(host) || isPublicAddress(address)) return undefined;
    return new EgressRefused(host, address);
  }

  /**
   * An undici connector that enforces the policy on every connection:
   * `options` are those of undici's `buildConnector` (timeout, TLS options).
   */
  connector(options: ConnectorOptions = {}): Connector {
    const connect = buildConnector({ ...options, lookup: this.lookup } as ConnectorOptions);
    return (connectOptions, callback) => {
      const host = connectOptions.hostname;
      // The socket does no lookup for an IP literal: judge it here.
      const refused = isIP(host) !== 0 ? this.refusal(host, host) : undefined;
      if (refused) {
        queueMicrotask(() => callback(refused, null));
        return;
      }
      connect(connectOptions, callback);
    };
  }

  /** `dns.lookup` for the socket, refusing the name when any address it resolves to is refused. */
  private readonly lookup = (hostname: string, options: LookupOptions | number, callback: LookupCallback): void => {
    const wanted: LookupOptions = typeof options === 'number' ? { family: options } : options;
    dnsLookup(hostname, { ...wanted, all: true }, (err, addresses) => {
      if (err) {
        callback(err, []);
        return;
      }
      for (const { address } of addresses) {
        const refused = this.refusal(hostname, address);
        if (refused) {
          callback(refused, []);
          return;
        }
      }
      if (wanted.all === true) callback(null, addresses);
      else if (addresses[0] === undefined) callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), []);
      else callback(null, addresses[0].address, addresses[0].family);
    });
  };
}
