import { loadEffective } from '../config/load.js';
import { redactSecrets, unreadableFiles } from '../config/inspect.js';
import { ConfigError } from '../config/settings.js';

/**
 * `pullthrough config check` and `config show`: the configuration the other
 * commands would run on (the file, then the environment), looked at without
 * starting anything. Neither touches storage nor contacts an upstream.
 */

/** `config check`: `ok` and 0, or every problem found and 2. */
export function configCheck(options: { config?: string }): number {
  let problems: string[];
  let source = options.config ?? process.env['PULLTHROUGH_CONFIG'] ?? 'the embedded default configuration';
  try {
    const { document } = loadEffective(options.config);
    problems = unreadableFiles(document).map((p) => `${p.pointer}: ${p.message}`);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // A message of one problem (an unreadable file) is itself the problem.
    problems = err.problems.length > 0 ? [...err.problems] : [err.message];
    source = /^invalid configuration in (.*):\n/.exec(err.message)?.[1] ?? source;
  }
  if (problems.length === 0) {
    process.stdout.write('ok\n');
    return 0;
  }
  process.stdout.write(`${source}: ${problems.length} ${problems.length === 1 ? 'problem' : 'problems'}\n${problems.map((p) => `  ${p}\n`).join('')}`);
  return 2;
}

/** `config show`: the configuration in effect as JSON, defaults applied, secrets `"<redacted>"`. */
export function configShow(options: { config?: string }): number {
  const { document } = loadEffective(options.config);
  process.stdout.write(`${JSON.stringify(redactSecrets(document), null, 2)}\n`);
  return 0;
}
