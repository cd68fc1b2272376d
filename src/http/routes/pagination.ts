import type { FastifyReply } from 'fastify';

/** The query parameters of a paginated list; fastify's schema has checked their types. */
export interface PageQuery {
  readonly n?: number;
  readonly last?: string;
}

/**
 * One page of a sorted list: the entries after `last`, at most `n` of them,
 * and a `Link: <...>; rel="next"` header when more remain (the spec's form).
 */
export function page(items: readonly string[], query: PageQuery, reply: FastifyReply, linkBase: string, maxPageSize: number): string[] {
  const after = query.last === undefined ? items : items.filter((item) => item > query.last!);
  // `limits.maxPageSize` caps any `n`; the Link header tells the client where the rest is.
  const n = Math.min(query.n ?? maxPageSize, maxPageSize);
  const taken = after.slice(0, n);
  if (after.length > taken.length && taken.length > 0) {
    const separator = linkBase.includes('?') ? '&' : '?';
    const last = encodeURIComponent(taken[taken.length - 1]!);
    void reply.header('link', `<${linkBase}${separator}n=${n}&last=${last}>; rel="next"`);
  }
  return taken;
}
