/**
 * The check's fast paths (the ones that made `-r all` and 2 MiB / 2-bit images fast) agree with the
 * straightforward computation they replace, on random input:
 *
 * - the overlap check's sorted cluster intervals (src/model/overlap.ts ClusterIntervals) with
 *   QEMU's ranges_overlap applied to every range, uint64 wrap-around included (offsets up to 2^64-1);
 * - the refcount-block scan for non-zero refcounts and the single-refcount read
 *   (src/check/refblocks.ts) with the generated decoder run over the whole block;
 * - the rebuild's refcount block bytes (src/check/imrt.ts refblockBytes, only non-zero bytes
 *   encoded) with the generated encoder run over every refcount of the block;
 * - the in-memory reftable (src/check/tables.ts) with a decode of the table as it is on disk
 *   after writes to it and elsewhere — and it is kept (the same view) while nothing touches it.
 *
 * Every refcount width (orders 0..6) is covered. ~2 s.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeRefcountBlockFields, encodeRefcountBlock, type U64Fields } from '../../generated/qcow2.ts';
import { refcountValue } from '../../src/format/entries.ts';
import { bigIntToU64 } from '../../src/format/u64.ts';
import { newCheckContext, newCheckSession, Transcript, type CheckContext } from '../../src/check/context.ts';
import { ClusterIntervals, rangesOverlap } from '../../src/model/overlap.ts';
import { nonZeroRefcounts, refcountAt } from '../../src/check/refblocks.ts';
import { reftableView } from '../../src/check/tables.ts';
import { createImage } from '../../src/model/create.ts';
import { readHost } from '../../src/model/host-file.ts';
import { Imrt } from '../../src/check/imrt.ts';
import { beginTx, hostWrite, type Tx } from '../../src/model/tx.ts';

const U64_MAX = (1n << 64n) - 1n;

/** A context over a fresh image with 2^clusterBits-byte clusters and 2^order-bit refcounts. */
function context(clusterBits: number, order: number): { c: CheckContext; tx: Tx } {
  const image = createImage({ size: 1n << 30n, clusterSize: 1 << clusterBits, refcountBits: 1 << order }).image;
  const tx = beginTx(image);
  const session = newCheckSession(false);
  return { c: newCheckContext(tx, 0, new Transcript(session), session), tx };
}

/** A 64-bit value: small, near a boundary (2^53, 2^62, 2^63, 2^64), or anything. */
const u64 = fc.oneof(
  fc.bigInt({ min: 0n, max: 1n << 24n }),
  fc.constantFrom(0n, 1n << 53n, (1n << 62n) - 512n, 1n << 63n, U64_MAX - 511n, U64_MAX).chain((b) => fc.bigInt({ min: -4096n, max: 4096n }).map((d) => BigInt.asUintN(64, b + d))),
  fc.bigInt({ min: 0n, max: U64_MAX }),
);

