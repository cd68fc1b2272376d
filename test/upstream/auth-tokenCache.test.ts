import test from 'node:test';
import assert from 'node:assert/strict';
import type { Clock } from '../../src/registry/clock.js';
import { TokenCache, tokenCacheKey, type FetchedToken } from '../../src/upstream/auth/tokenCache.js';
import { FakeClock } from '../fixtures/clock.js';

/** A clock tests move by hand. */
function fakeClock(): FakeClock {
  return new FakeClock(1_700_000_000_000);
}

/** A fetcher that counts calls and issues `t1`, `t2`, ... living `lifetimeMs` from the clock's now. */
function countingFetcher(clock: Clock, lifetimeMs = 300_000): { fetch: () => Promise<FetchedToken>; calls: () => number } {
  let calls = 0;
  return {
    calls: () => calls,
    fetch: async () => {
      const n = ++calls;
      await new Promise((r) => setImmediate(r));
      return { token: `t${n}`, expiresAt: clock.now() + lifetimeMs };
    },
  };
}

test('20 concurrent gets of one key share one fetch and one token', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  const fetcher = countingFetcher(clock);
  const tokens = await Promise.all(Array.from({ length: 20 }, () => cache.get('k', fetcher.fetch)));
  assert.equal(fetcher.calls(), 1);
  assert.deepEqual(new Set(tokens), new Set(['t1']));
  assert.equal(cache.fetching('k'), false);
});

test('different keys fetch separately', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  const fetcher = countingFetcher(clock);
  const [a, b] = await Promise.all([cache.get('a', fetcher.fetch), cache.get('b', fetcher.fetch)]);
  assert.notEqual(a, b);
  assert.equal(fetcher.calls(), 2);
});

test('a cached token is served until 10% of its lifetime remains, then refreshed once', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  const fetcher = countingFetcher(clock, 300_000);
  assert.equal(await cache.get('k', fetcher.fetch), 't1');
  await clock.advance(269_999);
  assert.equal(await cache.get('k', fetcher.fetch), 't1');
  assert.equal(fetcher.calls(), 1);
  await clock.advance(1);
  const refreshed = await Promise.all(Array.from({ length: 5 }, () => cache.get('k', fetcher.fetch)));
  assert.deepEqual(refreshed, ['t2', 't2', 't2', 't2', 't2']);
  assert.equal(fetcher.calls(), 2);
});

test('the refresh margin is at least 5 s, but never more than half a short lifetime', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  // 60 s: 10% is 6 s, more than 5 s.
  const sixty = countingFetcher(clock, 60_000);
  await cache.get('sixty', sixty.fetch);
  assert.equal(cache.peek('sixty')!.refreshAt - clock.now(), 54_000);
  // 20 s: 10% is 2 s, so the 5 s floor applies.
  const twenty = countingFetcher(clock, 20_000);
  await cache.get('twenty', twenty.fetch);
  assert.equal(cache.peek('twenty')!.refreshAt - clock.now(), 15_000);
  // 4 s: the floor is capped at half the lifetime, so the token is still used for 2 s.
  const four = countingFetcher(clock, 4_000);
  await cache.get('four', four.fetch);
  await clock.advance(1_999);
  await cache.get('four', four.fetch);
  assert.equal(four.calls(), 1);
  await clock.advance(1);
  await cache.get('four', four.fetch);
  assert.equal(four.calls(), 2);
});

test('the lifetime counts from issuedAt when the fetcher gives it', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  // Issued 250 s ago for 300 s: margin 30 s, so due in 20 s.
  await cache.get('k', async () => ({ token: 'old', issuedAt: clock.now() - 250_000, expiresAt: clock.now() + 50_000 }));
  assert.equal(cache.peek('k')!.refreshAt, clock.now() + 20_000);
});

test('a token already expired reaches its waiters but is not kept', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  let calls = 0;
  const fetch = async (): Promise<FetchedToken> => ({ token: `dead${++calls}`, expiresAt: clock.now() });
  assert.equal(await cache.get('k', fetch), 'dead1');
  assert.equal(await cache.get('k', fetch), 'dead2');
  assert.equal(cache.size, 0);
});

test('an expired entry is never served, even if never refreshed', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  const fetcher = countingFetcher(clock, 10_000);
  await cache.get('k', fetcher.fetch);
  await clock.advance(10_000);
  assert.equal(cache.peek('k'), undefined);
  assert.equal(await cache.get('k', fetcher.fetch), 't2');
});

