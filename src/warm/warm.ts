import { setTimeout as sleep } from 'node:timers/promises';
import type { Digest } from '../registry/digest.js';
import { RegistryError, UpstreamOffline } from '../registry/errors.js';
import {
  formatPlatform, parseManifest, platformMatches, registryBlobs,
  type ManifestEntry, type Platform,
} from '../registry/imageManifest.js';
import { DEFAULT_MANIFEST_ACCEPT } from '../registry/mediaTypes.js';
import { parseTag, type Tag } from '../registry/names.js';
import type { ReferrerDescriptor } from '../registry/referrers.js';
import type { BlobHandle, ManifestService, ReferrersService, RepositoryRef, TagService } from '../registry/services.js';
import type { UpstreamClient } from '../upstream/client.js';
import type { ReferenceEntry } from './references.js';
import type { ImageReference, UpstreamRouter } from '../routing/router.js';

/**
 * `pullthrough warm`: fill the cache with named images, ahead of the pulls
 * that will need them. Every fetch goes through the same proxy services the
 * server uses (tag service, manifest store, blob store), so what warm stores
 * is exactly what a pull would have stored, in the same place, under the
 * same rules, and a second warm (or a pull) finds it cached.
 */

/** What warm needs of a Mirror (it is one; tests may give less). */
export interface WarmMirror {
  readonly router: UpstreamRouter;
  readonly tags: TagService;
  readonly manifests: ManifestService;
  readonly referrers: ReferrersService;
  readonly blobs: {
    get(repository: RepositoryRef, digest: Digest): Promise<BlobHandle>;
  };
  upstream(name: string): UpstreamClient | undefined;
}

