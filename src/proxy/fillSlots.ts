import { UpstreamUnavailable } from '../registry/errors.js';

/** A running fill as the slots see it: whether anyone still reads it, and how to cut it. */
export interface PreemptibleFill {
  /** True while the fill runs with no reader left (it goes on for the next pull). */
  readonly detached: boolean;
  abort(reason: Error): void;
}

/** One fill's hold on a slot, from before its upstream request until the fill has settled. */
export interface FillSlot {
  /** The fill this slot now runs: while it is detached, a waiting fill may cut it. */
  occupy(fill: PreemptibleFill): void;
  /** Gives the slot back (idempotent). */
  release(): void;
}

export interface FillSlotsOptions {
  /** Fills that may run at once. */
  readonly limit: number;
}

class Slot implements FillSlot {
  fill: PreemptibleFill | undefined;
  cut = false;
  private released = false;

  constructor(private readonly slots: FillSlots) {}

  occupy(fill: PreemptibleFill): void {
    this.fill = fill;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.slots.freed(this);
  }
}

/**
 * How many blob fills of one upstream run at once. A client can start a
 * fill and leave at once, and a fill goes on without its clients (so that
 * the next pull is a hit): without a bound, a few dozen such requests to a
 * slow upstream would hold its connections for the detached-fill timeout.
 *
 * Past the limit, a new fill waits for a slot, first come first served, and
 * detached fills are the first to go: while anyone waits, the oldest fill
 * nobody reads any more is cut to make room (its next pull starts it
 * again). Fills that still have readers are never cut for another.
 *
 * The one place fills queue; the hardening of the fill queue (limits per
 * client, a bound on waiting) extends this class.
 */
export class FillSlots {
  private readonly running = new Set<Slot>();
  private readonly waiting: { grant: (slot: Slot) => void; refuse: (err: Error) => void }[] = [];
  private closed = false;

  constructor(private readonly options: FillSlotsOptions) {}

  /** Fills holding a slot now. */
  get active(): number {
    return this.running.size;
  }

  /** Fills waiting for a slot now. */
  get queued(): number {
    return this.waiting.length;
  }

  /** A slot, at once or once one is free; rejects after `close`. */
  acquire(): Promise<FillSlot> {
    if (this.closed) return Promise.reject(new UpstreamUnavailable('pullthrough is shutting down'));
    if (this.running.size < this.options.limit) return Promise.resolve(this.take());
    const granted = new Promise<FillSlot>((grant, refuse) => this.waiting.push({ grant, refuse }));
    this.preempt();
    return granted;
  }

  /** A running fill lost its last reader: if a fill is waiting, it may take that one's slot. */
  detached(): void {
    this.preempt();
  }

  /** Shutdown: fills still waiting for a slot fail, and no new one waits. */
  close(): void {
    this.closed = true;
    for (const waiter of this.waiting.splice(0)) waiter.refuse(new UpstreamUnavailable('pullthrough is shutting down'));
  }

  /** @internal */
  freed(slot: Slot): void {
    this.running.delete(slot);
    const next = this.waiting.shift();
    if (next) next.grant(this.take());
  }

  private take(): Slot {
    const slot = new Slot(this);
    this.running.add(slot);
    return slot;
  }

  /** Cuts the oldest detached fill, once for each waiting fill that no cut already makes room for. */
  private preempt(): void {
    const cutting = [...this.running].filter((s) => s.cut).length;
    if (this.waiting.length <= cutting) return;
    // A Set iterates in insertion order: the first detached one is the oldest.
    for (const slot of this.running) {
      if (slot.cut || !slot.fill?.detached) continue;
      slot.cut = true;
      slot.fill.abort(new UpstreamUnavailable('blob fill cut: its clients left, and the upstream\'s connections are needed for other fills'));
      return;
    }
  }
}
