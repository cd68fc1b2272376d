import { CommanderError } from 'commander';
import { ConfigError } from '../config/settings.js';
import { ManifestParseError } from '../registry/imageManifest.js';
import { RegistryError } from '../registry/errors.js';
import { ReferenceSourceError } from '../warm/references.js';
import { BundleError } from '../airgap/bundle.js';
import { StartupError } from './startup.js';
import { stackTracesShown } from './stackTraces.js';
import { UsageError } from './warm.js';

/**
 * How a command ends when it throws: the exit code the README promises
 * (0 done, 1 failed, 2 bad configuration or usage) and one line, never a
 * stack unless `log.level` is debug or trace.
 */

/** Errors the commands explain in one line, without a stack: the user's input or the bundle is at fault. */
export function isReportedError(err: unknown): err is Error {
  return err instanceof UsageError || err instanceof ReferenceSourceError || err instanceof ManifestParseError
    || err instanceof BundleError || err instanceof RegistryError;
}

/** 2 for a usage mistake (as for a configuration error), 1 for a refusal or a failure. */
export function reportedExitCode(err: Error): number {
  return err instanceof BundleError || (err instanceof RegistryError && err.status >= 500) ? 1 : 2;
}


/** What to print on stderr (nothing when commander printed it already) and the exit code. */
export function failureReport(err: unknown): { code: number; text: string } {
  if (err instanceof CommanderError) {
    // Commander wrote its own message; --help and --version end as done, any usage mistake as 2.
    return { code: err.exitCode === 0 ? 0 : 2, text: '' };
  }
  const stack = (e: unknown): string => (stackTracesShown() && e instanceof Error && e.stack ? `\n${e.stack}` : '');
  if (err instanceof ConfigError) return { code: 2, text: `pullthrough: ${err.message}\n` };
  if (isReportedError(err)) return { code: reportedExitCode(err), text: `pullthrough: ${err.message}${stack(err)}\n` };
  if (err instanceof StartupError) return { code: 1, text: `pullthrough: ${err.message}${stack(err.cause)}\n` };
  const message = err instanceof Error ? err.message : String(err);
  const hint = stackTracesShown() ? '' : ' (log.level debug, or PULLTHROUGH_LOG_LEVEL=debug, shows where)';
  return { code: 1, text: `pullthrough: ${message}${hint}${stack(err)}\n` };
}
