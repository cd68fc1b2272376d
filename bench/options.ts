/**
 * Command-line flags of `npm run bench -- [flags]`. Every size and count has
 * a default sized for a 2-core machine: the full run fits in 10 minutes,
 * `--quick` in under 2.
 */
import { parseArgs } from 'node:util';

export type Phase = 'cold' | 'rps' | 'scale' | 'catalog' | 'profile';
const PHASES: readonly Phase[] = ['cold', 'rps', 'scale', 'catalog', 'profile'];

export interface BenchOptions {
  readonly quick: boolean;
  /** Rounds of the cold/warm measurements (fresh caches each round), alternating targets. */
  readonly rounds: number;
  /** Rounds of the requests-per-second measurements. */
  readonly rpsRounds: number;
  /** Seconds of each autocannon run. */
  readonly rpsSeconds: number;
  /** autocannon connections. */
  readonly connections: number;
  /** Bytes of random content per layer of the seeded images. */
  readonly layerSize: number;
  /** Layers per seeded image (4 repositories, 6 images in all). */
  readonly layers: number;
  /** Size of the big blob (8 concurrent cold GETs, cached MB/s). */
  readonly bigSize: number;
  /** Simultaneous clients of the cold big blob. */
  readonly concurrentClients: number;
  /** Cold blobs whose time to first byte is taken per round. */
  readonly ttfbSamples: number;
  /** Bytes of each TTFB blob. */
  readonly ttfbSize: number;
  /** Timed GETs of the cached big blob per connection per round. */
  readonly blobReads: number;
  /** Scale phase: clients pulling cached images at once, each its own mix. */
  readonly scaleClients: number;
  /** Scale phase: cached images (2 layers each) the hot clients pull from. */
  readonly scaleImages: number;
  /** Scale phase: bytes per layer of those images. */
  readonly scaleLayerSize: number;
  /** Scale phase: clients pulling one cold image at once. */
  readonly scaleColdClients: number;
  /** Scale phase: bytes of the cold image's one layer. */
  readonly scaleColdSize: number;
  /** Large-catalog phase: cached tags, and the repositories they are spread over. */
  readonly catalogTags: number;
  readonly catalogRepos: number;
  /** Print every figure's change against bench/baseline.json. */
  readonly compare: boolean;
  /** Write this run's medians to bench/baseline.json. */
  readonly saveBaseline: boolean;
  /** Leave nginx out even when it is installed. */
  readonly noNginx: boolean;
  /** Which phases run: cold/warm rounds, requests per second, scale, large catalog, the profile of pullthrough. */
  readonly phases: ReadonlySet<Phase>;
  /** Write bench/RESULTS.md (default: full runs only). */
  readonly writeMarkdown: boolean;
  /** The JSON result file. */
  readonly out: string;
  /** Extra `node` flags for the pullthrough child (experiments: heap sizes, ...). */
  readonly pullthroughNodeFlags: readonly string[];
  /** A guard against hangs: the bench gives up (exit 1) after this many minutes. */
  readonly maxMinutes: number;
}

const USAGE = `Usage: npm run bench -- [options]

  --quick                 small sizes and short runs (under 2 minutes)
  --rounds N              cold/warm rounds per target (default 3, quick 1)
  --rps-rounds N          requests-per-second rounds (default 3, quick 1)
  --rps-seconds S         seconds per autocannon run (default 5, quick 2)
  --connections N         autocannon connections (default 16)
  --layer-size SIZE       bytes per layer of the seeded images (default 16MiB, quick 4MiB)
  --layers N              layers per seeded image (default 2, quick 1)
  --big-size SIZE         the big blob (default 64MiB, quick 32MiB)
  --clients N             simultaneous clients of the cold big blob (default 8)
  --ttfb-samples N        cold blobs timed to first byte per round (default 3, quick 2)
  --ttfb-size SIZE        bytes of each of those blobs (default 4MiB)
  --blob-reads N          timed GETs of the cached big blob per connection (default 4, quick 1)
  --scale-clients N       clients pulling cached images at once (default 200, quick 100)
  --scale-images N        cached images they pull from (default 10)
  --scale-layer-size SIZE bytes per layer of those images, 2 layers each (default 256KiB, quick 64KiB)
  --scale-cold-clients N  clients pulling one cold image at once (default 50)
  --scale-cold-size SIZE  its one layer (default 32MiB, quick 8MiB)
  --catalog-tags N        cached tags of the large-catalog phase (default 20000, quick 1000)
  --catalog-repos N       repositories they are spread over (default 2000, quick 100)
  --compare               print the change of every figure against bench/baseline.json
  --save-baseline         write this run's medians to bench/baseline.json
  --no-nginx              leave nginx out (it is measured when installed)
  --no-profile            skip the --cpu-prof runs of pullthrough
  --phases LIST           run only these of cold,rps,scale,catalog,profile (default all)
  --md / --no-md          write bench/RESULTS.md (default: only without --quick)
  --out FILE              JSON result file (default .bench-results/latest.json, quick: latest-quick.json)
  --max-minutes N         give up after N minutes, a guard against hangs (default 20, quick 5)
  --pullthrough-node-flags "FLAGS"
                          extra node flags for the pullthrough process, e.g. "--max-semi-space-size=4"
  -h, --help              this text

SIZE: bytes, or a number with KiB, MiB, GiB (k, m, g).`;

