import { resolve } from 'node:path';
import type { AuthConfig, Config } from './schema.js';
import {
  ConfigError, type AccessRuleSettings, type AuthSettings, type RepositoryPattern, type RuleSubject, type TlsSettings, type UpstreamSettings,
} from './settings.js';

/** `listen.tls` with paths resolved; a `clientAuth` needs a `clientCaFile` and the other way round. */
export function resolveTls(tls: Config['listen']['tls'], where = '/listen/tls'): TlsSettings | undefined {
  if (!tls) return undefined;
  if ((tls.clientCaFile === undefined) !== (tls.clientAuth === undefined)) {
    throw new ConfigError(`invalid configuration:\n${where}: clientCaFile and clientAuth go together`);
  }
  return {
    certFile: resolve(tls.certFile),
    keyFile: resolve(tls.keyFile),
    clientCaFile: tls.clientCaFile === undefined ? undefined : resolve(tls.clientCaFile),
    clientAuth: tls.clientAuth,
  };
}

/** With `auth` and no rules, authenticated clients pull everything and anonymous ones nothing. */
const DEFAULT_RULES: readonly AccessRuleSettings[] = [
  { subjects: [{ kind: 'authenticated' }], repositories: [{ upstream: undefined, repository: '**' }], access: 'pull' },
];

/**
 * The `auth` block: rule subjects parsed, and each pattern's upstream part
 * (a name or alias) resolved to the upstream's name, so a typo is a start-up
 * error rather than a rule that silently matches nothing.
 */
export function resolveAuth(auth: AuthConfig | undefined, upstreams: readonly UpstreamSettings[]): AuthSettings | undefined {
  if (!auth) return undefined;
  const rules = auth.rules?.map((rule, i): AccessRuleSettings => ({
    subjects: rule.users.map(parseSubject),
    repositories: rule.repositories.map((pattern, j) => parsePattern(pattern, upstreams, `/auth/rules/${i}/repositories/${j}`)),
    access: rule.access,
  }));
  return {
    htpasswd: auth.htpasswd && { file: resolve(auth.htpasswd.file), realm: auth.htpasswd.realm },
    rules: rules ?? DEFAULT_RULES,
  };
}

function parseSubject(text: string): RuleSubject {
  if (text === 'anonymous') return { kind: 'anonymous' };
  if (text === '*') return { kind: 'authenticated' };
  if (text.startsWith('CN=')) return { kind: 'certificate', commonName: text.slice(3) };
  return { kind: 'user', name: text };
}

function parsePattern(text: string, upstreams: readonly UpstreamSettings[], where: string): RepositoryPattern {
  const slash = text.indexOf('/');
  const host = text.slice(0, slash).toLowerCase();
  const repository = text.slice(slash + 1);
  if (!/^(\*\*|\*|[a-z0-9._-]+)(\/(\*\*|[a-z0-9._*-]+))*$/.test(repository)) {
    throw new ConfigError(`invalid configuration:\n${where}: ${text} is not <upstream>/<repository glob> (components of a-z 0-9 . _ - and *, or **)`);
  }
  if (host === '*') return { upstream: undefined, repository };
  const upstream = upstreams.find((u) => u.name === host || u.aliases.some((a) => a.toLowerCase() === host));
  if (!upstream) {
    throw new ConfigError(`invalid configuration:\n${where}: ${host} names no upstream; configured: ${upstreams.map((u) => u.name).join(', ')}`);
  }
  return { upstream: upstream.name, repository };
}
