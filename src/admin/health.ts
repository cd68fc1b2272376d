import type { Logger } from 'pino';
import type { UpstreamHealthState } from '../upstream/health.js';

/** What is known of one upstream's health. Times are milliseconds since the epoch. */
export interface UpstreamHealth {
  /** `up`: its last contact succeeded; `down`: it failed; `unknown`: no contact yet (or offline). */
  readonly state: 'up' | 'down' | 'unknown';
  readonly lastSuccessAt: number | undefined;
  readonly lastFailureAt: number | undefined;
  /** What went wrong last, for the status page: our words, and the upstream's own message when it sent one. */
  readonly lastError: string | undefined;
}

/**
 * Where the operator's side reads upstream health. The mirror hands the
 * metrics the upstream clients' own health (down after repeated failures or
 * a timeout, up again when a request or the probe is answered), through
 * `reportedHealth`; without one, `LastContact` below is the source: the
 * outcome of the latest exchange.
 */
export interface UpstreamHealthSource {
  health(upstream: string): UpstreamHealth;
}

/** An upstream client's health as the metrics and the status page show it: `unknown` until the first contact. */
export function reportedHealth(state: UpstreamHealthState | undefined): UpstreamHealth {
  const contacted = state !== undefined && (state.lastSuccessAt !== undefined || state.lastFailureAt !== undefined);
  return {
    state: contacted ? state.status : 'unknown',
    lastSuccessAt: state?.lastSuccessAt,
    lastFailureAt: state?.lastFailureAt,
    lastError: state?.lastError,
  };
}

/**
 * The latest success and failure of one upstream, fed by its client's and
 * fills' events. Logs one structured line when the state changes.
 */
export class LastContact {
  private successAt: number | undefined;
  private failureAt: number | undefined;
  private error: string | undefined;

  constructor(private readonly options: { readonly upstream: string; readonly logger: Logger; readonly now: () => number }) {}

  succeeded(): void {
    const was = this.state;
    this.successAt = this.options.now();
    if (was === 'down') this.options.logger.info({ upstream: this.options.upstream, lastError: this.error }, 'upstream answering again');
  }

  failed(reason: string): void {
    const was = this.state;
    this.failureAt = this.options.now();
    this.error = reason;
    if (was !== 'down') this.options.logger.warn({ upstream: this.options.upstream, error: reason }, 'upstream failing');
  }

  get state(): UpstreamHealth['state'] {
    if (this.successAt === undefined && this.failureAt === undefined) return 'unknown';
    return (this.failureAt ?? -Infinity) > (this.successAt ?? -Infinity) ? 'down' : 'up';
  }

  get health(): UpstreamHealth {
    return { state: this.state, lastSuccessAt: this.successAt, lastFailureAt: this.failureAt, lastError: this.error };
  }
}
