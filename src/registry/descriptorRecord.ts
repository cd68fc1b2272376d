import type { Descriptor } from './descriptor.js';
import type { Digest } from './digest.js';
import { isMediaType } from './mediaTypes.js';

/**
 * The one serialised form of a descriptor whose digest is already in its key
 * or path: `{"size":<bytes>,"mediaType":"..."}`. Used by Redis (descriptor
 * keys) and storage (manifest revision records) alike.
 */
interface EncodedDescriptor {
  size: number;
  mediaType: string;
}

export function encodeDescriptorRecord(descriptor: Pick<Descriptor, 'size' | 'mediaType'>): string {
  const encoded: EncodedDescriptor = { size: descriptor.size, mediaType: descriptor.mediaType };
  return JSON.stringify(encoded);
}

/** The descriptor, or undefined for anything we did not write (another program, an older format): no answer. */
export function decodeDescriptorRecord(digest: Digest, text: string): Descriptor | undefined {
  try {
    const parsed = JSON.parse(text) as Partial<EncodedDescriptor>;
    if (typeof parsed.size !== 'number' || !Number.isSafeInteger(parsed.size) || parsed.size < 0
      || typeof parsed.mediaType !== 'string' || !isMediaType(parsed.mediaType)) return undefined;
    return { digest, size: parsed.size, mediaType: parsed.mediaType };
  } catch {
    return undefined;
  }
}
