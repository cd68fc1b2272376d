/**
 * The command line as an operator meets it: `--version`, `config check`,
 * `config show`, `serve --port/--root`, and the failures a new user hit
 * (a typo, a port in use, a storage root that cannot be written, wrong
 * usage), each one line with the exit code the README promises and no stack.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { freePort, waitForHttp } from '../fixtures/net.js';
import { runCommand, tempDir, trackChildProcess, type RunResult } from '../fixtures/tools.js';

const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const PACKAGE = JSON.parse(await readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
const STACK = /\n\s+at \S/;

/** The environment without any PULLTHROUGH_ variable of the runner's, plus `extra`. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PULLTHROUGH_')));
  return { ...env, ...extra };
}

function pullthrough(args: readonly string[], env: Record<string, string> = {}, options: { uid?: number } = {}): Promise<RunResult> {
  if (options.uid === undefined) return runCommand(process.execPath, [CLI, ...args], { env: cleanEnv(env), allowFailure: true, timeoutMs: 30_000 });
  // As another user: runCommand has no uid option, and this is the one test that needs it.
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: cleanEnv(env), uid: options.uid, gid: options.uid, cwd: '/' });
    trackChildProcess(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stdoutBytes: Buffer.from(stdout), stderr }));
  });
}

async function configFile(document: Record<string, unknown>): Promise<string> {
  const file = join(await tempDir('commands'), 'config.json');
  await writeFile(file, JSON.stringify(document));
  return file;
}

function base(root: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listen: { host: '127.0.0.1', port: 5000 },
    storage: { root },
    upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }],
    ...extra,
  };
}

test('--version and -V print the package version', async () => {
  for (const flag of ['--version', '-V']) {
    const run = await pullthrough([flag]);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.trim(), PACKAGE.version);
  }
});

test('config check: ok for a good file; each problem and exit 2 for a bad one or a missing passwordFile; nothing is contacted or written', async () => {
  const dir = await tempDir('check');
  const root = join(dir, 'never-made');
  const good = await pullthrough(['config', 'check', '--config', await configFile(base(root))]);
  assert.equal(good.code, 0, good.stdout + good.stderr);
  assert.equal(good.stdout, 'ok\n');

  const bad = await pullthrough(['config', 'check', '--config', await configFile(base(root, {
    storage: { root, maxsize: '1GB' }, shutdownGrace: '10 min',
  }))]);
  assert.equal(bad.code, 2);
  assert.match(bad.stdout, /2 problems/);
  assert.match(bad.stdout, /\/storage\/maxsize: unknown key; did you mean maxSize\?/);
  assert.match(bad.stdout, /\/shutdownGrace: must be a duration: .*"10 min"/);

  const missing = join(dir, 'no-such-password');
  const noFile = await pullthrough(['config', 'check', '--config', await configFile(base(root, {
    upstreams: [{ name: 'r.example', url: 'https://r.example', credentials: { username: 'u', passwordFile: missing } }],
  }))]);
  assert.equal(noFile.code, 2);
  assert.match(noFile.stdout, new RegExp(`/upstreams/0/credentials/passwordFile: cannot read ${missing} \\(ENOENT`));

  const fromEnv = await pullthrough(['config', 'check', '--config', await configFile(base(root))], { PULLTHROUGH_LISTEN_PORT: 'abc' });
  assert.equal(fromEnv.code, 2);
  assert.match(fromEnv.stdout, /\/listen\/port \(PULLTHROUGH_LISTEN_PORT\)/, 'the environment is checked with the file');
  for (const run of [good, bad, noFile, fromEnv]) assert.doesNotMatch(run.stdout + run.stderr, STACK);
  await assert.rejects(readFile(join(root, '_uploads')), 'config check prepares no storage');
});

test('config show: the configuration in effect, defaults applied, no secret from a password, a passwordFile, a passwordEnv or a Redis URL', async () => {
  const dir = await tempDir('show');
  const secrets = { password: 'pw-in-file-7f3a', fileSecret: 'pw-from-file-91c2', envSecret: 'pw-from-env-44d0', redis: 'redis-pw-5be1' };
  await writeFile(join(dir, 'secret'), `${secrets.fileSecret}\n`);
  const file = await configFile(base(join(dir, 'data'), {
    upstreams: [
      { name: 'a.example', url: 'https://a.example', credentials: { username: 'ua', password: secrets.password } },
      { name: 'b.example', url: 'https://b.example', credentials: { username: 'ub', passwordFile: join(dir, 'secret') } },
      { name: 'c.example', url: 'https://c.example', credentials: { username: 'uc', passwordEnv: 'C_PASSWORD' } },
    ],
    redis: { url: `redis://mirror:${secrets.redis}@127.0.0.1:6379/0` },
  }));
  const shown = await pullthrough(['config', 'show', '--config', file], { C_PASSWORD: secrets.envSecret, PULLTHROUGH_LISTEN_PORT: '5005' });
  assert.equal(shown.code, 0, shown.stderr);
  for (const secret of Object.values(secrets)) assert.ok(!shown.stdout.includes(secret), `config show printed ${secret}`);
  const effective = JSON.parse(shown.stdout) as {
    upstreams: { credentials: Record<string, string> }[]; redis: { url: string }; listen: { port: number };
    shutdownGrace: string; upstreamDefaults: { timeouts: { headers: string } };
  };
  assert.equal(effective.upstreams[0].credentials.password, '<redacted>');
  assert.equal(effective.upstreams[1].credentials.passwordFile, join(dir, 'secret'), 'where a secret is kept is not a secret');
  assert.equal(effective.upstreams[2].credentials.passwordEnv, 'C_PASSWORD');
  assert.equal(effective.redis.url, 'redis://mirror:<redacted>@127.0.0.1:6379/0');
  assert.equal(effective.listen.port, 5005, 'the environment is in effect');
  assert.equal(effective.shutdownGrace, '30s', 'defaults are applied');
  assert.equal(effective.upstreamDefaults.timeouts.headers, '10s');
});

test('usage errors exit 2: a missing required option, an unknown option, a mistyped command', async () => {
  const noOut = await pullthrough(['export']);
  assert.equal(noOut.code, 2);
  assert.match(noOut.stderr, /--out/);
  const unknown = await pullthrough(['serve', '--prot', '5001']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option '--prot'/);
  const typo = await pullthrough(['serv']);
  assert.equal(typo.code, 2);
  assert.match(typo.stderr, /unknown command 'serv' \(did you mean 'serve'\?\)/);
  for (const run of [noOut, unknown, typo]) assert.doesNotMatch(run.stderr, STACK);
});

test('a configuration typo stops serve with exit 2 and the nearest key', async () => {
  const failed = await pullthrough(['serve', '--config', await configFile(base(await tempDir('typo'), { listen: { host: '127.0.0.1', prot: 5000 } }))]);
  assert.equal(failed.code, 2);
  assert.match(failed.stderr, /\/listen\/prot: unknown key; did you mean port\?/);
  assert.doesNotMatch(failed.stderr, STACK);
});

test('a port in use: one line naming listen.port, exit 1, a stack only at log.level debug', async () => {
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const port = (holder.address() as { port: number }).port;
  try {
    const file = await configFile(base(await tempDir('in-use')));
    const failed = await pullthrough(['serve', '--config', file, '--port', String(port)]);
    assert.equal(failed.code, 1, failed.stderr);
    assert.match(failed.stderr, new RegExp(`^pullthrough: listen\\.port ${port} is in use on 127\\.0\\.0\\.1: .*set listen\\.port \\(or --port, PULLTHROUGH_LISTEN_PORT\\) to a free port\\n$`));
    const debug = await pullthrough(['serve', '--config', file, '--port', String(port)], { PULLTHROUGH_LOG_LEVEL: 'debug' });
    assert.equal(debug.code, 1);
    assert.match(debug.stderr, /is in use/);
    assert.match(debug.stderr, STACK, 'at debug the stack follows');
  } finally {
    holder.close();
  }
});

test('a storage root that cannot be written: one line naming storage.root and the uid, exit 1, no stack', async () => {
  const parent = await tempDir('read-only');
  await chmod(parent, 0o555);
  const root = join(parent, 'data');
  // root may write anywhere: run as nobody then (as anyone else, the directory is not theirs either).
  const uid = process.getuid?.() === 0 ? 65534 : undefined;
  // The embedded default configuration, so that nobody needs to read a file of ours.
  const failed = await pullthrough(['serve', '--root', root, '--port', '0'], { PULLTHROUGH_LISTEN_HOST: '127.0.0.1' }, uid === undefined ? {} : { uid });
  await chmod(parent, 0o755);
  assert.equal(failed.code, 1, failed.stderr);
  assert.match(failed.stderr, new RegExp(`^pullthrough: storage\\.root ${root} is not writable by uid ${uid ?? process.getuid?.()} \\(EACCES`));
  assert.match(failed.stderr, /set storage\.root \(or --root, PULLTHROUGH_STORAGE_ROOT\)/);
  assert.doesNotMatch(failed.stderr, STACK);
});

test('serve --port and --root override the file; the start-up line carries the version and the address', async () => {
  const dir = await tempDir('flags');
  await mkdir(join(dir, 'file-root'));
  const file = await configFile(base(join(dir, 'file-root')));
  const port = await freePort();
  const root = join(dir, 'flag-root');
  const child = spawn(process.execPath, [CLI, 'serve', '--config', file, '--port', String(port), '--root', root], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  trackChildProcess(child);
  const lines: Record<string, unknown>[] = [];
  // The start-up line may come through the pipe after /v2/ already answers: wait for the line itself.
  const serving = new Promise<Record<string, unknown> | undefined>((resolve) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      lines.push(parsed);
      if (parsed['msg'] === 'pullthrough is serving') resolve(parsed);
    }).on('close', () => resolve(undefined));
  });
  try {
    await waitForHttp(`http://127.0.0.1:${port}/v2/`);
    const started = await serving;
    assert.ok(started, JSON.stringify(lines));
    assert.equal(started['version'], PACKAGE.version);
    assert.equal(started['listen'], `127.0.0.1:${port}`);
    assert.equal(started['storage'], root);
    await readFile(join(root, '_uploads')).catch((err: NodeJS.ErrnoException) => assert.equal(err.code, 'EISDIR', 'the flag root was prepared'));
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  }
});
