/**
 * 64-bit fields are exact everywhere: values above 2^53 and with all bits set survive encode →
 * decode → bigint, in our decoder and in kaitai-struct-compiler's (thanks to the hi/lo split).
 */
import fc from 'fast-check';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { decodeHeader, decodeL2Entry, encodeHeader, encodeL2Entry, HEADER_MAGIC, type HeaderFields } from '../../generated/qcow2.ts';
import { bigIntToU64, jsonU64, offsetFromParts, offsetToParts, u64ToBigInt, U64_MAX } from '../../src/format/u64.ts';
import { Qcow2FormatError } from '../../src/codec/errors.ts';

const require = createRequire(import.meta.url);
const Kaitai = require('../../generated/kaitai/Qcow2.cjs') as { Qcow2: { Header: new (io: unknown) => Record<string, { hi: number; lo: number }> } };
const KaitaiStream = require('kaitai-struct/KaitaiStream') as new (b: Uint8Array) => unknown;

const HARD = [0n, 1n, (1n << 53n) - 1n, 1n << 53n, (1n << 53n) + 1n, (1n << 63n), (1n << 63n) + 1n, U64_MAX - 1n, U64_MAX];

function header(size: bigint, l1: bigint): HeaderFields {
  return {
    magic: Uint8Array.from(HEADER_MAGIC),
    version: 3,
    backingFileOffset: bigIntToU64(U64_MAX),
    backingFileSize: 0xffffffff,
    clusterBits: 16,
    size: bigIntToU64(size),
    cryptMethod: 0,
    l1Size: 0xffffffff,
    l1TableOffset: bigIntToU64(l1),
    refcountTableOffset: bigIntToU64(1n << 63n),
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: bigIntToU64((1n << 53n) + 1n),
    incompatibleFeatures: bigIntToU64(U64_MAX),
    compatibleFeatures: bigIntToU64(0n),
    autoclearFeatures: bigIntToU64(1n << 63n),
    refcountOrder: 6,
    headerLength: 112,
    compressionType: 1,
    padding: new Uint8Array(7),
  };
}

describe('u64 fields', () => {
  it('round-trip exactly through our codec and read exactly in Kaitai', () => {
    for (const size of HARD) {
      for (const l1 of [0n, U64_MAX, (1n << 53n) + 1n]) {
        const bytes = encodeHeader(header(size, l1));
        const ours = decodeHeader(bytes);
        expect(u64ToBigInt(ours.size)).toBe(size);
        expect(u64ToBigInt(ours.l1TableOffset)).toBe(l1);
        expect(u64ToBigInt(ours.backingFileOffset)).toBe(U64_MAX);
        expect(u64ToBigInt(ours.incompatibleFeatures!)).toBe(U64_MAX);
        expect(ours.isDirty && ours.isCorrupt && ours.hasExtendedL2).toBe(true);
        // The same bytes, by hand: big-endian size at offset 24.
        const view = new DataView(bytes.buffer);
        expect(view.getBigUint64(24)).toBe(size);
        const k = new Kaitai.Qcow2.Header(new KaitaiStream(bytes));
        expect((BigInt(k.size!.hi) << 32n) | BigInt(k.size!.lo)).toBe(size);
      }
    }
  });

  it('bigIntToU64 refuses what does not fit 64 bits', () => {
    expect(() => bigIntToU64(U64_MAX + 1n)).toThrow(Qcow2FormatError);
    expect(() => bigIntToU64(-1n)).toThrow(Qcow2FormatError);
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: U64_MAX }), (v) => u64ToBigInt(bigIntToU64(v)) === v));
  });

  it('JSON keeps numbers up to 2^53 and strings above', () => {
    expect(jsonU64(1n << 53n)).toBe(2 ** 53);
    expect(jsonU64((1n << 53n) + 1n)).toBe('9007199254740993');
    expect(jsonU64(U64_MAX)).toBe('18446744073709551615');
  });
});

describe('entry offsets split across bit fields', () => {
  it('an L2 entry with every offset bit set decodes to 0x00fffffffffffe00', () => {
    const raw = new Uint8Array(8);
    new DataView(raw.buffer).setBigUint64(0, 0x80fffffffffffe00n); // COPIED + max offset
    const e = decodeL2Entry(raw, 0, { clusterBits: 16, extendedL2: false });
    expect(e.copied).toBe(true);
    expect(e.compressed).toBe(false);
    expect(offsetFromParts(e.hostOffsetHi!, e.hostOffsetLo!)).toBe(0x00fffffffffffe00n);
    expect(Array.from(encodeL2Entry(e, { clusterBits: 16, extendedL2: false }))).toEqual(Array.from(raw));
  });

  it('offsetToParts inverts offsetFromParts and refuses unaligned or oversized offsets', () => {
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: (1n << 47n) - 1n }), (k) => {
      const off = k << 9n;
      const { hi, lo9 } = offsetToParts(off, 24);
      return offsetFromParts(hi, lo9) === off;
    }));
    expect(() => offsetToParts(0x1234n, 24)).toThrow(/not 512-byte aligned/);
    expect(() => offsetToParts(1n << 56n, 24)).toThrow(/does not fit/);
  });

  it('a compressed descriptor at 2 MiB clusters keeps offset bits above 2^32', () => {
    // cluster_bits 21: x = 62 - 13 = 49 offset bits, 13 sector bits.
    const offset = (1n << 48n) + 0x12345n;
    const sectors = 0x1abcn;
    const raw = new Uint8Array(8);
    new DataView(raw.buffer).setBigUint64(0, (1n << 62n) | (sectors << 49n) | offset);
    const e = decodeL2Entry(raw, 0, { clusterBits: 21, extendedL2: false });
    expect(e.compressedAdditionalSectors).toBe(Number(sectors));
    expect((BigInt(e.compressedOffsetHi!) << 32n) | BigInt(e.compressedLo!)).toBe(offset);
  });
});
