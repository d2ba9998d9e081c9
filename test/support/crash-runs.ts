/**
 * Crash runs for the crash properties (test/unit/crash-property.test.ts, test/qemu/crash-qemu.test.ts)
 * and the `crash` campaign of `npm run fuzz`: a random sequence of the QEMU properties
 * (qemu-sequences.ts, disks cut to CRASH_MAX_SIZE), resolved against the model, then the write logs
 * of our writers over it, each judged on every crash state up to the bound.
 */
import { expect } from 'vitest';
import { driverWriteLog, judgeRun, modelWriteLog, validateWriteLog, type CrashRun, type CrashStateOptions, type RunVerdict, type WriteLog } from '../../src/crash/index.ts';
import { createImage, hostBytes, type Image, type Op } from '../../src/model/index.ts';
import type { RawDisk } from '../../src/oracle/index.ts';
import { buildBacking } from './model-backing.ts';
import { createOptionsOf } from './model-configs.ts';
import { resolveSequence, startOracle, type SequenceSpec } from './qemu-sequences.ts';

/** Disks of the crash runs are at most this large: every crash state reads the whole disk. */
export const CRASH_MAX_SIZE = 4n << 20n;

/** The writers of our own whose logs a crash run judges. */
export type OurWriter = 'model' | 'driver' | 'driver-writeback';

/** A resolved crash case: the starting image, its oracle and the ops every writer runs. */
export interface CrashCase {
  readonly spec: SequenceSpec;
  readonly start: Image;
  readonly initial: RawDisk;
  readonly ops: readonly Op[];
}

const snapshotDate = (i: number): { dateSec: number; dateNsec: number } => ({ dateSec: 1_700_000_000 + i * 61, dateNsec: 0 });

/** `spec` resolved: the model's created image (with its backing), the oracle before the ops, the ops it accepts. */
export function crashCase(spec: SequenceSpec): CrashCase {
  const created = createImage(createOptionsOf(spec.cfg));
  let start: Image = created.dataFile !== undefined ? { ...created.image, dataFile: created.dataFile } : created.image;
  if (spec.cfg.backing !== undefined) start = { ...start, backing: buildBacking(spec.cfg.backing) };
  const initial = startOracle(spec.cfg);
  const { ops } = resolveSequence(spec.cfg, spec.hot, start, initial.clone(), spec.ops, snapshotDate);
  return { spec, start, initial, ops };
}

/** Whether `writer` can run `c` (the driver here runs without a backing resolver). */
export function writerApplies(c: CrashCase, writer: OurWriter): boolean {
  return writer === 'model' || c.spec.cfg.backing === undefined;
}

/** The write log of `writer` over `c`. */
export async function writeLogOf(c: CrashCase, writer: OurWriter): Promise<WriteLog> {
  switch (writer) {
    case 'model':
      return modelWriteLog(c.start, c.ops);
    case 'driver':
    case 'driver-writeback': {
      const baseData = c.start.dataFile !== undefined ? hostBytes(c.start.dataFile) : undefined;
      return driverWriteLog(hostBytes(c.start.file), c.ops, { ...(baseData !== undefined ? { baseData } : {}), ...(writer === 'driver-writeback' ? { writeback: true } : {}) });
    }
  }
}

/** The run to judge for `log` over `c`. */
export function crashRunOf(c: CrashCase, log: WriteLog): CrashRun {
  validateWriteLog(log);
  return { log, initial: c.initial, ...(c.start.backing !== undefined ? { load: { backing: c.start.backing } } : {}) };
}

/** Judges `writer`'s log over `c` on every crash state `opts` gives. */
export async function judgeWriter(c: CrashCase, writer: OurWriter, opts: CrashStateOptions): Promise<RunVerdict> {
  return judgeRun(crashRunOf(c, await writeLogOf(c, writer)), opts);
}

/** A shrunk counterexample as fast-check printed it (bigints written as strings ending in n), as a SequenceSpec. */
export function shrunkSpec(json: string): SequenceSpec {
  return JSON.parse(json, (_k, v) => (typeof v === 'string' && /^\d+n$/.test(v) ? BigInt(v.slice(0, -1)) : v)) as SequenceSpec;
}

/**
 * Judges `spec` with each of `writers` on a fixed exhaustive-and-sampled set of crash states (torn
 * writes included) and expects more than `minStates` states and no violation: the regression tests'
 * check of a shrunk campaign counterexample.
 */
export async function expectNoViolation(spec: SequenceSpec, writers: readonly OurWriter[], minStates: number): Promise<void> {
  const c = crashCase(spec);
  for (const writer of writers) {
    const v = await judgeWriter(c, writer, { exhaustiveUpTo: 6, samples: 16, prefixes: 32, tornWrites: true, seed: 1 });
    expect(v.states).toBeGreaterThan(minStates);
    expect(v.violating, describeViolation(c, v)).toBe(0);
  }
}

/** A failure message: the verdict's first violation, the configuration and the ops (bigints as strings). */
export function describeViolation(c: CrashCase, v: RunVerdict): string {
  const json = (x: unknown): string => JSON.stringify(x, (_, y) => (typeof y === 'bigint' ? y.toString() : y instanceof Uint8Array ? `<${y.length} bytes>` : y));
  return `${v.writer}: ${v.violating} of ${v.states} crash states violate; first at ${json(v.first?.point)}: ${json(v.first?.violations)}\nconfig ${json(c.spec.cfg)}\nops ${json(c.ops)}`;
}

/**
 * Up to `k` items of `items`, chosen uniformly (reservoir sampling from `seed`), in their order:
 * the crash states given to `qemu-img check`, bounded per log however many states it has.
 */
export function sampleOf<T>(items: Iterable<T>, k: number, seed: number): T[] {
  let x = seed >>> 0 || 1;
  const rnd = (): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const kept: { i: number; item: T }[] = [];
  let i = 0;
  for (const item of items) {
    if (kept.length < k) kept.push({ i, item });
    else {
      const j = Math.floor(rnd() * (i + 1));
      if (j < k) kept[j] = { i, item };
    }
    i++;
  }
  return kept.sort((a, b) => a.i - b.i).map((e) => e.item);
}
