import type { BlobStore, ManifestService, ReferrersService, TagService } from '../registry/services.js';
import type { RequestEvents } from '../registry/telemetry.js';
import type { UpstreamRouter } from '../routing/router.js';

/**
 * What the HTTP layer needs of the mirror: the router and the proxy
 * services, by their interfaces. The composition root (`Mirror`) is one;
 * a test may give any other.
 */
export interface RegistryServices {
  readonly router: UpstreamRouter;
  readonly blobs: BlobStore;
  readonly manifests: ManifestService;
  readonly tags: TagService;
  readonly referrers: ReferrersService;
  /** The cached repositories as `<upstream>/<name>`, sorted. */
  catalog(): Promise<string[]>;
  /** Told of every answered registry request (metrics, the status page); none by default. */
  readonly requestEvents?: RequestEvents;
}
