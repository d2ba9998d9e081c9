/**
 * Entry classification (src/format/entries.ts) and feature bits (src/format/features.ts) against
 * hand-computed expectations from docs/format/header.md#feature-bits, docs/format/mapping.md and docs/format/refcounts.md. Entry bytes are built by hand
 * with DataView, never with the code under test; the generated decoders only split them into fields.
 */
import { describe, expect, it } from 'vitest';
import { decodeL1Entry, decodeL2Entry, decodeRefcountBlock, decodeRefcountTableEntry } from '../../generated/qcow2.ts';
import {
  classifyL2Entry,
  compressedDescriptor,
  l1EntryWord,
  l1L2Offset,
  l1ReservedBits,
  l2EntryWords,
  l2ReservedBits,
  refcountBlockOffset,
  refcountValue,
  subclusterStates,
  type L2Context,
} from '../../src/format/entries.ts';
import { decodeFeatureBits, headerExtensionTypeName } from '../../src/format/features.ts';

/** Big-endian bytes of one or two 64-bit words. */
function words(...ws: bigint[]): Uint8Array {
  const b = new Uint8Array(8 * ws.length);
  const v = new DataView(b.buffer);
  ws.forEach((w, i) => v.setBigUint64(8 * i, w, false));
  return b;
}

function l2(word: bigint, ctx: L2Context, bitmap?: bigint) {
  const bytes = ctx.extendedL2 ? words(word, bitmap ?? 0n) : words(word);
  return decodeL2Entry(bytes, 0, { clusterBits: ctx.clusterBits, extendedL2: ctx.extendedL2 });
}

const std64k: L2Context = { clusterBits: 16, extendedL2: false, externalDataFile: false };
const std4k: L2Context = { clusterBits: 12, extendedL2: false, externalDataFile: false };
const ext64k: L2Context = { clusterBits: 16, extendedL2: true, externalDataFile: false };
const dataFile64k: L2Context = { clusterBits: 16, extendedL2: false, externalDataFile: true };

describe('compressed descriptors (docs/format/mapping.md#compressed-clusters)', () => {
  it('0x400000000005004f at 64 KiB clusters: offset 0x5004f, 0 additional sectors', () => {
    const c = classifyL2Entry(l2(0x400000000005004fn, std64k), std64k);
    expect(c).toEqual({ kind: 'compressed', copied: false, hostOffset: 0x5004fn, additionalSectors: 0, compressedBytes: 512 - 0x4f });
  });

  it('0x40800000000500ed at 64 KiB clusters: 2 additional sectors', () => {
    const c = classifyL2Entry(l2(0x40800000000500edn, std64k), std64k);
    expect(c).toEqual({ kind: 'compressed', copied: false, hostOffset: 0x500edn, additionalSectors: 2, compressedBytes: 3 * 512 - 0xed });
  });

  it('0x4800000000005dcf at 4 KiB clusters: field at bit 58 = 2', () => {
    const c = classifyL2Entry(l2(0x4800000000005dcfn, std4k), std4k);
    expect(c).toEqual({ kind: 'compressed', copied: false, hostOffset: 0x5dcfn, additionalSectors: 2, compressedBytes: 3 * 512 - 0x1cf });
  });

  it('bit 62 is tested first: bit 0 of a compressed entry is offset, not ZERO', () => {
    const c = classifyL2Entry(l2(0x4000000000000001n, std64k), std64k);
    expect(c.kind).toBe('compressed');
    expect(c.kind === 'compressed' && c.hostOffset).toBe(1n);
  });

  it.each([
    // cluster_bits, offset bits x = 70 - cluster_bits, sector field width cluster_bits - 8
    [9, 61, 1],
    [12, 58, 4],
    [16, 54, 8],
    [21, 49, 13],
  ])('all bits set at cluster_bits %i: offset 2^%i - 1, sector field of %i bits', (cb, x, width) => {
    const ctx: L2Context = { clusterBits: cb, extendedL2: false, externalDataFile: false };
    const d = compressedDescriptor(l2(0xffffffffffffffffn, ctx), cb);
    const sectors = 2 ** width - 1;
    expect(d).toEqual({ hostOffset: (1n << BigInt(x)) - 1n, additionalSectors: sectors, compressedBytes: (sectors + 1) * 512 - 511 });
    const c = classifyL2Entry(l2(0xffffffffffffffffn, ctx), ctx);
    expect(c.kind).toBe('compressed');
    expect(c.copied).toBe(true);
  });

  it('offsets above 2^53 stay exact', () => {
    // 64 KiB clusters: offset field is bits 0..53; 2^53 + 3 needs bit 53.
    const c = classifyL2Entry(l2(0x4000000000000000n | ((1n << 53n) + 3n), std64k), std64k);
    expect(c.kind === 'compressed' && c.hostOffset).toBe((1n << 53n) + 3n);
  });
});

