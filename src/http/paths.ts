/**
 * What a `/v2/...` path asks for. Names are not validated here (routing and
 * the grammar do that); this only splits the path at the endpoint keyword.
 */
export type RegistryPath =
  | { readonly endpoint: 'manifest'; readonly name: string; readonly reference: string }
  | { readonly endpoint: 'blob'; readonly name: string; readonly digest: string }
  | { readonly endpoint: 'tags'; readonly name: string }
  | { readonly endpoint: 'referrers'; readonly name: string; readonly digest: string }
  | { readonly endpoint: 'upload'; readonly name: string }
  | { readonly endpoint: 'unknown' };

// Greedy names: a repository may itself have a component called "manifests" or "blobs".
const MANIFEST = /^(.+)\/manifests\/([^/]+)$/;
const UPLOAD = /^(.+)\/blobs\/uploads(?:\/.*)?$/;
const BLOB = /^(.+)\/blobs\/([^/]+)$/;
const TAGS = /^(.+)\/tags\/list$/;
const REFERRERS = /^(.+)\/referrers\/([^/]+)$/;

export function parseRegistryPath(path: string): RegistryPath {
  let m = UPLOAD.exec(path);
  if (m) return { endpoint: 'upload', name: m[1]! };
  m = MANIFEST.exec(path);
  if (m) return { endpoint: 'manifest', name: m[1]!, reference: m[2]! };
  m = BLOB.exec(path);
  if (m) return { endpoint: 'blob', name: m[1]!, digest: m[2]! };
  m = TAGS.exec(path);
  if (m) return { endpoint: 'tags', name: m[1]! };
  m = REFERRERS.exec(path);
  if (m) return { endpoint: 'referrers', name: m[1]!, digest: m[2]! };
  return { endpoint: 'unknown' };
}
