import type { StorageDriver } from './driver.js';
import { UPLOADS_DIR, uploadsEntryPath } from './layout.js';

/**
 * Removes uploads of fills that died with their process. With several
 * processes on one root, only uploads untouched for `olderThanMs` go, since a
 * live fill writes more often than its body-idle timeout.
 */
export async function sweepUploads(driver: StorageDriver, olderThanMs: number, now: number): Promise<number> {
  if (driver.sweepUploads) return driver.sweepUploads(olderThanMs, now);
  let removed = 0;
  for (const name of await driver.list(UPLOADS_DIR)) {
    const path = uploadsEntryPath(name);
    const info = await driver.stat(path);
    if (info && now - info.modifiedMs >= olderThanMs) {
      await driver.delete(path);
      removed++;
    }
  }
  return removed;
}
