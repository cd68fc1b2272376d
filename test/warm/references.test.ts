/**
 * Where `pullthrough warm` finds references: plain lists, lock files,
 * docker-compose files and multi-document Kubernetes manifests. No tools
 * needed: these are parsers.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { formatLock, interpolate, parseReferenceFile, ReferenceSourceError } from '../../src/warm/references.js';
import { parseDigest } from '../../src/registry/digest.js';
import { parsePlatforms, platformMatches } from '../../src/registry/imageManifest.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;

test('a plain list: one reference a line, # comments and blank lines ignored', () => {
  const found = parseReferenceFile('# images for CI\nalpine:3.20\n\n  ghcr.io/org/app:1.2   # the app\nregistry.k8s.io/pause@' + DIGEST + '\n', 'images.txt');
  assert.deepEqual(found.map((e) => e.reference), ['alpine:3.20', 'ghcr.io/org/app:1.2', `registry.k8s.io/pause@${DIGEST}`]);
  assert.deepEqual(found.map((e) => e.source), ['images.txt:2', 'images.txt:4', 'images.txt:5']);
  assert.ok(found.every((e) => e.lockedDigest === undefined));
});

test('a lock file reads back as references locked to their digests', () => {
  const text = formatLock([{ reference: 'alpine:3.20', digest: parseDigest(DIGEST).digest }]);
  assert.match(text, /^# pullthrough lock/);
  const found = parseReferenceFile(text, 'images.lock');
  assert.deepEqual(found.map((e) => [e.reference, e.lockedDigest]), [['alpine:3.20', DIGEST]]);
  assert.throws(() => parseReferenceFile('alpine:3.20 latest\n', 'bad.lock'), /bad\.lock:1: "latest" is not a digest/);
  assert.throws(() => parseReferenceFile('a b c\n', 'bad.txt'), /bad\.txt:1/);
});

test('docker-compose: services.*.image, with ${VAR:-default} interpolation; build-only services have none', () => {
  const compose = [
    'services:',
    '  web:',
    '    image: ghcr.io/org/web:${WEB_TAG:-1.0}',
    '  db:',
    '    image: "postgres:16"',
    '  builder:',
    '    build: .',
  ].join('\n');
  const found = parseReferenceFile(compose, 'docker-compose.yml');
  assert.deepEqual(found.map((e) => e.reference), ['ghcr.io/org/web:1.0', 'postgres:16']);
  assert.equal(found[0]!.source, 'docker-compose.yml: services.web.image');
});

test('compose interpolation: set, default, required, and $$', () => {
  const env = { TAG: '2.0', EMPTY: '' };
  assert.equal(interpolate('app:${TAG}', 'x', env), 'app:2.0');
  assert.equal(interpolate('app:$TAG', 'x', env), 'app:2.0');
  assert.equal(interpolate('app:${EMPTY:-1}', 'x', env), 'app:1');
  assert.equal(interpolate('app:${EMPTY-1}', 'x', env), 'app:');
  assert.equal(interpolate('a$$b', 'x', env), 'a$b');
  assert.throws(() => interpolate('app:${NOPE}', 'f: services.a.image', env), ReferenceSourceError);
  assert.throws(() => interpolate('app:${NOPE:?set NOPE}', 'f', env), /set NOPE/);
});

test('Kubernetes multi-document YAML: containers, initContainers, ephemeralContainers, CronJob jobTemplate, List items, image volumes', () => {
  const manifests = `
apiVersion: v1
kind: ConfigMap
metadata: { name: no-images }
data: { image: not-a-container }
---
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: registry.corp:5000/team/migrate:7
      containers:
        - name: app
          image: ghcr.io/org/app:1.2
        - name: sidecar
          image: registry.k8s.io/pause@${DIGEST}
      volumes:
        - name: models
          image: { reference: quay.io/org/models:v3, pullPolicy: IfNotPresent }
---
apiVersion: batch/v1
kind: CronJob
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: nightly
              image: alpine:3.20
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    spec:
      containers: [{ name: a, image: busybox }]
      ephemeralContainers: [{ name: debug, image: docker.io/library/debian:12 }]
`;
  const found = parseReferenceFile(manifests, 'k8s.yaml');
  assert.deepEqual(found.map((e) => e.reference), [
    'registry.corp:5000/team/migrate:7',
    'ghcr.io/org/app:1.2',
    `registry.k8s.io/pause@${DIGEST}`,
    'quay.io/org/models:v3',
    'alpine:3.20',
    'busybox',
    'docker.io/library/debian:12',
  ]);
  assert.equal(found[0]!.source, 'k8s.yaml: document 2: spec.template.spec.initContainers[0].image');
  assert.equal(found[4]!.source, 'k8s.yaml: document 3: spec.jobTemplate.spec.template.spec.containers[0].image');
});

test('a file with no references is an error, not a silent no-op', () => {
  assert.throws(() => parseReferenceFile('# nothing\n', 'empty.txt'), /empty\.txt: no image references found/);
  assert.throws(() => parseReferenceFile('kind: ConfigMap\ndata: {}\n', 'cm.yaml'), /no image references/);
});

test('--platform: os/architecture[/variant], a variant-less one matches every variant', () => {
  const [amd64, arm] = parsePlatforms('linux/amd64, linux/arm/v7');
  assert.deepEqual(amd64, { os: 'linux', architecture: 'amd64' });
  assert.deepEqual(arm, { os: 'linux', architecture: 'arm', variant: 'v7' });
  assert.ok(platformMatches({ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }));
  assert.ok(!platformMatches(arm!, { os: 'linux', architecture: 'arm', variant: 'v6' }));
  assert.throws(() => parsePlatforms('amd64'), /os\/architecture/);
});
