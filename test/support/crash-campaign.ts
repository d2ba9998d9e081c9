/**
 * The `crash` campaign of `npm run fuzz`: the crash property of test/unit/crash-property.test.ts and
 * test/qemu/crash-qemu.test.ts, open-ended — random sequences over every class of QEMU_CLASSES; the
 * write logs of the model, the driver (write-through and write-back) and, where blklogwrites can log
 * it (no backing or data file) and QEMU has no known violation (not lazy refcounts), QEMU's qemu-io;
 * every crash state up to the bound judged; 12 states of each log, chosen uniformly, also given to
 * `qemu-img check` (images without a backing or data file, which it would need beside the state),
 * which must agree with our check. The summary gives sequences, crash states and violations by
 * writer, and crash states judged per minute: our whole judgement, and our open and check against
 * qemu-img check alone. A failure replays with
 *
 *   fc.assert(fc.asyncProperty(sequenceArb(CLASS, 16, CRASH_MAX_SIZE), fc.integer({ min: 1, max: 2 ** 31 - 1 }), crashSequence), { seed: SEED, path: PATH, endOnFailure: true })
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { crashPoints, crashStatesAt, judgeRun, type WriteLog } from '../../src/crash/index.ts';
import { qemuCheckDisagreement } from '../../src/conform/index.ts';
import { hostBytes } from '../../src/model/index.ts';
import { qemuImgCreate, runQemuLogged } from '../../src/qemu/index.ts';
import { failureOf, type Campaign } from './campaign.ts';
import { CRASH_MAX_SIZE, crashCase, crashRunOf, describeViolation, sampleOf, writeLogOf, writerApplies, type OurWriter } from './crash-runs.ts';
import { createOptionsOf, QEMU_CLASSES, sequenceArb, type QemuClass, type SequenceSpec } from './qemu-sequences.ts';

const OUR_WRITERS: readonly OurWriter[] = ['model', 'driver', 'driver-writeback'];
/** Crash states of each log given to qemu-img check, chosen uniformly. */
const QEMU_CHECKS_PER_LOG = 12;
const STATE_OPTIONS = { exhaustiveUpTo: 6, samples: 16, prefixes: 32, tornWrites: true } as const;

/** Per writer: sequences, crash states, violating states, states in QEMU's window. */
interface WriterTally {
  sequences: number;
  states: number;
  violating: number;
  known: number;
}

/** What the campaign counted. */
export interface CrashStats {
  readonly byWriter: Map<string, WriterTally>;
  oursMs: number;
  oursStates: number;
  /** Our open and check alone, on the states given to qemu-img check. */
  oursCheckMs: number;
  qemuMs: number;
  qemuChecked: number;
  disagreements: number;
}

/** The campaign's scratch directory, made on first use (importing this module has no side effects). */
let scratch: string | undefined;
const workDir = (): string => (scratch ??= mkdtempSync(join(tmpdir(), 'qcow2-crash-campaign-')));
let runNo = 0;

/**
 * One crash sequence: every writer's log over `spec`, judged; throws (with the reproduction) on a
 * violation or on a qemu-img check verdict different from ours. Counts into `stats`.
 */
