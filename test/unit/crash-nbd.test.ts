/**
 * Crash consistency of the NBD server (`qcow2-ref serve`'s export and sessions, in process), as a
 * property: random op sequences of the QEMU properties cut to what NBD can send (writes, zero
 * writes, trims on an export with --discard=unmap, flushes: test/support/crash-nbd.ts), over the
 * configuration classes without a backing file, disks cut to 4 MiB; the server's write log with the
 * disk write-through and write-back; every crash state up to the bound (as crash-property.test.ts)
 * judged by src/crash/judge.ts, none may violate. A failure prints the first violation, the
 * configuration and the ops. QCOW2_CRASH_NBD_RUNS sets the runs per class (default 3).
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { crashStatesAt, epochsOf, judgeRun } from '../../src/crash/index.ts';
import { createImage, hostBytes, readGuest, type Op } from '../../src/model/index.ts';
import { openImage } from '../../src/open/index.ts';
import { nbdSendable, nbdWriteLog } from '../support/crash-nbd.ts';
import { CRASH_MAX_SIZE, crashCase, crashRunOf, describeViolation } from '../support/crash-runs.ts';
import { sequenceArb, type QemuClass } from '../support/qemu-sequences.ts';

const RUNS = Number(process.env['QCOW2_CRASH_NBD_RUNS'] ?? 3);
const CLASSES: readonly QemuClass[] = ['small-clusters', 'large-clusters', 'lazy-refcounts', 'data-file'];
const tally = new Map<string, { runs: number; states: number }>();

afterAll(() => {
  const lines = [...tally].map(([w, t]) => `crash-nbd: ${w.padEnd(13)} ${String(t.runs).padStart(4)} runs ${String(t.states).padStart(7)} crash states, 0 violations`);
  console.log(lines.join('\n'));
});

describe('crash states of the NBD server', () => {
  for (const cls of CLASSES) {
    it(`${cls}: every crash state of the server's log (write-through and write-back) opens, checks clean and keeps flushed data`, async () => {
      await fc.assert(
        fc.asyncProperty(sequenceArb(cls, 12, CRASH_MAX_SIZE).filter((s) => s.cfg.backing === undefined), fc.integer({ min: 1, max: 2 ** 31 - 1 }), async (spec, seed) => {
          const whole = crashCase(spec);
          const c = { ...whole, ops: whole.ops.filter(nbdSendable) };
          const baseData = c.start.dataFile !== undefined ? hostBytes(c.start.dataFile) : undefined;
          for (const writeback of [false, true]) {
            const log = await nbdWriteLog(hostBytes(c.start.file), c.ops, { writeback, ...(baseData !== undefined ? { baseData } : {}) });
            const v = await judgeRun(crashRunOf(c, log), { exhaustiveUpTo: 6, samples: 12, prefixes: 24, tornWrites: true, seed });
            const t = tally.get(log.writer) ?? { runs: 0, states: 0 };
            tally.set(log.writer, { runs: t.runs + 1, states: t.states + v.states });
            expect(v.violating, describeViolation(c, v)).toBe(0);
          }
        }),
        { numRuns: RUNS, includeErrorInReport: true },
      );
    }, 120_000);
  }

  it('a write and a flush through NBD leave host writes and a flush in their ranges, and the image reads them back', async () => {
    const data = new Uint8Array(5000).map((_, i) => (i * 7 + 1) & 0xff);
    const ops: Op[] = [{ kind: 'write', offset: 12_345n, data }, { kind: 'flush' }];
    const log = await nbdWriteLog(hostBytes(createImage({ size: 1n << 20n, clusterSize: 4096 }).image.file), ops);
    expect(log.writer).toBe('nbd');
    expect(log.guest.map((g) => [g.op.kind, g.ok])).toEqual([['write', true], ['flush', true]]);
    const inOps = log.host.slice(log.guest[0]!.start, log.guest[1]!.end);
    expect(inOps.some((h) => h.kind === 'write')).toBe(true);
    expect(inOps.some((h) => h.kind === 'flush')).toBe(true);
    // The final image: every epoch of the log persisted.
    const last = epochsOf(log.host).at(-1)!;
    const persisted = Array.from({ length: last.end - last.start }, (_, i) => last.start + i);
    const [final] = [...crashStatesAt(log, [{ epochStart: last.start, epochEnd: last.end, persisted, how: 'prefix' }])];
    expect(readGuest(openImage(hostBytes(final!.image)), 12_345n, data.length)).toEqual(data);
  });
});
