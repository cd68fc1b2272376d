import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { loadConfig } from '../config/load.js';
import { createLogger } from '../config/logger.js';
import { parsePlatforms } from '../registry/imageManifest.js';
import type { Digest } from '../registry/digest.js';
import { Mirror } from '../mirror.js';
import { addStoredPins } from '../storage/pins.js';
import { PINS_PATH } from '../storage/layout.js';
import { formatLock, fromArguments, parseEnvFile, parseReferenceFile, type ReferenceEntry, type Variables } from '../warm/references.js';
import { DEFAULT_RETRY, Warmer, type WarmResult } from '../warm/warm.js';
import { formatBytes, formatTable } from './format.js';
import { BarReporter, LineReporter, type ClosableReporter } from './progress.js';

/** The options that give reference files their variables (`--env`, `--env-file`). */
export interface VariableOptions {
  /** `NAME` (its value from the environment) or `NAME=value`; repeatable. */
  readonly env: string[];
  readonly envFile: string[];
}

export interface WarmCommandOptions extends VariableOptions {
  readonly config?: string;
  readonly from: string[];
  readonly platform?: string;
  readonly jobs: string;
  readonly retries: string;
  readonly pin?: boolean;
  readonly lock?: string;
  readonly referrers?: boolean;
  /** Referrers of these types only (implies `referrers`); repeatable. */
  readonly artifactType: string[];
}

/** A usage mistake: reported in one line, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Commander's collector for repeatable options (`--from a --from b`). */
export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * The variables compose files may use: those of the `--env-file` files,
 * then each `--env NAME=value`, or `--env NAME` with its value from the
 * environment. Nothing else of the environment.
 */
export function variablesFrom(options: VariableOptions, env: NodeJS.ProcessEnv = process.env): Variables {
  const variables: Record<string, string> = {};
  for (const file of options.envFile) Object.assign(variables, parseEnvFile(readText(file), file));
  for (const entry of options.env) {
    const eq = entry.indexOf('=');
    const name = eq < 0 ? entry : entry.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UsageError(`--env ${entry}: not a variable name`);
    const value = eq < 0 ? env[name] : entry.slice(eq + 1);
    if (value === undefined) throw new UsageError(`--env ${name}: ${name} is not set in the environment`);
    variables[name] = value;
  }
  return variables;
}

/** Every reference from the arguments and the `--from` files (lists, locks, compose files, Kubernetes manifests). */
export function gatherReferences(references: readonly string[], files: readonly string[], variables: Variables = {}): ReferenceEntry[] {
  const entries = fromArguments(references);
  for (const file of files) entries.push(...parseReferenceFile(readText(file), file, variables));
  return entries;
}

export function positiveInteger(value: string, name: string, min = 1): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${name} must be an integer of at least ${min}, got ${value}`);
  return n;
}

/**
 * `pullthrough warm`: fetch the named images into the configured storage,
 * whether or not a server runs on it. Resolves with the exit code: 1 when
 * any reference failed.
 */
export async function warm(references: string[], options: WarmCommandOptions): Promise<number> {
  const config = loadConfig(options.config);
  const entries = gatherReferences(references, options.from, variablesFrom(options));
  if (entries.length === 0) throw new UsageError('nothing to warm: give references, or --from FILE');
  const platforms = options.platform ? parsePlatforms(options.platform) : undefined;
  const jobs = positiveInteger(options.jobs, '--jobs');
  const retries = positiveInteger(options.retries, '--retries', 0);
  const referrers = options.referrers || options.artifactType.length > 0
    ? { artifactTypes: options.artifactType.length > 0 ? options.artifactType : undefined } : undefined;
  const tty = process.stderr.isTTY === true;
  // Logs go to stderr, and only errors on a terminal, where they would tear the bars apart.
  const logger = createLogger(tty ? 'error' : 'warn', pino.destination(2));
  const mirror = await Mirror.create({ config, logger });
  // Not mirror.start(): that sweeps _uploads, which would cut the fills of a server running on this root.
  await mirror.driver.init();
  const reporter: ClosableReporter = tty ? new BarReporter(process.stderr) : new LineReporter(process.stderr);
  let results: WarmResult[];
  try {
    results = await new Warmer(mirror, { platforms, referrers, jobs, retry: { ...DEFAULT_RETRY, retries }, reporter }).run(entries);
  } finally {
    reporter.stop();
    await mirror.close(5_000);
  }
  process.stdout.write(summary(results));
  const ok = results.filter(isWarmed);
  const failed = results.length - ok.length;
  if (options.pin && ok.length > 0) {
    const pins = ok.map((r) => ({ pin: `${r.repository.upstream}/${r.repository.name}@${r.digest}`, reference: r.reference }));
    await addStoredPins(mirror.driver, pins, mirror.clock.now());
    process.stdout.write(`pinned ${ok.length} images in ${join(config.storageRoot, PINS_PATH)}\n`);
  }
  if (options.lock) {
    // A lock is only ever complete: with a failed reference it would quietly lose an image.
    if (failed > 0) process.stderr.write(`pullthrough warm: ${options.lock} not written: ${failed} references failed\n`);
    else await writeLock(options.lock, ok);
  }
  return failed > 0 ? 1 : 0;
}

type Warmed = WarmResult & { readonly repository: NonNullable<WarmResult['repository']>; readonly digest: Digest };

function isWarmed(r: WarmResult): r is Warmed {
  return r.status !== 'failed' && r.repository !== undefined && r.digest !== undefined;
}

async function writeLock(path: string, results: readonly Warmed[]): Promise<void> {
  // A name nobody can guess, created afresh ('wx'): a link planted in its place is never followed.
  const temp = `${path}.${randomUUID()}.tmp`;
  try {
    await writeFile(temp, formatLock(results.map((r) => ({ reference: r.reference, digest: r.digest }))), { flag: 'wx', mode: 0o644 });
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}

/** The table at the end, then the failures with their reasons, then the totals. A REFERRERS column when they were warmed. */
export function summary(results: readonly WarmResult[]): string {
  const withReferrers = results.some((r) => r.referrers !== undefined);
  const rows = [['REFERENCE', 'DIGEST', 'PLATFORMS', ...(withReferrers ? ['REFERRERS'] : []), 'SIZE', 'FETCHED', 'STATUS']];
  for (const r of results) {
    rows.push([
      r.reference,
      r.digest ?? '-',
      r.platforms.length > 0 ? r.platforms.join(',') : '-',
      ...(withReferrers ? [r.referrers === undefined ? '-' : String(r.referrers)] : []),
      r.status === 'failed' ? '-' : formatBytes(r.bytes),
      r.status === 'failed' ? '-' : formatBytes(r.fetchedBytes),
      r.status,
    ]);
  }
  const failures = results.filter((r) => r.status === 'failed').map((r) => `failed: ${r.reference} (${r.source}): ${r.error}\n`);
  const total = results.reduce((n, r) => n + r.bytes, 0);
  const fetched = results.reduce((n, r) => n + r.fetchedBytes, 0);
  const referrers = withReferrers ? `${results.reduce((n, r) => n + (r.referrers ?? 0), 0)} referrers, ` : '';
  return `\n${formatTable(rows)}\n${failures.join('')}`
    + `${results.length} images, ${referrers}${formatBytes(total)}, fetched ${formatBytes(fetched)}; ${failures.length} failed\n`;
}
