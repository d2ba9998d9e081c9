/**
 * Hostile-input fuzzing: mutated seed images (hostile-pool.ts, mutations from src/corrupt/mutate.ts)
 * through every stage of hostile-harness.ts, in a worker thread (hostile-worker.ts) so that a hang is
 * ended and reported and the heap is capped. Used by test/qemu/hostile-input.test.ts (bounded) and by
 * `npm run fuzz` (`hostileCampaign`, open-ended).
 *
 * The bounds every case must keep, and why these numbers:
 * - Work (src/codec/work-meter.ts: bytes read from host files plus 8 per field the generated
 *   decoders read, over all 13 stages) at most workLimit(): 64 × the file's bytes, plus 16 clusters,
 *   plus 4 × the bytes the stages wrote or zeroed, plus 24 MiB. Why: a stage reads the file a few times at most
 *   (a check pass reads every table once, a repair makes three passes), each stage that opens reads
 *   cluster 0 whole even from a file shorter than it, the read stage reads at most 16 MiB of guest
 *   data and the map stage 2048 entries (hostile-harness.ts DEFAULT_LIMITS), and a repair may read
 *   back what it wrote (`-r all` rebuilding the refcount structure of a file it grew to reach a
 *   refcount block far out: QEMU's own repair). Unmutated seeds do 0.2-5 × their size; in 34 172
 *   fuzzed cases (--seed 2026, 21 min) the most was a quarter of the limit. More means work that grows with an untrusted count rather
 *   than with the file — what a wall clock on a shared 2-core machine cannot tell reliably.
 * - HANG_MS = 30 s, a hang detector only: a case that has not finished by then (cases take 37 ms
 *   on average; the slowest legitimate one seen, 5.6 s, is `-r all` growing a file of 512-byte
 *   clusters to 8 TiB to reach a refcount block and rebuilding its refcount structure, which takes
 *   qemu-img 2.5 min) is ended: the worker is terminated, a new one started, and the case reported
 *   as failed.
 * - HEAP_CEILING_BYTES = 256 MiB: the largest tables QEMU itself accepts are an L1 table of 32 MiB,
 *   a refcount table of 8 MiB and a snapshot table of 64 MiB (docs/format/open-validation.md#qemus-order #14-#16, docs/format/snapshots.md#limits); with a
 *   copy of the largest seed (14 MiB) and a working copy of each that is about 2 × 118 MiB. More than
 *   that means an allocation sized by an untrusted field beyond QEMU's limits. Measured as
 *   heapUsed + arrayBuffers at every stage boundary minus the value after a forced GC before the case
 *   (garbage included, so it over-approximates what was live). A peak inside a stage that is gone by
 *   its end is caught by the worker's V8 heap cap a little above the ceiling (WORKER_HEAP_MB): a
 *   runaway allocation ends the worker — reported as a failed case — not the run.
 */
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { mutationTargets, type Mutation, type MutationTargets } from '../../src/corrupt/mutate.ts';
import { MUTATION_KINDS, mutationOfKind, type MutationKind } from './mutations.ts';
import { failureOf, type BatchParams, type BatchResult, type Campaign } from './campaign.ts';
import type { CaseReport } from './hostile-harness.ts';
import { modelPool, qemuPool, type PoolImage } from './hostile-pool.ts';

export const HANG_MS = 30_000;
export const HEAP_CEILING_BYTES = 256 * 1024 * 1024;
const WORKER_HEAP_MB = 320;

/** The work of a case (src/codec/work-meter.ts units): host bytes read plus 8 per decoded field, all stages. */
export function caseWork(r: CaseReport): number {
  return r.stages.reduce((n, s) => n + s.work.hostBytes + 8 * s.work.decodedFields, 0);
}

/**
 * The most work (caseWork units) the stages may do on a file of `fileBytes` bytes with clusters of
 * `clusterSize` bytes, having written `written` bytes (see the module comment for the terms).
 */
export function workLimitFor(fileBytes: number, clusterSize: number, written: number): number {
  return 64 * fileBytes + 16 * clusterSize + 4 * written + 24 * 1024 * 1024;
}

/** The most work a case may do: workLimitFor its file, cluster size and the bytes its stages wrote or zeroed. */
export function workLimit(r: CaseReport): number {
  return workLimitFor(r.fileBytes, r.clusterSize, r.stages.reduce((n, s) => n + s.work.hostWritten + s.work.hostZeroed, 0));
}

/** A seed image with where it can be mutated. */
export interface HostilePoolEntry extends PoolImage {
  readonly targets: MutationTargets;
}

/** The seed images with their mutation targets (model-made, plus qemu-img-made when `qemu`). */
export async function hostilePool(qemu: boolean): Promise<HostilePoolEntry[]> {
  const images = [...modelPool(), ...(qemu ? await qemuPool() : [])];
  return images.map((p) => ({ ...p, targets: mutationTargets(p.bytes) }));
}

/** One case: which seed (by name, for printing) and the mutations applied in order. */
export interface HostileCase {
  readonly image: string;
  readonly mutations: readonly Mutation[];
}

