/**
 * Ops run by real QEMU (src/qemu/qemu-steps.ts) and the compare/convert drivers: a random op sequence
 * executed by qemu-io / qemu-img must leave the guest content the raw-disk oracle computes, judged
 * by `qemu-img convert` to raw (byte comparison) and by `qemu-img compare` against the oracle's raw
 * file — and a planted one-byte difference must make compare say so.
 */
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Op } from '../../src/model/ops.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import { qemuImgCompare, qemuImgConvert, qemuImgCreate } from '../../src/qemu/qemu-img.ts';
import { DATA_DIR, planQemuSteps, runQemuSteps } from '../../src/qemu/qemu-steps.ts';
import { requireQemu } from '../../src/qemu/run.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-qemu-steps-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('planQemuSteps', () => {
  it('groups data ops into one qemu-io process and splits at snapshots and resizes', () => {
    const ops: Op[] = [
      { kind: 'write', offset: 512n, data: new Uint8Array(1024).fill(7) },
      { kind: 'write', offset: 0n, data: Uint8Array.of(1, 2, 3) },
      { kind: 'writeZeroes', offset: 4096n, length: 8192n, unmap: true },
      { kind: 'snapshotCreate', name: 's1' },
      { kind: 'discard', offset: 0n, length: 65536n },
      { kind: 'writeCompressed', offset: 65536n, data: new Uint8Array(65536).fill(9) },
      { kind: 'flush' },
      { kind: 'resize', size: 1n << 19n },
      { kind: 'resize', size: 1n << 21n },
      { kind: 'write', offset: 0n, data: new Uint8Array(0) },
    ];
    const steps = planQemuSteps(ops, 1n << 20n);
    expect(steps).toEqual([
      {
        tool: 'qemu-io',
        commands: ['write -q -P 7 512 1024', `write -q -s ${DATA_DIR}/d0-0.bin 0 3`, 'write -q -z -u 4096 8192'],
        dataFiles: [{ name: 'd0-0.bin', bytes: Uint8Array.of(1, 2, 3) }],
      },
      { tool: 'qemu-img', action: 'snapshot-create', name: 's1' },
      { tool: 'qemu-io', commands: ['discard -q 0 65536', 'write -q -c -P 9 65536 65536', 'flush'], dataFiles: [] },
      { tool: 'qemu-img', action: 'resize', size: 1n << 19n, shrink: true },
      { tool: 'qemu-img', action: 'resize', size: 1n << 21n, shrink: false },
    ]);
  });

  it('follows the disk size through snapshot applies (a resize after one may shrink)', () => {
    // Found by test/qemu/qemu-reverse.test.ts: grow, snapshot, shrink, apply (size back to the
    // grown one), then a resize between the two sizes is a shrink; qemu-img refused it without
    // --shrink ("Use the --shrink option to perform a shrink operation.").
    const MiB = 1n << 20n;
    const steps = planQemuSteps([
      { kind: 'resize', size: 4n * MiB },
      { kind: 'snapshotCreate', name: 'c' },
      { kind: 'resize', size: 2n * MiB },
      { kind: 'snapshotApply', name: 'c' },
      { kind: 'resize', size: 3n * MiB },
      { kind: 'snapshotDelete', name: 'c' },
      { kind: 'resize', size: 5n * MiB },
      // A snapshot the plan never saw created: its size is unknown, so the next resize may shrink.
      { kind: 'snapshotApply', name: 'old' },
      { kind: 'resize', size: 6n * MiB },
    ], MiB);
    expect(steps.filter((s) => s.tool === 'qemu-img' && s.action === 'resize')).toEqual([
      { tool: 'qemu-img', action: 'resize', size: 4n * MiB, shrink: false },
      { tool: 'qemu-img', action: 'resize', size: 2n * MiB, shrink: true },
      { tool: 'qemu-img', action: 'resize', size: 3n * MiB, shrink: true },
      { tool: 'qemu-img', action: 'resize', size: 5n * MiB, shrink: false },
      { tool: 'qemu-img', action: 'resize', size: 6n * MiB, shrink: true },
    ]);
  });
});

