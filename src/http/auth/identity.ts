/** Who is asking: checked credentials, a verified client certificate, or nobody in particular. */
export type ClientIdentity =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'user'; readonly name: string }
  | { readonly kind: 'certificate'; readonly commonName: string };

export const ANONYMOUS: ClientIdentity = { kind: 'anonymous' };

/** The name the access log carries: the user, `CN=<name>` for a certificate, nothing for anonymous. */
export function identityName(identity: ClientIdentity): string | undefined {
  switch (identity.kind) {
    case 'user': return identity.name;
    case 'certificate': return `CN=${identity.commonName}`;
    default: return undefined;
  }
}
