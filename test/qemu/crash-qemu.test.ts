/**
 * Crash consistency of QEMU 7.2 itself, judged by the same rules as our writers
 * (test/unit/crash-property.test.ts): random op sequences of the QEMU properties (no backing or data
 * file: blklogwrites logs the image file only), disks cut to 4 MiB, run by qemu-io and qemu-img on
 * an image `qemu-img create` made while QEMU's blklogwrites driver logs every write
 * (src/qemu/logged-run.ts); every crash state up to the bound is judged by src/crash/judge.ts. And
 * our check against qemu-img's: every crash state of QEMU's log, and 24 of the model's log over
 * the same ops chosen uniformly, go to `qemu-img check`, whose exit code, corruptions and leaks must
 * be ours. A failure prints the first violation or disagreement, the configuration and
 * the ops, with fast-check's seed and path. QCOW2_CRASH_QEMU_RUNS sets the runs per class (default 3).
 *
 * QEMU's own finding, kept as a test that fails when QEMU stops showing it: with lazy_refcounts=on an
 * allocating write's L2 entry can reach the disk before its data (docs/format/crash-consistency.md).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crashPoints, crashStatesAt, judgeRun, modelWriteLog, type WriteLog } from '../../src/crash/index.ts';
import { qemuCheckDisagreement } from '../../src/conform/index.ts';
import { createImage, hostBytes, loadImage, type Op } from '../../src/model/index.ts';
import { RawDisk } from '../../src/oracle/index.ts';
import { qemuImgCreate, requireQemu, runQemuLogged } from '../../src/qemu/index.ts';
import { CRASH_MAX_SIZE, crashCase, crashRunOf, describeViolation, sampleOf } from '../support/crash-runs.ts';
import { createOptionsOf, sequenceArb, type QemuClass } from '../support/qemu-sequences.ts';

const RUNS = Number(process.env['QCOW2_CRASH_QEMU_RUNS'] ?? 3);
// Not lazy-refcounts: QEMU 7.2 violates there (the finding below, conform/expected-failures/crash-qemu-io.txt).
const CLASSES: readonly QemuClass[] = ['small-clusters', 'large-clusters', 'preallocated'];
/** Crash states of the model's log given to qemu-img check, chosen uniformly (all of QEMU's are). */
const MODEL_CHECKS_PER_RUN = 24;
const STATES = { exhaustiveUpTo: 6, samples: 12, prefixes: 24, tornWrites: true } as const;
const dir = mkdtempSync(join(tmpdir(), 'qcow2-crash-qemu-'));
const tally = { runs: 0, qemuStates: 0, modelStates: 0, known: 0, checked: 0 };

beforeAll(async () => {
  await requireQemu();
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  console.log(`crash-qemu: ${tally.runs} runs; QEMU's logs: ${tally.qemuStates} crash states, 0 violations (${tally.known} in its snapshot COPIED window); the model's logs over the same ops: ${tally.modelStates} crash states; ${tally.checked} states given to qemu-img check (every one of QEMU's, a sample of the model's), all agreeing with ours`);
});

let runNo = 0;

describe('crash states of QEMU 7.2 (qemu-io through blklogwrites)', () => {
  for (const cls of CLASSES) {
    it(`${cls}: every crash state of QEMU's log opens, checks clean and keeps flushed data; qemu-img check agrees with ours`, async () => {
      await fc.assert(
        fc.asyncProperty(sequenceArb(cls, 10, CRASH_MAX_SIZE).filter((s) => s.cfg.backing === undefined && s.cfg.dataFile === undefined), fc.integer({ min: 1, max: 2 ** 31 - 1 }), async (spec, seed) => {
          const c = crashCase(spec);
          const image = join(dir, `r${runNo++}.qcow2`);
          await qemuImgCreate(image, spec.cfg.requestedSize.toString(), createOptionsOf(spec.cfg));
          const base = new Uint8Array(readFileSync(image));
          const q = await runQemuLogged(image, c.ops);
          const qemuLog: WriteLog = { writer: 'qemu-io', base, host: q.host, guest: q.guest };
          tally.runs++;
          // QEMU's log: every crash state judged by ours and by qemu-img check.
          const sampled: Uint8Array[] = [];
          const v = judgeRun(crashRunOf(c, qemuLog), { ...STATES, seed, onState: (state) => void sampled.push(hostBytes(state.image)) });
          tally.qemuStates += v.states;
          tally.known += v.known;
          expect(v.violating, describeViolation(c, v)).toBe(0);
          // And a sample of the model's crash states over the same ops (its judgement is
          // test/unit/crash-property.test.ts), for our check against qemu-img's.
          const modelLog = modelWriteLog(c.start, c.ops);
          tally.modelStates += crashPoints(modelLog, { ...STATES, seed }).length;
          for (const state of crashStatesAt(modelLog, sampleOf(crashPoints(modelLog, { ...STATES, seed }), MODEL_CHECKS_PER_RUN, seed))) sampled.push(hostBytes(state.image));
          for (const bytes of sampled) {
            const { differs } = await qemuCheckDisagreement(bytes, join(dir, 'state.qcow2'), 60_000);
            tally.checked++;
            expect(differs, `${differs}\n${describeViolation(c, v)}`).toBeUndefined();
          }
          rmSync(image);
        }),
        { numRuns: RUNS, includeErrorInReport: true },
      );
    }, 600_000);
  }
});

describe("QEMU 7.2's lazy-refcounts window (docs/format/crash-consistency.md)", () => {
  it('an allocating write with lazy_refcounts=on: QEMU logs data and L2 entry with no flush between, and a crash state breaks; the model flushes between', async () => {
    const image = join(dir, 'lazy.qcow2');
    await qemuImgCreate(image, '1M', { cluster_size: '4096', lazy_refcounts: 'on' });
    const base = new Uint8Array(readFileSync(image));
    // The first write marks the image dirty (header write + flush, so its own data is flushed); the
    // second allocates data clusters in the L2 table the first made.
    const ops: Op[] = [{ kind: 'write', offset: 0n, data: new Uint8Array(4096).fill(1) }, { kind: 'write', offset: 65536n, data: new Uint8Array(8192).fill(0x75) }];
    const q = await runQemuLogged(image, ops);
    const run = { log: { writer: 'qemu-io', base, host: q.host, guest: q.guest } as WriteLog, initial: new RawDisk({ size: 1n << 20n, clusterSize: 4096n }) };
    // The second op's host operations: the data write, then the L2 table, with no flush between them.
    const range = q.host.slice(q.guest[1]!.start, q.guest[1]!.end);
    const data = range.findIndex((h) => h.kind === 'write' && h.bytes.length === 8192 && h.bytes[0] === 0x75);
    const l2 = range.findIndex((h, i) => i > data && h.kind === 'write');
    expect(data).toBeGreaterThanOrEqual(0);
    expect(l2).toBeGreaterThan(data);
    expect(range.slice(data, l2).some((h) => h.kind === 'flush')).toBe(false);
    const v = judgeRun(run, { exhaustiveUpTo: 6 });
    expect(v.byKind.corruption, 'QEMU 7.2 no longer breaks here: remove lazy-refcounts from conform/expected-failures/crash-qemu-io.txt and this test').toBeGreaterThan(0);
    // The model, on qemu-img's image and on its own: every crash state checks clean.
    for (const start of [loadImage(base), createImage({ size: 1n << 20n, clusterSize: 4096, lazyRefcounts: true }).image]) {
      const m = judgeRun({ log: modelWriteLog(start, ops), initial: run.initial }, { exhaustiveUpTo: 6 });
      expect(m.violating).toBe(0);
    }
  });
});
