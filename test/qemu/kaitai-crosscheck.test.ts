/**
 * Our generated decoder and kaitai-struct-compiler's JavaScript, run on every image of the real
 * QEMU image matrix, agree on every field: header, header extensions (feature names, bitmaps, LUKS,
 * backing format, data file), the active L1 table and every L2 table behind it, the refcount table
 * and every refcount block, every snapshot with its extra data and L1/L2 tables, the bitmap
 * directory and bitmap tables. The comparison itself is shown able to fail (a flipped L2 bit).
 * A machine without QEMU fails here (requireQemu in beforeAll); it never skips.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeQcow2 } from '../../generated/qcow2.ts';
import { requireQemu } from '../../src/qemu/run.ts';
import { compareWithKaitai, type CompareReport } from '../support/compare-with-kaitai.ts';
import { buildImageMatrix, MATRIX_IMAGE_NAMES, type MatrixImage } from '../support/image-matrix.ts';

let dir = '';
let matrix: MatrixImage[] = [];
const reports = new Map<string, CompareReport>();

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-xcheck-'));
  matrix = await buildImageMatrix(dir);
}, 180_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

async function imageBytes(name: string): Promise<Uint8Array> {
  const img = matrix.find((m) => m.name === name);
  if (img === undefined) throw new Error(`matrix has no image ${name} (was the build successful?)`);
  return new Uint8Array(await readFile(img.path));
}

/** Number of nodes the walk visited at a path shape (array indices erased). */
function reached(report: CompareReport, shape: string): number {
  return report.shapes.get(shape) ?? 0;
}

const L2_ENTRIES = 'root.l1Table[].l2Table.entries[]';
const REFCOUNTS = 'root.refcountTable.entries[].refcountBlock.entries[]';
const SNAPSHOT_IMAGES = new Set(['refcount-2', 'refcount-32', 'refcount-64', 'compat-0.10', 'snapshots']);

describe('kaitai cross-check on the qemu image matrix', () => {
  it.each(MATRIX_IMAGE_NAMES.map((n) => [n]))('%s: both parsers agree on every field', async (name) => {
    const bytes = await imageBytes(name);
    const t0 = performance.now();
    const report = compareWithKaitai(bytes);
    const ms = performance.now() - t0;
    reports.set(name, report);
    console.log(`${name}: ${report.compared} values (${report.nodes} nodes) compared in ${ms.toFixed(0)} ms`);

    expect(report.differences).toEqual([]);
    // A well-formed image decodes completely: nothing throws, no quirk is needed, the walk finishes.
    expect(report.bothThrew).toEqual([]);
    expect(report.quirks).toEqual([]);
    expect(report.budgetExhausted).toBe(false);

    // The walk went all the way down: L2 entries behind the L1 table, refcounts behind the reftable.
    expect(reached(report, L2_ENTRIES)).toBeGreaterThan(0);
    expect(reached(report, REFCOUNTS)).toBeGreaterThan(0);
    const ours = decodeQcow2(bytes);
    const clusterSize = ours.header.clusterSize;
    const extendedL2 = ours.header.hasExtendedL2;
    const allocatedL2 = new Set(ours.l1Table.filter((e) => e.isAllocated).map((e) => `${e.l2OffsetHi}:${e.l2OffsetLo}`)).size;
    expect(reached(report, L2_ENTRIES)).toBe((allocatedL2 * clusterSize) / (extendedL2 ? 16 : 8));
    const refblocks = new Set(
      ours.refcountTable.entries.filter((e) => e.isAllocated).map((e) => `${e.refblockOffsetHi}:${e.refblockOffsetLo}`),
    ).size;
    expect(reached(report, REFCOUNTS)).toBe((refblocks * clusterSize * 8) / 2 ** ours.header.refcountOrderEffective);
    if (SNAPSHOT_IMAGES.has(name)) {
      expect(ours.snapshots.length).toBeGreaterThan(0);
      expect(reached(report, 'root.snapshots[].extraData.diskSize')).toBe(ours.snapshots.length);
      expect(reached(report, 'root.snapshots[].l1Table[]')).toBeGreaterThan(0);
    }
    if (name === 'bitmaps') {
      expect(reached(report, 'root.headerExtensions.extensions[].data.bitmapDirectory.entries[].bitmapTable[].allOnes')).toBe(2);
    }
  });

  it('covers every kind of entry somewhere in the matrix', () => {
    expect(reports.size).toBe(MATRIX_IMAGE_NAMES.length);
    const total = (shape: string): number => [...reports.values()].reduce((n, r) => n + reached(r, shape), 0);
    // Compressed descriptors, extended L2 bitmaps, backing file names and the feature name table.
    expect(total('root.l1Table[].l2Table.entries[].compressedHi')).toBeGreaterThan(0);
    expect(total('root.l1Table[].l2Table.entries[].compressedAdditionalSectors')).toBeGreaterThan(0);
    expect(total('root.l1Table[].l2Table.entries[].zeroBitmap')).toBeGreaterThan(0);
    expect(total('root.backingFileName')).toBeGreaterThan(0);
    expect(total('root.headerExtensions.extensions[].data.entries[].featureType')).toBeGreaterThan(0);
    expect(total('root.headerExtensions.extensions[].data.offset.num')).toBeGreaterThan(0); // LUKS pointer
    expect(total('root.header.unknownHeaderFields')).toBe(0); // qemu 7.2 writes 112-byte headers
  });

  it('reports differences when the two sides read different bytes (the check can fail)', async () => {
    const bytes = await imageBytes('defaults');
    const ours = decodeQcow2(bytes);
    const l1 = ours.l1Table.findIndex((e) => e.isAllocated);
    const l2 = ours.l1Table[l1]!.l2Table!;
    const entry = l2.entries.findIndex((e) => !e.compressed && e.hostOffsetLo !== 0);
    expect(entry).toBeGreaterThanOrEqual(0);
    const l2Pos = ours.l1Table[l1]!.l2OffsetHi * 2 ** 32 + ours.l1Table[l1]!.l2OffsetLo * 512;
    const flipped = bytes.slice();
    // Bit 9 of the 64-bit big-endian entry: the lowest bit of host_offset_lo (byte 6, mask 0x02).
    flipped[l2Pos + entry * 8 + 6]! ^= 0x02;

    expect(compareWithKaitai(flipped).differences).toEqual([]); // the copy is consistent by itself
    const report = compareWithKaitai(bytes, { kaitaiBytes: flipped });
    expect(report.differences).toEqual([
      {
        path: `root.l1Table[${l1}].l2Table.entries[${entry}].hostOffsetLo`,
        kind: 'value',
        ours: String(l2.entries[entry]!.hostOffsetLo),
        kaitai: String(l2.entries[entry]!.hostOffsetLo! ^ 1),
      },
    ]);
  });
});
