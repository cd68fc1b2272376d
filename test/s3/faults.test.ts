/**
 * Fills into S3 that go wrong: corrupt and truncated upstream bytes (the
 * fault-injecting fake upstream), and a process SIGKILLed mid-fill. None may
 * leave an object under the final key or an incomplete multipart upload.
 */
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from '../../src/upstream/undici.js';
import { startFakeUpstream, type FakeUpstream } from '../fixtures/fakeUpstream.js';
import { makeImage } from '../fixtures/images.js';
import { freePort, waitForHttp } from '../fixtures/net.js';
import { startProxy, testConfigDocument, type RunningProxy } from '../fixtures/proxy.js';
import { s3StorageConfig, s3Store, type S3Store } from '../fixtures/s3.js';
import { runCommand, tempDir, trackChildProcess, until } from '../fixtures/tools.js';
import { USAGE_RECORD_PATH } from '../../src/storage/layout.js';

/** The bucket's keys but the usage record, which a start-up writes (the size ledger) whenever it lands. */
async function contentKeys(bucket: string): Promise<string[]> {
  return (await store.keys(bucket)).filter((k) => k !== USAGE_RECORD_PATH);
}

const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const MiB = 2 ** 20;

let store: S3Store;
let fake: FakeUpstream;

before(async () => {
  store = await s3Store();
  fake = await startFakeUpstream();
});

after(async () => {
  await fake?.stop();
});

function blobKey(digest: string): string {
  const hex = digest.split(':')[1]!;
  return `blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
}

async function digestOfBody(url: string): Promise<{ status: number; digest: string | undefined }> {
  const res = await request(url);
  const hash = createHash('sha256');
  try {
    for await (const chunk of res.body) hash.update(chunk as Buffer);
  } catch {
    return { status: res.statusCode, digest: undefined };
  }
  return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}` };
}

let counter = 0;
function addImage(size: number): { repository: string; digest: string } {
  const repository = `s3faults/image${++counter}`;
  const image = makeImage({ layerSizes: [size] });
  fake.addImage(repository, 'v1', image);
  return { repository, digest: image.layers[0]!.digest };
}

test('corrupt or truncated upstream bytes leave no object and no incomplete multipart upload', async () => {
  const bucket = await store.createBucket();
  const proxy: RunningProxy = await startProxy({
    upstreams: [{ name: 'fake.test', url: fake.url }], storage: s3StorageConfig(store, bucket),
    upstreamDefaults: { timeouts: { connect: '1s', headers: '1s', bodyIdle: '1s' } },
  });
  try {
    const corrupt = addImage(12 * MiB);
    fake.addFault({ path: `/v2/${corrupt.repository}/blobs/${corrupt.digest}`, once: true }, { corrupt: true });
    const truncated = addImage(12 * MiB);
    fake.addFault({ path: `/v2/${truncated.repository}/blobs/${truncated.digest}`, once: true }, { truncate: { afterBytes: 8 * MiB } });
    for (const { repository, digest } of [corrupt, truncated]) {
      const before = await contentKeys(bucket);
      const got = await digestOfBody(`${proxy.url}/v2/${repository}/blobs/${digest}`);
      assert.notEqual(got.digest, digest, 'never a complete wrong or short response');
      await until('the fill is over', () => proxy.mirror.blobs.activeFills === 0);
      assert.deepEqual(await contentKeys(bucket), before, 'no object, no link');
      assert.deepEqual(await store.multipartUploads(bucket), [], 'the multipart upload was aborted');
      const again = await digestOfBody(`${proxy.url}/v2/${repository}/blobs/${digest}`);
      assert.deepEqual(again, { status: 200, digest }, 'the next GET fetches it right');
    }
    assert.ok((await store.keys(bucket)).includes(blobKey(corrupt.digest)));
  } finally {
    await proxy.stop();
  }
});

async function serve(configPath: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--config', configPath], { stdio: 'ignore' });
  trackChildProcess(child);
  await waitForHttp(`http://127.0.0.1:${port}/v2/`);
  return child;
}

/** Starts a GET of a blob that stalls upstream after `stallAt` bytes, and SIGKILLs the server once a part is in S3. */
async function killMidFill(child: ChildProcess, port: number, bucket: string, blob: { repository: string; digest: string }): Promise<void> {
  const res = await request(`http://127.0.0.1:${port}/v2/${blob.repository}/blobs/${blob.digest}`);
  const reading = (async () => {
    for await (const chunk of res.body) void chunk;
  })().catch(() => undefined);
  await until('a multipart upload is under way', async () => (await store.multipartUploads(bucket)).length === 1, 30_000);
  child.kill('SIGKILL');
  await once(child, 'exit');
  await reading;
}

test('SIGKILL during a fill, then gc and a restart: no final object; the incomplete upload is aborted (bounded by age)', { timeout: 120_000 }, async () => {
  const bucket = await store.createBucket();
  const first = addImage(12 * MiB);
  const second = addImage(12 * MiB);
  for (const b of [first, second]) fake.addFault({ path: `/v2/${b.repository}/blobs/${b.digest}`, once: true }, { stall: { afterBytes: 7 * MiB } });
  const root = await tempDir('s3-crash');
  const port = await freePort();
  const configFor = async (name: string, s3: Record<string, unknown>): Promise<string> => {
    const path = join(root, name);
    await writeFile(path, JSON.stringify({
      ...testConfigDocument({
        upstreams: [{ name: 'fake.test', url: fake.url }], storage: s3StorageConfig(store, bucket, s3),
        upstreamDefaults: { timeouts: { connect: '2s', headers: '3s', bodyIdle: '30s' } },
      }, join(root, 'spool')),
      listen: { host: '127.0.0.1', port },
    }));
    return path;
  };
  const config = await configFor('config.json', {});
  let child = await serve(config, port);
  try {
    await killMidFill(child, port, bucket, first);
    assert.deepEqual(await contentKeys(bucket), [], 'no object under the final key');
    assert.deepEqual(await store.multipartUploads(bucket), [blobKey(first.digest)], 'the dead fill\'s upload is left');

    await runCommand(process.execPath, [CLI, 'gc', '--config', config]);
    assert.deepEqual(await store.multipartUploads(bucket), [blobKey(first.digest)], 'gc beside a server keeps an upload younger than abandonedUploadAge');

    child = await serve(config, port);
    assert.deepEqual(await store.multipartUploads(bucket), [], 'the restart (no replicas) aborted it');
    const again = await digestOfBody(`http://127.0.0.1:${port}/v2/${first.repository}/blobs/${first.digest}`);
    assert.deepEqual(again, { status: 200, digest: first.digest });

    await killMidFill(child, port, bucket, second);
    const gc = await runCommand(process.execPath, [CLI, 'gc', '--config', await configFor('gc.json', { abandonedUploadAge: '0s' })]);
    assert.match(gc.stdout, /removed 1 upload of interrupted fills/);
    assert.deepEqual(await store.multipartUploads(bucket), [], 'gc aborted the upload older than abandonedUploadAge');
    assert.ok(!(await store.keys(bucket)).includes(blobKey(second.digest)));
  } finally {
    child.kill('SIGKILL');
  }
});
