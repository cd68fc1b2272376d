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
