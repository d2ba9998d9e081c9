/**
 * The fast paths of the model's byte handling against plain definitions: isZeroBytes (and its word
 * loop alone) at every alignment and length, the fields-only decoders against the full ones, and the
 * host file under zero-heavy writes (where pages drop out) with unaligned source buffers.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as generated from '../../generated/qcow2.ts';
import { isZeroBytes, isZeroWordsOnly } from '../../src/codec/bytes.ts';
import { applyHostIO, emptyHostFile, hostBytes, readHost, viewHost } from '../../src/model/host-file.ts';
import { PAGE_SIZE, PageMap } from '../../src/model/page-map.ts';
import { type HostIO } from '../../src/model/host-io.ts';

const naiveZero = (b: Uint8Array, from: number, len: number): boolean => b.subarray(from, from + len).every((x) => x === 0);

describe('isZeroBytes', () => {
  it('agrees with a byte loop for any range of any buffer (one non-zero byte anywhere, or none)', () => {
    fc.assert(
      fc.property(fc.nat(70000), fc.nat(8), fc.option(fc.nat(70000)), fc.nat(70000), fc.nat(70000), (size, shift, hot, a, b) => {
        const backing = new Uint8Array(size + 8);
        const buf = backing.subarray(shift, shift + size);
        if (hot !== null && size > 0) buf[hot % size] = 1 + (hot % 255);
        const from = size === 0 ? 0 : a % (size + 1);
        const len = size - from === 0 ? 0 : b % (size - from + 1);
        const want = naiveZero(buf, from, len);
        expect(isZeroBytes(buf, from, len)).toBe(want);
        expect(isZeroWordsOnly(buf, from, len)).toBe(want);
      }),
      { numRuns: 400 },
    );
  });

  it('whole-buffer default arguments', () => {
    expect(isZeroBytes(new Uint8Array(0))).toBe(true);
    expect(isZeroBytes(new Uint8Array(200000))).toBe(true);
    const b = new Uint8Array(200000);
    b[140000] = 1;
    expect(isZeroBytes(b)).toBe(false);
    expect(isZeroWordsOnly(b)).toBe(false);
  });
});

/** Writes that are mostly zeros (whole pages, partial pages) from buffers at odd byte offsets. */
const zeroHeavyOp: fc.Arbitrary<HostIO> = fc.oneof(
  fc.record({ page: fc.nat(6), within: fc.oneof(fc.constant(0), fc.nat(PAGE_SIZE - 1)), len: fc.oneof(fc.constantFrom(PAGE_SIZE, 2 * PAGE_SIZE, 8), fc.integer({ min: 1, max: 3 * PAGE_SIZE })), shift: fc.nat(7), hot: fc.option(fc.nat(3 * PAGE_SIZE)) })
    .map(({ page, within, len, shift, hot }) => {
      const bytes = new Uint8Array(len + 8).subarray(shift, shift + len);
      if (hot !== null) bytes[hot % len] = 0xa5;
      return { kind: 'write' as const, offset: BigInt(page * PAGE_SIZE + within), bytes };
    }),
  fc.record({ offset: fc.nat(7 * PAGE_SIZE), length: fc.integer({ min: 1, max: 3 * PAGE_SIZE }) })
    .map(({ offset, length }) => ({ kind: 'zero' as const, offset: BigInt(offset), length: BigInt(length) })),
  fc.record({ offset: fc.nat(7 * PAGE_SIZE), length: fc.integer({ min: 1, max: 3 * PAGE_SIZE }) })
    .map(({ offset, length }) => ({ kind: 'discard' as const, offset: BigInt(offset), length: BigInt(length) })),
);

function flat(ops: readonly HostIO[]): Uint8Array {
  let b = new Uint8Array(0);
  for (const op of ops) {
    if (op.kind === 'flush' || op.kind === 'truncate') continue;
    const end = op.kind === 'write' ? Number(op.offset) + op.bytes.length : Number(op.offset + op.length);
    if (op.kind !== 'discard' && end > b.length) {
      const n = new Uint8Array(end);
      n.set(b);
      b = n;
    }
    if (op.kind === 'write') b.set(op.bytes, Number(op.offset));
    else b.fill(0, Math.min(b.length, Number(op.offset)), Math.min(b.length, end));
  }
  return b;
}

