import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Clock } from '../registry/clock.js';
import { isValidTag } from '../registry/names.js';
import { repositoryKey, type RepositoryRef } from '../registry/services.js';
import type { UpstreamClient } from '../upstream/client.js';
import { SingleFlight } from './singleFlight.js';

/** Limits on what one upstream tag list may cost us, across all its pages. */
export interface TagListLimits {
  /** Tags kept at most; the rest of the list is not read. */
  readonly maxTags: number;
  /** Bytes of page bodies read at most, all pages together. */
  readonly maxBytes: number;
  /** Pages followed at most. */
  readonly maxPages: number;
  /** How long a list read from the upstream answers again without asking. */
  readonly cacheMs: number;
  /** Bytes of cached lists kept in memory (a tag counts its length plus a little). */
  readonly cacheBytes: number;
}

export const DEFAULT_TAG_LIST_LIMITS: TagListLimits = {
  maxTags: 100_000,
  maxBytes: 16 * 1024 * 1024,
  maxPages: 20,
  cacheMs: 10_000,
  cacheBytes: 32 * 1024 * 1024,
};

/** An upstream's tag list, and whether it was cut at a limit. */
export interface UpstreamTagList {
  readonly tags: readonly string[];
  readonly capped: boolean;
}

export interface UpstreamTagListsOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly limits?: TagListLimits;
}

/**
 * Reads upstream tag lists within fixed bounds: the upstream writes the
 * pages, so what one request can make us hold is capped (tags, bytes and
 * pages across the whole list, not per page), concurrent requests for one
 * repository share one read, and a list read moments ago answers again
 * from memory. A list cut at a limit is served as far as it was read, with
 * a warning in the log, never as an error. Tags that break the grammar are
 * left out.
 */
export class UpstreamTagLists {
  private readonly flights = new SingleFlight<UpstreamTagList | undefined>();
  private readonly cache: LRUCache<string, UpstreamTagList>;
  private readonly limits: TagListLimits;

  constructor(private readonly options: UpstreamTagListsOptions) {
    this.limits = options.limits ?? DEFAULT_TAG_LIST_LIMITS;
    this.cache = new LRUCache({
      maxSize: this.limits.cacheBytes,
      sizeCalculation: (list) => Math.max(1, list.tags.reduce((n, t) => n + t.length + 16, 0)),
      ttl: Math.max(1, this.limits.cacheMs),
      ttlAutopurge: false,
      perf: { now: () => options.clock.now() },
    });
  }

  /** The upstream's tags for the repository, undefined when it does not know the repository. */
  async list(client: UpstreamClient, repository: RepositoryRef): Promise<UpstreamTagList | undefined> {
    const key = repositoryKey(repository);
    const cached = this.cache.get(key);
    if (cached) return cached;
    return (await this.flights.do(key, async () => {
      const list = await this.read(client, repository);
      if (list) this.cache.set(key, list);
      return list;
    })).value;
  }

  private async read(client: UpstreamClient, repository: RepositoryRef): Promise<UpstreamTagList | undefined> {
    const { maxTags, maxBytes, maxPages } = this.limits;
    const tags: string[] = [];
    let bytes = 0;
    let page: string | undefined;
    let capped = false;
    for (let i = 0; ; i++) {
      if (i >= maxPages || bytes >= maxBytes) {
        capped = true;
        break;
      }
      const result = await client.listTags(repository.name, page, maxBytes - bytes);
      if (!result) {
        if (i === 0) return undefined;
        break;
      }
      bytes += result.bytes;
      if (result.oversized) {
        capped = true;
        break;
      }
      // One by one: a spread of a huge page into push() overflows the stack.
      for (const tag of result.tags) {
        if (tags.length >= maxTags) {
          capped = true;
          break;
        }
        if (isValidTag(tag)) tags.push(tag);
      }
      if (capped || !result.next) break;
      page = result.next;
    }
    if (capped) {
      this.options.logger.warn(
        { upstream: repository.upstream, repository: repository.name, tags: tags.length, bytes, limits: { maxTags, maxBytes, maxPages } },
        'upstream tag list cut at its limit',
      );
    }
    return { tags, capped };
  }
}
