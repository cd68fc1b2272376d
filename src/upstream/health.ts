import type { Logger } from 'pino';
import type { UpstreamHealthSettings } from '../config/settings.js';
import type { Clock, Timer } from '../registry/clock.js';
import { UpstreamDown } from '../registry/errors.js';

export type UpstreamStatus = 'up' | 'down';

/** One upstream's health as metrics and the status page read it (`UpstreamHealth.state`). */
export interface UpstreamHealthState {
  readonly status: UpstreamStatus;
  /** Requests that failed in a row (connection error, timeout, 5xx); 0 after any answer. */
  readonly consecutiveFailures: number;
  /** When the status last changed, on the mirror's clock; undefined until it first does. */
  readonly since: number | undefined;
  /** While down: when the next probe goes out. */
  readonly nextProbeAt: number | undefined;
  /** The latest failure, e.g. `upstream docker.io is unreachable (ECONNREFUSED)`. */
  readonly lastError: string | undefined;
  /** When the upstream last answered (below 500), on the mirror's clock; undefined before any answer. */
  readonly lastSuccessAt: number | undefined;
  /** When a request last failed; undefined before any failure. */
  readonly lastFailureAt: number | undefined;
  /** How often the upstream has gone down since start. */
  readonly downCount: number;
}

/** Why a request failed: a timeout marks the upstream down at once, other failures after `failures` in a row. */
export type FailureKind = 'timeout' | 'error';

export interface UpstreamHealthOptions {
  readonly upstream: string;
  readonly settings: UpstreamHealthSettings;
  /** Down windows and probes run on it; tests move a fake one. */
  readonly clock: Clock;
  readonly logger: Logger;
  /** Asks the upstream whether it answers at all (`GET /v2/`): true for any answer below 500. Never throws. */
  readonly probe: () => Promise<boolean>;
}

/**
 * Whether one upstream is worth asking. Every request's outcome is told here:
 * after `failures` failed requests in a row, or one timeout, the upstream is
 * **down** for a window. While down, `check` throws `UpstreamDown` at once, so
 * the request path never waits on an upstream that is known not to answer:
 * cached tags are served stale, misses fail with 503. One probe per window
 * (on the clock) asks `GET /v2/`; the first answer (the probe's, or a request
 * that was already under way) ends the down state. Each failed probe doubles
 * the window, up to `maxBackoffMs`; it starts small again once a request
 * succeeds. Each transition is logged once.
 */
export class UpstreamHealth {
  private status: UpstreamStatus = 'up';
  private failures = 0;
  private since: number | undefined;
  private lastError: string | undefined;
  private lastSuccessAt: number | undefined;
  private lastFailureAt: number | undefined;
  private downCount = 0;
  /** The length of the next down window. */
  private windowMs: number;
  private probeTimer: Timer | undefined;
  private nextProbeAt: number | undefined;
  private closed = false;

  constructor(private readonly options: UpstreamHealthOptions) {
    this.windowMs = options.settings.backoffMs;
  }

  get state(): UpstreamHealthState {
    return {
      status: this.status,
      consecutiveFailures: this.failures,
      since: this.since,
      nextProbeAt: this.nextProbeAt,
      lastError: this.lastError,
      lastSuccessAt: this.lastSuccessAt,
      lastFailureAt: this.lastFailureAt,
      downCount: this.downCount,
    };
  }

  get isDown(): boolean {
    return this.status === 'down';
  }

  /** Until the next probe while down (0 when up, or while a probe is under way): when asking again may help. */
  retryInMs(): number {
    return this.status === 'down' && this.nextProbeAt !== undefined ? Math.max(0, this.nextProbeAt - this.options.clock.now()) : 0;
  }

  /** Throws `UpstreamDown` while the upstream is down: the caller must not send its request. */
  check(): void {
    if (this.status !== 'down') return;
    throw new UpstreamDown(this.options.upstream, this.nextProbeAt === undefined ? undefined : this.retryInMs());
  }

  /** The upstream answered (any status below 500). */
  answered(): void {
    this.failures = 0;
    this.lastSuccessAt = this.options.clock.now();
    if (this.status === 'down') this.up('a request was answered');
    else this.windowMs = this.options.settings.backoffMs;
  }

  /** A request failed: no answer (connection error, timeout) or a 5xx. */
  failed(reason: string, kind: FailureKind): void {
    this.failures++;
    this.lastError = reason;
    this.lastFailureAt = this.options.clock.now();
    // Requests sent before the upstream went down still come back; they change nothing.
    if (this.status === 'down' || this.closed) return;
    if (kind === 'timeout' || this.failures >= this.options.settings.failures) this.down(reason);
  }

  /** Stops probing (shutdown). */
  close(): void {
    this.closed = true;
    this.probeTimer?.cancel();
    this.probeTimer = undefined;
  }

  private down(reason: string): void {
    this.status = 'down';
    this.since = this.options.clock.now();
    this.downCount++;
    const windowMs = this.nextWindow();
    this.options.logger.warn(
      { upstream: this.options.upstream, reason, failures: this.failures, retryInMs: windowMs },
      'upstream is down: serving what is cached and failing misses at once until it answers again',
    );
    this.scheduleProbe(windowMs);
  }

  private up(how: string): void {
    const downForMs = this.since === undefined ? undefined : this.options.clock.now() - this.since;
    this.status = 'up';
    this.since = this.options.clock.now();
    this.failures = 0;
    this.nextProbeAt = undefined;
    this.probeTimer?.cancel();
    this.probeTimer = undefined;
    this.options.logger.info({ upstream: this.options.upstream, downForMs, how }, 'upstream answers again');
  }

  /** The window to wait now; the one after it is twice as long, up to the maximum. */
  private nextWindow(): number {
    const windowMs = this.windowMs;
    this.windowMs = Math.min(windowMs * 2, this.options.settings.maxBackoffMs);
    return windowMs;
  }

  private scheduleProbe(ms: number): void {
    this.nextProbeAt = this.options.clock.now() + ms;
    this.probeTimer = this.options.clock.setTimeout(() => void this.runProbe(), ms);
  }

  private async runProbe(): Promise<void> {
    this.probeTimer = undefined;
    const answered = await this.options.probe();
    if (this.closed || this.status !== 'down') return;
    if (answered) {
      this.up('the probe was answered');
      return;
    }
    const windowMs = this.nextWindow();
    this.options.logger.debug({ upstream: this.options.upstream, retryInMs: windowMs }, 'upstream still down after a probe');
    this.scheduleProbe(windowMs);
  }
}
