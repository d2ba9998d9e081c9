/**
 * The model reads, maps and continues what real QEMU wrote (reverse direction,
 * test/support/qemu-sequences.ts): the same random op sequences, executed by QEMU (qemu-io
 * processes with qemu-img snapshot / resize between them) on the image `qemu-img create` made with
 * the class's options; our loader must read the result as the raw oracle says, our map must equal
 * qemu-img's (told the probed host allocation), checkInvariants must hold; then the model continues
 * with a second random sequence on QEMU's files and `qemu-img check` / `qemu-img compare` judge the
 * mixed result.
 *
 * Layout fidelity: the model also runs the first sequence from the same created image, with QEMU's
 * process boundaries (freshSession) and QEMU's snapshot dates, and its files are compared with
 * QEMU's byte for byte. The share of byte-identical sequences per class and category is printed; a
 * single qemu-io process without compressed writes must be identical (asserted). Other differences
 * are listed with their reason in docs/layout-differences.md.
 *
 * The same environment knobs as test/qemu/qemu-forward.test.ts (QCOW2_QEMU_RUNS, _CONCURRENCY,
 * _PROCESSES, _SHRINK, _TIMING).
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { requireQemu } from '../../src/qemu/run.ts';
import {
  closeProbeServer,
  formatPhaseTimes,
  DEFAULT_QEMU_RUNS,
  formatLayoutTable,
  QEMU_CLASSES,
  QEMU_CONCURRENCY,
  reverseRun,
  runLanes,
  tallyLayout,
  type LayoutTally,
} from '../support/qemu-sequences.ts';

const RUNS = Number(process.env['QCOW2_QEMU_RUNS'] ?? DEFAULT_QEMU_RUNS);
const seed = fc.readConfigureGlobal().seed ?? 20261121;
const tally: LayoutTally = new Map();
const stats = new Map<string, { runs: number; ops: number; qemuCalls: number; ms: number }>();

afterAll(() => {
  closeProbeServer();
  const lines = ['reverse: class             runs    ops  qemu calls  seconds'];
  for (const [cls, s] of stats) lines.push(`reverse: ${cls.padEnd(16)} ${String(s.runs).padStart(6)} ${String(s.ops).padStart(6)} ${String(s.qemuCalls).padStart(11)} ${(s.ms / 1000).toFixed(1).padStart(8)}`);
  lines.push('', 'layout: byte-identical sequences (model vs QEMU, same created image, same ops, same process boundaries)', formatLayoutTable(tally));
  for (const [cls, m] of tally) {
    for (const [cat, c] of m) for (const e of c.examples) lines.push('', `layout difference, ${cls} / ${cat}: ${e.split('\n')[0]}`);
  }
  if (process.env['QCOW2_QEMU_TIMING'] === '1') lines.push('', 'reverse: where the time went', formatPhaseTimes());
  console.log(lines.join('\n'));
});

describe('the model reads what QEMU wrote (reverse) and QEMU judges the continuation', () => {
  it('requires qemu-img and qemu-io', async () => {
    await requireQemu();
  });

  for (const { cls, title } of QEMU_CLASSES) {
    it(`${cls} (${title}): ${RUNS} sequences, reads/map/invariants/check/compare agree; single-process layouts identical`, async () => {
      await requireQemu();
      const s = { runs: 0, ops: 0, qemuCalls: 0, ms: 0 };
      stats.set(cls, s);
      const singleProcessDifferences: string[] = [];
      const t0 = performance.now();
      const failures = await runLanes(cls, reverseRun, {
        seed,
        numRuns: RUNS,
        lanes: QEMU_CONCURRENCY,
        onRun: (r) => {
          s.runs++;
          s.ops += r.ops;
          s.qemuCalls += r.qemuCalls;
          tallyLayout(tally, cls, r);
          if (r.layout?.category === 'single-process' && !r.layout.identical) singleProcessDifferences.push(r.layout.difference ?? '');
        },
      });
      s.ms = performance.now() - t0;
      expect(failures.join('\n\n')).toBe('');
      expect(s.runs).toBe(RUNS);
      // The target: one QEMU process without compressed writes gives QEMU's file byte for byte.
      expect(singleProcessDifferences.join('\n\n')).toBe('');
    }, 1_800_000);
  }
});
