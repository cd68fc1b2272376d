import test from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config/load.js';
import { configErrorMessage } from '../fixtures/config.js';
import { tempDir } from '../fixtures/tools.js';

function withStorage(storage: Record<string, unknown>): Record<string, unknown> {
  return {
    listen: { port: 5000 },
    storage: { root: '/tmp/x', ...storage },
    upstreams: [{ name: 'docker.io', url: 'https://registry-1.docker.io' }],
  };
}

test('storage.driver "s3": defaults applied, sizes and durations parsed', () => {
  const config = resolveConfig(withStorage({ driver: 's3', s3: { bucket: 'cache' } }), 'f', {});
  assert.deepEqual(config.s3, {
    bucket: 'cache', prefix: '', region: 'us-east-1', endpoint: undefined, forcePathStyle: false, credentials: undefined,
    partSizeBytes: 8 * 2 ** 20, redirect: false, redirectExpiryMs: 300_000, abandonedUploadAgeMs: 3_600_000,
  });
  assert.equal(resolveConfig(withStorage({}), 'f', {}).s3, undefined, 'the filesystem driver has no S3 settings');
});

test('S3 credentials: an access key with exactly one secret source, or none for the SDK chain', async () => {
  const s3 = (extra: Record<string, unknown>): Record<string, unknown> => withStorage({ driver: 's3', s3: { bucket: 'cache', ...extra } });
  assert.deepEqual(resolveConfig(s3({ accessKeyId: 'AK', secretAccessKey: 'SK' }), 'f', {}).s3!.credentials, { accessKeyId: 'AK', secretAccessKey: 'SK' });
  assert.deepEqual(resolveConfig(s3({ accessKeyId: 'AK', secretAccessKeyEnv: 'S3_SECRET' }), 'f', { S3_SECRET: 'from-env' }).s3!.credentials,
    { accessKeyId: 'AK', secretAccessKey: 'from-env' });
  const file = join(await tempDir('s3-config'), 'secret');
  await writeFile(file, 'from-file\n');
  assert.deepEqual(resolveConfig(s3({ accessKeyId: 'AK', secretAccessKeyFile: file }), 'f', {}).s3!.credentials,
    { accessKeyId: 'AK', secretAccessKey: 'from-file' });
  assert.match(configErrorMessage(() => resolveConfig(s3({ accessKeyId: 'AK' }), 'f', {})), /\/storage\/s3: give exactly one of secretAccessKey/);
  assert.match(configErrorMessage(() => resolveConfig(s3({ accessKeyId: 'AK', secretAccessKey: 'a', secretAccessKeyEnv: 'B' }), 'f', {})), /exactly one of/);
  assert.match(configErrorMessage(() => resolveConfig(s3({ secretAccessKey: 'SK' }), 'f', {})), /\/storage\/s3\/accessKeyId: is required/);
  assert.match(configErrorMessage(() => resolveConfig(s3({ accessKeyId: 'AK', secretAccessKeyEnv: 'NOPE' }), 'f', {})),
    /\/storage\/s3\/secretAccessKeyEnv: environment variable NOPE is not set/);
  assert.match(configErrorMessage(() => resolveConfig(s3({ accessKeyId: 'AK', secretAccessKeyFile: '/nonexistent/secret' }), 'f', {})),
    /\/storage\/s3\/secretAccessKeyFile: cannot read/);
});

test('S3 settings are validated, each error naming its key', () => {
  const bad = (storage: Record<string, unknown>): string => configErrorMessage(() => resolveConfig(withStorage(storage), 'f', {}));
  assert.match(bad({ driver: 's3' }), /\/storage\/s3: is required with storage.driver "s3"/);
  assert.match(bad({ s3: { bucket: 'cache' } }), /\/storage\/s3: is set, but storage.driver is not "s3"/);
  assert.match(bad({ driver: 'gcs' }), /\/storage\/driver/);
  assert.match(bad({ driver: 's3', s3: { bucket: 'Bad_Bucket' } }), /\/storage\/s3\/bucket: .*S3 bucket name/);
  assert.match(bad({ driver: 's3', s3: { bucket: 'cache', prefix: '/leading' } }), /\/storage\/s3\/prefix/);
  assert.match(bad({ driver: 's3', s3: { bucket: 'cache', endpoint: 'minio:9000' } }), /\/storage\/s3\/endpoint/);
  assert.match(bad({ driver: 's3', s3: { bucket: 'cache', partSize: '1MiB' } }), /\/storage\/s3\/partSize: must be between 5MiB and 5GiB/);
  assert.match(bad({ driver: 's3', s3: { bucket: 'cache', redirectExpiry: '30d' } }), /\/storage\/s3\/redirectExpiry/);
  assert.match(bad({ driver: 's3', s3: { bucket: 'cache', bukket: 'x' } }), /\/storage\/s3\/bukket: unknown key/);
});

test('config show redacts the S3 secret', async () => {
  const { redactSecrets } = await import('../../src/config/inspect.js');
  const shown = JSON.stringify(redactSecrets(withStorage({ driver: 's3', s3: { bucket: 'cache', accessKeyId: 'AK', secretAccessKey: 'hunter2' } })));
  assert.doesNotMatch(shown, /hunter2/);
  assert.match(shown, /"accessKeyId":"AK"/);
});