test('a failed fetch reaches every waiter and is not cached', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  let calls = 0;
  const failing = async (): Promise<FetchedToken> => {
    calls++;
    await new Promise((r) => setImmediate(r));
    throw new Error('token service down');
  };
  const results = await Promise.allSettled(Array.from({ length: 10 }, () => cache.get('k', failing)));
  assert.equal(calls, 1);
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.equal((r as PromiseRejectedResult).reason.message, 'token service down');
  }
  assert.equal(cache.fetching('k'), false);
  const fetcher = countingFetcher(clock);
  assert.equal(await cache.get('k', fetcher.fetch), 't1', 'the next get tries again');
});

test('a fetcher that throws synchronously does not wedge the key', async () => {
  const cache = new TokenCache();
  const throwing = (): Promise<FetchedToken> => {
    throw new Error('sync');
  };
  await assert.rejects(cache.get('k', throwing), /sync/);
  assert.equal(cache.fetching('k'), false);
  assert.equal(await cache.get('k', async () => ({ token: 'ok', expiresAt: Date.now() + 60_000 })), 'ok');
});

test('invalidate drops the token only while it is still the cached one', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  const fetcher = countingFetcher(clock);
  const t1 = await cache.get('k', fetcher.fetch);
  assert.equal(cache.invalidate('k', t1), true);
  const t2 = await cache.get('k', fetcher.fetch);
  assert.equal(t2, 't2');
  // Many requests that failed with t1 report it: none of them throws t2 away.
  for (let i = 0; i < 10; i++) assert.equal(cache.invalidate('k', t1), false);
  assert.equal(await cache.get('k', fetcher.fetch), 't2');
  assert.equal(fetcher.calls(), 2);
  assert.equal(cache.invalidate('other', 't2'), false);
});

test('invalidate leaves a fetch under way alone', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  const fetcher = countingFetcher(clock);
  const pending = cache.get('k', fetcher.fetch);
  assert.equal(cache.invalidate('k', 't1'), false);
  assert.equal(await pending, 't1');
  assert.equal(cache.peek('k')?.token, 't1');
});

test('an aborted waiter stops waiting; the shared fetch goes on for the others', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const slow = async (): Promise<FetchedToken> => {
    await gate;
    return { token: 'slow', expiresAt: clock.now() + 60_000 };
  };
  const controller = new AbortController();
  const aborted = cache.get('k', slow, controller.signal);
  const patient = cache.get('k', slow);
  controller.abort(new Error('client went away'));
  await assert.rejects(aborted, /client went away/);
  release();
  assert.equal(await patient, 'slow');
  assert.equal(cache.peek('k')?.token, 'slow');
  await assert.rejects(cache.get('k', slow, AbortSignal.abort(new Error('already'))), /already/);
});

test('the cache is bounded: the least recently used key goes first', async () => {
  const clock = fakeClock();
  const cache = new TokenCache({ clock, max: 2 });
  const fetcher = countingFetcher(clock);
  await cache.get('a', fetcher.fetch);
  await cache.get('b', fetcher.fetch);
  await cache.get('a', fetcher.fetch);
  await cache.get('c', fetcher.fetch);
  assert.equal(cache.size, 2);
  assert.equal(cache.peek('b'), undefined);
  assert.equal(cache.peek('a')?.token, 't1');
});

test('tokenCacheKey names the credentials without containing the password', () => {
  const base = { upstream: 'docker.io', realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' };
  const alice = tokenCacheKey({ ...base, credentials: { username: 'alice', password: 'hunter2-secret' } });
  assert.ok(!alice.includes('hunter2-secret'));
  assert.ok(alice.includes('alice'));
  assert.equal(alice, tokenCacheKey({ ...base, credentials: { username: 'alice', password: 'hunter2-secret' } }));
  assert.notEqual(alice, tokenCacheKey({ ...base, credentials: { username: 'alice', password: 'other' } }));
  assert.notEqual(alice, tokenCacheKey({ ...base, credentials: undefined }));
  assert.notEqual(alice, tokenCacheKey({ ...base, credentials: { username: 'alice', password: 'hunter2-secret' }, scope: 'repository:x:pull' }));
  assert.notEqual(alice, tokenCacheKey({ ...base, credentials: { username: 'alice', password: 'hunter2-secret' }, upstream: 'ghcr.io' }));
});
