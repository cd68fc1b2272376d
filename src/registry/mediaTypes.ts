/** Manifest media types pullthrough knows by name. Others pass through untouched. */
export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

/** What we ask an upstream for when the client states no preference. */
export const DEFAULT_MANIFEST_ACCEPT: readonly string[] = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.dockerManifestList,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerManifest,
];

export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList]);

/** The largest manifest we accept from an upstream (the spec's suggested minimum is 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/**
 * The media types a client accepts, in its order, from one or more Accept
 * headers of comma-separated values. Parameters (`;q=`) are dropped: we never
 * convert, so all we need is the set to pass upstream. `*\/*` and an absent
 * header mean "anything", which we express as our full list.
 */
export function acceptedManifestTypes(accept: string | readonly string[] | undefined): readonly string[] {
  if (typeof accept !== 'string') return parseAccept(accept);
  // Clients send the same few Accept headers on every request: parse each once (issue 19, the manifest hot path).
  let types = parsedAccept.get(accept);
  if (types === undefined) {
    if (parsedAccept.size >= MAX_PARSED_ACCEPT) parsedAccept.clear();
    types = Object.freeze(parseAccept(accept));
    parsedAccept.set(accept, types);
  }
  return types;
}

/** Bounded: a client making up Accept headers can only make us parse again. */
const MAX_PARSED_ACCEPT = 256;
const parsedAccept = new Map<string, readonly string[]>();

function parseAccept(accept: string | readonly string[] | undefined): readonly string[] {
  const values = accept === undefined ? [] : typeof accept === 'string' ? [accept] : accept;
  const types: string[] = [];
  for (const value of values) {
    for (const part of value.split(',')) {
      const type = part.split(';')[0]!.trim().toLowerCase();
      if (type && type !== '*/*' && !types.includes(type)) types.push(type);
    }
  }
  return types.length > 0 ? types : DEFAULT_MANIFEST_ACCEPT;
}
