import type { AccessRuleSettings, RuleSubject } from '../../config/settings.js';
import type { RepositoryRef } from '../../registry/services.js';
import type { ClientIdentity } from './identity.js';

interface CompiledRule {
  readonly subjects: readonly RuleSubject[];
  readonly repositories: readonly { readonly upstream: string | undefined; readonly name: RegExp; readonly everything: boolean }[];
  readonly allows: boolean;
}

/** A repository glob as a regular expression: `*` within one path component, `**` across any number. */
export function globToRegExp(glob: string): RegExp {
  const source = glob.split('/').map((part) => {
    if (part === '**') return '\u0000';
    return part.split('*').map((s) => s.replace(/[.\\+?^${}()|[\]-]/g, '\\$&')).join('[^/]*');
  }).join('/')
    // `a/**/b` matches a/b too; `a/**` matches everything under a; `**` everything.
    .replace(/\/\u0000\//g, '(?:/.+)?/')
    .replace(/\/\u0000$/, '(?:/.+)?')
    .replace(/^\u0000\//, '(?:.+/)?')
    .replace(/\u0000/g, '.+');
  return new RegExp(`^${source}$`);
}

function names(subject: RuleSubject, identity: ClientIdentity): boolean {
  switch (subject.kind) {
    case 'anonymous': return identity.kind === 'anonymous';
    case 'authenticated': return identity.kind !== 'anonymous';
    case 'user': return identity.kind === 'user' && identity.name === subject.name;
    case 'certificate': return identity.kind === 'certificate' && identity.commonName === subject.commonName;
  }
}

/**
 * The ordered read rules: the first rule that names the client and matches
 * the repository decides; when none does, the answer is no.
 */
export class ReadRules {
  private readonly rules: readonly CompiledRule[];

  constructor(rules: readonly AccessRuleSettings[]) {
    this.rules = rules.map((rule) => ({
      subjects: rule.subjects,
      repositories: rule.repositories.map((p) => ({ upstream: p.upstream, name: globToRegExp(p.repository), everything: p.upstream === undefined && p.repository === '**' })),
      allows: rule.access === 'pull',
    }));
  }

  mayPull(identity: ClientIdentity, repository: RepositoryRef): boolean {
    for (const rule of this.rules) {
      if (!rule.subjects.some((s) => names(s, identity))) continue;
      if (rule.repositories.some((p) => (p.upstream === undefined || p.upstream === repository.upstream) && p.name.test(repository.name))) {
        return rule.allows;
      }
    }
    return false;
  }

  /**
   * True when the rules restrict nothing: the first rule names every client
   * (anonymous and authenticated) and lets it pull every repository of every
   * upstream, so no rule after it ever decides.
   */
  everyonePullsEverything(): boolean {
    const first = this.rules[0];
    if (!first?.allows) return false;
    const names = (kind: RuleSubject['kind']): boolean => first.subjects.some((s) => s.kind === kind);
    return names('anonymous') && names('authenticated') && first.repositories.some((p) => p.everything);
  }

  /** True when some rule lets anonymous clients pull something: then `/v2/` answers them 200. */
  anonymousMayPullSomething(): boolean {
    return this.rules.some((r) => r.allows && r.subjects.some((s) => s.kind === 'anonymous'));
  }
}
