/**
 * The positions and constants the generator emits from spec/qcow2.ksy, against QEMU's own
 * definitions: block/qcow2.h (QEMU 7.2: L1E_OFFSET_MASK, QCOW_OFLAG_*, QCOW2_INCOMPAT_*, …),
 * block/qcow2-bitmap.c (BME_*), the byte tables of docs/interop/qcow2.rst, and the limits of
 * src/format/limits.ts against the same header. Every expected value below is written from those
 * sources, not from generated/qcow2.ts. Also: the layout computation (src/codegen/layout.ts) on small
 * specs whose answers are worked out by hand.
 */
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  AUTOCLEAR_FEATURE_KNOWN_MASK, AutoclearFeatureBit, AutoclearFeatureMask, BITMAP_DIRECTORY_ENTRY_FIXED_SIZE,
  BITMAP_TABLE_ENTRY_FIXED_SIZE, BITMAPS_EXTENSION_FIXED_SIZE, BitmapDirectoryEntryLayout, BitmapDirectoryEntryMasks,
  BitmapsExtensionLayout, BitmapTableEntryMasks, COMPATIBLE_FEATURE_KNOWN_MASK, CompatibleFeatureBit, CompatibleFeatureMask,
  FEATURE_NAME_ENTRY_FIXED_SIZE, FeatureNameEntryLayout, FULL_DISK_ENCRYPTION_POINTER_FIXED_SIZE, HEADER_EXTENSION_FIXED_SIZE,
  HEADER_FIXED_SIZE, HEADER_MAGIC, HEADER_MAGIC_U32, HeaderExtensionLayout, HeaderExtensionType, HeaderLayout,
  INCOMPATIBLE_FEATURE_KNOWN_MASK, IncompatibleFeatureBit, IncompatibleFeatureMask, L1_ENTRY_FIXED_SIZE, L1EntryMasks,
  L2EntryLayout, L2EntryMasks, l2EntryParamMasks, l2EntryParamShifts, REFCOUNT_TABLE_ENTRY_FIXED_SIZE, RefcountTableEntryMasks,
  SNAPSHOT_ENTRY_FIXED_SIZE, SnapshotEntryLayout, SnapshotExtraDataLayout,
} from '../../generated/qcow2.ts';
import { hiLoPairs, layoutOf } from '../../src/codegen/layout.ts';
import { readKsy } from '../../src/codegen/ksy-model.ts';
import * as limits from '../../src/format/limits.ts';

/** A layout table as spec id → [first byte, last byte], the way qcow2.rst writes its tables. */
function byteRanges(layout: Record<string, { readonly id: string; readonly offset: number; readonly size: number }>): Record<string, [number, number]> {
  return Object.fromEntries(Object.values(layout).map((f) => [f.id, [f.offset, f.offset + f.size - 1]]));
}

