/**
 * Reading a V8 `.cpuprofile` (what `node --cpu-prof` writes at exit): self
 * time per function, inclusive time of pullthrough's own functions, and time
 * per package, so the report can point at hot spots with numbers.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface HotSpot {
  readonly function: string;
  /** `src/proxy/fill.js:123` (compiled JS line), `fastify/lib/reply.js:45`, `node:internal/fs/promises:600`. */
  readonly location: string;
  readonly category: string;
  readonly ms: number;
  /** Share of the busy (non-idle) time. */
  readonly pct: number;
}

export interface ProfileSummary {
  readonly workload: string;
  readonly file: string;
  /** Samples × the sampling interval, after the skipped start. */
  readonly sampledMs: number;
  readonly idlePct: number;
  readonly busyMs: number;
  /** Time per package or area, as a share of busy time. */
  readonly categories: readonly { readonly category: string; readonly ms: number; readonly pct: number }[];
  /** Functions by self time. */
  readonly topSelf: readonly HotSpot[];
  /** pullthrough's own functions by inclusive time (recursion counted once). */
  readonly topProject: readonly HotSpot[];
  /** What the profiled run achieved, for context. */
  readonly notes: readonly string[];
}

/** Shortens a script URL to the part that says where it lives. */
function shortLocation(url: string): string {
  if (url === '') return '';
  const path = url.replace(/^file:\/\//, '');
  const nm = path.lastIndexOf('/node_modules/');
  if (nm >= 0) return path.slice(nm + '/node_modules/'.length);
  const src = path.indexOf('/dist/src/');
  if (src >= 0) return path.slice(src + '/dist/'.length);
  return path;
}

function categoryOf(frame: CallFrame): string {
  const name = frame.functionName;
  if (name === '(idle)' || name === '(garbage collector)' || name === '(program)' || name === '(root)') return name;
  const url = frame.url;
  if (url === '') return '(native)';
  if (url.includes('/dist/src/')) return 'pullthrough (src/)';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) {
    const parts = url.slice('node:'.length).split('/');
    if (parts[0] === 'internal') {
      const area = parts[1]?.replace(/\.js$/, '') ?? '';
      return `node:internal/${area}`;
    }
    return `node:${parts[0]}`;
  }
  return url;
}

function keyOf(frame: CallFrame): string {
  return `${frame.functionName || '(anonymous)'}\0${frame.url}\0${frame.lineNumber}`;
}

/** Reads the newest `.cpuprofile` in `dir`. */
export async function findProfile(dir: string): Promise<string> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.cpuprofile')).sort();
  if (names.length === 0) throw new Error(`no .cpuprofile written in ${dir}`);
  return join(dir, names[names.length - 1]!);
}

export interface SummarizeOptions {
  /** Leave out samples taken in the first `skipMs` of the profile (start-up, module loading, warm-up). */
  readonly skipMs?: number;
  /** Hot spots listed. Default 15. */
  readonly top?: number;
}

export async function summarizeProfile(file: string, workload: string, notes: readonly string[] = [], options: SummarizeOptions = {}): Promise<ProfileSummary> {
  const top = options.top ?? 15;
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const skipUs = (options.skipMs ?? 0) * 1000;
  // Each sample counts for the sampling interval (the median gap between
  // samples), not for the gap that follows it: on a shared machine the main
  // thread is often descheduled, and a long gap would be charged to whatever
  // frame it was preempted in (usually a syscall), inflating it.
  const gaps = profile.timeDeltas.filter((d) => d > 0).sort((a, b) => a - b);
  const intervalUs = gaps.length > 0 ? gaps[gaps.length >> 1]! : 1000;
  let at = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    if (at < skipUs) continue;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + intervalUs);
  }
  const sampledUs = [...selfUs.values()].reduce((a, b) => a + b, 0);

  // Self time per function and per category.
  const selfByKey = new Map<string, { frame: CallFrame; us: number }>();
  const byCategory = new Map<string, number>();
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const key = keyOf(frame);
    const entry = selfByKey.get(key) ?? { frame, us: 0 };
    entry.us += us;
    selfByKey.set(key, entry);
    const category = categoryOf(frame);
    byCategory.set(category, (byCategory.get(category) ?? 0) + us);
  }
  const busyUs = Math.max(1, sampledUs - idleUs);

  // Inclusive time: a node's self time plus its subtree's, counted once per function on any stack.
  const inclusive = new Map<string, { frame: CallFrame; us: number }>();
  const subtree = new Map<number, number>();
  const total = (id: number): number => {
    const cached = subtree.get(id);
    if (cached !== undefined) return cached;
    const node = byId.get(id)!;
    let us = selfUs.get(id) ?? 0;
    for (const child of node.children ?? []) us += total(child);
    subtree.set(id, us);
    return us;
  };
  const root = profile.nodes[0]!;
  const onStack = new Map<string, number>();
  const walk = (id: number): void => {
    const node = byId.get(id)!;
    const key = keyOf(node.callFrame);
    const depth = onStack.get(key) ?? 0;
    if (depth === 0 && node.callFrame.url.includes('/dist/src/')) {
      const entry = inclusive.get(key) ?? { frame: node.callFrame, us: 0 };
      entry.us += total(id);
      inclusive.set(key, entry);
    }
    onStack.set(key, depth + 1);
    for (const child of node.children ?? []) walk(child);
    onStack.set(key, depth);
  };
  walk(root.id);

  const spot = ({ frame, us }: { frame: CallFrame; us: number }): HotSpot => ({
    function: frame.functionName || '(anonymous)',
    location: frame.url ? `${shortLocation(frame.url)}:${frame.lineNumber + 1}` : '(native)',
    category: categoryOf(frame),
    ms: us / 1000,
    pct: (100 * us) / busyUs,
  });
  return {
    workload,
    file,
    sampledMs: sampledUs / 1000,
    idlePct: (100 * idleUs) / Math.max(1, sampledUs),
    busyMs: busyUs / 1000,
    categories: [...byCategory.entries()]
      .map(([category, us]) => ({ category, ms: us / 1000, pct: (100 * us) / busyUs }))
      .sort((a, b) => b.ms - a.ms),
    topSelf: [...selfByKey.values()].sort((a, b) => b.us - a.us).slice(0, top).map(spot),
    topProject: [...inclusive.values()].filter((e) => e.us > 0).sort((a, b) => b.us - a.us).slice(0, top).map(spot),
    notes,
  };
}