describe('HostFile fast paths', () => {
  it('zero-heavy writes: same bytes as a flat array, no all-zero page kept, earlier values unchanged', () => {
    fc.assert(
      fc.property(fc.array(zeroHeavyOp, { maxLength: 25 }), fc.array(zeroHeavyOp, { maxLength: 8 }), (first, second) => {
        const a = applyHostIO(emptyHostFile(), first);
        const before = hostBytes(a);
        const b = applyHostIO(a, second);
        expect(Buffer.from(hostBytes(b)).equals(Buffer.from(flat([...first, ...second])))).toBe(true);
        expect(Buffer.from(hostBytes(a)).equals(Buffer.from(before))).toBe(true);
        for (const p of b.pages.values()) expect(p.some((x) => x !== 0)).toBe(true);
        // Files without a base never grow a `base` field: their object shape stays the fast one.
        expect('base' in b).toBe(false);
        expect('base' in applyHostIO(b, [{ kind: 'truncate', length: 3n }])).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('viewHost returns the same bytes as readHost for any range', () => {
    fc.assert(
      fc.property(fc.array(zeroHeavyOp, { maxLength: 10 }), fc.nat(8 * PAGE_SIZE), fc.nat(2 * PAGE_SIZE), (ops, off, len) => {
        const f = applyHostIO(emptyHostFile(), ops);
        expect(Buffer.from(viewHost(f, BigInt(off), len)).equals(Buffer.from(readHost(f, BigInt(off), len)))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});

describe('fields-only decoders', () => {
  const g = generated as unknown as Record<string, (b: Uint8Array, o: number, p: unknown) => unknown>;
  const cases: Array<[string, number, unknown]> = [
    ['L1Entry', 8, { clusterBits: 16, extendedL2: false }],
    ['L2Entry', 8, { clusterBits: 16, extendedL2: false }],
    ['L2Entry', 16, { clusterBits: 12, extendedL2: true }],
    ['RefcountTableEntry', 8, { clusterBits: 16, refcountOrder: 4 }],
    ['RefcountBlock', 16, { refcountOrder: 0 }],
    ['RefcountBlock', 16, { refcountOrder: 2 }],
    ['RefcountBlock', 16, { refcountOrder: 4 }],
    ['RefcountBlock', 16, { refcountOrder: 6 }],
  ];
  for (const [name, size, params] of cases) {
    it(`decode${name}Fields equals the enumerable fields of decode${name} (${JSON.stringify(params)})`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ minLength: size, maxLength: size }), fc.nat(8), (bytes, pre) => {
          const b = new Uint8Array(pre + size);
          b.set(bytes, pre);
          const full = g[`decode${name}`]!(b, pre, params);
          const fields = g[`decode${name}Fields`]!(b, pre, params);
          expect(fields).toEqual(JSON.parse(JSON.stringify(full)));
          expect(Object.getOwnPropertyNames(fields)).toEqual(Object.keys(full as object));
        }),
        { numRuns: 200 },
      );
    });
  }
});

describe('PageMap', () => {
  type MapOp =
    | { k: 'set'; key: number }
    | { k: 'delete'; key: number }
    | { k: 'range'; lo: number; hi: number }
    | { k: 'batch'; ops: Array<{ key: number; del: boolean }> };
  // Keys cluster in a few regions, including beyond 2^30 and near 2^52, so trie levels grow and shrink.
  const keyArb = fc.oneof(fc.nat(70), fc.integer({ min: 1020, max: 1100 }), fc.integer({ min: 2 ** 30 - 40, max: 2 ** 30 + 40 }), fc.integer({ min: 2 ** 52 - 40, max: 2 ** 52 }));
  const opArb: fc.Arbitrary<MapOp> = fc.oneof(
    keyArb.map((key) => ({ k: 'set' as const, key })),
    keyArb.map((key) => ({ k: 'delete' as const, key })),
    fc.tuple(keyArb, fc.nat(2000)).map(([lo, n]) => ({ k: 'range' as const, lo, hi: lo + n - 1 })),
    fc.array(fc.record({ key: keyArb, del: fc.boolean() }), { maxLength: 8 }).map((ops) => ({ k: 'batch' as const, ops })),
  );

  it('behaves like a JavaScript Map; earlier versions never change; iteration is in key order', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 40 }), (ops) => {
        let m = PageMap.EMPTY;
        const ref = new Map<number, Uint8Array>();
        const history: Array<[PageMap, Array<[number, Uint8Array]>]> = [];
        let n = 0;
        for (const op of ops) {
          const before = m;
          if (op.k === 'set') {
            const v = new Uint8Array([++n]);
            m = m.set(op.key, v);
            ref.set(op.key, v);
          } else if (op.k === 'delete') {
            m = m.delete(op.key);
            ref.delete(op.key);
          } else if (op.k === 'range') {
            m = m.deleteRange(op.lo, op.hi);
            for (const key of [...ref.keys()]) if (key >= op.lo && key <= op.hi) ref.delete(key);
          } else {
            const done: Array<[number, Uint8Array | undefined]> = [];
            m = m.batch((b) => {
              for (const o of op.ops) {
                const v = o.del ? undefined : new Uint8Array([++n]);
                if (v === undefined) b.delete(o.key);
                else b.set(o.key, v);
                done.push([o.key, v]);
              }
            });
            for (const [key, v] of done) {
              if (v === undefined) ref.delete(key);
              else ref.set(key, v);
            }
          }
          const want = [...ref.entries()].sort((a, b) => a[0] - b[0]);
          // A single change that leaves every page as it was returns the same map.
          if (op.k !== 'batch' && want.length === before.size && want.every(([k, v]) => before.get(k) === v)) expect(m).toBe(before);
          expect(m.size).toBe(ref.size);
          expect([...m.entries()]).toEqual(want);
          for (const [k, v] of want) expect(m.get(k)).toBe(v);
          history.push([m, want]);
        }
        for (const [old, want] of history) expect([...old.entries()]).toEqual(want);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses keys that are not non-negative integers below 2^55', () => {
    expect(() => PageMap.EMPTY.set(-1, new Uint8Array(1))).toThrow(RangeError);
    expect(() => PageMap.EMPTY.set(1.5, new Uint8Array(1))).toThrow(RangeError);
    expect(PageMap.EMPTY.get(-1)).toBeUndefined();
  });
});
