/**
 * The shipped deployments probe what the probes are for: Kubernetes'
 * readiness and liveness probes and the compose health checks ask
 * `/readyz` and `/livez`, not the registry API.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

const read = (path: string): string => readFileSync(new URL(`../../../${path}`, import.meta.url), 'utf8');

interface Container {
  readonly name: string;
  readonly readinessProbe?: { readonly httpGet?: { readonly path: string } };
  readonly livenessProbe?: { readonly httpGet?: { readonly path: string } };
}

test('deploy/kubernetes.yaml: pullthrough pods are ready on /readyz and live on /livez', () => {
  const documents = parseAllDocuments(read('deploy/kubernetes.yaml')).map((d) => d.toJS() as Record<string, unknown>);
  const deployment = documents.find((d) => d['kind'] === 'Deployment' && (d['metadata'] as { name: string }).name === 'pullthrough') as
    { spec: { template: { spec: { containers: Container[] } } } } | undefined;
  assert.ok(deployment, 'the pullthrough Deployment');
  const container = deployment.spec.template.spec.containers.find((c) => c.name === 'pullthrough')!;
  assert.equal(container.readinessProbe?.httpGet?.path, '/readyz');
  assert.equal(container.livenessProbe?.httpGet?.path, '/livez');
});

test('the compose files check pullthrough on /readyz', () => {
  for (const path of ['docker-compose.yml', 'deploy/docker-compose.single.yml']) {
    const compose = parseAllDocuments(read(path))[0]!.toJS() as { services: Record<string, { healthcheck?: { test: string[] } }> };
    const check = compose.services['pullthrough']?.healthcheck?.test.join(' ') ?? '';
    assert.ok(check.includes('http://127.0.0.1:5000/readyz'), `${path}: ${check}`);
  }
});

test('the S3 variants: Kubernetes without a PersistentVolumeClaim, each pod advertising its IP; compose without a shared volume; valid configurations', async () => {
  const { resolveConfig } = await import('../../src/config/load.js');
  const env = { S3_SECRET_ACCESS_KEY: 'x', PULLTHROUGH_PEER_SECRET: 'a-peer-secret-of-32-characters!!' };
  const documents = parseAllDocuments(read('deploy/kubernetes-s3.yaml')).map((d) => d.toJS() as Record<string, unknown>);
  assert.ok(!documents.some((d) => d['kind'] === 'PersistentVolumeClaim'), 'no PersistentVolumeClaim');
  const map = documents.find((d) => d['kind'] === 'ConfigMap') as { data: { 'config.json': string } };
  const config = resolveConfig(JSON.parse(map.data['config.json']), 'kubernetes-s3.yaml', env);
  assert.equal(config.s3?.bucket, 'corp-pullthrough-cache');
  const deployment = documents.find((d) => d['kind'] === 'Deployment' && (d['metadata'] as { name: string }).name === 'pullthrough') as
    { spec: { template: { spec: { containers: (Container & { env: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[] })[]; volumes: Record<string, unknown>[] } } } };
  const container = deployment.spec.template.spec.containers[0]!;
  assert.equal(container.readinessProbe?.httpGet?.path, '/readyz');
  assert.equal(container.env.find((e) => e.name === 'POD_IP')?.valueFrom?.fieldRef?.fieldPath, 'status.podIP');
  assert.equal(container.env.find((e) => e.name === 'PULLTHROUGH_PEERS_ADVERTISE')?.value, 'http://$(POD_IP):5000');
  assert.ok(!deployment.spec.template.spec.volumes.some((v) => 'persistentVolumeClaim' in v));
  assert.equal(resolveConfig(JSON.parse(read('deploy/s3.config.json')), 's3.config.json', env).s3?.bucket, 'pullthrough');
  const compose = parseAllDocuments(read('deploy/docker-compose.s3.yml'))[0]!.toJS() as
    { services: Record<string, { healthcheck?: { test: string[] }; volumes?: string[] }> };
  assert.ok(compose.services['pullthrough']!.healthcheck!.test.join(' ').includes('http://127.0.0.1:5000/readyz'));
  assert.deepEqual(compose.services['pullthrough']!.volumes, ['./s3.config.json:/etc/pullthrough/config.json:ro'], 'no cache volume');
});

test('deploy/kubernetes/node-local.yaml: a DaemonSet on the host network, an init container writing certs.d, a Redis, a valid configuration', async () => {
  const { mkdtemp, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { loadConfig } = await import('../../src/config/load.js');
  const documents = parseAllDocuments(read('deploy/kubernetes/node-local.yaml')).map((d) => d.toJS() as Record<string, unknown>);
  interface NodeContainer extends Container {
    readonly command?: string[];
    readonly env?: { name: string; value?: string }[];
    readonly volumeMounts?: { name: string; mountPath: string }[];
  }
  const daemonSet = documents.find((d) => d['kind'] === 'DaemonSet') as
    { spec: { template: { spec: { hostNetwork: boolean; initContainers: NodeContainer[]; containers: NodeContainer[]; volumes: { name: string; hostPath?: { path: string } }[] } } } } | undefined;
  assert.ok(daemonSet, 'the DaemonSet');
  const pod = daemonSet.spec.template.spec;
  assert.equal(pod.hostNetwork, true);
  const init = pod.initContainers.find((c) => c.name === 'containerd-config')!;
  assert.ok(init.command?.includes('containerd-config'));
  assert.equal(pod.volumes.find((v) => v.name === 'certs-d')?.hostPath?.path, '/etc/containerd/certs.d');
  const main = pod.containers.find((c) => c.name === 'pullthrough')!;
  assert.equal(main.readinessProbe?.httpGet?.path, '/readyz');
  assert.equal(main.livenessProbe?.httpGet?.path, '/livez');
  assert.ok(pod.volumes.find((v) => v.name === 'cache')?.hostPath, 'the node\'s own disk');
  assert.ok(documents.some((d) => d['kind'] === 'Service' && (d['metadata'] as { name: string }).name === 'pullthrough-redis'));

  const configMap = documents.find((d) => d['kind'] === 'ConfigMap') as { data: Record<string, string> };
  const file = join(await mkdtemp(join(tmpdir(), 'node-local-')), 'config.json');
  await writeFile(file, configMap.data['config.json']!);
  const config = loadConfig(file, { PULLTHROUGH_PEERS_ADVERTISE: 'http://10.0.0.7:5000', PEER_SECRET: 'a'.repeat(32) });
  assert.equal(config.peers?.advertise, 'http://10.0.0.7:5000');
  assert.ok(config.storage.maxBytes !== undefined, 'a bounded disk');
  const advertise = main.env?.find((e) => e.name === 'PULLTHROUGH_PEERS_ADVERTISE')?.value;
  assert.equal(advertise, 'http://$(NODE_IP):5000');
});