describe('entry masks are those of block/qcow2.h and block/qcow2-bitmap.c', () => {
  it('L1 entries: L1E_OFFSET_MASK, L1E_RESERVED_MASK, QCOW_OFLAG_COPIED', () => {
    expect(L1EntryMasks.l2Offset).toBe(0x00fffffffffffe00n);
    expect(L1EntryMasks.reserved).toBe(0x7f000000000001ffn);
    expect(L1EntryMasks.copied).toBe(1n << 63n);
    expect(L1_ENTRY_FIXED_SIZE).toBe(8); // L1E_SIZE = sizeof(uint64_t)
  });

  it('L2 entries: L2E_OFFSET_MASK, L2E_STD_RESERVED_MASK, QCOW_OFLAG_COPIED/COMPRESSED/ZERO, the bitmap word', () => {
    expect(L2EntryMasks.hostOffset).toBe(0x00fffffffffffe00n);
    expect(L2EntryMasks.reserved).toBe(0x3f000000000001fen);
    expect(L2EntryMasks.copied).toBe(1n << 63n);
    expect(L2EntryMasks.compressed).toBe(1n << 62n);
    expect(L2EntryMasks.zero).toBe(1n << 0n);
    // QCOW_L2_BITMAP_ALL_ALLOC = QCOW_OFLAG_SUB_ALLOC_RANGE(0, 32); ALL_ZEROES the same << 32.
    expect(L2EntryMasks.allocBitmap).toBe((1n << 32n) - (1n << 0n));
    expect(L2EntryMasks.zeroBitmap).toBe(((1n << 32n) - (1n << 0n)) << 32n);
    // L2E_SIZE_NORMAL 8, L2E_SIZE_EXTENDED 16: the bitmap word is the second 8 bytes.
    expect([L2EntryLayout.copied.offset, L2EntryLayout.copied.size]).toEqual([0, 8]);
    expect([L2EntryLayout.allocBitmap.offset, L2EntryLayout.allocBitmap.size]).toEqual([8, 8]);
  });

  it('compressed descriptors: csize_shift, csize_mask and cluster_offset_mask of qcow2_do_open, cluster_bits 9..21', () => {
    for (let clusterBits = 9; clusterBits <= 21; clusterBits++) {
      // block/qcow2.c: s->csize_shift = (62 - (s->cluster_bits - 8));
      //                s->csize_mask = (1 << (s->cluster_bits - 8)) - 1;
      //                s->cluster_offset_mask = (1LL << s->csize_shift) - 1;
      const csizeShift = 62 - (clusterBits - 8);
      const csizeMask = (1n << BigInt(clusterBits - 8)) - 1n;
      const clusterOffsetMask = (1n << BigInt(csizeShift)) - 1n;
      const masks = l2EntryParamMasks({ clusterBits });
      expect(l2EntryParamShifts({ clusterBits }).compressedAdditionalSectors).toBe(BigInt(csizeShift));
      expect(masks.compressedAdditionalSectors).toBe(csizeMask << BigInt(csizeShift));
      expect(masks.compressedOffsetHi | L2EntryMasks.compressedLo).toBe(clusterOffsetMask);
      // The descriptor is bits 0..61: the two parts cover it without overlap.
      expect(masks.compressedAdditionalSectors & clusterOffsetMask).toBe(0n);
      expect(masks.compressedAdditionalSectors | clusterOffsetMask).toBe((1n << 62n) - 1n);
    }
  });

  it('a cluster_bits that puts the split outside the field is a RangeError', () => {
    expect(() => l2EntryParamMasks({ clusterBits: 7 })).toThrow(RangeError);
    expect(() => l2EntryParamShifts({ clusterBits: 39 })).toThrow(RangeError);
  });

  it('refcount table entries: REFT_OFFSET_MASK, REFT_RESERVED_MASK', () => {
    expect(RefcountTableEntryMasks.refblockOffset).toBe(0xfffffffffffffe00n);
    expect(RefcountTableEntryMasks.reserved).toBe(0x1ffn);
    expect(REFCOUNT_TABLE_ENTRY_FIXED_SIZE).toBe(8); // REFTABLE_ENTRY_SIZE
  });

  it('bitmap table entries and directory flags: BME_TABLE_ENTRY_*, BME_FLAG_*', () => {
    expect(BitmapTableEntryMasks.reserved).toBe(0xff000000000001fen);
    expect(BitmapTableEntryMasks.offset).toBe(0x00fffffffffffe00n);
    expect(BitmapTableEntryMasks.allOnes).toBe(1n << 0n);
    expect(BITMAP_TABLE_ENTRY_FIXED_SIZE).toBe(8);
    expect(BitmapDirectoryEntryMasks.inUse).toBe(1n << 0n);
    expect(BitmapDirectoryEntryMasks.auto).toBe(1n << 1n);
    // qcow2.rst: bit 2 extra_data_compatible, bits 3..31 reserved (QEMU's BME_RESERVED_FLAGS also
    // counts bit 2 as reserved, since it does not support it).
    expect(BitmapDirectoryEntryMasks.extraDataCompatible).toBe(1n << 2n);
    expect(BitmapDirectoryEntryMasks.reservedFlags).toBe(0xfffffffcn & ~(1n << 2n));
    expect([BitmapDirectoryEntryLayout.inUse.offset, BitmapDirectoryEntryLayout.inUse.size]).toEqual([12, 4]);
  });

  it('an x_hi / x_lo pair is combined only when both are bit fields in one word', () => {
    const spec = readKsy(parseYaml(`meta:\n  id: t\n  endian: be\ndoc: d.\nseq:\n${[
      ['a_hi', 'b16'], ['a_lo', 'b16'], ['b_hi', 'u4'], ['b_lo', 'u4'], ['c_hi', 'b8'], ['c', 'b8'], ['c_lo', 'b16'],
    ].map(([id, type]) => `  - id: ${id}\n    type: ${type}\n    doc: d.\n`).join('')}`));
    expect(hiLoPairs(layoutOf(spec, 't')).map((p) => p.id)).toEqual(['a']);
  });
});

