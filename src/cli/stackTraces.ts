/*
 * Whether failures print their stack. Its own module so that serve and gc
 * can set it without loading the error report, which imports every
 * command's error types (warm, bundle: yaml, tar-stream, cli-progress).
 */
let stackTraces = false;

/** Called once a command knows its log level: at debug or trace, failures also print their stack. */
export function showStackTraces(logLevel: string): void {
  stackTraces = logLevel === 'debug' || logLevel === 'trace';
}

export function stackTracesShown(): boolean {
  return stackTraces;
}