export interface RetryPolicy {
  /** Attempts after the first one. */
  readonly retries: number;
  /** First back-off; it doubles with each attempt, with jitter. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** The longest Retry-After (or rate-limit back-off) waited for; beyond it the image fails. */
  readonly maxWaitMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { retries: 4, baseDelayMs: 500, maxDelayMs: 30_000, maxWaitMs: 15 * 60_000 };

export interface WarmOptions {
  /** Only these children of an index; undefined: every child. */
  readonly platforms?: readonly Platform[] | undefined;
  /**
   * Also every referrer (signature, SBOM, attestation) of each manifest
   * warmed, and theirs in turn; only those of `artifactTypes` when given.
   */
  readonly referrers?: { readonly artifactTypes: readonly string[] | undefined } | undefined;
  /** Images, and blobs, fetched at the same time. */
  readonly jobs: number;
  readonly retry?: RetryPolicy;
  readonly reporter?: WarmReporter;
  /** For tests: how to wait between attempts. */
  readonly sleep?: (ms: number) => Promise<void>;
}

/** The outcome for one reference. */
export interface WarmResult {
  /** As given (argument, list line, compose or Kubernetes `image:`). */
  readonly reference: string;
  readonly source: string;
  /** `<upstream>/<repository>` it was routed to. */
  readonly repository: RepositoryRef | undefined;
  readonly tag: Tag | undefined;
  readonly digest: Digest | undefined;
  readonly mediaType: string | undefined;
  /** Platforms warmed: an index's children, or the image's own. */
  readonly platforms: readonly string[];
  /** Bytes of every blob the image is made of (configs and layers). */
  readonly bytes: number;
  /** Of those, the bytes fetched from the upstream in this run. */
  readonly fetchedBytes: number;
  /** Manifests fetched from the upstream in this run. */
  readonly manifestsFetched: number;
  /** Referrers warmed with the image (their blobs are in `bytes`); undefined when not asked for. */
  readonly referrers: number | undefined;
  /** `fetched`: something came from the upstream; `cached`: all of it was already here. */
  readonly status: 'fetched' | 'cached' | 'failed';
  readonly error: string | undefined;
  readonly durationMs: number;
}

/** Live progress, for bars or log lines. Every method is optional. */
export interface WarmReporter {
  started?(reference: string): void;
  /** The image's blob bytes are known: `total` of them, `cached` already here. */
  sized?(reference: string, total: number): void;
  /** `bytes` more of the image are in the cache (negative when a failed attempt is rolled back). */
  progressed?(reference: string, bytes: number): void;
  retrying?(reference: string, attempt: number, delayMs: number, reason: string): void;
  finished?(result: WarmResult): void;
}

/** What is known of an image so far. */
interface Known {
  repository: RepositoryRef | undefined;
  tag: Tag | undefined;
  digest: Digest | undefined;
}

/** Manifest and blob bytes of one image, found by walking its manifests. */
interface ImagePlan {
  readonly mediaType: string;
  readonly platforms: string[];
  readonly blobs: Map<Digest, ManifestEntry>;
  /** Every manifest visited: the top one, and the children of an index. */
  readonly manifests: Digest[];
  manifestsFetched: number;
  /** For a single image: its config, read for the platform column. */
  readonly configs: ManifestEntry[];
}

/** A tag answered from the record because the upstream could not be asked: worth another try. */
class StaleTag extends RegistryError {
  constructor(reference: string) {
    super('UNAVAILABLE', `could not ask the upstream about ${reference} (unreachable or rate-limiting); not warmed`);
  }
}

/** Index nesting followed at most (an index of indexes is legal, deeper is not seen in practice). */
const MAX_INDEX_DEPTH = 2;
/** Configs up to this size are read for the platform they describe. */
const MAX_CONFIG_READ = 1024 * 1024;

/** Runs at most `limit` tasks at once. */
class Slots {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
    try {
      return await task();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

export class Warmer {
  private readonly imageSlots: Slots;
  /** Blobs have their own slots: an image waiting for its blobs must not hold a slot they need. */
  private readonly blobSlots: Slots;
  private readonly retry: RetryPolicy;
  private readonly reporter: WarmReporter;
  private readonly wait: (ms: number) => Promise<void>;

  constructor(private readonly mirror: WarmMirror, private readonly options: WarmOptions) {
    const jobs = Math.max(1, Math.floor(options.jobs));
    this.imageSlots = new Slots(jobs);
    this.blobSlots = new Slots(jobs);
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.reporter = options.reporter ?? {};
    this.wait = options.sleep ?? ((ms) => sleep(ms));
  }

  /** Warms every entry (the same image named twice is warmed once); results in the order given. */
  async run(entries: readonly ReferenceEntry[]): Promise<WarmResult[]> {
    const unique = dedupe(entries, this.mirror.router);
    return Promise.all(unique.map((entry) => this.imageSlots.run(() => this.warmOne(entry))));
  }

  private async warmOne(entry: ReferenceEntry): Promise<WarmResult> {
    const startedAt = Date.now();
    this.reporter.started?.(entry.reference);
    // Filled in as the image is routed and resolved, so a failure still says how far it got.
    const known: Known = { repository: undefined, tag: undefined, digest: undefined };
    let result: WarmResult;
    try {
      result = await this.fill(entry, known, startedAt);
    } catch (err) {
      result = {
        reference: entry.reference, source: entry.source, ...known, mediaType: undefined, platforms: [], bytes: 0, fetchedBytes: 0,
        manifestsFetched: 0, referrers: undefined, status: 'failed', error: describe(err), durationMs: Date.now() - startedAt,
      };
    }
    this.reporter.finished?.(result);
    return result;
  }

  /** Route, resolve, walk the manifests, then fetch every blob not yet cached. */
  private async fill(entry: ReferenceEntry, known: Known, startedAt: number): Promise<WarmResult> {
    const { reference } = entry;
    const ref = this.mirror.router.parseReference(reference);
    const repository = known.repository = ref.route.repository;
    const client = this.mirror.upstream(repository.upstream);
    const tag = known.tag = ref.tag ?? (ref.digest || entry.lockedDigest ? undefined : parseTag('latest'));
    const digest = known.digest = await this.topDigest(entry, ref, repository, tag, client);
    const plan = await this.plan(repository, digest, client, this.options.platforms);
    const wanted = this.options.referrers;
    const referrers = wanted ? await this.addReferrers(repository, client, plan, wanted.artifactTypes) : undefined;
    const blobs = [...plan.blobs.values()];
    const bytes = sum(blobs.map((b) => b.size));
    this.reporter.sized?.(reference, bytes);
    const fetchedBytes = sum(await Promise.all(blobs.map((blob) =>
      this.blobSlots.run(() => this.attempt(reference, client, () => this.fetchBlob(reference, repository, blob))))));
    const platforms = plan.platforms.length > 0 ? plan.platforms : await this.configPlatforms(repository, plan.configs);
    return {
      reference, source: entry.source, repository, tag, digest, mediaType: plan.mediaType, platforms, bytes, fetchedBytes,
      manifestsFetched: plan.manifestsFetched, referrers,
      status: fetchedBytes > 0 || plan.manifestsFetched > 0 ? 'fetched' : 'cached',
      error: undefined, durationMs: Date.now() - startedAt,
    };
  }

  /** The digest to warm: locked, given, or what the tag points to now. */
  private async topDigest(
    entry: ReferenceEntry, ref: ImageReference, repository: RepositoryRef, tag: Tag | undefined, client: UpstreamClient | undefined,
  ): Promise<Digest> {
    if (entry.lockedDigest && ref.digest && entry.lockedDigest !== ref.digest) {
      throw new Error(`${entry.source}: the reference names ${ref.digest} but is locked to ${entry.lockedDigest}`);
    }
    const pinned = entry.lockedDigest ?? ref.digest;
    if (pinned) return pinned;
    return this.attempt(entry.reference, client, async () => {
      const resolution = await this.mirror.tags.resolve(repository, tag!, DEFAULT_MANIFEST_ACCEPT);
      // Offline, the record is all there is: warm then checks the cache holds the image.
      if (resolution.stale && !client?.settings.offline) throw new StaleTag(entry.reference);
      return resolution.descriptor.digest;
    });
  }

  /** Fetches (or finds) the manifest and, for an index, the wanted children (`undefined`: all); lists their blobs. */
  private async plan(
    repository: RepositoryRef, digest: Digest, client: UpstreamClient | undefined, wanted: readonly Platform[] | undefined,
  ): Promise<ImagePlan> {
    const plan: ImagePlan = { mediaType: '', platforms: [], blobs: new Map(), manifests: [], manifestsFetched: 0, configs: [] };
    const top = await this.visit(repository, digest, client, plan, 0, wanted);
    return { ...plan, mediaType: top };
  }

  /**
   * Adds the referrers of every manifest in `plan` to it (their blobs and
   * their fetches), then the referrers of those, each once; resolves with
   * how many. A referrer is warmed whole: an index of one has no platform
   * to choose.
   */
  private async addReferrers(
    repository: RepositoryRef, client: UpstreamClient | undefined, plan: ImagePlan, artifactTypes: readonly string[] | undefined,
  ): Promise<number> {
    const seen = new Set<Digest>(plan.manifests);
    const subjects = [...plan.manifests];
    let count = 0;
    for (let subject = subjects.shift(); subject !== undefined; subject = subjects.shift()) {
      for (const referrer of await this.referrersOf(repository, subject, client)) {
        if (seen.has(referrer.digest)) continue;
        if (artifactTypes && !artifactTypes.includes(referrer.artifactType ?? '')) continue;
        seen.add(referrer.digest);
        const found = await this.plan(repository, referrer.digest, client, undefined);
        for (const [digest, blob] of found.blobs) plan.blobs.set(digest, blob);
        plan.manifestsFetched += found.manifestsFetched;
        subjects.push(...found.manifests);
        count++;
      }
    }
    return count;
  }

  /** The referrers list of one manifest, as the upstream says it now (offline: as recorded). */
  private async referrersOf(
    repository: RepositoryRef, subject: Digest, client: UpstreamClient | undefined,
  ): Promise<readonly ReferrerDescriptor[]> {
    const label = `referrers of ${repository.upstream}/${repository.name}@${subject}`;
    return this.attempt(label, client, async () => {
      const listed = await this.mirror.referrers.list(repository, subject);
      if (listed.stale && !client?.settings.offline) throw new StaleTag(label);
      return listed.referrers;
    });
  }

  /** Adds one manifest (and what it references) to `plan`; returns its media type. */
  private async visit(
    repository: RepositoryRef, digest: Digest, client: UpstreamClient | undefined, plan: ImagePlan, depth: number,
    wanted: readonly Platform[] | undefined,
  ): Promise<string> {
    const label = `${repository.upstream}/${repository.name}@${digest}`;
    const { manifest, cache } = await this.attempt(label, client,
      () => this.mirror.manifests.get(repository, digest, DEFAULT_MANIFEST_ACCEPT));
    if (cache !== 'hit') plan.manifestsFetched++;
    plan.manifests.push(digest);
    const parsed = parseManifest(manifest.body, manifest.mediaType);
    if (parsed.kind === 'image') {
      for (const blob of registryBlobs(parsed)) plan.blobs.set(blob.digest, blob);
      if (depth === 0 && parsed.config) plan.configs.push(parsed.config);
      return manifest.mediaType;
    }
    if (depth >= MAX_INDEX_DEPTH) throw new Error(`${label}: indexes nested deeper than ${MAX_INDEX_DEPTH}`);
    const children = wantedChildren(parsed.children, wanted, label);
    for (const child of children) {
      await this.visit(repository, child.digest, client, plan, depth + 1, wanted);
      const platform = child.platform ? formatPlatform(child.platform) : undefined;
      // Attestations and signatures ride in indexes as `unknown/unknown`: not a platform anyone runs.
      if (platform && platform !== 'unknown/unknown' && !plan.platforms.includes(platform)) plan.platforms.push(platform);
    }
    return manifest.mediaType;
  }

  /**
   * One blob into the cache: a hit costs nothing; otherwise the fill's stream
   * is drained (that is what makes the proxy store it). Resolves with the
   * bytes this image fetched from the upstream.
   */
  private async fetchBlob(reference: string, repository: RepositoryRef, blob: ManifestEntry): Promise<number> {
    const handle = await this.mirror.blobs.get(repository, blob.digest);
    if (handle.cache === 'hit') {
      this.reporter.progressed?.(reference, blob.size);
      return 0;
    }
    const { stream } = await handle.open();
    let read = 0;
    try {
      for await (const chunk of stream) {
        read += (chunk as Buffer).length;
        this.reporter.progressed?.(reference, (chunk as Buffer).length);
      }
    } catch (err) {
      this.reporter.progressed?.(reference, -read);
      throw err;
    }
    // The stream ends only once the blob is committed and linked into the repository.
    // Coalesced: another image of this run is filling the same blob; its bytes count there.
    return handle.cache === 'miss' ? read : 0;
  }

  /** For a single image: the platform its config describes (small configs only). */
  private async configPlatforms(repository: RepositoryRef, configs: readonly ManifestEntry[]): Promise<string[]> {
    const config = configs[0];
    if (!config || config.size > MAX_CONFIG_READ) return [];
    try {
      const { stream } = await (await this.mirror.blobs.get(repository, config.digest)).open();
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      const c = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { os?: unknown; architecture?: unknown; variant?: unknown };
      if (typeof c.os !== 'string' || typeof c.architecture !== 'string') return [];
      return [formatPlatform({ os: c.os, architecture: c.architecture, ...(typeof c.variant === 'string' ? { variant: c.variant } : {}) })];
    } catch {
      // Only a label for the summary; an unreadable config is not the warm's failure.
      return [];
    }
  }

  /**
   * Runs `task`, again after upstream failures: exponential back-off with
   * jitter, and never sooner than a 429's Retry-After or the upstream's
   * current rate-limit back-off (asking during it would only prolong it).
   */
  private async attempt<T>(label: string, client: UpstreamClient | undefined, task: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await task();
      } catch (err) {
        if (!retryable(err) || attempt > this.retry.retries) throw err;
        const backoff = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attempt - 1)) * (0.75 + Math.random() * 0.5);
        const asked = retryAfterMs(err, client);
        if (asked > this.retry.maxWaitMs) {
          throw new Error(`${describe(err)}; the upstream asks to wait ${Math.ceil(asked / 1000)} s, longer than warm waits`);
        }
        const delay = Math.max(backoff, asked);
        this.reporter.retrying?.(label, attempt, delay, describe(err));
        await this.wait(delay);
      }
    }
  }
}