describe('the magic, feature bits and extension types are QEMU\'s', () => {
  it('QCOW_MAGIC: "QFI\\xfb", (\'Q\' << 24) | (\'F\' << 16) | (\'I\' << 8) | 0xfb', () => {
    expect(HEADER_MAGIC).toEqual([...'QFI'].map((c) => c.charCodeAt(0)).concat(0xfb));
    const q = (c: string): number => c.charCodeAt(0);
    expect(HEADER_MAGIC_U32).toBe(((q('Q') << 24) | (q('F') << 16) | (q('I') << 8) | 0xfb) >>> 0);
  });

  it('QCOW2_INCOMPAT_*_BITNR, QCOW2_COMPAT_*_BITNR, QCOW2_AUTOCLEAR_*_BITNR and the masks', () => {
    expect(IncompatibleFeatureBit).toEqual({ DIRTY: 0, CORRUPT: 1, EXTERNAL_DATA_FILE: 2, COMPRESSION_TYPE: 3, EXTENDED_L2: 4 });
    expect(CompatibleFeatureBit).toEqual({ LAZY_REFCOUNTS: 0 });
    expect(AutoclearFeatureBit).toEqual({ BITMAPS: 0, RAW_EXTERNAL_DATA: 1 });
    expect(IncompatibleFeatureMask).toEqual({ DIRTY: 1n, CORRUPT: 2n, EXTERNAL_DATA_FILE: 4n, COMPRESSION_TYPE: 8n, EXTENDED_L2: 16n });
    expect(CompatibleFeatureMask).toEqual({ LAZY_REFCOUNTS: 1n });
    expect(AutoclearFeatureMask).toEqual({ BITMAPS: 1n, RAW_EXTERNAL_DATA: 2n });
    expect(INCOMPATIBLE_FEATURE_KNOWN_MASK).toBe(1n | 2n | 4n | 8n | 16n); // QCOW2_INCOMPAT_MASK
    expect(COMPATIBLE_FEATURE_KNOWN_MASK).toBe(1n); // QCOW2_COMPAT_FEAT_MASK
    expect(AUTOCLEAR_FEATURE_KNOWN_MASK).toBe(1n | 2n); // QCOW2_AUTOCLEAR_MASK
  });

  it('header extension types of qcow2.rst', () => {
    expect(HeaderExtensionType).toEqual({
      END: 0x00000000,
      BACKING_FILE_FORMAT: 0xe2792aca,
      FEATURE_NAME_TABLE: 0x6803f857,
      BITMAPS: 0x23852875,
      FULL_DISK_ENCRYPTION: 0x0537be77,
      EXTERNAL_DATA_FILE: 0x44415441,
    });
  });
});

describe('layout tables are qcow2.rst\'s byte tables', () => {
  it('the header (QCowHeader), version 2 being its first 72 bytes', () => {
    expect(byteRanges(HeaderLayout)).toEqual({
      magic: [0, 3],
      version: [4, 7],
      backing_file_offset: [8, 15],
      backing_file_size: [16, 19],
      cluster_bits: [20, 23],
      size: [24, 31],
      crypt_method: [32, 35],
      l1_size: [36, 39],
      l1_table_offset: [40, 47],
      refcount_table_offset: [48, 55],
      refcount_table_clusters: [56, 59],
      nb_snapshots: [60, 63],
      snapshots_offset: [64, 71],
      incompatible_features: [72, 79],
      compatible_features: [80, 87],
      autoclear_features: [88, 95],
      refcount_order: [96, 99],
      header_length: [100, 103],
      compression_type: [104, 104],
    });
    expect(HEADER_FIXED_SIZE).toBe(72);
  });

  it('header extensions, feature name entries, the bitmaps and full disk encryption extensions', () => {
    expect(byteRanges(HeaderExtensionLayout)).toEqual({ type: [0, 3], len_data: [4, 7] });
    expect(HEADER_EXTENSION_FIXED_SIZE).toBe(8);
    expect(byteRanges(FeatureNameEntryLayout)).toEqual({ feature_type: [0, 0], bit: [1, 1], name: [2, 47] });
    expect(FEATURE_NAME_ENTRY_FIXED_SIZE).toBe(48); // sizeof(Qcow2Feature)
    expect(byteRanges(BitmapsExtensionLayout)).toEqual({
      nb_bitmaps: [0, 3], reserved: [4, 7], bitmap_directory_size: [8, 15], bitmap_directory_offset: [16, 23],
    });
    expect(BITMAPS_EXTENSION_FIXED_SIZE).toBe(24); // sizeof(Qcow2BitmapHeaderExt)
    expect(FULL_DISK_ENCRYPTION_POINTER_FIXED_SIZE).toBe(16); // sizeof(Qcow2CryptoHeaderExtension)
  });

  it('snapshot table entries (QCowSnapshotHeader) and their extra data (QCowSnapshotExtraData)', () => {
    expect(byteRanges(SnapshotEntryLayout)).toEqual({
      l1_table_offset: [0, 7],
      l1_size: [8, 11],
      len_id: [12, 13],
      len_name: [14, 15],
      date_sec: [16, 19],
      date_nsec: [20, 23],
      vm_clock_nsec: [24, 31],
      vm_state_size: [32, 35],
      len_extra_data: [36, 39],
    });
    expect(SNAPSHOT_ENTRY_FIXED_SIZE).toBe(40);
    expect(byteRanges(SnapshotExtraDataLayout)).toEqual({ vm_state_size_large: [0, 7], disk_size: [8, 15], icount: [16, 23] });
  });

  it('bitmap directory entries (Qcow2BitmapDirEntry)', () => {
    expect(byteRanges(BitmapDirectoryEntryLayout)).toEqual({
      bitmap_table_offset: [0, 7],
      bitmap_table_size: [8, 11],
      // The flags word, bytes 12..15, holds the four flag fields.
      reserved_flags: [12, 15],
      extra_data_compatible: [12, 15],
      auto: [12, 15],
      in_use: [12, 15],
      bitmap_type: [16, 16],
      granularity_bits: [17, 17],
      len_name: [18, 19],
      len_extra_data: [20, 23],
    });
    expect(BITMAP_DIRECTORY_ENTRY_FIXED_SIZE).toBe(24);
  });
});

