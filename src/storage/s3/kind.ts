import type { StorageDriver } from '../driver.js';
import type { S3StorageDriver } from './driver.js';

/**
 * Tells an S3 driver from the others without importing it: the driver
 * module loads the AWS SDK (about 20 MiB of a process's memory), which a
 * process on the filesystem never needs (issue 19, idle memory).
 */
export const S3_DRIVER_KIND = 's3';

export function isS3Driver(driver: StorageDriver): driver is S3StorageDriver {
  return (driver as { readonly kind?: unknown }).kind === S3_DRIVER_KIND;
}