export async function crashSequence(spec: SequenceSpec, seed: number, stats?: CrashStats): Promise<number> {
  const c = crashCase(spec);
  const logs: WriteLog[] = [];
  for (const w of OUR_WRITERS) if (writerApplies(c, w)) logs.push(await writeLogOf(c, w));
  // QEMU's log where blklogwrites sees every write (no backing or data file), and not with lazy
  // refcounts, where QEMU 7.2 violates by design of its order (docs/format/crash-consistency.md;
  // test/qemu/crash-qemu.test.ts keeps that finding).
  if (spec.cfg.backing === undefined && spec.cfg.dataFile === undefined && spec.cfg.lazy !== true) {
    const image = join(workDir(), `r${runNo++}.qcow2`);
    try {
      await qemuImgCreate(image, spec.cfg.requestedSize.toString(), createOptionsOf(spec.cfg));
      const base = new Uint8Array(readFileSync(image));
      const q = await runQemuLogged(image, c.ops);
      logs.push({ writer: 'qemu-io', base, host: q.host, guest: q.guest });
    } finally {
      rmSync(image, { force: true });
    }
  }
  for (const log of logs) {
    const t0 = performance.now();
    const v = judgeRun(crashRunOf(c, log), { ...STATE_OPTIONS, seed });
    if (stats !== undefined) {
      stats.oursMs += performance.now() - t0;
      stats.oursStates += v.states;
      const t = stats.byWriter.get(log.writer) ?? { sequences: 0, states: 0, violating: 0, known: 0 };
      t.sequences++;
      t.states += v.states;
      t.violating += v.violating;
      t.known += v.known;
      stats.byWriter.set(log.writer, t);
    }
    if (v.violating > 0) throw new Error(describeViolation(c, v));
    // qemu-img check opens the state alone: not for images whose backing or data file it would need.
    const alone = spec.cfg.backing === undefined && spec.cfg.dataFile === undefined;
    const sampled = !alone ? [] : [...crashStatesAt(log, sampleOf(crashPoints(log, { ...STATE_OPTIONS, seed }), QEMU_CHECKS_PER_LOG, seed))].map((s) => hostBytes(s.image));
    for (const bytes of sampled) {
      const { differs, qemuMs, oursMs } = await qemuCheckDisagreement(bytes, join(workDir(), 'state.qcow2'), 60_000);
      if (stats !== undefined) {
        stats.qemuMs += qemuMs;
        stats.oursCheckMs += oursMs;
        stats.qemuChecked++;
        if (differs !== undefined) stats.disagreements++;
      }
      if (differs !== undefined) throw new Error(`${log.writer}: ${differs}\n${describeViolation(c, v)}`);
    }
  }
  return c.ops.length;
}

/** The `crash` campaign (see the module comment). */
export function crashCampaign(): Campaign & { readonly tally: CrashStats; summary(): string; close(): Promise<void> } {
  const stats: CrashStats = { byWriter: new Map(), oursMs: 0, oursStates: 0, oursCheckMs: 0, qemuMs: 0, qemuChecked: 0, disagreements: 0 };
  return {
    name: 'crash',
    tally: stats,
    classes: QEMU_CLASSES.map((c) => ({ name: c.cls, title: c.title })),
    async runBatch(cls, { seed, numRuns, maxCommands }) {
      if (!QEMU_CLASSES.some((c) => c.cls === cls)) throw new Error(`crash: no class ${cls}`);
      const max = maxCommands ?? 16;
      let ops = 0;
      let failed = false;
      const prop = fc.asyncProperty(sequenceArb(cls as QemuClass, max, CRASH_MAX_SIZE), fc.integer({ min: 1, max: 2 ** 31 - 1 }), async (spec, s) => {
        try {
          const n = await crashSequence(spec, s, failed ? undefined : stats);
          if (!failed) ops += n;
        } catch (e) {
          failed = true;
          throw e;
        }
      });
      const d = await fc.check(prop, { seed, numRuns });
      const failure = failureOf(d, 'crash', cls, (path) =>
        `fc.assert(fc.asyncProperty(sequenceArb('${cls}', ${max}, CRASH_MAX_SIZE), fc.integer({ min: 1, max: 2 ** 31 - 1 }), crashSequence), { seed: ${d.seed}, path: '${path}', endOnFailure: true })`);
      return { sequences: d.numRuns, ops, ...(failure !== undefined ? { failure } : {}) };
    },
    summary() {
      const lines = [...stats.byWriter].map(([w, t]) => `  ${w.padEnd(17)} ${String(t.sequences).padStart(6)} sequences ${String(t.states).padStart(9)} crash states ${String(t.violating).padStart(5)} violating ${String(t.known).padStart(7)} in QEMU's snapshot COPIED window`);
      const perMin = (n: number, ms: number): number => (ms > 0 ? Math.round((n * 60_000) / ms) : 0);
      const ours = perMin(stats.oursStates, stats.oursMs);
      const oursCheck = perMin(stats.qemuChecked, stats.oursCheckMs);
      const qemu = perMin(stats.qemuChecked, stats.qemuMs);
      return [
        'crash: crash states by writer',
        ...lines,
        `crash: ${stats.qemuChecked} states also checked by qemu-img check, ${stats.disagreements} disagreeing with ours`,
        `crash: crash states judged per minute — our whole judgement (open, check, every sector) ${ours}; on the states qemu-img checked, our open and check ${oursCheck} and qemu-img check ${qemu}${qemu > 0 ? ` (ours ${(oursCheck / qemu).toFixed(1)}×)` : ''}`,
      ].join('\n');
    },
    async close() {
      if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
      scratch = undefined;
    },
  };
}
