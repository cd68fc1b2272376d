import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { RedisSettings } from '../config/settings.js';

/** Longest pause between two reconnection attempts while Redis is away. */
const MAX_RECONNECT_DELAY_MS = 2000;
/** How long `close` waits for a polite QUIT before dropping the socket. */
const QUIT_TIMEOUT_MS = 500;

/**
 * The one Redis connection of a process, shared by the descriptor tier, the
 * tag tier and the fill leases, with the failure policy they all need:
 *
 * - every command is bounded by `commandTimeoutMs`, and fails at once while
 *   the connection is down (no offline queue), so Redis trouble costs a
 *   request at most one short timeout, never a hang;
 * - `run` never throws: a failed command answers the caller's fallback,
 *   which each caller chooses to mean "not known here";
 * - an outage is logged once when it starts (warn) and once when it ends
 *   (info), whatever the number of requests in between;
 * - ioredis reconnects by itself, and the next command after that uses
 *   Redis again.
 *
 * Start-up never waits for Redis: the connection is made in the background.
 */
export class RedisConnection {
  readonly client: Redis;
  /** Prepended to every key (`pullthrough:` by default). */
  readonly prefix: string;
  readonly settings: RedisSettings;
  private healthy = true;
  private closed = false;
  private failures = 0;
  /** Until the first connection is up, a command may wait for it (one command timeout at most). */
  private connected = false;
  private readonly firstReady: Promise<void>;

  constructor(settings: RedisSettings, private readonly logger: Logger) {
    this.settings = settings;
    this.prefix = settings.keyPrefix;
    this.client = new Redis(settings.url, {
      commandTimeout: settings.commandTimeoutMs,
      // Fail fast while disconnected instead of queueing requests behind an outage.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: Math.max(1000, settings.commandTimeoutMs * 4),
      retryStrategy: (times) => Math.min(times * 100, MAX_RECONNECT_DELAY_MS),
      // RESP2: every Redis since 2.6 speaks it, and we only use strings and scripts.
      protocol: 2,
      connectionName: 'pullthrough',
      disableClientInfo: true,
      ...(settings.password !== undefined ? { password: settings.password } : {}),
    });
    // Without a listener ioredis prints every reconnection error; we log the outage once instead.
    this.client.on('error', (err: Error) => this.down(err));
    this.client.on('ready', () => this.up());
    this.firstReady = new Promise((resolve) => this.client.once('ready', () => {
      this.connected = true;
      resolve();
    }));
  }

  /** Commands that failed or timed out since start (metrics). */
  get failedCommands(): number {
    return this.failures;
  }

  /** True while the connection is up and ready for commands (the readiness probe). */
  get ready(): boolean {
    return !this.closed && this.client.status === 'ready';
  }

  /** The key for `name` under the configured prefix. */
  key(name: string): string {
    return this.prefix + name;
  }

  /**
   * Runs one Redis interaction. Resolves with its result, or with `fallback`
   * when Redis is unreachable, slow past the command timeout, or answers an
   * error. Never rejects.
   */
  async run<T, F>(command: (client: Redis) => Promise<T>, fallback: F): Promise<T | F> {
    if (this.closed) return fallback;
    // Without the offline queue, commands sent while the first connection is being made would fail for nothing.
    if (!this.connected) await this.waitForFirstConnection();
    try {
      const result = await command(this.client);
      this.up();
      return result;
    } catch (err) {
      this.failures++;
      this.down(err as Error);
      return fallback;
    }
  }

  private async waitForFirstConnection(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.firstReady,
      new Promise((resolve) => { timer = setTimeout(resolve, this.settings.commandTimeoutMs); }),
    ]);
    clearTimeout(timer);
  }

  /** Closes the connection; later `run`s answer their fallback. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.client.quit(),
        new Promise((resolve) => { timer = setTimeout(resolve, QUIT_TIMEOUT_MS); }),
      ]);
    } catch {
      // Not connected: nothing to say goodbye to.
    } finally {
      clearTimeout(timer);
      this.client.disconnect();
    }
  }

  private down(err: Error): void {
    if (this.closed || !this.healthy) return;
    this.healthy = false;
    this.logger.warn({ err: err.message }, 'Redis unavailable: serving from memory and storage until it is back');
  }

  private up(): void {
    if (this.closed || this.healthy) return;
    this.healthy = true;
    this.logger.info('Redis available again');
  }
}
