/**
 * The fill slots of one upstream: a bounded number of fills at once, first
 * come first served past it, and a detached fill (its clients gone) cut to
 * make room for a waiting one; a fill that still has readers never is.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { FillSlots, type PreemptibleFill } from '../../src/proxy/fillSlots.js';

class Fill implements PreemptibleFill {
  detached = false;
  aborted: Error | undefined;
  abort(reason: Error): void {
    this.aborted = reason;
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

test('past the limit fills wait in order; a slot given back goes to the first waiting', async () => {
  const slots = new FillSlots({ limit: 2 });
  const [a, b] = [await slots.acquire(), await slots.acquire()];
  const order: string[] = [];
  const c = slots.acquire().then((s) => { order.push('c'); return s; });
  const d = slots.acquire().then((s) => { order.push('d'); return s; });
  await settle();
  assert.deepEqual([slots.active, slots.queued], [2, 2]);
  a.release();
  a.release();
  await settle();
  assert.deepEqual(order, ['c'], 'released twice, given once');
  b.release();
  await settle();
  assert.deepEqual(order, ['c', 'd']);
  (await c).release();
  (await d).release();
  assert.equal(slots.active, 0);
});

test('a waiting fill cuts the oldest detached fill, never one with readers', async () => {
  const slots = new FillSlots({ limit: 2 });
  const [busy, idle] = [new Fill(), new Fill()];
  const first = await slots.acquire();
  first.occupy(busy);
  const second = await slots.acquire();
  second.occupy(idle);
  const waiting = slots.acquire();
  await settle();
  assert.equal(busy.aborted ?? idle.aborted, undefined, 'nobody is detached yet: the new fill waits');
  idle.detached = true;
  slots.detached();
  assert.ok(idle.aborted, 'the detached fill is cut');
  assert.equal(busy.aborted, undefined);
  second.release(); // the cut fill settles and gives its slot back
  const third = await waiting;
  assert.equal(slots.active, 2);
  third.release();
  first.release();
});

test('close refuses the waiting fills (shutdown)', async () => {
  const slots = new FillSlots({ limit: 1 });
  const held = await slots.acquire();
  const waiting = slots.acquire();
  slots.close();
  await assert.rejects(waiting, /shutting down/);
  await assert.rejects(slots.acquire(), /shutting down/);
  held.release();
});
