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

/** Manifest media types we resolve tags to and serve by tag: every one of them is in `DEFAULT_MANIFEST_ACCEPT`. */
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set(DEFAULT_MANIFEST_ACCEPT);

/** Entries of an Accept header read at most: every real client sends fewer than a dozen. */
export const MAX_ACCEPT_ENTRIES = 64;

/**
 * RFC 6838 `type/subtype`: restricted-name characters only, each part at
 * most 127 of them. Parameters are not part of a stored media type.
 */
const MEDIA_TYPE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

/** True for a media type by RFC 6838's grammar: what we store, and what goes into a Content-Type header. */
export function isMediaType(value: string): boolean {
  return MEDIA_TYPE.test(value);
}

/** True when `accept` names every type of `DEFAULT_MANIFEST_ACCEPT`: an upstream's 404 to it means the manifest does not exist. */
export function coversDefaultAccept(accept: readonly string[]): boolean {
  return DEFAULT_MANIFEST_ACCEPT.every((type) => accept.includes(type));
}

/**
 * The media types a client accepts, in its order, from one or more Accept
 * headers of comma-separated values. Parameters (`;q=`) are dropped: we never
 * convert, so all we need is the set to pass upstream. `*\/*`,
 * `application/*` and an absent header mean "anything", which we express as
 * our full list. Linear in the header's length; entries past
 * `MAX_ACCEPT_ENTRIES` are ignored.
 */
export function acceptedManifestTypes(accept: string | readonly string[] | undefined): readonly string[] {
  const values = accept === undefined ? [] : typeof accept === 'string' ? [accept] : accept;
  const types = new Set<string>();
  let entries = 0;
  let anything = values.length === 0;
  for (const value of values) {
    for (const part of value.split(',', MAX_ACCEPT_ENTRIES - entries)) {
      entries++;
      const type = part.split(';', 1)[0]!.trim().toLowerCase();
      if (type === '*/*' || type === 'application/*') anything = true;
      else if (type && isMediaType(type)) types.add(type);
    }
    if (entries >= MAX_ACCEPT_ENTRIES) break;
  }
  if (anything) for (const type of DEFAULT_MANIFEST_ACCEPT) types.add(type);
  return types.size > 0 ? [...types] : DEFAULT_MANIFEST_ACCEPT;
}
