/**
 * Crash consistency of our writers, as a property: random op sequences (writes, zeroes, discards,
 * compressed writes, snapshots, resizes, flushes) over every configuration class of the QEMU
 * properties, disks cut to 4 MiB; the write logs of the pure model, the driver (write-through) and
 * the driver in write-back mode; every crash state up to the bound (every subset of an unflushed
 * epoch of up to 6 host operations, else its prefixes and 12 samples, torn writes among them) is
 * judged by src/crash/judge.ts — QEMU's open and check rules, the raw-disk oracle — and none may
 * violate. QEMU's own window (a snapshot operation's COPIED flags, docs/format/snapshots.md) is
 * counted apart. A failure prints the first violation, the configuration and the ops, and
 * fast-check's seed and path. QCOW2_CRASH_RUNS sets the runs per class (default 3).
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { QEMU_CLASSES, sequenceArb } from '../support/qemu-sequences.ts';
import { CRASH_MAX_SIZE, crashCase, describeViolation, judgeWriter, writerApplies, type OurWriter } from '../support/crash-runs.ts';

const RUNS = Number(process.env['QCOW2_CRASH_RUNS'] ?? 3);
const WRITERS: readonly OurWriter[] = ['model', 'driver', 'driver-writeback'];
const tally = new Map<string, { runs: number; states: number; known: number }>();

afterAll(() => {
  const lines = [...tally].map(([w, t]) => `crash: ${w.padEnd(17)} ${String(t.runs).padStart(4)} runs ${String(t.states).padStart(7)} crash states, 0 violations (${t.known} in QEMU's snapshot COPIED window)`);
  console.log(lines.join('\n'));
});

describe('crash states of our writers', () => {
  for (const { cls, title } of QEMU_CLASSES) {
    it(`${cls} (${title}): every crash state of the model's and the driver's logs opens, checks clean and keeps flushed data`, async () => {
      await fc.assert(
        fc.asyncProperty(sequenceArb(cls, 12, CRASH_MAX_SIZE), fc.integer({ min: 1, max: 2 ** 31 - 1 }), async (spec, seed) => {
          const c = crashCase(spec);
          for (const writer of WRITERS) {
            if (!writerApplies(c, writer)) continue;
            const v = await judgeWriter(c, writer, { exhaustiveUpTo: 6, samples: 12, prefixes: 24, tornWrites: true, seed });
            const t = tally.get(writer) ?? { runs: 0, states: 0, known: 0 };
            tally.set(writer, { runs: t.runs + 1, states: t.states + v.states, known: t.known + v.known });
            expect(v.violating, describeViolation(c, v)).toBe(0);
          }
        }),
        { numRuns: RUNS, includeErrorInReport: true },
      );
    }, 600_000);
  }
});