/** Upstream trouble that may pass: unreachable, 5xx, 429, a transfer that did not match its digest. */
function retryable(err: unknown): boolean {
  if (err instanceof UpstreamOffline) return false;
  return err instanceof RegistryError && (err.code === 'UNAVAILABLE' || err.code === 'TOOMANYREQUESTS' || err.code === 'UPSTREAM_INVALID');
}

/** What the upstream asked for: a 429's Retry-After, or the back-off the client is in (rate limit, or down until its next probe). */
function retryAfterMs(err: unknown, client: UpstreamClient | undefined): number {
  const header = err instanceof RegistryError ? err.headers?.['retry-after'] : undefined;
  const seconds = header !== undefined && /^[0-9]+$/.test(header) ? Number(header) : 0;
  return Math.max(seconds * 1000, (client?.rateLimit.backoffSeconds() ?? 0) * 1000, client?.health.retryInMs() ?? 0);
}

/** The children of an index on the wanted platforms (`undefined`: every child); none at all is a failure. */
function wantedChildren(children: readonly ManifestEntry[], wanted: readonly Platform[] | undefined, label: string): readonly ManifestEntry[] {
  if (!wanted) return children;
  const chosen = children.filter((c) => wanted.some((w) => platformMatches(w, c.platform)));
  if (chosen.length === 0) {
    const available = children.map((c) => (c.platform ? formatPlatform(c.platform) : 'none')).join(', ');
    throw new Error(`${label}: no child for ${wanted.map(formatPlatform).join(', ')} (the index has ${available})`);
  }
  return chosen;
}

/** The same image named twice (`alpine` and `docker.io/library/alpine:latest`) is warmed once. */
function dedupe(entries: readonly ReferenceEntry[], router: UpstreamRouter): ReferenceEntry[] {
  const seen = new Set<string>();
  return entries.filter((entry) => {
    let key: string;
    try {
      const ref = router.parseReference(entry.reference);
      const digest = entry.lockedDigest ?? ref.digest;
      key = `${ref.route.repository.upstream}/${ref.route.repository.name}${digest ? `@${digest}` : `:${ref.tag ?? 'latest'}`}`;
    } catch {
      key = `invalid:${entry.reference}`;
    }
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function sum(values: readonly number[]): number {
  return values.reduce((n, v) => n + v, 0);
}

function describe(err: unknown): string {
  if (err instanceof RegistryError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}
