/**
 * One call per key at a time: callers that arrive while a call for the same
 * key is running share its result (Go's singleflight). The entry is dropped
 * when the call settles, so a failure is not remembered.
 */
export class SingleFlight<V> {
  private readonly running = new Map<string, Promise<V>>();

  /** Runs `fn` unless a call for `key` is running; `shared` tells the caller which happened. */
  async do(key: string, fn: () => Promise<V>): Promise<{ value: V; shared: boolean }> {
    const existing = this.running.get(key);
    if (existing) return { value: await existing, shared: true };
    const call = fn().finally(() => this.running.delete(key));
    this.running.set(key, call);
    return { value: await call, shared: false };
  }
}