describe('standard L2 entries (docs/format/mapping.md#standard-l2-entries)', () => {
  it.each([
    [0x0n, { kind: 'unallocated', copied: false }],
    [0x1n, { kind: 'zero-plain', copied: false }],
    [0x50001n, { kind: 'zero-alloc', copied: false, hostOffset: 0x50000n }],
    [0x8000000000050001n, { kind: 'zero-alloc', copied: true, hostOffset: 0x50000n }],
    [0x50000n, { kind: 'normal', copied: false, hostOffset: 0x50000n }],
    [0x8000000000050000n, { kind: 'normal', copied: true, hostOffset: 0x50000n }],
    [0x8000000000000000n, { kind: 'unallocated', copied: true }],
    [0x00fffffffffffe00n, { kind: 'normal', copied: false, hostOffset: 0xfffffffffffe00n }],
    [0x0020000000000200n, { kind: 'normal', copied: false, hostOffset: (1n << 53n) + 512n }],
  ] as const)('%s', (word, expected) => {
    expect(classifyL2Entry(l2(word, std64k), std64k)).toEqual(expected);
  });

  it('all bits but 62 set: zero-alloc at the largest offset, reserved bits reported', () => {
    const e = l2(0xbfffffffffffffffn, std64k);
    expect(classifyL2Entry(e, std64k)).toEqual({ kind: 'zero-alloc', copied: true, hostOffset: 0x00fffffffffffe00n });
    expect(l2ReservedBits(e)).toBe(0x3f000000000001fen);
    expect(l2EntryWords(e)).toEqual({ word: 0xbfffffffffffffffn });
  });

  it('external data file: COPIED with offset 0 is a normal cluster at host offset 0', () => {
    expect(classifyL2Entry(l2(0x8000000000000000n, dataFile64k), dataFile64k)).toEqual({ kind: 'normal', copied: true, hostOffset: 0n });
    expect(classifyL2Entry(l2(0x0n, dataFile64k), dataFile64k)).toEqual({ kind: 'unallocated', copied: false });
    expect(classifyL2Entry(l2(0x8000000000100000n, dataFile64k), dataFile64k)).toEqual({ kind: 'normal', copied: true, hostOffset: 0x100000n });
  });

  it('extended L2 ignores the ZERO flag in word 0', () => {
    expect(classifyL2Entry(l2(0x1n, ext64k), ext64k).kind).toBe('unallocated');
    expect(classifyL2Entry(l2(0x50001n, ext64k), ext64k)).toEqual({ kind: 'normal', copied: false, hostOffset: 0x50000n });
  });
});

describe('extended L2 subclusters (docs/format/mapping.md#subcluster-types)', () => {
  const bitmap = (zero: number, alloc: number): bigint => (BigInt(zero >>> 0) << 32n) | BigInt(alloc >>> 0);

  it('allocated entry: zero bit -> zero-alloc, alloc bit -> normal, neither -> unallocated-alloc', () => {
    const e = l2(0x8000000000050000n, ext64k, bitmap(0b10, 0b1));
    const s = subclusterStates(e, ext64k);
    expect(s).toHaveLength(32);
    expect(s.slice(0, 3)).toEqual(['normal', 'zero-alloc', 'unallocated-alloc']);
    expect(s.slice(3).every((x) => x === 'unallocated-alloc')).toBe(true);
    expect(l2EntryWords(e)).toEqual({ word: 0x8000000000050000n, bitmap: 0x200000001n });
  });

  it('allocated entry with a subcluster both zero and allocated: all invalid', () => {
    const s = subclusterStates(l2(0x50000n, ext64k, bitmap(0x80000000, 0x80000001)), ext64k);
    expect(s.every((x) => x === 'invalid')).toBe(true);
  });

  it('unallocated entry: zero bit -> zero-plain, else unallocated-plain; any alloc bit -> all invalid', () => {
    const s = subclusterStates(l2(0x0n, ext64k, bitmap(0xffff0000, 0)), ext64k);
    expect(s.slice(0, 16).every((x) => x === 'unallocated-plain')).toBe(true);
    expect(s.slice(16).every((x) => x === 'zero-plain')).toBe(true);
    expect(subclusterStates(l2(0x0n, ext64k, bitmap(0, 0x4)), ext64k).every((x) => x === 'invalid')).toBe(true);
  });

  it('all bitmap bits set on an allocated entry: all invalid; full alloc bitmap: all normal', () => {
    expect(subclusterStates(l2(0x50000n, ext64k, 0xffffffffffffffffn), ext64k).every((x) => x === 'invalid')).toBe(true);
    expect(subclusterStates(l2(0x50000n, ext64k, 0xffffffffn), ext64k).every((x) => x === 'normal')).toBe(true);
    expect(subclusterStates(l2(0x50000n, ext64k, 0xffffffff00000000n), ext64k).every((x) => x === 'zero-alloc')).toBe(true);
  });

  it('compressed entry: all compressed', () => {
    expect(subclusterStates(l2(0x400000000005004fn, ext64k, 0n), ext64k).every((x) => x === 'compressed')).toBe(true);
  });

  it('standard entries give one state for the cluster', () => {
    expect(subclusterStates(l2(0x0n, std64k), std64k)).toEqual(['unallocated-plain']);
    expect(subclusterStates(l2(0x1n, std64k), std64k)).toEqual(['zero-plain']);
  });
});

