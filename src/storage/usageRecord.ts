import type { StorageDriver } from './driver.js';
import { USAGE_RECORD_PATH } from './layout.js';
import type { SizeLedger, UseTimes } from './usage.js';

/** The record object's content: `{"bytes": <total or null>, "used": {"<path>": <ms>, ...}}`. */
interface UsageDocument {
  bytes: number | null;
  used: Record<string, number>;
}

/**
 * Last-use times and the size total in one small object of the storage
 * (`USAGE_RECORD_PATH`), for S3 without Redis. Nothing is written per
 * request: uses, forgotten paths and added bytes collect in memory, and each
 * flush (`record`, from the `UsageRecorder`'s timer and at shutdown) reads
 * the object, merges them in and writes it back: one GetObject and one
 * PutObject, and none when nothing changed. Writes of this process are one
 * at a time. Reading before writing keeps what another process on the
 * storage (`pullthrough gc`, a replica) wrote before the read, but not what it
 * writes between this read and this write: two flushes that overlap so
 * lose the earlier one's changes (the object stores offer no conditional
 * write that works everywhere; Swift has none). What is lost is uses (the
 * next ones set them again), forgets and added bytes (the next eviction run
 * forgets what no longer exists and measures the size). A failed flush keeps
 * its changes for the next one. An entry is its path (~85 bytes for a blob,
 * ~150 for a manifest revision) and its time: ~100-170 bytes each; a run
 * keeps blob entries only within the grace.
 */
export class BucketUsageRecord implements UseTimes, SizeLedger {
  private used = new Map<string, number>();
  /** Paths to drop, each with the time before which its entry goes (Infinity: whatever it is). */
  private forgotten = new Map<string, number>();
  private addedBytes = 0;
  /** The exact total of the last `set`, not yet written. */
  private measured: number | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly driver: StorageDriver) {}

  async record(paths: ReadonlySet<string>, timeMs: number): Promise<void> {
    for (const path of paths) {
      this.used.set(path, Math.max(this.used.get(path) ?? 0, timeMs));
      this.forgotten.delete(path);
    }
    await this.write();
  }

  async lastUsed(): Promise<ReadonlyMap<string, number> | undefined> {
    let document: UsageDocument;
    try {
      document = await this.load();
    } catch {
      // Unreadable (the store is away): unknown, not none.
      return undefined;
    }
    const times = new Map(Object.entries(document.used));
    for (const [path, time] of this.used) times.set(path, Math.max(times.get(path) ?? 0, time));
    for (const [path, before] of this.forgotten) if ((times.get(path) ?? Infinity) < before) times.delete(path);
    return times;
  }

  async forget(paths: readonly string[], recordedBefore = Infinity): Promise<void> {
    for (const path of paths) {
      this.forgotten.set(path, Math.max(this.forgotten.get(path) ?? -Infinity, recordedBefore));
      if ((this.used.get(path) ?? Infinity) < recordedBefore) this.used.delete(path);
    }
  }

  async read(): Promise<number | undefined> {
    try {
      const bytes = this.measured ?? (await this.load()).bytes;
      return bytes === null ? undefined : bytes + this.addedBytes;
    } catch {
      // Unreadable (the store is away): the caller measures instead.
      return undefined;
    }
  }

  async add(bytes: number): Promise<undefined> {
    this.addedBytes += bytes;
    return undefined;
  }

  async set(bytes: number): Promise<void> {
    this.measured = bytes;
    this.addedBytes = 0;
    await this.write();
  }

  /** One read-modify-write of the object, after the one before it; nothing when nothing changed. */
  private write(): Promise<void> {
    const next = this.writing.then(() => this.merge());
    this.writing = next.catch(() => undefined);
    return next;
  }

  private async merge(): Promise<void> {
    if (this.used.size === 0 && this.forgotten.size === 0 && this.addedBytes === 0 && this.measured === undefined) return;
    const used = this.used;
    const forgotten = this.forgotten;
    const added = this.addedBytes;
    const measured = this.measured;
    this.used = new Map();
    this.forgotten = new Map();
    this.addedBytes = 0;
    this.measured = undefined;
    try {
      const document = await this.load();
      for (const [path, time] of used) document.used[path] = Math.max(document.used[path] ?? 0, time);
      for (const [path, before] of forgotten) if ((document.used[path] ?? Infinity) < before) delete document.used[path];
      const base = measured ?? document.bytes;
      // Without a total on record (storage from before the ledger) additions mean nothing until a walk sets one.
      document.bytes = base === null ? null : base + added;
      await this.driver.putContent(USAGE_RECORD_PATH, JSON.stringify(document));
    } catch (err) {
      // Kept for the next flush; a newer use or total wins over these.
      for (const [path, time] of used) if (!this.forgotten.has(path)) this.used.set(path, Math.max(this.used.get(path) ?? 0, time));
      for (const [path, before] of forgotten) if (!this.used.has(path)) this.forgotten.set(path, Math.max(this.forgotten.get(path) ?? -Infinity, before));
      // A total measured since then already counts these bytes.
      if (this.measured === undefined) {
        this.measured = measured;
        this.addedBytes += added;
      }
      throw err;
    }
  }

  private async load(): Promise<UsageDocument> {
    const content = await this.driver.getContent(USAGE_RECORD_PATH);
    if (!content) return { bytes: null, used: {} };
    try {
      const parsed = JSON.parse(content.toString('utf8')) as Partial<UsageDocument>;
      const bytes = typeof parsed.bytes === 'number' && Number.isFinite(parsed.bytes) && parsed.bytes >= 0 ? parsed.bytes : null;
      const used: Record<string, number> = {};
      if (parsed.used && typeof parsed.used === 'object') {
        for (const [path, time] of Object.entries(parsed.used)) if (typeof time === 'number' && Number.isFinite(time)) used[path] = time;
      }
      return { bytes, used };
    } catch {
      // A damaged record is as good as none: file times stand in, and the next run measures the size again.
      return { bytes: null, used: {} };
    }
  }
}