/** Cases over `pool`: one to three mutations of the given kinds (all kinds when `kinds` is undefined). */
export function hostileCaseArb(pool: readonly HostilePoolEntry[], kinds: readonly MutationKind[] = MUTATION_KINDS): fc.Arbitrary<HostileCase> {
  return fc.constantFrom(...pool).chain((p) =>
    fc
      .array(fc.constantFrom(...kinds).chain((k) => mutationOfKind(p.targets, k)), { minLength: 1, maxLength: 3 })
      .map((mutations): HostileCase => ({ image: p.name, mutations })),
  );
}

/** Why a case failed, or undefined when it kept every bound. */
export function caseFailure(r: CaseReport | 'hang' | { readonly crashed: string }): string | undefined {
  if (r === 'hang') return `did not finish within ${HANG_MS} ms (worker terminated)`;
  if ('crashed' in r) return `the worker died: ${r.crashed}`;
  const bad = r.stages.find((s) => s.untyped !== undefined);
  if (bad !== undefined) return `${bad.stage}: untyped ${bad.untyped!.name}: ${bad.untyped!.message}\n${bad.untyped!.stack}`;
  const work = caseWork(r);
  if (work > workLimit(r)) {
    const heavy = r.stages.reduce((a, b) => (b.work.hostBytes + 8 * b.work.decodedFields > a.work.hostBytes + 8 * a.work.decodedFields ? b : a));
    return `did ${work} units of work on a file of ${r.fileBytes} bytes (limit ${workLimit(r)}); heaviest stage ${heavy.stage}: ${JSON.stringify(heavy.work)}`;
  }
  if (r.heapPeakBytes > HEAP_CEILING_BYTES) return `heap grew by ${(r.heapPeakBytes / 2 ** 20).toFixed(1)} MiB (ceiling ${HEAP_CEILING_BYTES / 2 ** 20} MiB)`;
  return undefined;
}

/**
 * A worker running hostile cases over one pool. `run` resolves to the case's report, 'hang' when it
 * did not finish within HANG_MS (the worker is then terminated and a new one started), or
 * `{ crashed }` when the worker died (e.g. the heap cap was hit).
 */
export class HostileRunner {
  private worker: Worker | undefined;
  private ready: Promise<void> | undefined;
  private readonly index: Map<string, number>;

  constructor(readonly pool: readonly HostilePoolEntry[]) {
    this.index = new Map(pool.map((p, i) => [p.name, i]));
  }

  /** Resolves once the worker is up with the pool (starts it if needed). */
  start(): Promise<void> {
    if (this.ready === undefined) {
      const w = new Worker(new URL('./hostile-worker-boot.mjs', import.meta.url), {
        workerData: { entry: new URL('./hostile-worker.ts', import.meta.url).href },
        resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB },
      });
      this.worker = w;
      this.ready = new Promise((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('error', reject);
        w.postMessage({ type: 'init', pool: this.pool.map((p) => ({ name: p.name, bytes: p.bytes, ...(p.dataFile !== undefined ? { dataFile: p.dataFile } : {}) })) });
      });
    }
    return this.ready;
  }

  async run(c: HostileCase): Promise<CaseReport | 'hang' | { crashed: string }> {
    await this.start();
    const w = this.worker!;
    const image = this.index.get(c.image);
    if (image === undefined) throw new Error(`hostile: no seed image ${c.image}`);
    const out = await new Promise<CaseReport | 'hang' | { crashed: string }>((resolve) => {
      const timer = setTimeout(() => finish('hang'), HANG_MS);
      const onMessage = (m: { type: string; report: CaseReport }): void => finish(m.report);
      const onError = (e: Error): void => finish({ crashed: `${e.name}: ${e.message}` });
      const onExit = (code: number): void => finish({ crashed: `exit code ${code}` });
      function finish(v: CaseReport | 'hang' | { crashed: string }): void {
        clearTimeout(timer);
        w.off('message', onMessage);
        w.off('error', onError);
        w.off('exit', onExit);
        resolve(v);
      }
      w.on('message', onMessage);
      w.on('error', onError);
      w.on('exit', onExit);
      w.postMessage({ type: 'case', image, mutations: c.mutations });
    });
    if (typeof out === 'string' || 'crashed' in out) await this.restart();
    return out;
  }

  private async restart(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    this.ready = undefined;
    if (w !== undefined) await w.terminate();
  }

  /** Ends the worker. */
  async close(): Promise<void> {
    await this.restart();
  }
}

/** What a series of cases met: counts by outcome and the slowest case. */
export class HostileStats {
  cases = 0;
  failures = 0;
  /** Typed errors by key (`Class:code`), counted once per stage that threw them. */
  readonly errors = new Map<string, number>();
  /** Stages that completed without error. */
  readonly ok = new Map<string, number>();
  readonly mutationKinds = new Map<string, number>();
  slowest: { ms: number; case: HostileCase; stage: string } | undefined;
  /** The case with the largest share of its work limit. */
  heaviest: { share: number; case: HostileCase } | undefined;
  maxHeap = 0;
  clustersRead = 0;

