#!/usr/bin/env node
import { Command } from 'commander';
import { PACKAGE_VERSION } from './config/version.js';
import { exportCommand, importCommand, type ExportCommandOptions } from './cli/bundle.js';
import { configCheck, configShow } from './cli/config.js';
import { containerdConfig, type ContainerdConfigOptions } from './cli/containerdConfig.js';
import { failureReport } from './cli/errors.js';
import { gc } from './cli/gc.js';
import { serve } from './cli/serve.js';
import { collect, warm, type WarmCommandOptions } from './cli/warm.js';

const program = new Command()
  .name('pullthrough')
  .description('A pull-through caching proxy for OCI/Docker registries')
  .version(PACKAGE_VERSION, '-V, --version', 'print the version')
  // Usage mistakes throw instead of exiting 1, so they end with 2 like a bad configuration (subcommands inherit this).
  .exitOverride();

program.command('serve', { isDefault: true })
  .description('serve the registry mirror')
  .option('-c, --config <file>', 'configuration file (default: $PULLTHROUGH_CONFIG, else the embedded proxy.config.json)')
  .option('-p, --port <port>', 'listen on this port (listen.port)')
  .option('-r, --root <dir>', 'cache under this directory (storage.root)')
  .action(serve);

program.command('gc')
  .description('remove what the eviction policy says must go (maxSize, maxIdle) and every blob no cached image references')
  .option('-c, --config <file>', 'configuration file')
  .option('-n, --dry-run', 'report what would be removed and the bytes it frees, remove nothing')
  .action(gc);

program.command('warm')
  .description('fetch images into the cache ahead of the pulls that need them')
  .argument('[references...]', 'image references: alpine:3.20, ghcr.io/org/app:1.2, registry.k8s.io/pause@sha256:...')
  .option('-c, --config <file>', 'configuration file')
  .option('-f, --from <file>', 'a list (one reference a line), a lock file, a docker-compose file or Kubernetes manifests; repeatable', collect, [])
  .option('-p, --platform <list>', 'only these platforms of a multi-platform image, e.g. linux/amd64,linux/arm64')
  .option('-j, --jobs <n>', 'images and blobs fetched in parallel', '4')
  .option('--retries <n>', 'retries of an upstream failure, with back-off (Retry-After respected)', '4')
  .option('--pin', 'protect what was warmed from eviction (recorded in <storage root>/pins.json)')
  .option('--lock <file>', 'write "<reference> <digest>" for every image; read it back with --from')
  .option('--referrers', 'also fetch the referrers (signatures, SBOMs, attestations) of every warmed manifest, recursively')
  .option('--artifact-type <type>', 'only referrers of this artifactType (implies --referrers); repeatable', collect, [])
  .option('-e, --env <name[=value]>', 'a variable compose files may use (${NAME}); its value from the environment unless given; repeatable', collect, [])
  .option('--env-file <file>', 'variables compose files may use, NAME=value a line; repeatable (nothing else of the environment is read)', collect, [])
  .action(async (references: string[], options: WarmCommandOptions) => { process.exitCode = await warm(references, options); });

program.command('export')
  .description('write cached images as one OCI image layout tar')
  .argument('[references...]', 'images to export (default: every cached image)')
  .requiredOption('-o, --out <file>', 'the bundle to write, e.g. bundle.tar')
  .option('-c, --config <file>', 'configuration file')
  .option('--lock <file>', 'export exactly the images of this lock file (written by warm --lock)')
  .option('-f, --from <file>', 'references from a list, compose file or Kubernetes manifests; repeatable', collect, [])
  .option('--referrers', 'also the cached referrers (signatures, SBOMs, attestations) of every exported image, and their blobs')
  .option('-e, --env <name[=value]>', 'a variable compose files may use; repeatable', collect, [])
  .option('--env-file <file>', 'variables compose files may use, NAME=value a line; repeatable', collect, [])
  .action(async (references: string[], options: ExportCommandOptions) => { process.exitCode = await exportCommand(references, options); });

program.command('import')
  .description('load a bundle written by export (any OCI image layout tar with full ref names) into the cache')
  .argument('<bundle>', 'the bundle, e.g. bundle.tar')
  .option('-c, --config <file>', 'configuration file')
  .action(async (bundle: string, options: { config?: string }) => { process.exitCode = await importCommand(bundle, options); });

program.command('containerd-config')
  .description('write a hosts.toml per configured upstream (and _default) into containerd\'s certs.d: this pullthrough as the mirror, the registry as fallback')
  .requiredOption('-d, --dir <dir>', 'the certs.d directory (containerd\'s config_path), e.g. /etc/containerd/certs.d')
  .option('-c, --config <file>', 'configuration file')
  .option('--mirror <url>', 'the mirror URL containerd dials (default http://127.0.0.1:<listen.port>)')
  .option('--ca <file>', 'CA file for an HTTPS mirror')
  .option('--check', 'show a diff of what would change and write nothing; exit 1 when something would')
  .action(async (options: ContainerdConfigOptions) => { process.exitCode = await containerdConfig(options); });

const configCommand = program.command('config')
  .description('look at the configuration (the file, then PULLTHROUGH_* variables) without starting anything');

configCommand.command('check')
  .description('validate the configuration and check that the files it names are readable; prints ok or each problem (exit 2)')
  .option('-c, --config <file>', 'configuration file')
  .action((options: { config?: string }) => { process.exitCode = configCheck(options); });

configCommand.command('show')
  .description('print the configuration in effect as JSON: defaults applied, secrets redacted')
  .option('-c, --config <file>', 'configuration file')
  .action((options: { config?: string }) => { process.exitCode = configShow(options); });

/**
 * `serve` is the default command, so commander would take a mistyped
 * command (`pullthrough serv`) for an argument of serve: say what it is.
 */
function checkCommandName(argv: readonly string[]): void {
  const first = argv[2];
  if (first === undefined || first.startsWith('-')) return;
  const names = program.commands.map((c) => c.name());
  if (names.includes(first) || first === 'help') return;
  const near = names.find((n) => n.startsWith(first) || first.startsWith(n));
  program.error(`error: unknown command '${first}'${near ? ` (did you mean '${near}'?)` : ''}; the commands are ${names.join(', ')}`,
    { exitCode: 2, code: 'commander.unknownCommand' });
}

try {
  checkCommandName(process.argv);
  await program.parseAsync(process.argv);
} catch (err) {
  const { code, text } = failureReport(err);
  process.stderr.write(text);
  process.exit(code);
}
