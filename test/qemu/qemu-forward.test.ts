/**
 * Real QEMU judges the model's files (forward direction, test/support/qemu-sequences.ts):
 * random op sequences of up to 50 ops (writes of any alignment, write_zeroes ± unmap, discards,
 * single-cluster compressed writes, snapshot create/apply/delete, resizes, flushes) applied by the
 * model to createImage's image for every configuration class, closed with closeImage and stored
 * (image, data file, backing chain); then `qemu-img check` must be clean, `qemu-img compare` with the
 * raw oracle's file identical, `qemu-img map` equal to mapImage on every extent, `qemu-img info`
 * equal to our info builder and to the oracle, and `qemu-io read -P` spot checks equal to the oracle.
 *
 * QCOW2_QEMU_RUNS=N runs N sequences per class (default 100, DEFAULT_QEMU_RUNS); QCOW2_QEMU_CONCURRENCY
 * the number of fast-check lanes run concurrently (default 3), QCOW2_QEMU_PROCESSES the QEMU processes
 * at a time (default: the CPUs), QCOW2_QEMU_SHRINK=0 reports the first counterexample unshrunk,
 * QCOW2_QEMU_TIMING=1 prints where the time went. A failure prints its lane's seed and path and a
 * reproduction (configuration, qemu-img create line, op script).
 *
 * The planted-difference test shows the checks can fail: one flipped data byte and one wrong
 * refcount in an otherwise good file are each caught.
 */
import fc from 'fast-check';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HeaderLayout } from '../../generated/qcow2.ts';
import { createImage } from '../../src/model/create.ts';
import { closeImage } from '../../src/model/close.ts';
import { storeImage } from '../../src/model/load-store.ts';
import { mapImage } from '../../src/model/block-status.ts';
import type { Op } from '../../src/model/ops.ts';
import { step } from '../../src/model/step.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import { requireQemu } from '../../src/qemu/run.ts';
import {
  closeProbeServer,
  formatPhaseTimes,
  DEFAULT_QEMU_RUNS,
  forwardRun,
  IMAGE_NAME,
  makeRunFiles,
  QEMU_CLASSES,
  QEMU_CONCURRENCY,
  qemuJudges,
  sequenceArb,
  runLanes,
  type QemuConfig,
} from '../support/qemu-sequences.ts';

const RUNS = Number(process.env['QCOW2_QEMU_RUNS'] ?? DEFAULT_QEMU_RUNS);
const seed = fc.readConfigureGlobal().seed ?? 20261121;
const stats = new Map<string, { runs: number; ops: number; qemuCalls: number; ms: number }>();

afterAll(() => {
  closeProbeServer();
  const lines = ['forward: class             runs    ops  qemu calls  seconds'];
  for (const [cls, s] of stats) lines.push(`forward: ${cls.padEnd(16)} ${String(s.runs).padStart(6)} ${String(s.ops).padStart(6)} ${String(s.qemuCalls).padStart(11)} ${(s.ms / 1000).toFixed(1).padStart(8)}`);
  if (process.env['QCOW2_QEMU_TIMING'] === '1') lines.push('', 'forward: where the time went', formatPhaseTimes());
  console.log(lines.join('\n'));
});

describe('QEMU judges the model\'s files (forward)', () => {
  it('requires qemu-img and qemu-io', async () => {
    await requireQemu();
  });

  it('the generator reaches sequences of 50 ops, though most are short', () => {
    // Both directions draw from sequenceArb: lengths 1..50, 60 % of them at most 10 (lengthArb).
    for (const { cls } of QEMU_CLASSES) {
      const lengths = fc.sample(sequenceArb(cls), { seed, numRuns: 1000 }).map((s) => s.ops.length);
      expect(Math.min(...lengths)).toBe(1);
      expect(Math.max(...lengths)).toBe(50);
      expect(lengths.filter((n) => n >= 40).length).toBeGreaterThanOrEqual(40);
      expect(lengths.filter((n) => n <= 10).length).toBeGreaterThanOrEqual(500);
    }
  });

  for (const { cls, title } of QEMU_CLASSES) {
    it(`${cls} (${title}): ${RUNS} sequences, check/compare/map/info/read all agree`, async () => {
      await requireQemu();
      const s = { runs: 0, ops: 0, qemuCalls: 0, ms: 0 };
      stats.set(cls, s);
      const t0 = performance.now();
      const failures = await runLanes(cls, forwardRun, {
        seed,
        numRuns: RUNS,
        lanes: QEMU_CONCURRENCY,
        onRun: (r) => {
          s.runs++;
          s.ops += r.ops;
          s.qemuCalls += r.qemuCalls;
        },
      });
      s.ms = performance.now() - t0;
      expect(failures.join('\n\n')).toBe('');
      expect(s.runs).toBe(RUNS);
    }, 1_800_000);
  }

  it('planted differences: a flipped data byte and a wrong refcount are each caught', async () => {
    await requireQemu();
    const cfg: QemuConfig = {
      clusterBits: 12, refcountBits: 16, compat: '1.1', extendedL2: false, compressionType: 'zlib',
      preallocation: 'off', requestedSize: 1n << 20n, size: 1n << 20n,
    };
    const ops: Op[] = [
      { kind: 'write', offset: 8192n, data: new Uint8Array(4096).fill(0x5a) },
      { kind: 'write', offset: 20000n, data: new Uint8Array(3000).fill(0x33) },
    ];
    let img = createImage({ size: cfg.size, clusterSize: 4096 }).image;
    const oracle = new RawDisk({ size: cfg.size, clusterSize: 4096n });
    for (const op of ops) {
      const r = step(img, op);
      if (!r.ok) throw r.error;
      img = r.image;
      oracle.apply(op);
    }
    img = closeImage(img).image;
    const good = storeImage(img);
    const run = async (bytes: Uint8Array): Promise<string[]> => {
      const calls = { qemuCalls: 0 };
      const files = await makeRunFiles(cfg);
      try {
        writeFileSync(join(files.dir, IMAGE_NAME), bytes);
        return (await qemuJudges(cfg, files, img, oracle, ops, calls, 1)).map((p) => p.check);
      } finally {
        rmSync(files.dir, { recursive: true, force: true });
      }
    };
    // The unchanged file passes every check.
    expect(await run(good)).toEqual([]);

    // One flipped data byte: where the guest's byte 8192 + 100 lives (qemu-img compare and the
    // qemu-io spot check at the write's start… the spot check reads the run from 8192 on).
    const ext = mapImage(img, 8192n, 4096n)[0]!;
    expect(ext.data).toBe(true);
    const flipped = good.slice();
    flipped[Number(ext.offset! + 100n)]! ^= 0x01;
    const caughtFlip = await run(flipped);
    expect(caughtFlip).toContain('compare');
    expect(caughtFlip).toContain('read');
    expect(caughtFlip).not.toContain('check');

    // One wrong refcount: the data cluster's 16-bit refcount set to 2 (qemu-img check: OFLAG_COPIED
    // error and a leak), read from the reftable and refcount block the header points at.
    const dv = new DataView(good.buffer, good.byteOffset, good.byteLength);
    const reftable = Number(dv.getBigUint64(HeaderLayout.refcountTableOffset.offset));
    const block = Number(dv.getBigUint64(reftable));
    const cluster = Number(ext.offset! / 4096n);
    const wrong = good.slice();
    new DataView(wrong.buffer).setUint16(block + 2 * cluster, 2);
    const caughtRefcount = await run(wrong);
    expect(caughtRefcount).toEqual(['check']);
  }, 120_000);
});
