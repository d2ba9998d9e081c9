/**
 * `--minimize`: keeps only the cases that add V8 code coverage of our parser and checker — the
 * generated codecs (generated/), src/format, src/open/open.ts and src/check/check.ts — the way
 * afl-cmin keeps only inputs that add edge coverage.
 *
 * Coverage: one child `node` process (coverage-probe.ts) runs every case with NODE_V8_COVERAGE set and
 * takes a V8 precise-coverage snapshot after each one (v8.takeCoverage() resets the counters, so each
 * snapshot is one case's coverage; a single child instead of one per case keeps the cost at one
 * start-up). A case's features are its covered blocks: (file, block start, block end) with the hit
 * count bucketed as AFL buckets edge counts (1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+).
 *
 * Selection (afl-cmin's greedy pass): cases sorted by total file size, then id; for every feature the
 * first (smallest) case that has it is its candidate; features are visited in sorted order and an
 * uncovered one adds its candidate and everything the candidate covers. Deterministic for the same
 * code and cases.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot } from '../io/index.ts';
import type { CorpusCase } from './manifest.ts';

/** The repository root. */

/** Source files whose coverage counts, relative to the checkout (repoRoot()). */
export function countsForCoverage(path: string): boolean {
  return path.startsWith('generated/') || path.startsWith('src/format/') || path === 'src/open/open.ts' || path === 'src/check/check.ts';
}

/** AFL's hit-count bucket of a block count. */
function bucket(count: number): string {
  if (count <= 3) return String(count);
  if (count <= 7) return '4-7';
  if (count <= 15) return '8-15';
  if (count <= 31) return '16-31';
  if (count <= 127) return '32-127';
  return '128+';
}

/** V8's precise coverage JSON, as far as it is read here. */
interface V8Coverage {
  readonly result: readonly {
    readonly url: string;
    readonly functions: readonly { readonly ranges: readonly { readonly startOffset: number; readonly endOffset: number; readonly count: number }[] }[];
  }[];
}

/** The features (covered blocks with bucketed counts) of one coverage snapshot, restricted to the files that count. */
export function coverageFeatures(cov: V8Coverage): Set<string> {
  const out = new Set<string>();
  for (const script of cov.result) {
    if (!script.url.startsWith('file:')) continue;
    const rel = relative(repoRoot(), fileURLToPath(script.url)).split('\\').join('/');
    if (!countsForCoverage(rel)) continue;
    for (const fn of script.functions) {
      for (const r of fn.ranges) if (r.count > 0) out.add(`${rel}:${r.startOffset}-${r.endOffset}:${bucket(r.count)}`);
    }
  }
  return out;
}

/** One case for the probe. */
export interface ProbeInput {
  readonly image: string;
  readonly dataFile?: string;
}

/** The covered features of each case (same order as `cases`), measured in one child process. */
export function measureCoverage(dir: string, cases: readonly CorpusCase[]): Set<string>[] {
  const work = mkdtempSync(join(tmpdir(), 'qcow2-ref-minimize-'));
  try {
    const covDir = join(work, 'coverage');
    mkdirSync(covDir);
    const list: ProbeInput[] = cases.map((c) => ({
      image: resolve(dir, c.files.image),
      ...(c.files.dataFile !== undefined ? { dataFile: resolve(dir, c.files.dataFile) } : {}),
    }));
    const listPath = join(work, 'cases.json');
    writeFileSync(listPath, JSON.stringify(list));
    // From the checkout, not import.meta.url: this module may run from the bundle in dist/.
    const probe = join(repoRoot(), 'src/corpus/coverage-probe.ts');
    // The installed package ships no TypeScript sources and no tsx.
    if (!existsSync(probe)) throw new Error(`corpus minimization measures coverage of the sources, so it runs only in a checkout of qcow2-ref (no ${probe})`);
    const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), probe, listPath], {
      env: { ...process.env, NODE_V8_COVERAGE: covDir },
      encoding: 'utf8',
      timeout: 30 * 60_000,
      maxBuffer: 16 << 20,
    });
    if (r.error !== undefined) throw new Error(`coverage probe could not run: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`coverage probe failed (exit ${r.status ?? r.signal}): ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`);
    return cases.map((_, i) => coverageFeatures(JSON.parse(readFileSync(join(covDir, `case-${i}.json`), 'utf8')) as V8Coverage));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** What minimization kept. */
export interface Minimized {
  /** Ids of the kept cases, in the order of the input. */
  readonly kept: readonly string[];
  /** Distinct features over all cases (= over the kept ones). */
  readonly features: number;
}

/**
 * afl-cmin's greedy selection over per-case feature sets (see the module comment). `sizes[i]` is
 * case i's total file size. The kept cases cover every feature any case covers.
 */
export function selectCases(ids: readonly string[], features: readonly Set<string>[], sizes: readonly number[]): Minimized {
  const order = ids.map((_, i) => i).sort((a, b) => sizes[a]! - sizes[b]! || (ids[a]! < ids[b]! ? -1 : ids[a]! > ids[b]! ? 1 : 0));
  const candidate = new Map<string, number>();
  for (const i of order) for (const f of features[i]!) if (!candidate.has(f)) candidate.set(f, i);
  const covered = new Set<string>();
  const keep = new Set<number>();
  for (const f of [...candidate.keys()].sort()) {
    if (covered.has(f)) continue;
    const i = candidate.get(f)!;
    keep.add(i);
    for (const g of features[i]!) covered.add(g);
  }
  return { kept: ids.filter((_, i) => keep.has(i)), features: candidate.size };
}

/** Measures the coverage of the cases under `dir` and selects the ones that add some. */
export function minimizeCases(dir: string, cases: readonly CorpusCase[]): Minimized {
  const features = measureCoverage(dir, cases);
  const sizes = cases.map((c) => [c.files.image, ...(c.files.backing ?? []), ...(c.files.dataFile !== undefined ? [c.files.dataFile] : [])]
    .reduce((n, p) => n + statSync(resolve(dir, p)).size, 0));
  return selectCases(cases.map((c) => c.id), features, sizes);
}
