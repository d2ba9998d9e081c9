/**
 * When `qemu-img check -r` loses its own repairs: QEMU's refcount-block cache (4 entries) holds the
 * refcount changes of a repair until a block is replaced or the cache is flushed, and each write-back
 * passes the metadata overlap check first. A snapshot table entry whose L1 table is unaligned or
 * huge makes QEMU's in-memory "inactive L1 table" range cover refcount blocks, so a write-back fails:
 * the image is marked corrupt, dies, and the changes still cached are lost — in the middle of the
 * compare when a dirty block is replaced (then every further cache miss fails: "Can't get refcount
 * ...", and the double check fails with "No medium found"), or only when the image is closed (and
 * with the dirty bit set, in qcow2_inactivate: "Failed to flush the refcount block cache").
 * src/check/refblocks.ts models the cache; these cases pin it to qemu-img 7.2.
 *
 * Each image is made by qemu-img / qemu-io (512-byte or 1 KiB clusters so that there are many
 * refcount blocks: 24 writes, a snapshot, 8 more writes), then its snapshot entry is poked. On the
 * same bytes `qcow2-ref check` and `qemu-img check` (plain, -r leaks, -r all) print the same (stderr
 * and stdout), return the same, and the repaired copies are byte for byte the same files. Expected
 * values are qemu-img's at test time; the facts asserted on qemu-img's own output (measured on 7.2)
 * make sure each case really meets the path it is about. Needs qemu-img (fails loudly). ~10 s.
 */
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeaderLayout, IncompatibleFeatureMask } from '../../generated/qcow2.ts';
import { qemuImgCreate, qemuImgSnapshot } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';
import { normalizeProgram, ourCheckText, qemuCheckText, sameContent, type CheckRun } from '../support/check-harness.ts';

