/**
 * `npm test`: node's test runner over every `dist/test/<folder>/*.test.js`,
 * three files at a time, each in a process of its own, as `node --test`
 * runs them, but started in `fixtures/suiteOrder.ts`'s order. Files named on
 * the command line run in that order too; none named: the whole suite.
 * `--test-name-pattern=RE` (repeatable) runs only the tests it matches. The
 * output is node's own reporter (TAP, or spec on a terminal) with its
 * summary lines; any failure makes the exit code 1.
 */
import { resolve } from 'node:path';
import { run } from 'node:test';
import { spec, tap } from 'node:test/reporters';
import { startOrder, suiteFiles } from './fixtures/suiteOrder.js';

const TEST_ROOT = new URL('.', import.meta.url).pathname;

const PATTERN_FLAG = '--test-name-pattern=';
const args = process.argv.slice(2);
const testNamePatterns = args.filter((a) => a.startsWith(PATTERN_FLAG)).map((a) => a.slice(PATTERN_FLAG.length));
const named = args.filter((a) => !a.startsWith(PATTERN_FLAG)).map((file) => resolve(file));
const files = startOrder(TEST_ROOT, named.length > 0 ? named : suiteFiles(TEST_ROOT));
const stream = run({ files, concurrency: 3, ...(testNamePatterns.length > 0 ? { testNamePatterns } : {}) });
stream.on('test:fail', (data) => {
  if (!data.todo) process.exitCode = 1;
});
stream.compose(process.stdout.isTTY ? new spec() : tap).pipe(process.stdout);