describe('L1 and refcount table entries (docs/format/mapping.md#l1-entries, refcounts.md#refcount-table)', () => {
  const p = { clusterBits: 16, extendedL2: false };

  it('L1 entry: COPIED + offset, exact above 2^53', () => {
    const e = decodeL1Entry(words(0x8000000000040000n), 0, p);
    expect(l1L2Offset(e)).toBe(0x40000n);
    expect(e.copied).toBe(true);
    expect(l1ReservedBits(e)).toBe(0n);
    expect(l1L2Offset(decodeL1Entry(words(0x0020000000010000n), 0, p))).toBe((1n << 53n) + 0x10000n);
  });

  it('L1 entry with all bits set: offset mask 0x00fffffffffffe00, reserved mask 0x7f000000000001ff', () => {
    const e = decodeL1Entry(words(0xffffffffffffffffn), 0, p);
    expect(l1L2Offset(e)).toBe(0x00fffffffffffe00n);
    expect(l1ReservedBits(e)).toBe(0x7f000000000001ffn);
    expect(l1EntryWord(e)).toBe(0xffffffffffffffffn);
  });

  it('refcount table entry: bits 9..63 are the block offset', () => {
    const q = { clusterBits: 16, refcountOrder: 4 };
    expect(refcountBlockOffset(decodeRefcountTableEntry(words(0x20000n), 0, q))).toBe(0x20000n);
    const all = decodeRefcountTableEntry(words(0xffffffffffffffffn), 0, q);
    expect(refcountBlockOffset(all)).toBe(0xfffffffffffffe00n);
    expect(all.reserved).toBe(0x1ff);
  });

  it('refcount block entries of every width become exact bigints', () => {
    // 1-bit: LSB first within the byte.
    const b1 = decodeRefcountBlock(new Uint8Array([0b00000101]), 0, { refcountOrder: 0 });
    expect(b1.entries.map(refcountValue)).toEqual([1n, 0n, 1n, 0n, 0n, 0n, 0n, 0n]);
    // 4-bit: entry 0 in the low nibble.
    const b4 = decodeRefcountBlock(new Uint8Array([0x21, 0xf0]), 0, { refcountOrder: 2 });
    expect(b4.entries.map(refcountValue)).toEqual([1n, 2n, 0n, 15n]);
    const b16 = decodeRefcountBlock(new Uint8Array([0x01, 0x02, 0xff, 0xff]), 0, { refcountOrder: 4 });
    expect(b16.entries.map(refcountValue)).toEqual([0x102n, 0xffffn]);
    const b32 = decodeRefcountBlock(new Uint8Array([0xff, 0xff, 0xff, 0xff]), 0, { refcountOrder: 5 });
    expect(b32.entries.map(refcountValue)).toEqual([0xffffffffn]);
    const b64 = decodeRefcountBlock(words(0xffffffffffffffffn, (1n << 53n) + 1n), 0, { refcountOrder: 6 });
    expect(b64.entries.map(refcountValue)).toEqual([0xffffffffffffffffn, (1n << 53n) + 1n]);
  });
});

describe('feature bits (docs/format/header.md#feature-bits, extensions.md#feature-name-table)', () => {
  it('known names and the unknown mask', () => {
    const f = decodeFeatureBits('incompatible', 0x8000000000000031n);
    expect(f.names).toEqual(['dirty bit', 'extended L2 entries']);
    expect(f.keys).toEqual(['dirty', 'extended-l2']);
    expect(f.unknownMask).toBe(0x8000000000000020n);
    expect(decodeFeatureBits('compatible', { hi: 0xffffffff, lo: 0xffffffff })).toEqual({
      value: 0xffffffffffffffffn,
      names: ['lazy refcounts'],
      keys: ['lazy-refcounts'],
      unknownMask: 0xfffffffffffffffen,
    });
    expect(decodeFeatureBits('autoclear', 3n).names).toEqual(['bitmaps', 'raw external data']);
  });

  it('header extension type names', () => {
    expect(headerExtensionTypeName(0xe2792aca)).toBe('backing file format name');
    expect(headerExtensionTypeName(0x6803f857)).toBe('feature name table');
    expect(headerExtensionTypeName(0x23852875)).toBe('bitmaps extension');
    expect(headerExtensionTypeName(0x0537be77)).toBe('full disk encryption header pointer');
    expect(headerExtensionTypeName(0x44415441)).toBe('external data file name');
    expect(headerExtensionTypeName(0)).toBe('end of header extensions');
    expect(headerExtensionTypeName(0x12345678)).toBeUndefined();
  });
});