let dir = '';

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-refblock-cache-'));
});

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** qemu-io commands that must succeed. */
async function ioOk(path: string, commands: readonly string[]): Promise<void> {
  const r = await runTool('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), path]);
  if (r.code !== 0) throw new Error(`qemu-io on ${path} failed: ${r.stderr}`);
}

const CORRUPT_LINE = 'qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with inactive L1 table); further corruption events will be suppressed';

interface Case {
  readonly name: string;
  readonly options: Record<string, string>;
  /** The snapshot's new L1 table offset and size, from the ones qemu-img wrote. */
  readonly l1: (offset: bigint, size: number) => { offset: bigint; size: number };
  readonly dirty?: boolean;
  /** Lines qemu-img 7.2 prints (and does not print) for -r leaks, and its exit code. */
  readonly leaks: { readonly code: number; readonly has: readonly string[]; readonly lacks?: readonly string[] };
}

const CASES: readonly Case[] = [
  {
    // 16-bit refcounts: 256 clusters per block, 12 blocks. A dirty block is replaced mid-compare.
    name: 'a dirty block replaced mid-compare fails its write-back (16-bit refcounts)',
    options: { cluster_size: '512', refcount_bits: '16' },
    l1: () => ({ offset: 0x646n, size: 0x100000 }),
    leaks: { code: 1, has: [CORRUPT_LINE, "Can't get refcount for cluster 1280: Input/output error", 'qemu-img: Check failed: No medium found'] },
  },
  {
    // 64-bit refcounts with 1 KiB clusters: 128 clusters per block.
    name: 'a dirty block replaced mid-compare fails its write-back (64-bit refcounts, 1 KiB clusters)',
    options: { cluster_size: '1024', refcount_bits: '64' },
    l1: () => ({ offset: 0x10046n, size: 0x30000 }),
    leaks: { code: 1, has: [CORRUPT_LINE, 'qemu-img: Check failed: No medium found'] },
  },
  {
    // compat 0.10, the inactive L1 range starting at 512 KiB: the blocks before it are written back.
    name: 'the failing write-back comes later in the compare (compat 0.10)',
    options: { cluster_size: '512', refcount_bits: '16', compat: '0.10' },
    l1: () => ({ offset: 0x80046n, size: 0x100000 }),
    leaks: { code: 1, has: [CORRUPT_LINE, 'qemu-img: Check failed: No medium found'] },
  },
  {
    // 4-bit refcounts: 1024 clusters per block, 3 blocks: nothing is replaced; the close flush fails.
    name: 'the write-back fails when the image is closed (4-bit refcounts)',
    options: { cluster_size: '512', refcount_bits: '4' },
    l1: () => ({ offset: 0x646n, size: 0x100000 }),
    leaks: { code: 2, has: [CORRUPT_LINE], lacks: ['qemu-img: Failed to flush the refcount block cache: Input/output error'] },
  },
  {
    // The same with the dirty bit: bdrv_flush leaves the refcount blocks alone, qcow2_inactivate fails.
    name: 'the write-back fails in qcow2_inactivate (dirty bit set)',
    options: { cluster_size: '512', refcount_bits: '4' },
    l1: () => ({ offset: 0x646n, size: 0x100000 }),
    dirty: true,
    leaks: { code: 2, has: [CORRUPT_LINE, 'qemu-img: Failed to flush the refcount block cache: Input/output error'] },
  },
  {
    // Control: an unaligned snapshot L1 table that overlaps no refcount block. Leaks in every block,
    // dirty blocks replaced and written back all along.
    name: 'many dirty blocks replaced and written back (no overlap)',
    options: { cluster_size: '512', refcount_bits: '16' },
    l1: (offset, size) => ({ offset: offset + 0x46n, size }),
    leaks: { code: 2, has: ['Repairing cluster 2011 refcount=2 reference=1'], lacks: [CORRUPT_LINE] },
  },
];

/** The case's image at `path`: made by QEMU, then the snapshot entry (and dirty bit) poked. */
async function build(path: string, c: Case): Promise<void> {
  await qemuImgCreate(path, 4 * 1024 * 1024, c.options);
  await ioOk(path, Array.from({ length: 24 }, (_v, i) => `write -P ${i + 1} ${i * 65536} 60000`));
  await qemuImgSnapshot(path, 'create', 's1');
  await ioOk(path, [0, 3, 6, 9, 12, 15, 18, 21].map((i) => `write -P ${i + 100} ${i * 65536 + 1024} 2048`));
  const bytes = new Uint8Array(await readFile(path));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entry = Number(dv.getBigUint64(HeaderLayout.snapshotsOffset.offset));
  const l1 = c.l1(dv.getBigUint64(entry), dv.getUint32(entry + 8));
  dv.setBigUint64(entry, l1.offset);
  dv.setUint32(entry + 8, l1.size);
  const incompat = HeaderLayout.incompatibleFeatures.offset;
  if (c.dirty === true) dv.setBigUint64(incompat, dv.getBigUint64(incompat) | IncompatibleFeatureMask.DIRTY);
  await writeFile(path, bytes);
}

const RUNS: readonly CheckRun[] = [{}, { repair: 'leaks' }, { repair: 'all' }, { repair: 'all', output: 'json' }];

describe('the refcount-block cache: repairs QEMU loses when a write-back fails the overlap check', () => {
  CASES.forEach((c, n) => {
    it(c.name, async () => {
      const base = join(dir, `case${n}.qcow2`);
      await build(base, c);
      for (const run of RUNS) {
        const what = `${c.name}: check${run.repair !== undefined ? ` -r ${run.repair}` : ''}${run.output === 'json' ? ' --output=json' : ''}`;
        const q = `case${n}-qemu.qcow2`;
        const o = `case${n}-ours.qcow2`;
        await copyFile(base, join(dir, q));
        await copyFile(base, join(dir, o));
        const qemu = await qemuCheckText(dir, q, run);
        const ours = await ourCheckText(dir, o, run);
        if (run.repair === 'leaks') {
          expect(qemu.code, `${what}: qemu-img's exit code`).toBe(c.leaks.code);
          const lines = qemu.stderr.split('\n');
          for (const l of c.leaks.has) expect(lines, `${what}: qemu-img printed`).toContain(l);
          for (const l of c.leaks.lacks ?? []) expect(lines, `${what}: qemu-img did not print`).not.toContain(l);
        }
        expect(ours.code, what).toBe(qemu.code);
        expect(normalizeProgram(ours.stderr).replaceAll(o, q), what).toBe(normalizeProgram(qemu.stderr));
        expect(ours.stdout.replaceAll(o, q), what).toBe(qemu.stdout);
        expect(await sameContent(join(dir, o), join(dir, q)), `${what}: the repaired files`).toBe(true);
      }
    }, 60_000);
  });
});
