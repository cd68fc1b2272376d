/**
 * Review 2026-12-01, finding 4: an upstream's tag list is the upstream's to
 * write. The mirror reads at most 100,000 tags and 16 MiB across all pages
 * (and 20 pages), shares one read between concurrent requests, appends
 * without spreading a page into push(), and parses Link in one linear pass.
 *
 * What is asserted is behaviour, never a time or a memory reading: six
 * concurrent requests for a list of 20 pages of 10 MB share one read that
 * stops at the caps (tags, bytes, pages), and a crafted Link header is
 * parsed to its real target (a backtracking regex took 5.5 s on it).
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { request } from '../../src/upstream/undici.js';
import { nextPageLink } from '../../src/upstream/link.js';
import { ROUTES, startAttack, type Attack, type MaliciousUpstream } from '../fixtures/malicious.js';
import type { RunningProxy } from '../fixtures/proxy.js';

/** Documented in README "Security": what one list may cost, whatever the upstream sends. */
const MAX_TAGS = 100_000;

let attack: Attack;
let evil: MaliciousUpstream;
let proxy: RunningProxy;

before(async () => {
  attack = await startAttack((url) => [{ name: 'evil.test', url }]);
  ({ evil, proxy } = attack);
});

after(async () => {
  await attack?.stop();
});

/** The whole list as a client reads it: page after page (the mirror hands out 10,000 at a time), following Link. */
async function tagList(repository: string): Promise<{ status: number; tags: string[] }> {
  const tags: string[] = [];
  let path: string | undefined = `/v2/evil.test/${repository}/tags/list`;
  while (path !== undefined) {
    const res = await request(`${proxy.url}${path}`);
    const parsed = JSON.parse(await res.body.text()) as { tags?: string[] };
    if (res.statusCode !== 200) return { status: res.statusCode, tags };
    for (const tag of parsed.tags ?? []) tags.push(tag);
    path = nextPageLink(typeof res.headers['link'] === 'string' ? res.headers['link'] : undefined);
  }
  return { status: 200, tags };
}

test('the Link parser is linear and reads what registries send', () => {
  assert.equal(nextPageLink('</v2/a/tags/list?n=2&last=b>; rel="next"'), '/v2/a/tags/list?n=2&last=b');
  assert.equal(nextPageLink('<https://x/prev>; rel="prev", </v2/a/tags/list?last=c>; rel=next'), '/v2/a/tags/list?last=c');
  assert.equal(nextPageLink('</v2/a/tags/list?last=c>; rel="prev"'), undefined);
  assert.equal(nextPageLink(`${'<'.repeat(100_000)}X`), undefined);
  assert.equal(nextPageLink(`<${'a'.repeat(5000)}>; rel="next"`), undefined, 'an absurd target is not followed');
  assert.equal(nextPageLink(undefined), undefined);
});

test('one page of 200,000 tags: capped at 100,000, a 200 (not a 500 from push(...page))', async () => {
  const { status, tags } = await tagList(ROUTES.wideTagList);
  assert.equal(status, 200);
  assert.equal(tags.length, MAX_TAGS);
});

test('20 pages of 100,000 long tags, six requests at once: one upstream read, capped at 100,000 tags and 16 MiB', async () => {
  const before = evil.requests.length;
  const answers = await Promise.all(Array.from({ length: 6 }, async () => {
    const res = await request(`${proxy.url}/v2/evil.test/${ROUTES.bigTagList}/tags/list`);
    return { status: res.statusCode, tags: (JSON.parse(await res.body.text()) as { tags: string[] }).tags };
  }));
  for (const { status, tags } of answers) {
    assert.equal(status, 200);
    assert.equal(tags.length, 10_000, 'the first page of the answer');
  }
  const whole = await tagList(ROUTES.bigTagList);
  assert.ok(whole.tags.length > 0 && whole.tags.length <= MAX_TAGS, `${whole.tags.length} tags in all`);
  const pages = evil.requests.slice(before).filter((r) => r.url.startsWith(`/v2/${ROUTES.bigTagList}/tags/list`));
  // A page is 10.3 MB: a second one would pass the 16 MiB budget, so at most two are asked for, and the second is not read whole.
  assert.ok(pages.length <= 2, `the six requests shared one read of at most 16 MiB (${pages.length} pages asked)`);
  const again = await tagList(ROUTES.bigTagList);
  assert.equal(again.status, 200);
  assert.equal(evil.requests.slice(before).filter((r) => r.url.startsWith(`/v2/${ROUTES.bigTagList}/`)).length, pages.length, 'and it is cached briefly');
});

test('20 pages with a crafted Link header: the linear parser finds each real next page behind the crafted part', async () => {
  const { status, tags } = await tagList(ROUTES.craftedLink);
  assert.equal(status, 200);
  assert.deepEqual(tags, Array.from({ length: 20 }, (_, i) => `p${i}`).sort(), 'every page, found behind the crafted part');
});
