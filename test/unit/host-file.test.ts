/**
 * The persistent host file against a flat byte array: every operation, any alignment, and the
 * old value never changes (path copying).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { absorbIssuedWrites, applyHostIO, discardHost, emptyHostFile, hostBytes, hostFromBytes, hostFromReader, hostPage, readHost, rebaseHostFile, truncateHost, viewHost, writeHost, zeroHost, type HostFile } from '../../src/model/host-file.ts';
import { HostReaderError, type HostReader } from '../../src/model/host-reader.ts';
import { PAGE_SIZE } from '../../src/model/page-map.ts';
import { type HostIO } from '../../src/model/host-io.ts';

const SPAN = 5 * PAGE_SIZE;

const opArb: fc.Arbitrary<HostIO> = fc.oneof(
  fc.record({ offset: fc.nat(SPAN), bytes: fc.uint8Array({ minLength: 1, maxLength: 2 * PAGE_SIZE + 3 }) })
    .map(({ offset, bytes }) => ({ kind: 'write' as const, offset: BigInt(offset), bytes })),
  fc.record({ offset: fc.oneof(fc.nat(SPAN), fc.nat(5).map((p) => p * PAGE_SIZE)), length: fc.oneof(fc.integer({ min: 1, max: 3 * PAGE_SIZE }), fc.constantFrom(512, PAGE_SIZE)) })
    .map(({ offset, length }) => ({ kind: 'zero' as const, offset: BigInt(offset), length: BigInt(length) })),
  fc.record({ offset: fc.oneof(fc.nat(SPAN), fc.nat(5).map((p) => p * PAGE_SIZE)), length: fc.oneof(fc.integer({ min: 1, max: 3 * PAGE_SIZE }), fc.constantFrom(512, PAGE_SIZE)) })
    .map(({ offset, length }) => ({ kind: 'discard' as const, offset: BigInt(offset), length: BigInt(length) })),
  fc.nat(SPAN + PAGE_SIZE).map((n) => ({ kind: 'truncate' as const, length: BigInt(n) })),
);

/** The reference: a plain growable array, starting from `start`. */
function reference(ops: readonly HostIO[], start: Uint8Array = new Uint8Array(0)): Uint8Array {
  let b = start.slice();
  const grow = (n: number): void => {
    if (n > b.length) {
      const next = new Uint8Array(n);
      next.set(b);
      b = next;
    }
  };
  for (const op of ops) {
    if (op.kind === 'write') {
      grow(Number(op.offset) + op.bytes.length);
      b.set(op.bytes, Number(op.offset));
    } else if (op.kind === 'zero') {
      grow(Number(op.offset + op.length));
      b.fill(0, Number(op.offset), Number(op.offset + op.length));
    } else if (op.kind === 'discard') {
      b.fill(0, Math.min(b.length, Number(op.offset)), Math.min(b.length, Number(op.offset + op.length)));
    } else if (op.kind === 'truncate') {
      const n = Number(op.length);
      const next = new Uint8Array(n);
      next.set(b.subarray(0, Math.min(n, b.length)));
      b = next;
    }
  }
  return b;
}

