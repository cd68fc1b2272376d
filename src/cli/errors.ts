import { ManifestParseError } from '../registry/imageManifest.js';
import { RegistryError } from '../registry/errors.js';
import { ReferenceSourceError } from '../warm/references.js';
import { BundleError } from '../airgap/bundle.js';
import { UsageError } from './warm.js';

/** Errors the commands explain in one line, without a stack: the user's input or the bundle is at fault. */
export function isReportedError(err: unknown): err is Error {
  return err instanceof UsageError || err instanceof ReferenceSourceError || err instanceof ManifestParseError
    || err instanceof BundleError || err instanceof RegistryError;
}

/** 2 for a usage mistake (as for a configuration error), 1 for a refusal or a failure. */
export function reportedExitCode(err: Error): number {
  return err instanceof BundleError || (err instanceof RegistryError && err.status >= 500) ? 1 : 2;
}
