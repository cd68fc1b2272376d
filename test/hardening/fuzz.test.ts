/**
 * Property-based fuzzing with fast-check against pullthrough over real
 * sockets, with a real registry upstream and storage in a temp root: random
 * methods, paths (names, tags, digests, percent-encodings good and bad, `..`,
 * NUL, unicode, overlong segments), query strings (`ns`, `n`, `last`) and
 * headers (`Range`, `Accept`, `If-None-Match`, `Authorization`). At least
 * 10,000 cases a run; the seed is printed (`FUZZ_SEED=<n>` replays a run,
 * `FUZZ_RUNS=<n>` changes its length).
 *
 * Properties: no 5xx but the documented upstream ones (502 UPSTREAM_INVALID,
 * 503 UNAVAILABLE); every error body is OCI error JSON; nothing is created
 * outside the storage root, and nothing inside it off the layout; `/v2/`
 * still answers after the run.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import fc from 'fast-check';
import { Pool } from '../../src/upstream/undici.js';
import { startProxy, type RunningProxy } from '../fixtures/proxy.js';
import { rawRequest } from '../fixtures/rawHttp.js';
import { startRegistry, type RunningRegistry } from '../fixtures/registry.js';
import { seedImages, type SeededImage } from '../fixtures/seed.js';
import { tempDir, toolSkip } from '../fixtures/tools.js';

const RUNS = Number(process.env['FUZZ_RUNS'] ?? 10_000);
const SEED = Number(process.env['FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));

const skip = toolSkip('docker-registry', 'skopeo');
let upstream: RunningRegistry;
let proxy: RunningProxy;
let pool: Pool;
let image: SeededImage;
let root: string;

before(async () => {
  if (skip) return;
  upstream = await startRegistry();
  [image] = await seedImages(upstream.host, { layerSize: 4096, kinds: ['oci-image'], repositoryPrefix: 'fuzz' });
  root = join(await tempDir('fuzz'), 'root');
  proxy = await startProxy({
    upstreams: [{ name: 'registry.test', url: upstream.url, aliases: ['alias.test'] }],
    root,
    upstreamDefaults: { tagMaxAge: '1m' },
  });
  pool = new Pool(proxy.url, { connections: 4, pipelining: 1 });
});

after(async () => {
  await pool?.close();
  await proxy?.stop();
  await upstream?.stop();
});

/** Path segments: grammar-valid names, near misses and hostile forms, already as they go on the wire. */
function segment(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom('library', 'alpine', 'fuzz', 'oci-image', 'registry.test', 'alias.test', 'a', 'a-b', 'a__b', 'a.b', 'A', '_x', 'x-', 'v1'),
    fc.constantFrom('..', '.', '%2e%2e', '%2E.', '%2f', '%2F', '%5c', '\\', '%00', '%zz', '%ff', '%', '%e0%a4%a', '%c0%ae', '~', ':', '@', ';', '%20', '+'),
    fc.stringMatching(/^[a-z0-9._-]{1,12}$/),
    fc.string({ unit: 'grapheme', maxLength: 6 }).map((s) => encodeURIComponent(s)),
    fc.integer({ min: 256, max: 2000 }).map((n) => 'a'.repeat(n)),
  );
}

function digest(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constant(image.digest),
    fc.constantFrom(...image.blobDigests),
    fc.stringMatching(/^[0-9a-f]{64}$/).map((hex) => `sha256:${hex}`),
    fc.stringMatching(/^[0-9a-f]{128}$/).map((hex) => `sha512:${hex}`),
    fc.constantFrom('sha256:', 'sha256:XYZ', 'md5:abc', 'sha256:%2e%2e', `sha256:${'0'.repeat(63)}`, 'sha256:../../x', 'sha384:00'),
  );
}

function name(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom('fuzz/oci-image', 'registry.test/fuzz/oci-image', 'alias.test/fuzz/oci-image', 'library/alpine'),
    fc.array(segment(), { minLength: 1, maxLength: 4 }).map((parts) => parts.join('/')),
  );
}

