import { isDigestReference, parseDigest, type Digest } from './digest.js';
import { parseTag, type Tag } from './names.js';

/** What `/v2/<name>/manifests/<reference>` names: a tag, or a digest. */
export type ManifestReference = { readonly tag: Tag; readonly digest?: undefined } | { readonly digest: Digest; readonly tag?: undefined };

/**
 * A manifest reference by the grammar: anything with a `:` is a digest
 * (DIGEST_INVALID, or UNSUPPORTED for an algorithm we do not verify),
 * anything else a tag (TAG_INVALID). Reads turn these errors into
 * MANIFEST_UNKNOWN (as Distribution does and the conformance tests expect);
 * writes answer them as they are.
 */
export function parseManifestReference(reference: string): ManifestReference {
  return isDigestReference(reference) ? { digest: parseDigest(reference).digest } : { tag: parseTag(reference) };
}
