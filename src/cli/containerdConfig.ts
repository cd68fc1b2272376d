import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../config/load.js';
import type { ResolvedConfig } from '../config/settings.js';
import { lineDiff } from './lineDiff.js';

export interface ContainerdConfigOptions {
  readonly config?: string;
  /** The `certs.d` directory (containerd's `config_path`), e.g. `/etc/containerd/certs.d`. */
  readonly dir: string;
  /** The mirror URL containerd dials; default `http://127.0.0.1:<listen.port>` (https with `listen.tls`). */
  readonly mirror?: string;
  /** A CA file for an HTTPS mirror (`ca = "…"`). */
  readonly ca?: string;
  /** Show what would change, write nothing: exit 1 when something would. */
  readonly check?: boolean;
}

/** One hosts.toml: the registry directory it goes in, and its text. */
export interface HostsFile {
  readonly registry: string;
  readonly text: string;
}

/**
 * The hosts.toml of every configured upstream (its name and each alias) and
 * of `_default`: the node's pullthrough as the mirror for pull and resolve,
 * and the registry itself as `server`, so that containerd falls back to the
 * registry when the mirror answers an error or is not there. `_default` has
 * no `server`: containerd falls back to whichever registry was asked.
 */
export function hostsFiles(config: ResolvedConfig, mirror: string, ca?: string): HostsFile[] {
  const host = [
    `[host.${JSON.stringify(mirror)}]`,
    '  capabilities = ["pull", "resolve"]',
    ...(ca ? [`  ca = ${JSON.stringify(ca)}`] : []),
  ];
  const header = (what: string): string[] => [
    `# Written by \`pullthrough containerd-config\`: ${what} through the pullthrough on this node.`,
    '# When it answers an error or does not answer, containerd goes to `server` (or the registry itself).',
  ];
  const files = config.upstreams.flatMap((u) => [u.name, ...u.aliases].map((registry) => ({
    registry,
    text: [...header(registry), `server = ${JSON.stringify(u.url.origin)}`, '', ...host, ''].join('\n'),
  })));
  files.push({ registry: '_default', text: [...header('every other registry'), '', ...host, ''].join('\n') });
  return files;
}

/** The mirror containerd dials: pullthrough's own port on the node's loopback. */
export function defaultMirror(config: ResolvedConfig): string {
  return `${config.listen.tls ? 'https' : 'http'}://127.0.0.1:${config.listen.port}`;
}

/** `pullthrough containerd-config`: writes (or with `--check`, diffs) the hosts.toml files; prints what it did. */
export async function containerdConfig(options: ContainerdConfigOptions): Promise<number> {
  const config = loadConfig(options.config);
  const files = hostsFiles(config, options.mirror ?? defaultMirror(config), options.ca);
  let differing = 0;
  for (const file of files) {
    const path = join(options.dir, file.registry, 'hosts.toml');
    const current = await readFile(path, 'utf8').catch(() => undefined);
    if (current === file.text) {
      process.stdout.write(`unchanged ${path}\n`);
      continue;
    }
    differing++;
    if (options.check) {
      process.stdout.write(lineDiff(current ?? '', file.text, { before: current === undefined ? '/dev/null' : path, after: path }));
      continue;
    }
    await mkdir(join(options.dir, file.registry), { recursive: true });
    // Written beside, then renamed: containerd never reads half a file.
    const temp = `${path}.${process.pid}.tmp`;
    await writeFile(temp, file.text);
    await rename(temp, path);
    process.stdout.write(`wrote ${path}\n`);
  }
  if (options.check) process.stdout.write(differing === 0 ? 'up to date\n' : `${differing} of ${files.length} files would change\n`);
  return options.check && differing > 0 ? 1 : 0;
}
