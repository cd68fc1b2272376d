/**
 * The files the build generates (`cli/generate.ts`): read to see whether
 * they are current, and replaced atomically.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';

/** The last line of a generated CommonJS module: the stamp it was made under, which its loader compares. */
export function stampLine(stamp: string): string {
  return `module.exports.stamp = ${JSON.stringify(stamp)};\n`;
}

/** A generated file's content; empty when it does not exist yet. */
export function generatedContent(file: URL): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Written whole, then renamed: a process starting meanwhile reads the old file or the new one. */
export function replaceGenerated(file: URL, content: string): void {
  const temp = new URL(`${file.href}.${process.pid}.tmp`);
  writeFileSync(temp, content);
  renameSync(temp, file);
}