describe('HostFile', () => {
  it('equals a flat byte array after any operations, and earlier values stay unchanged', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 30 }), fc.array(opArb, { maxLength: 10 }), (first, second) => {
        const a = applyHostIO(emptyHostFile(), first);
        const snapshot = hostBytes(a);
        const b = applyHostIO(a, second);
        expect(Buffer.from(hostBytes(b)).equals(Buffer.from(reference([...first, ...second])))).toBe(true);
        expect(Buffer.from(hostBytes(a)).equals(Buffer.from(snapshot))).toBe(true);
        // Reads past the end are zeros.
        expect(readHost(b, b.length, 10).every((x) => x === 0)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('regression: zeroing a range that starts on a page boundary and ends inside the page', () => {
    // Found by test/qemu/model-write-vs-qemu.test.ts (v2, 512-byte clusters: write 1537 bytes at
    // 0, discard 0+2048, write 1 byte at 0): the punched cluster at 0x1000 kept its data.
    const f = applyHostIO(emptyHostFile(), [
      { kind: 'write', offset: 0n, bytes: new Uint8Array(4608).fill(1) },
      { kind: 'discard', offset: 4096n, length: 512n },
    ]);
    expect(f.length).toBe(4608n);
    expect(readHost(f, 4096n, 512).every((x) => x === 0)).toBe(true);
    expect(readHost(f, 4095n, 1)[0]).toBe(1);
  });
});

/** A reader over `bytes` that refuses reads outside it and counts the bytes it hands out. */
function memoryReader(bytes: Uint8Array): HostReader & { bytesRead: number } {
  const r = {
    length: BigInt(bytes.length),
    bytesRead: 0,
    read(offset: bigint, length: number): Uint8Array {
      if (offset < 0n || length < 0 || offset + BigInt(length) > BigInt(bytes.length)) throw new Error(`read outside the base: ${offset}+${length}`);
      r.bytesRead += length;
      return bytes.slice(Number(offset), Number(offset) + length);
    },
  };
  return r;
}

/** A base of up to ~6 pages: random bytes, some pages zeroed, any length (not page aligned). */
const baseArb: fc.Arbitrary<Uint8Array> = fc
  .record({ len: fc.oneof(fc.nat(6 * PAGE_SIZE + 100), fc.nat(6).map((p) => p * PAGE_SIZE)), seed: fc.nat(), zeroPages: fc.array(fc.nat(6), { maxLength: 3 }) })
  .map(({ len, seed, zeroPages }) => {
    const b = new Uint8Array(len);
    let x = seed | 1;
    for (let i = 0; i < len; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      b[i] = x & 0xff;
    }
    for (const p of zeroPages) b.fill(0, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    return b;
  });

/** Every observable of `f` agrees with the flat `want`: length, bytes, reads, views and pages. */
function expectSameContent(f: HostFile, want: Uint8Array, ranges: ReadonlyArray<[number, number]>): void {
  expect(f.length).toBe(BigInt(want.length));
  expect(Buffer.from(hostBytes(f)).equals(Buffer.from(want))).toBe(true);
  const at = (o: number, n: number): Buffer => {
    const out = Buffer.alloc(n);
    if (o < want.length) out.set(want.subarray(o, Math.min(want.length, o + n)));
    return out;
  };
  for (const [o, n] of ranges) {
    expect(Buffer.from(readHost(f, BigInt(o), n)).equals(at(o, n))).toBe(true);
    expect(Buffer.from(viewHost(f, BigInt(o), n)).equals(at(o, n))).toBe(true);
  }
  for (let p = 0; p * PAGE_SIZE < want.length + PAGE_SIZE; p++) {
    expect(Buffer.from(hostPage(f, p) ?? new Uint8Array(PAGE_SIZE)).equals(at(p * PAGE_SIZE, PAGE_SIZE))).toBe(true);
  }
}

const rangeArb = fc.tuple(fc.nat(SPAN + 2 * PAGE_SIZE), fc.nat(3 * PAGE_SIZE));

describe('HostFile over a read-only base', () => {
  it('behaves exactly like the file built from the base bytes, and earlier values stay unchanged', () => {
    fc.assert(
      fc.property(baseArb, fc.array(opArb, { maxLength: 25 }), fc.array(opArb, { maxLength: 10 }), fc.array(rangeArb, { maxLength: 6 }), (base, first, second, ranges) => {
        const reader = memoryReader(base);
        const over = hostFromReader(reader);
        expect(over.pages.size).toBe(0);
        expectSameContent(over, base, ranges);
        const a = applyHostIO(over, first);
        const flatA = applyHostIO(hostFromBytes(base), first);
        const wantA = reference(first, base);
        expect(Buffer.from(hostBytes(flatA)).equals(Buffer.from(wantA))).toBe(true);
        expectSameContent(a, wantA, ranges);
        const b = applyHostIO(a, second);
        const wantB = reference([...first, ...second], base);
        expectSameContent(b, wantB, ranges);
        // Purity: the earlier versions still show what they showed.
        expectSameContent(a, wantA, ranges);
        expectSameContent(over, base, ranges);
        // Rebasing a file onto a reader of its own content keeps the content and drops the overlay.
        const re = rebaseHostFile(b, memoryReader(wantB));
        expect(re.pages.size).toBe(0);
        expectSameContent(re, wantB, ranges);
        expectSameContent(applyHostIO(re, first), reference(first, wantB), ranges);
      }),
      { numRuns: 400 },
    );
  });

  it('a page written or cut to zeros over base bytes reads as zeros (it is not simply dropped)', () => {
    const base = new Uint8Array(3 * PAGE_SIZE).fill(7);
    let f = hostFromReader(memoryReader(base));
    f = writeHost(f, 10n, new Uint8Array([1, 2, 3]));
    f = writeHost(f, 0n, new Uint8Array(PAGE_SIZE)); // whole page of zeros over the base
    expect(readHost(f, 0n, PAGE_SIZE).every((x) => x === 0)).toBe(true);
    f = writeHost(f, BigInt(PAGE_SIZE), new Uint8Array(100)); // partial zeros
    expect(Array.from(readHost(f, BigInt(PAGE_SIZE) + 98n, 4))).toEqual([0, 0, 7, 7]);
    f = zeroHost(f, BigInt(PAGE_SIZE) + 100n, BigInt(PAGE_SIZE) - 100n); // the rest of page 1: all zeros now
    expect(readHost(f, BigInt(PAGE_SIZE), PAGE_SIZE).every((x) => x === 0)).toBe(true);
    // Cutting inside page 2 and growing again: the cut-off base bytes stay zeros.
    f = truncateHost(f, 2n * BigInt(PAGE_SIZE) + 5n);
    f = truncateHost(f, 10n * BigInt(PAGE_SIZE));
    expect(Array.from(readHost(f, 2n * BigInt(PAGE_SIZE) + 3n, 4))).toEqual([7, 7, 0, 0]);
    expect(readHost(f, 2n * BigInt(PAGE_SIZE) + 5n, 8 * PAGE_SIZE).every((x) => x === 0)).toBe(true);
    // Discard never extends.
    expect(discardHost(f, 20n * BigInt(PAGE_SIZE), 5n).length).toBe(f.length);
  });

  it('zeroing and discarding a 1 TiB range over a 1 TiB base costs a bounded number of pages and reads', () => {
    const TiB = 1n << 40n;
    // Content is a function of the offset: nothing is stored.
    let bytesRead = 0;
    const reader: HostReader = {
      length: TiB,
      read(offset, length) {
        if (offset + BigInt(length) > TiB) throw new Error('read past the base');
        bytesRead += length;
        const out = new Uint8Array(length);
        for (let i = 0; i < length; i++) out[i] = Number((offset + BigInt(i)) % 251n) + 1;
        return out;
      },
    };
    const byteAt = (o: bigint): number => Number(o % 251n) + 1;
    const f0 = hostFromReader(reader);
    const from = 3n * BigInt(PAGE_SIZE) + 5n;
    const f1 = zeroHost(f0, from, TiB - from - 7n);
    expect(f1.pages.size).toBeLessThanOrEqual(2);
    expect(f1.base!.hidden.length).toBe(2);
    expect(bytesRead).toBeLessThanOrEqual(2 * PAGE_SIZE);
    expect(Array.from(readHost(f1, from - 2n, 4))).toEqual([byteAt(from - 2n), byteAt(from - 1n), 0, 0]);
    expect(Array.from(readHost(f1, TiB - 9n, 4))).toEqual([0, 0, byteAt(TiB - 7n), byteAt(TiB - 6n)]);
    expect(readHost(f1, 1n << 39n, 3 * PAGE_SIZE).every((x) => x === 0)).toBe(true);
    // Many large discards: still one hidden range per request at most, merged when adjacent.
    let f2 = f0;
    for (let i = 0n; i < 64n; i++) f2 = discardHost(f2, i << 34n, 1n << 34n);
    expect(f2.pages.size).toBe(0);
    expect(f2.base!.hidden).toEqual([0, Number(TiB / BigInt(PAGE_SIZE)) - 1]);
    expect(readHost(f2, TiB - 100n, 100).every((x) => x === 0)).toBe(true);
    // The old version still reads the base.
    expect(readHost(f0, TiB - 1n, 1)[0]).toBe(byteAt(TiB - 1n));
    expect(bytesRead).toBeLessThan(16 * PAGE_SIZE);
  });

  it('absorbIssuedWrites: a write the reader took leaves the overlay, and every read stays the same', () => {
    const writeArb = fc.record({ offset: fc.oneof(fc.nat(SPAN + 2 * PAGE_SIZE), fc.nat(7).map((p) => p * PAGE_SIZE)), length: fc.oneof(fc.integer({ min: 1, max: 3 * PAGE_SIZE }), fc.constantFrom(PAGE_SIZE, 2 * PAGE_SIZE)), fill: fc.integer({ min: 0, max: 255 }) });
    fc.assert(
      fc.property(baseArb, fc.array(opArb, { maxLength: 12 }), writeArb, fc.array(rangeArb, { maxLength: 6 }), (base, ops, wa, ranges) => {
        // The store under the reader: it takes the absorbed write, nothing else (the driver defers the rest).
        let store = base.slice();
        const reader: HostReader = {
          get length() {
            return BigInt(store.length);
          },
          read: (offset, length) => store.slice(Number(offset), Number(offset) + length),
        };
        const w = { kind: 'write' as const, offset: BigInt(wa.offset), bytes: new Uint8Array(wa.length).fill(wa.fill) };
        const wFirst = Math.floor(wa.offset / PAGE_SIZE);
        const wLast = Math.floor((wa.offset + wa.length - 1) / PAGE_SIZE);
        // Pending operations touch none of the write's pages, and truncate nothing (a driver absorbs
        // no write while a truncate is pending).
        const pending = ops.filter((op) => {
          if (op.kind === 'truncate' || op.kind === 'flush') return false;
          const o = Number(op.offset);
          const n = op.kind === 'write' ? op.bytes.length : Number(op.length);
          return Math.floor((o + n - 1) / PAGE_SIZE) < wFirst || Math.floor(o / PAGE_SIZE) > wLast;
        });
        const before = applyHostIO(hostFromReader(reader), pending);
        // Every page read once: the base's memo now holds the pages the write will change.
        expectSameContent(before, reference(pending, base), ranges);
        const file = applyHostIO(before, [w]);
        const end = wa.offset + wa.length;
        if (end > store.length) {
          const grown = new Uint8Array(end);
          grown.set(store);
          store = grown;
        }
        store.set(w.bytes, wa.offset);
        const absorbed = absorbIssuedWrites(file, reader, [w]);
        expectSameContent(absorbed, reference([...pending, w], base), ranges);
        expect(absorbed.pages.size).toBeLessThanOrEqual(file.pages.size);
        // A file over an empty reader has no base to hand pages to.
        if (base.length === 0) {
          expect(absorbed).toBe(file);
          return;
        }
        for (let p = wFirst; p <= wLast; p++) {
          if (p * PAGE_SIZE >= wa.offset && (p + 1) * PAGE_SIZE <= end) expect(absorbed.pages.leaf(p)).toBeUndefined();
        }
      }),
      { numRuns: 400 },
    );
  });

  it('rebaseHostFile refuses a reader whose length differs from the file', () => {
    const f = hostFromBytes(new Uint8Array(100).fill(1));
    expect(() => rebaseHostFile(f, memoryReader(new Uint8Array(99)))).toThrow(HostReaderError);
    expect(rebaseHostFile(emptyHostFile(), memoryReader(new Uint8Array(0))).base).toBeUndefined();
  });

  it('a reader that returns too few bytes is a HostReaderError', () => {
    const f = hostFromReader({ length: 10000n, read: (_o, n) => new Uint8Array(Math.max(0, n - 1)) });
    expect(() => readHost(f, 0n, 10)).toThrow(HostReaderError);
  });
});
