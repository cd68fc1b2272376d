/**
 * What the upstream holds for the bench: the four manifest kinds of the
 * test seed (6 images, `layers` random layers each) for the pulls, one big
 * single-layer image for the concurrent and cached blob figures, and one
 * image of several small layers whose blobs are timed to first byte.
 */
import { request } from '../src/upstream/undici.js';
import { DEFAULT_MANIFEST_ACCEPT } from '../src/registry/mediaTypes.js';
import type { RunningRegistry } from '../test/fixtures/registry.js';
import { seedImages, type SeededImage } from '../test/fixtures/seed.js';
import type { BenchOptions } from './options.js';

export interface BlobRef {
  readonly repository: string;
  readonly digest: string;
  readonly size: number;
}

export interface Workload {
  /** The images every pull copies, in seed order. */
  readonly images: readonly SeededImage[];
  /** Distinct config and layer blobs of those images. */
  readonly uniqueBlobs: readonly string[];
  /** Their total size in bytes. */
  readonly uniqueBlobBytes: number;
  /** The big blob: a layer of `bigSize` random bytes. */
  readonly big: BlobRef;
  /** Cold blobs for the time-to-first-byte samples, one per sample. */
  readonly ttfb: readonly BlobRef[];
  /** The manifest the requests-per-second figures ask for: an OCI image manifest. */
  readonly manifest: { readonly repository: string; readonly tag: string; readonly digest: string; readonly size: number };
}

/** The Accept header a docker/containerd client sends for manifests. */
export const MANIFEST_ACCEPT = DEFAULT_MANIFEST_ACCEPT.join(', ');

/** A blob's size as the registry states it (HEAD). */
async function blobSize(registryUrl: string, repository: string, digest: string): Promise<number> {
  const res = await request(`${registryUrl}/v2/${repository}/blobs/${digest}`, { method: 'HEAD' });
  await res.body.dump();
  const length = Number(res.headers['content-length']);
  if (res.statusCode !== 200 || !Number.isFinite(length)) {
    throw new Error(`HEAD ${repository}@${digest} on the upstream: ${res.statusCode}`);
  }
  return length;
}

export async function seedWorkload(upstream: RunningRegistry, options: BenchOptions): Promise<Workload> {
  const [images, [bigImage], [ttfbImage]] = await Promise.all([
    seedImages(upstream.host, { layerSize: options.layerSize, layers: options.layers, repositoryPrefix: 'bench' }),
    seedImages(upstream.host, { layerSize: options.bigSize, layers: 1, kinds: ['oci-image'], repositoryPrefix: 'big' }),
    seedImages(upstream.host, { layerSize: options.ttfbSize, layers: options.ttfbSamples, kinds: ['oci-image'], repositoryPrefix: 'ttfb' }),
  ]);
  const uniqueBlobs = [...new Set(images.flatMap((image) => image.blobDigests))];
  let uniqueBlobBytes = 0;
  const sizes = await Promise.all(images.flatMap((image) => image.blobDigests.map(async (digest) => ({
    digest, size: await blobSize(upstream.url, image.repository, digest),
  }))));
  const sizeOf = new Map(sizes.map((s) => [s.digest, s.size]));
  for (const digest of uniqueBlobs) uniqueBlobBytes += sizeOf.get(digest)!;

  // seedImages lists the config first, then the layers.
  const bigDigest = bigImage!.blobDigests[bigImage!.blobDigests.length - 1]!;
  const big = { repository: bigImage!.repository, digest: bigDigest, size: await blobSize(upstream.url, bigImage!.repository, bigDigest) };
  const ttfb = await Promise.all(ttfbImage!.blobDigests.slice(1).map(async (digest) => ({
    repository: ttfbImage!.repository, digest, size: await blobSize(upstream.url, ttfbImage!.repository, digest),
  })));
  const manifestImage = images.find((image) => image.kind === 'oci-image')!;
  return {
    images,
    uniqueBlobs,
    uniqueBlobBytes,
    big,
    ttfb,
    manifest: {
      repository: manifestImage.repository,
      tag: manifestImage.tag,
      digest: manifestImage.digest,
      size: manifestImage.manifest.length,
    },
  };
}