  add(c: HostileCase, r: CaseReport | 'hang' | { crashed: string }): void {
    this.cases++;
    for (const m of c.mutations) this.mutationKinds.set(m.kind, (this.mutationKinds.get(m.kind) ?? 0) + 1);
    if (typeof r === 'string' || 'crashed' in r) {
      this.failures++;
      return;
    }
    if (caseFailure(r) !== undefined) this.failures++;
    for (const s of r.stages) {
      if (s.outcome === 'ok') this.ok.set(s.stage, (this.ok.get(s.stage) ?? 0) + 1);
      else if (s.outcome !== 'skipped' && s.outcome !== 'untyped') this.errors.set(s.outcome, (this.errors.get(s.outcome) ?? 0) + 1);
    }
    this.clustersRead += r.clustersRead;
    this.maxHeap = Math.max(this.maxHeap, r.heapPeakBytes);
    const share = caseWork(r) / workLimit(r);
    if (this.heaviest === undefined || share > this.heaviest.share) this.heaviest = { share, case: c };
    if (this.slowest === undefined || r.totalMs > this.slowest.ms) {
      const slow = r.stages.reduce((a, b) => (b.ms > a.ms ? b : a));
      this.slowest = { ms: r.totalMs, case: c, stage: `${slow.stage} ${slow.ms.toFixed(0)} ms` };
    }
  }

  /** The summary `npm run fuzz` prints: cases run, typed errors by code, the slowest case. */
  summary(): string {
    const sorted = [...this.errors].sort((a, b) => b[1] - a[1]);
    const lines = [
      `hostile-input: ${this.cases} cases, ${this.failures} failed, ${this.clustersRead} cluster reads, max heap growth ${(this.maxHeap / 2 ** 20).toFixed(1)} MiB`,
      `  typed errors by code: ${sorted.length === 0 ? '(none)' : sorted.map(([k, n]) => `${k} ${n}`).join(', ')}`,
      `  stages ok: ${[...this.ok].map(([k, n]) => `${k} ${n}`).join(', ')}`,
    ];
    if (this.slowest !== undefined) {
      lines.push(`  slowest case: ${this.slowest.ms.toFixed(0)} ms (${this.slowest.stage}) on ${this.slowest.case.image}: ${fc.stringify(this.slowest.case.mutations)}`);
    }
    if (this.heaviest !== undefined) {
      lines.push(`  most work: ${(100 * this.heaviest.share).toFixed(1)} % of the limit on ${this.heaviest.case.image}: ${fc.stringify(this.heaviest.case.mutations)}`);
    }
    return lines.join('\n');
  }
}

/** The property: a case keeps every bound (hostile-harness.ts: only typed errors; work; heap; no hang). */
export function hostileProperty(runner: HostileRunner, arb: fc.Arbitrary<HostileCase>, stats: HostileStats): fc.IAsyncPropertyWithHooks<[HostileCase]> {
  return fc.asyncProperty(arb, async (c) => {
    const r = await runner.run(c);
    stats.add(c, r);
    const why = caseFailure(r);
    if (why !== undefined) throw new Error(`hostile case on ${c.image} failed: ${why}`);
  });
}

/**
 * The hostile-input campaign for `npm run fuzz`: one class per mutation kind ('flip', 'boundary',
 * 'truncate', 'extension') and 'mixed'. The seed pool (with qemu-img-made images) and the worker are
 * made on the first batch. `summary()` gives the cases run, typed errors by code and the slowest case.
 */
export function hostileCampaign(): Campaign & { summary(): string; close(): Promise<void> } {
  const stats = new HostileStats();
  let runner: HostileRunner | undefined;
  let pool: HostilePoolEntry[] | undefined;
  const classes = [...MUTATION_KINDS.map((k) => ({ name: k, title: `hostile input: ${k} mutations` })), { name: 'mixed', title: 'hostile input: any mutations' }];
  return {
    name: 'hostile-input',
    classes,
    async runBatch(cls: string, { seed, numRuns }: BatchParams): Promise<BatchResult> {
      pool ??= await hostilePool(true);
      runner ??= new HostileRunner(pool);
      const kinds = cls === 'mixed' ? MUTATION_KINDS : MUTATION_KINDS.filter((k) => k === cls);
      if (kinds.length === 0) throw new Error(`hostile-input: no class ${cls}`);
      const before = stats.cases;
      const d = await fc.check(hostileProperty(runner, hostileCaseArb(pool, kinds), stats), { seed, numRuns });
      const sequences = d.numRuns;
      const ops = (stats.cases - before) * 13;
      const failure = failureOf(d, 'hostile-input', cls, (path) =>
        `fc.assert(hostileProperty(runner, hostileCaseArb(pool, ${JSON.stringify(kinds)}), stats), { seed: ${d.seed}, path: '${path}', endOnFailure: true })`);
      return { sequences, ops, ...(failure !== undefined ? { failure } : {}) };
    },
    summary: () => stats.summary(),
    close: async () => {
      await runner?.close();
    },
  };
}