describe('src/format/limits.ts mirrors block/qcow2.h and the block layer', () => {
  it('sizes and counts', () => {
    expect(limits.INT_MAX).toBe(2147483647);
    expect(limits.INT64_MAX).toBe(9223372036854775807n);
    // QEMU_ALIGN_DOWN(INT64_MAX, 1 GiB), as qemu-img 7.2 prints it ("exceeds maximum(9223372035781033984)").
    expect(limits.BDRV_MAX_LENGTH).toBe(9223372035781033984n);
    expect([limits.MIN_CLUSTER_BITS, limits.MAX_CLUSTER_BITS]).toEqual([9, 21]);
    expect(limits.QCOW_MAX_REFTABLE_SIZE).toBe(0x800000);
    expect(limits.QCOW_MAX_L1_SIZE).toBe(0x2000000);
    expect(limits.QCOW_MAX_SNAPSHOTS).toBe(65536);
    expect(limits.QCOW_MAX_SNAPSHOTS_SIZE).toBe(1024 * 65536);
    expect(limits.QCOW_MAX_SNAPSHOT_EXTRA_DATA).toBe(1024);
    expect(limits.QCOW2_MAX_BITMAPS).toBe(65535);
    expect(limits.QCOW2_MAX_BITMAP_DIRECTORY_SIZE).toBe(1024 * 65535);
  });

  it('the metadata-overlap sections and templates (enum QCow2MetadataOverlap, QCOW2_OL_CONSTANT/CACHED/ALL)', () => {
    const bit = (n: number): number => 2 ** n;
    expect([
      limits.QCOW2_OL_MAIN_HEADER, limits.QCOW2_OL_ACTIVE_L1, limits.QCOW2_OL_ACTIVE_L2, limits.QCOW2_OL_REFCOUNT_TABLE,
      limits.QCOW2_OL_REFCOUNT_BLOCK, limits.QCOW2_OL_SNAPSHOT_TABLE, limits.QCOW2_OL_INACTIVE_L1, limits.QCOW2_OL_INACTIVE_L2,
      limits.QCOW2_OL_BITMAP_DIRECTORY,
    ]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8].map(bit));
    expect(limits.QCOW2_OL_CONSTANT).toBe(bit(0) + bit(1) + bit(3) + bit(5) + bit(8));
    expect(limits.QCOW2_OL_CACHED).toBe(0x1ff - bit(7));
    expect(limits.QCOW2_OL_ALL).toBe(0x1ff);
    expect(limits.QCOW2_OL_DEFAULT_TEMPLATE).toBe(0x1ff - bit(7)); // overlap-check.template defaults to "cached"
  });
});

