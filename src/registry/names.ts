import { RegistryError } from './errors.js';

/**
 * The repository name and tag grammar of the OCI distribution spec, in one
 * place. Everything that reaches storage has passed through here, so a name
 * can never hold `..`, a backslash, a NUL or a percent-escape.
 */
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
export const MAX_NAME_LENGTH = 255;

/** A repository name that passed the grammar. */
export type RepositoryName = string & { readonly __repositoryName: unique symbol };
/** A tag that passed the grammar. */
export type Tag = string & { readonly __tag: unique symbol };

export function isValidRepositoryName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return false;
  return name.split('/').every((component) => PATH_COMPONENT.test(component));
}

export function parseRepositoryName(name: string): RepositoryName {
  if (!isValidRepositoryName(name)) {
    throw new RegistryError('NAME_INVALID', 'invalid repository name', { name: name.slice(0, 300) });
  }
  return name as RepositoryName;
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

export function parseTag(tag: string): Tag {
  if (!TAG.test(tag)) throw new RegistryError('TAG_INVALID', 'invalid tag', { tag: tag.slice(0, 200) });
  return tag as Tag;
}
