/**
 * Time as a dependency (STYLE.md): every policy that waits or compares
 * against "now" (freshness, maxStale, negative cache, eviction grace and
 * idle, usage flush, token expiry, leases, back-off) takes a `Clock`, so a
 * test can move time forward instead of sleeping.
 */
export interface Clock {
  /** Milliseconds since the epoch, as `Date.now()`. */
  now(): number;
  /** Calls `fn` once after `ms`; the timer never keeps the process alive. */
  setTimeout(fn: () => void, ms: number): Timer;
  /** Calls `fn` every `ms`; the timer never keeps the process alive. */
  setInterval(fn: () => void, ms: number): Timer;
  /** Resolves after `ms` (the wait, too, never keeps the process alive). */
  sleep(ms: number): Promise<void>;
}

export interface Timer {
  cancel(): void;
}

/** The real clock. Timers are unref'd: a pending policy timer never holds a process open. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const handle = setTimeout(fn, ms);
    handle.unref();
    return { cancel: () => clearTimeout(handle) };
  },
  setInterval(fn, ms) {
    const handle = setInterval(fn, ms);
    handle.unref();
    return { cancel: () => clearInterval(handle) };
  },
  sleep: (ms) => new Promise((resolve) => { setTimeout(resolve, ms).unref(); }),
};
