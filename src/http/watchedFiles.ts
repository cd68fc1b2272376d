/**
 * Files the listener keeps reading while it runs: certificates and keys
 * (renewed in place by cert-manager or an ACME client) and the htpasswd
 * file. The HTTP layer never touches the file system; the configuration
 * layer implements this (`config/watchedFiles.ts`).
 */
export interface WatchedFiles {
  /** The files' paths, in the order they were given. */
  readonly paths: readonly string[];
  /** Each file's contents as last read, in the same order. */
  current(): readonly Buffer[];
  /**
   * Calls `listener` with every file's contents after any of them changed
   * (changes within a short moment come as one call). A listener that throws
   * is the listener's problem: the watch goes on.
   */
  onChange(listener: (contents: readonly Buffer[]) => void): void;
  /** Stops watching. */
  close(): void;
}