describe('layoutOf on small specs (answers worked out by hand)', () => {
  const spec = (seq: string): ReturnType<typeof readKsy> => readKsy(parseYaml(`meta:\n  id: t\n  endian: be\ndoc: d.\nseq:\n${seq}`));
  const field = (id: string, type: string, extra = ''): string => `  - id: ${id}\n    type: ${type}\n${extra}    doc: d.\n`;
  const places = (s: ReturnType<typeof readKsy>): Record<string, unknown> =>
    Object.fromEntries(layoutOf(s, 't').fields.map((f) => [f.id, f.bits ? [f.offset, f.size, f.bits.shift, f.bits.width] : [f.offset, f.size]]));

  it('places fields with the same condition, and a field whose condition implies the earlier ones', () => {
    const s = spec(field('v', 'u1') + field('a', 'u4', '    if: v >= 3\n') + field('b', 'u2', '    if: v >= 3\n')
      + field('c', 'u1', '    if: v >= 3 and a > 104\n') + field('d', 'u1', '    if: a > 105\n'));
    // d (a > 105) does not imply v >= 3: d is at 8 when v >= 3 (a, b, c present) and at 1 when not.
    expect(places(s)).toEqual({ v: [0, 1], a: [1, 4], b: [5, 2], c: [7, 1] });
  });

  it('skips assignments that contradict themselves (x > 105 without x > 104)', () => {
    const s = spec(field('x', 'u1') + field('p', 'u1', '    if: x > 104\n') + field('q', 'u2', '    if: x > 105\n'));
    expect(places(s)).toEqual({ x: [0, 1], p: [1, 1], q: [2, 2] });
  });

  it('places a field after either branch of an if/else of the same length, and stops at a data-dependent size', () => {
    const s = spec(field('f', 'b1') + field('lo', 'b31', '    if: not f\n') + field('lo2', 'b32', '    if: not f\n')
      + field('hi', 'b32', '    if: f\n') + field('hi2', 'b31', '    if: f\n') + field('w', 'u2')
      + `  - id: data\n    size: w\n    doc: d.\n` + field('after', 'u1'));
    expect(places(s)).toEqual({
      f: [0, 8, 63, 1], lo: [0, 8, 32, 31], lo2: [0, 8, 0, 32], hi: [0, 8, 31, 32], hi2: [0, 8, 0, 31], w: [8, 2],
    });
  });

  it('cuts a bit run longer than 8 bytes into 8-byte words; a short run is one word of its bytes', () => {
    const s = spec(field('a', 'b32') + field('b', 'b32') + field('c', 'b32') + field('d', 'b32') + field('s', 'u1') + field('e', 'b4') + field('g', 'b12'));
    expect(places(s)).toEqual({
      a: [0, 8, 32, 32], b: [0, 8, 0, 32], c: [8, 8, 32, 32], d: [8, 8, 0, 32], s: [16, 1], e: [17, 2, 12, 4], g: [17, 2, 0, 12],
    });
    // A run longer than 8 bytes that is not whole 8-byte words is not placed.
    expect(places(spec(field('a', 'b32') + field('b', 'b32') + field('c', 'b8') + field('s', 'u1')))).toEqual({ s: [9, 1] });
  });

  it('does not place little-endian bit fields, nor what follows them', () => {
    const s = spec(field('a', 'u1') + field('x', 'b8') + field('b', 'b4le') + field('c', 'b4le') + field('d', 'u1'));
    expect(places(s)).toEqual({ a: [0, 1], x: [1, 1, 0, 8] });
  });

  it('finds value instances that split a bit field where a param says, and the fixed prefix', () => {
    const type = [
      'params:\n  - id: k\n    type: u1\n    doc: d.',
      `seq:\n${field('x', 'b16')}${field('y', 'u2', '    if: k > 3\n')}`,
      'instances:\n  split:\n    value: 16 - k\n    doc: d.\n  top:\n    value: x >> split\n    doc: d.',
      '  bottom:\n    value: x & ((1 << split) - 1)\n    doc: d.\n  other:\n    value: x >> 3\n    doc: d.',
    ].join('\n').replace(/^/gm, '    ');
    const s = readKsy(parseYaml(`meta:\n  id: t\n  endian: be\ndoc: d.\ntypes:\n  u:\n    doc: d.\n${type}\n`));
    const l = layoutOf(s, 'u');
    expect(l.fixedSize).toBe(2);
    expect(l.subfields.map((f) => [f.id, f.field.id, f.part, f.params])).toEqual([['top', 'x', 'upper', ['k']], ['bottom', 'x', 'lower', ['k']]]);
  });
});