function path(): fc.Arbitrary<string> {
  const reference = fc.oneof(fc.constantFrom('v1', 'latest', 'V1', '_x'), digest(), segment());
  return fc.oneof(
    fc.constantFrom('/v2/', '/v2', '/v2/_catalog', '/', '/v1/', '/v2/_catalog/x', '/metrics', '/v2//'),
    fc.tuple(name(), reference).map(([n, r]) => `/v2/${n}/manifests/${r}`),
    fc.tuple(name(), digest()).map(([n, d]) => `/v2/${n}/blobs/${d}`),
    name().map((n) => `/v2/${n}/tags/list`),
    fc.tuple(name(), digest()).map(([n, d]) => `/v2/${n}/referrers/${d}`),
    fc.tuple(name(), fc.constantFrom('blobs/uploads/', 'blobs/uploads/x', 'manifests/')).map(([n, r]) => `/v2/${n}/${r}`),
    fc.array(segment(), { minLength: 1, maxLength: 8 }).map((parts) => `/v2/${parts.join('/')}`),
  );
}

function query(): fc.Arbitrary<string> {
  const value = fc.oneof(fc.stringMatching(/^[A-Za-z0-9._:%-]{0,20}$/), segment());
  const param = fc.oneof(
    fc.tuple(fc.constant('ns'), fc.oneof(fc.constantFrom('registry.test', 'alias.test', 'docker.io', 'registry.test%3A5000', '127.0.0.1'), value)),
    fc.tuple(fc.constant('n'), fc.oneof(fc.integer({ min: -5, max: 100_000 }).map(String), fc.constantFrom('', 'x', '1e9', '99999999999999999999', '0x10'))),
    fc.tuple(fc.constant('last'), value),
    fc.tuple(fc.constantFrom('artifactType', 'x', ''), value),
  );
  return fc.array(param, { maxLength: 3 }).map((ps) => (ps.length === 0 ? '' : `?${ps.map(([k, v]) => `${k}=${v}`).join('&')}`));
}

/** Printable ASCII only: the header values any client library lets through. */
const headerText = fc.stringMatching(/^[\x20-\x7e]{0,60}$/);

function headers(): fc.Arbitrary<Record<string, string>> {
  return fc.record({
    range: fc.oneof(
      fc.tuple(fc.nat(5000), fc.nat(5000)).map(([a, b]) => `bytes=${a}-${b}`),
      fc.nat(5000).map((a) => `bytes=${a}-`),
      fc.nat(5000).map((a) => `bytes=-${a}`),
      fc.constantFrom('bytes=0-0,5-9', 'bytes=', 'items=0-1', 'bytes=9-1', 'bytes=-0', 'bytes=99999999999999999999-'),
      headerText,
    ),
    accept: fc.oneof(
      fc.subarray(['application/vnd.oci.image.manifest.v1+json', 'application/vnd.oci.image.index.v1+json',
        'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json',
        '*/*', 'application/*', 'text/html', 'application/json;q=0.5']).map((types) => types.join(', ')),
      headerText,
    ),
    'if-none-match': fc.oneof(fc.constant(`"${image.digest}"`), fc.constant('*'), headerText),
    authorization: fc.oneof(
      fc.constantFrom('Basic Zm9vOmJhcg==', 'Basic !!!', 'Bearer x', 'Bearer', 'Digest x', ''),
      headerText.map((s) => `Basic ${Buffer.from(s).toString('base64')}`),
      headerText,
    ),
  }, { requiredKeys: [] });
}

const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

interface Case {
  method: (typeof METHODS)[number];
  path: string;
  headers: Record<string, string>;
}

/** Built once the seeded image is known: its digests are among the ones tried. */
function arbitraryCase(): fc.Arbitrary<Case> {
  return fc.record({
    method: fc.constantFrom(...METHODS),
    path: fc.tuple(path(), query()).map(([p, q]) => p + q),
    headers: headers(),
  });
}