describe('the check fast paths', () => {
  it('ClusterIntervals answers as ranges_overlap over every range', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 9, max: 21 }),
        fc.array(fc.tuple(u64, fc.oneof(fc.constant(0n), fc.bigInt({ min: 1n, max: 1n << 36n }), u64)), { maxLength: 30 }),
        fc.array(fc.tuple(u64, fc.integer({ min: 1, max: 64 })), { minLength: 1, maxLength: 20 }),
        (clusterBits, ranges, queries) => {
          const cs = 1n << BigInt(clusterBits);
          // Ranges of non-zero length, as QEMU's sections are (a zero length is never put in a set).
          const list = ranges.filter(([, len]) => len > 0n);
          const set = new ClusterIntervals(clusterBits, (visit) => {
            for (const [o, l] of list) visit(o, l);
          });
          for (const [at, clusters] of queries) {
            // A query as the overlap check makes it: cluster aligned, below 2^63 (an int64 offset).
            const start = BigInt.asUintN(63, at) & ~(cs - 1n);
            const len = BigInt(clusters) * cs;
            if (start + len > 1n << 63n) continue;
            const want = list.some(([o, l]) => rangesOverlap(start, len, o, l));
            expect(set.overlaps(start, len), `[0x${start.toString(16)}, +0x${len.toString(16)})`).toBe(want);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('ranges_overlap wraps as uint64 (QEMU include/qemu/range.h)', () => {
    // [2^64 - 16, +32) ends at byte 15, below its start: it overlaps only a query reaching both ends.
    expect(rangesOverlap(0n, 16n, U64_MAX - 15n, 32n)).toBe(false);
    expect(rangesOverlap(0n, U64_MAX, U64_MAX - 15n, 32n)).toBe(true);
    // A length of 0 ends one byte before its start (a range reaching the top when it starts at 0).
    expect(rangesOverlap(4096n, 512n, 0n, 0n)).toBe(true);
    expect(rangesOverlap(4096n, 512n, 8192n, 0n)).toBe(false);
  });

  it('the refcount-block scan and read agree with a whole-block decode', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 6 }),
        fc.integer({ min: 9, max: 16 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 40 }),
        fc.nat(),
        fc.nat(),
        (order, clusterBits, pokes, a, b) => {
          const { c, tx } = context(clusterBits, order);
          const cs = 1 << clusterBits;
          // A block past everything createImage wrote, with random non-zero bytes.
          const offset = 64n * BigInt(cs);
          const bytes = new Uint8Array(cs);
          for (const [at, v] of pokes) bytes[at % cs] = v;
          hostWrite(tx, offset, bytes);
          const entries = decodeRefcountBlockFields(readHost(tx.img.file, offset, cs), 0, { refcountOrder: order }).entries.map(refcountValue);
          const from = a % entries.length;
          const to = from + (b % (entries.length - from + 1));
          const want: number[] = [];
          for (let i = from; i < to; i++) if (entries[i] !== 0n) want.push(i);
          expect(nonZeroRefcounts(c, offset, from, to)).toEqual(want);
          for (const i of [...want.slice(0, 5), from, Math.max(from, to - 1)]) {
            if (i < entries.length) expect(refcountAt(c, offset, i)).toBe(entries[i]);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('the rebuild encodes a refcount block as the whole-block encoder does', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 6 }),
        fc.integer({ min: 9, max: 14 }),
        fc.nat({ max: 3 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 3 })), { maxLength: 60 }),
        (order, clusterBits, index, counts) => {
          const cs = 1 << clusterBits;
          const perBlock = (cs * 8) >> order;
          const max = 2 ** (1 << order) - 1;
          const imrt = new Imrt(4 * perBlock, order);
          // Counts in this block and its neighbours (which must not show).
          for (const [k, v] of counts) imrt.set(k % (4 * perBlock), Math.min(v, max));
          const entries: Array<boolean | number | U64Fields> = [];
          for (let i = 0; i < perBlock; i++) {
            const v = imrt.get(index * perBlock + i);
            entries.push(order === 0 ? v !== 0 : order === 6 ? bigIntToU64(BigInt(v)) : v);
          }
          expect(imrt.refblockBytes(index, perBlock, cs)).toEqual(encodeRefcountBlock({ entries }, { refcountOrder: order }));
        },
      ),
      { numRuns: 150 },
    );
  });

  it('the in-memory reftable follows writes to the table and is kept while nothing touches it', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: 8191 }), u64, fc.boolean()), { minLength: 1, maxLength: 20 }),
        (writes) => {
          const { tx } = context(16, 4);
          const h = tx.img.header;
          const entries = (h.refcountTableClusters * 65536) / 8;
          for (const [i, word, inTable] of writes) {
            const before = reftableView(tx);
            const w = new Uint8Array(8);
            new DataView(w.buffer).setBigUint64(0, word);
            // Into the table, or into a cluster far from it.
            const at = inTable ? h.refcountTableOffset + BigInt((i % entries) * 8) : (1n << 24n) + BigInt(i * 8);
            hostWrite(tx, at, w);
            const view = reftableView(tx);
            if (!inTable) expect(view).toBe(before);
            const raw = readHost(tx.img.file, h.refcountTableOffset, entries * 8);
            const dv = new DataView(raw.buffer);
            const want: [number, bigint][] = [];
            for (let k = 0; k < entries; k++) if (dv.getBigUint64(k * 8) !== 0n) want.push([k, dv.getBigUint64(k * 8)]);
            expect([...view.indexes].map((k, n) => [k, view.words[n]!])).toEqual(want);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