const SIZE = 4 << 20;

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    offset: fc.integer({ min: 0, max: SIZE - 1 }),
    length: fc.integer({ min: 1, max: 200_000 }),
    uniform: fc.boolean(),
    seed: fc.integer({ min: 0, max: 255 }),
  }).map(({ offset, length, uniform, seed }): Op => {
    const n = Math.min(length, SIZE - offset);
    const data = new Uint8Array(n);
    for (let i = 0; i < n; i++) data[i] = uniform ? seed : (seed + i * 31 + (i >> 7)) & 0xff;
    return { kind: 'write', offset: BigInt(offset), data };
  }),
  fc.record({ offset: fc.integer({ min: 0, max: SIZE - 1 }), length: fc.integer({ min: 1, max: 300_000 }), unmap: fc.boolean() })
    .map(({ offset, length, unmap }): Op => ({ kind: 'writeZeroes', offset: BigInt(offset), length: BigInt(Math.min(length, SIZE - offset)), unmap })),
  fc.record({ offset: fc.integer({ min: 0, max: SIZE - 1 }), length: fc.integer({ min: 1, max: 300_000 }) })
    .map(({ offset, length }): Op => ({ kind: 'discard', offset: BigInt(offset), length: BigInt(Math.min(length, SIZE - offset)) })),
  fc.constant<Op>({ kind: 'flush' }),
);

describe('QEMU executes op sequences; compare and convert judge the result', () => {
  it('qemu-img is installed', async () => {
    await requireQemu();
  });

  it('guest content after runQemuSteps equals the raw-disk oracle (convert and compare agree)', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 20 }), async (ops) => {
        const id = run++;
        const img = join(dir, `img-${id}.qcow2`);
        await qemuImgCreate(img, SIZE, { cluster_size: '65536' });
        await runQemuSteps(img, planQemuSteps(ops, BigInt(SIZE)));
        const oracle = new RawDisk({ size: BigInt(SIZE), clusterSize: 65536n, version: 3 });
        for (const op of ops) oracle.apply(op);
        const expected = oracle.read(0n, SIZE);

        const converted = join(dir, `conv-${id}.raw`);
        await qemuImgConvert(img, converted);
        expect(Buffer.from(readFileSync(converted)).equals(Buffer.from(expected))).toBe(true);

        const rawPath = join(dir, `oracle-${id}.raw`);
        writeFileSync(rawPath, expected);
        expect((await qemuImgCompare(img, rawPath)).identical).toBe(true);
        rmSync(converted);
        rmSync(rawPath);
        rmSync(img);
      }),
      { numRuns: 25 },
    );
  }, 300_000);

  it('compare reports a planted one-byte difference at its offset, and a size mismatch in strict mode', async () => {
    const img = join(dir, 'planted.qcow2');
    await qemuImgCreate(img, SIZE, {});
    await runQemuSteps(img, planQemuSteps([{ kind: 'write', offset: 1000n, data: new Uint8Array(5000).fill(3) }], BigInt(SIZE)));
    const raw = new Uint8Array(SIZE);
    raw.fill(3, 1000, 6000);
    raw[4321] = 4;
    const rawPath = join(dir, 'planted.raw');
    writeFileSync(rawPath, raw);
    const r = await qemuImgCompare(img, rawPath);
    expect(r.identical).toBe(false);
    // QEMU 7.2 compares in 512-byte sectors and names the first differing sector: 4321 → 4096.
    expect(r.stdout).toContain('Content mismatch at offset 4096!');
    writeFileSync(rawPath, new Uint8Array(SIZE + 512).fill(3, 1000, 6000));
    expect((await qemuImgCompare(img, rawPath)).identical).toBe(true);
    expect((await qemuImgCompare(img, rawPath, { strict: true })).identical).toBe(false);
  });
});