/** What the properties say about one answer. */
function checkAnswer(c: Case, status: number, contentType: string | undefined, body: string): void {
  const context = `${c.method} ${c.path} ${JSON.stringify(c.headers)} -> ${status} ${body.slice(0, 300)}`;
  assert.ok(status < 500 || status === 502 || status === 503, `no 5xx but the documented upstream ones: ${context}`);
  if (status >= 400 && c.method !== 'HEAD') {
    assert.match(contentType ?? '', /^application\/json/, `error answers are JSON: ${context}`);
    const parsed = JSON.parse(body) as { errors?: { code?: unknown; message?: unknown }[] };
    assert.ok(Array.isArray(parsed.errors) && parsed.errors.length > 0, `OCI error JSON: ${context}`);
    for (const e of parsed.errors) {
      assert.equal(typeof e.code, 'string', context);
      assert.equal(typeof e.message, 'string', context);
    }
    if (status === 502) assert.equal(parsed.errors[0]!.code, 'UPSTREAM_INVALID', context);
    if (status === 503) assert.equal(parsed.errors[0]!.code, 'UNAVAILABLE', context);
  }
}

async function send(c: Case): Promise<void> {
  let res;
  try {
    res = await pool.request({ method: c.method, path: c.path, headers: c.headers, headersTimeout: 30_000, bodyTimeout: 30_000 });
  } catch (err) {
    // A request the client library itself refuses to send (an invalid path or header for undici) is sent raw.
    if ((err as { code?: string }).code !== 'UND_ERR_INVALID_ARG') throw err;
    const lines = Object.entries({ ...c.headers, host: proxy.host, connection: 'close' }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    const answer = await rawRequest(Number(proxy.host.split(':')[1]), `${c.method} ${c.path} HTTP/1.1\r\n${lines}\r\n`);
    checkAnswer(c, answer.status, answer.headers['content-type'], answer.body);
    return;
  }
  const body = await res.body.text();
  checkAnswer(c, res.statusCode, res.headers['content-type'] as string | undefined, body);
}

/** Every path under `dir`, relative to it. */
async function walk(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.map((e) => relative(dir, join(e.parentPath, e.name)));
}

test(`fuzz: ${RUNS} random requests over real sockets keep every property`, { skip, timeout: 300_000 }, async () => {
  console.log(`# fuzz seed: ${SEED} (replay with FUZZ_SEED=${SEED}), ${RUNS} runs`);
  await fc.assert(fc.asyncProperty(arbitraryCase(), send), { numRuns: RUNS, seed: SEED, endOnFailure: true });

  // Raw bytes no client library would send: NUL, a bare CR, spaces and 8-bit bytes in the request line.
  for (const line of ['GET /v2/a\x00b/tags/list HTTP/1.1', 'GET /v2/\r/x HTTP/1.1', 'GET /v2/a b/tags/list HTTP/1.1', 'GET /v2/\xff\xfe/blobs/x HTTP/1.1']) {
    const answer = await rawRequest(Number(proxy.host.split(':')[1]), `${line}\r\nhost: x\r\nconnection: close\r\n\r\n`);
    checkAnswer({ method: 'GET', path: JSON.stringify(line), headers: {} }, answer.status, answer.headers['content-type'], answer.body);
  }

  // Nothing outside the root (its parent holds the root alone), and nothing inside it off the layout.
  assert.deepEqual(await readdir(dirname(root)), ['root']);
  const NAME = /^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$/;
  for (const file of await walk(root)) {
    const parts = file.split('/');
    assert.ok(['blobs', 'repositories', '_uploads', '_state', '_pins', '_usage'].includes(parts[0]!) || parts.length === 1, `off the layout: ${file}`);
    assert.ok(!parts.includes('..') && !file.includes('\0') && !file.includes('%'), `no traversal or encoded name: ${file}`);
    if (parts[0] === 'repositories' && parts.length > 2) {
      const underscore = parts.findIndex((p) => p.startsWith('_'));
      const repo = parts.slice(2, underscore < 0 ? undefined : underscore);
      for (const component of repo) assert.match(component, NAME, `repository components follow the grammar: ${file}`);
    }
  }

  const ping = await pool.request({ method: 'GET', path: '/v2/' });
  assert.equal(ping.statusCode, 200, 'the server still answers /v2/');
  await ping.body.dump();
});