/** `16MiB`, `4m`, `65536`. */
export function parseSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(text.trim());
  if (!match) throw new Error(`not a size: ${text}`);
  const unit = (match[2] ?? 'b').toLowerCase()[0]!;
  const factor = unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : 1;
  return Math.round(Number(match[1]) * factor);
}

function positiveInt(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer, not ${text}`);
  return value;
}

function phaseSet(text: string | undefined, noProfile: boolean): Set<Phase> {
  const names = text === undefined ? [...PHASES] : text.split(',').map((p) => p.trim()).filter(Boolean);
  for (const name of names) {
    if (!PHASES.includes(name as Phase)) throw new Error(`--phases: unknown phase ${name} (known: ${PHASES.join(', ')})`);
  }
  const set = new Set(names as Phase[]);
  if (noProfile) set.delete('profile');
  return set;
}

export function parseOptions(argv: readonly string[]): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      'rps-rounds': { type: 'string' },
      'rps-seconds': { type: 'string' },
      connections: { type: 'string' },
      'layer-size': { type: 'string' },
      layers: { type: 'string' },
      'big-size': { type: 'string' },
      clients: { type: 'string' },
      'ttfb-samples': { type: 'string' },
      'ttfb-size': { type: 'string' },
      'blob-reads': { type: 'string' },
      'scale-clients': { type: 'string' },
      'scale-images': { type: 'string' },
      'scale-layer-size': { type: 'string' },
      'scale-cold-clients': { type: 'string' },
      'scale-cold-size': { type: 'string' },
      'catalog-tags': { type: 'string' },
      'catalog-repos': { type: 'string' },
      compare: { type: 'boolean', default: false },
      'save-baseline': { type: 'boolean', default: false },
      'no-nginx': { type: 'boolean', default: false },
      'no-profile': { type: 'boolean', default: false },
      phases: { type: 'string' },
      md: { type: 'boolean' },
      'no-md': { type: 'boolean' },
      out: { type: 'string' },
      'max-minutes': { type: 'string' },
      'pullthrough-node-flags': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return 'help';
  const quick = values.quick === true;
  const size = (name: string, text: string | undefined, fallback: number): number => {
    const value = text === undefined ? fallback : parseSize(text);
    if (value < 1) throw new Error(`--${name} must be at least 1 byte`);
    return value;
  };
  return {
    quick,
    rounds: positiveInt('rounds', values.rounds, quick ? 1 : 3),
    rpsRounds: positiveInt('rps-rounds', values['rps-rounds'], quick ? 1 : 3),
    rpsSeconds: positiveInt('rps-seconds', values['rps-seconds'], quick ? 2 : 5),
    connections: positiveInt('connections', values.connections, 16),
    layerSize: size('layer-size', values['layer-size'], (quick ? 4 : 16) * 1024 * 1024),
    layers: positiveInt('layers', values.layers, quick ? 1 : 2),
    bigSize: size('big-size', values['big-size'], (quick ? 32 : 64) * 1024 * 1024),
    concurrentClients: positiveInt('clients', values.clients, 8),
    ttfbSamples: positiveInt('ttfb-samples', values['ttfb-samples'], quick ? 2 : 3),
    ttfbSize: size('ttfb-size', values['ttfb-size'], 4 * 1024 * 1024),
    blobReads: positiveInt('blob-reads', values['blob-reads'], quick ? 1 : 4),
    scaleClients: positiveInt('scale-clients', values['scale-clients'], quick ? 100 : 200),
    scaleImages: positiveInt('scale-images', values['scale-images'], 10),
    scaleLayerSize: size('scale-layer-size', values['scale-layer-size'], (quick ? 64 : 256) * 1024),
    scaleColdClients: positiveInt('scale-cold-clients', values['scale-cold-clients'], 50),
    scaleColdSize: size('scale-cold-size', values['scale-cold-size'], (quick ? 8 : 32) * 1024 * 1024),
    catalogTags: positiveInt('catalog-tags', values['catalog-tags'], quick ? 1000 : 20_000),
    catalogRepos: positiveInt('catalog-repos', values['catalog-repos'], quick ? 100 : 2000),
    compare: values.compare === true,
    saveBaseline: values['save-baseline'] === true,
    noNginx: values['no-nginx'] === true,
    pullthroughNodeFlags: (values['pullthrough-node-flags'] ?? '').split(/\s+/).filter(Boolean),
    phases: phaseSet(values.phases, values['no-profile'] === true),
    writeMarkdown: values['no-md'] === true ? false : values.md ?? !quick,
    out: values.out ?? (quick ? '.bench-results/latest-quick.json' : '.bench-results/latest.json'),
    maxMinutes: positiveInt('max-minutes', values['max-minutes'], quick ? 5 : 20),
  };
}

export { USAGE };
