import type { Clock, Timer } from '../registry/clock.js';

/**
 * The end of one upstream request on the mirror's clock (`revalidateTimeout`
 * on the request path, a probe's limit), besides undici's socket timeouts:
 * `signal` aborts when the time is up, or when the caller's own signal does.
 * `expired` tells the two apart: only an expired deadline is the upstream's fault.
 */
export class Deadline {
  readonly signal: AbortSignal | undefined;
  private expiredAt: number | undefined;
  private readonly timer: Timer | undefined;

  constructor(clock: Clock, readonly ms: number | undefined, caller?: AbortSignal) {
    if (ms === undefined) {
      this.signal = caller;
      return;
    }
    const controller = new AbortController();
    this.timer = clock.setTimeout(() => {
      this.expiredAt = clock.now();
      controller.abort(new DeadlineExpired(ms));
    }, ms);
    this.signal = caller ? AbortSignal.any([controller.signal, caller]) : controller.signal;
  }

  get expired(): boolean {
    return this.expiredAt !== undefined;
  }

  cancel(): void {
    this.timer?.cancel();
  }
}

/** The reason a `Deadline` aborts with; its message is safe to show. */
export class DeadlineExpired extends Error {
  constructor(readonly ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = 'DeadlineExpired';
  }
}

/** Waits for `promise` unless `signal` aborts first (then rejects with its reason); the promise itself goes on. */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** `clock.sleep(ms)`, cut short (rejecting with the reason) when `signal` aborts. */
export function sleep(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return abortable(clock.sleep(ms), signal);
}
