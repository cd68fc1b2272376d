import { createHash, type Hash } from 'node:crypto';
import { RegistryError } from './errors.js';

/** The digest algorithms pullthrough verifies, with the hex length of each. */
const HEX_LENGTH = { sha256: 64, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof HEX_LENGTH;

/** A validated `algorithm:hex` content address. Construct with `parseDigest`. */
export type Digest = string & { readonly __digest: unique symbol };

const DIGEST_SHAPE = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

export interface ParsedDigest {
  readonly digest: Digest;
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
}

/**
 * Validates a digest string. A well-formed digest of an algorithm we do not
 * verify is UNSUPPORTED; anything malformed is DIGEST_INVALID. Only the
 * lowercase hex form is accepted, so a digest is also a safe path component.
 */
export function parseDigest(value: string): ParsedDigest {
  const match = DIGEST_SHAPE.exec(value);
  if (!match) throw new RegistryError('DIGEST_INVALID', 'invalid digest', { digest: value.slice(0, 200) });
  const algorithm = match[1]!;
  const hex = match[2]!;
  if (!Object.hasOwn(HEX_LENGTH, algorithm)) {
    throw new RegistryError('UNSUPPORTED', `digest algorithm ${algorithm} is not supported`, { digest: value });
  }
  const alg = algorithm as DigestAlgorithm;
  if (hex.length !== HEX_LENGTH[alg] || !/^[a-f0-9]+$/.test(hex)) {
    throw new RegistryError('DIGEST_INVALID', 'invalid digest', { digest: value });
  }
  return { digest: value as Digest, algorithm: alg, hex };
}

/**
 * The parts of a `Digest`, which passed the grammar once, at the edge: a
 * split, not a second parse (the request path parses each digest once).
 */
export function splitDigest(digest: Digest): { algorithm: DigestAlgorithm; hex: string } {
  const colon = digest.indexOf(':');
  return { algorithm: digest.slice(0, colon) as DigestAlgorithm, hex: digest.slice(colon + 1) };
}

export function isDigestReference(reference: string): boolean {
  return reference.includes(':');
}

export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): Digest {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}` as Digest;
}

/**
 * Hashes bytes as they stream past and says whether they are the content a
 * digest names: the one place where a fill, a replica follower, an import
 * and an export check what they read. `check` throws `DigestMismatch`.
 */
export class DigestVerifier {
  private hash: Hash;
  private count = 0;

  constructor(readonly expected: ParsedDigest) {
    this.hash = createHash(expected.algorithm);
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.count += chunk.length;
  }

  /** Bytes hashed so far. */
  get bytes(): number {
    return this.count;
  }

  /** The digest of what was hashed so far (the verifier goes on). */
  current(): string {
    return `${this.expected.algorithm}:${this.hash.copy().digest('hex')}`;
  }

  /** The hex of what was hashed so far, for comparing a prefix of two sources. */
  prefixHex(): string {
    return this.hash.copy().digest('hex');
  }

  /** Starts again from zero bytes. */
  reset(): void {
    this.hash = createHash(this.expected.algorithm);
    this.count = 0;
  }

  matches(): boolean {
    return this.current() === this.expected.digest;
  }

  /** Throws `DigestMismatch` unless the bytes hashed are exactly the digest's content. */
  check(): void {
    const actual = this.current();
    if (actual !== this.expected.digest) throw new DigestMismatch(this.expected.digest, actual);
  }
}

/** Bytes that do not hash to the digest they were asked for. */
export class DigestMismatch extends RegistryError {
  constructor(expected: string, actual: string) {
    super('UPSTREAM_INVALID', 'upstream sent bytes that do not match the digest', { expected, actual });
  }
}
