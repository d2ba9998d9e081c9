/**
 * Chunked pages (src/model/chunked-page.ts) and the owned-page write path (writeHostOwned) against a
 * flat byte array: small writes (table entries, refcounts) of every alignment and size up to a few
 * chunks, mixed with page-sized writes, zeroing, truncation and a read-only base. Besides the bytes,
 * what the decode memos of the model rely on: an array that hostPage, viewHost or hostSpot hands out
 * never changes afterwards, and no earlier HostFile value ever changes — also while an owned page is
 * changed in place.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CHUNK_SIZE, CHUNKS_PER_PAGE, MAX_CHUNKS, SMALL_WRITE, type ChunkedPage } from '../../src/model/chunked-page.ts';
import { emptyHostFile, hostBytes, hostFromReader, hostPage, hostSpot, readHost, sharedZeros, truncateHost, viewHost, writeHost, writeHostOwned, zeroHost, type HostFile } from '../../src/model/host-file.ts';
import { PAGE_SIZE } from '../../src/model/page-map.ts';
import { type HostReader } from '../../src/model/host-reader.ts';

const PAGES = 4;
const SPAN = PAGES * PAGE_SIZE;

type Op =
  | { readonly kind: 'write'; readonly offset: number; readonly bytes: Uint8Array; readonly owned: boolean }
  | { readonly kind: 'zero'; readonly offset: number; readonly length: number }
  | { readonly kind: 'truncate'; readonly length: number }
  /** End the owned scope: later owned writes copy again. */
  | { readonly kind: 'end-scope' }
  /** Read (and remember) what hostPage / viewHost / hostSpot hand out at this offset. */
  | { readonly kind: 'look'; readonly offset: number; readonly length: number };

/** Small writes dominate: sizes up to SMALL_WRITE + a chunk, often 1, 2, 8 or 16 bytes at aligned places. */
const smallBytes = fc.oneof(
  fc.constantFrom(1, 2, 8, 16, CHUNK_SIZE, SMALL_WRITE, SMALL_WRITE + 1).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
  fc.uint8Array({ minLength: 1, maxLength: SMALL_WRITE + CHUNK_SIZE }),
  // All zeros: may turn a page back into a hole.
  fc.integer({ min: 1, max: SMALL_WRITE }).map((n) => new Uint8Array(n)),
);
/** Hot chunks (a few per page) get most writes and reads, so that writes meet the chunks earlier ones made. */
const hotOffset = fc.record({ page: fc.nat(PAGES - 1), chunk: fc.constantFrom(0, 1, 2, CHUNKS_PER_PAGE - 1), within: fc.nat(CHUNK_SIZE - 1) })
  .map(({ page, chunk, within }) => page * PAGE_SIZE + chunk * CHUNK_SIZE + within);
const offsetArb = fc.oneof(
  { weight: 3, arbitrary: hotOffset },
  { weight: 1, arbitrary: hotOffset.map((o) => o - (o % 8)) },
  { weight: 1, arbitrary: fc.nat(SPAN) },
  { weight: 1, arbitrary: fc.nat(PAGES).map((p) => p * PAGE_SIZE + PAGE_SIZE - 8) },
);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ offset: offsetArb, bytes: smallBytes, owned: fc.boolean() }).map((r) => ({ kind: 'write' as const, ...r })) },
  { weight: 2, arbitrary: fc.record({ offset: fc.nat(SPAN), bytes: fc.uint8Array({ minLength: 1, maxLength: 2 * PAGE_SIZE + 5 }), owned: fc.constant(false) }).map((r) => ({ kind: 'write' as const, ...r })) },
  { weight: 2, arbitrary: fc.record({ offset: offsetArb, length: fc.oneof(fc.integer({ min: 1, max: SMALL_WRITE }), fc.integer({ min: 1, max: 2 * PAGE_SIZE })) }).map((r) => ({ kind: 'zero' as const, ...r })) },
  { weight: 1, arbitrary: fc.nat(SPAN + PAGE_SIZE).map((length) => ({ kind: 'truncate' as const, length })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'end-scope' as const }) },
  { weight: 2, arbitrary: fc.record({ offset: offsetArb, length: fc.constantFrom(1, 2, 8, 16, CHUNK_SIZE, 100) }).map((r) => ({ kind: 'look' as const, ...r })) },
);

/** The flat reference after `ops` from `start`. */
function reference(ops: readonly Op[], start: Uint8Array): Uint8Array {
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
      // An owned write that does not fit the file falls back to an ordinary write: same bytes.
      grow(op.offset + op.bytes.length);
      b.set(op.bytes, op.offset);
    } else if (op.kind === 'zero') {
      grow(op.offset + op.length);
      b.fill(0, op.offset, op.offset + op.length);
    } else if (op.kind === 'truncate') {
      const next = new Uint8Array(op.length);
      next.set(b.subarray(0, Math.min(op.length, b.length)));
      b = next;
    }
  }
  return b;
}

interface Looked {
  readonly array: Uint8Array;
  readonly copy: Uint8Array;
}

/**
 * Applies `ops` like a transaction: owned writes through writeHostOwned (falling back to writeHost
 * when it declines, as tx.ts does), an owned scope that `end-scope` closes. Collects every array
 * handed out by the read functions, with a copy of its bytes at that time.
 */
function apply(file: HostFile, ops: readonly Op[], looked: Looked[]): HostFile {
  let f = file;
  let owned = new Map<number, ChunkedPage>();
  const keep = (a: Uint8Array | undefined): void => {
    if (a !== undefined) looked.push({ array: a, copy: a.slice() });
  };
  for (const op of ops) {
    if (op.kind === 'write') {
      const o = op.owned ? writeHostOwned(f, BigInt(op.offset), op.bytes, owned) : undefined;
      f = o ?? writeHost(f, BigInt(op.offset), op.bytes);
    } else if (op.kind === 'zero') {
      f = zeroHost(f, BigInt(op.offset), BigInt(op.length));
    } else if (op.kind === 'truncate') {
      f = truncateHost(f, BigInt(op.length));
    } else if (op.kind === 'end-scope') {
      owned = new Map();
    } else {
      keep(hostSpot(f, BigInt(op.offset), op.length)?.bytes);
      keep(viewHost(f, BigInt(op.offset), op.length));
      keep(hostPage(f, Math.floor(op.offset / PAGE_SIZE)));
    }
  }
  return f;
}

/** Every read function agrees with `want` (zeros past its end). */
function expectContent(f: HostFile, want: Uint8Array): void {
  expect(f.length).toBe(BigInt(want.length));
  expect(Buffer.from(hostBytes(f)).equals(Buffer.from(want))).toBe(true);
  const at = (o: number, n: number): Buffer => {
    const out = Buffer.alloc(n);
    if (o < want.length) out.set(want.subarray(o, Math.min(want.length, o + n)));
    return out;
  };
  for (let p = 0; p * PAGE_SIZE < want.length + PAGE_SIZE; p++) {
    // Views and spots first: hostPage caches a chunked page's flat copy, which they then use.
    // Inside a chunk, across chunk boundaries, at the page's ends.
    for (const within of [0, 6, 8, 56, 60, 63, 64, 120, 1000, 4032, 4088, 4095]) {
      const o = p * PAGE_SIZE + within;
      for (const n of [1, 8, 16, 64]) {
        expect(Buffer.from(readHost(f, BigInt(o), n)).equals(at(o, n))).toBe(true);
        expect(Buffer.from(viewHost(f, BigInt(o), n)).equals(at(o, n))).toBe(true);
        const s = hostSpot(f, BigInt(o), n);
        if (s !== undefined) expect(Buffer.from(s.bytes.slice(s.at, s.at + n)).equals(at(o, n))).toBe(true);
      }
    }
    expect(Buffer.from(hostPage(f, p) ?? new Uint8Array(PAGE_SIZE)).equals(at(p * PAGE_SIZE, PAGE_SIZE))).toBe(true);
  }
}

/** A reader over `bytes` (read-only base). */
function reader(bytes: Uint8Array): HostReader {
  return { length: BigInt(bytes.length), read: (offset, length) => bytes.slice(Number(offset), Number(offset) + length) };
}

const baseArb = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc.uint8Array({ minLength: 1, maxLength: SPAN + 100 }),
  fc.nat(PAGES).map((p) => new Uint8Array(p * PAGE_SIZE + 7).fill(0x3c)),
);

describe('chunked pages and owned writes', () => {
  it('equal a flat array; earlier files and handed-out arrays never change', () => {
    fc.assert(
      fc.property(baseArb, fc.boolean(), fc.array(opArb, { maxLength: 60 }), fc.array(opArb, { maxLength: 30 }), (base, overReader, first, second) => {
        const start = overReader ? hostFromReader(reader(base)) : writeHost(emptyHostFile(), 0n, base);
        const startWant = base;
        const looked: Looked[] = [];
        const a = apply(start, first, looked);
        const wantA = reference(first, startWant);
        expectContent(a, wantA);
        const b = apply(a, second, looked);
        expectContent(b, reference([...first, ...second], startWant));
        // Purity: the earlier values read as before, though b's owned writes changed pages in place.
        expectContent(a, wantA);
        expectContent(start, startWant);
        // The decode memos' premise: no array handed out changed since.
        for (const l of looked) expect(Buffer.from(l.array).equals(Buffer.from(l.copy))).toBe(true);
      }),
      { numRuns: 150 },
    );
  });

  it('many owned refcount-sized writes to one page: a page past MAX_CHUNKS chunks is made plain and reads right', () => {
    let f = writeHost(emptyHostFile(), 0n, new Uint8Array(2 * PAGE_SIZE).fill(1));
    const before = hostBytes(f);
    const want = before.slice();
    const owned = new Map<number, ChunkedPage>();
    // 2-byte writes at every 8th byte of page 1: one new chunk every 8 writes, MAX_CHUNKS exceeded several times.
    for (let i = 0; i < PAGE_SIZE / 8; i++) {
      const bytes = new Uint8Array([i & 0xff, 0x80 | (i >> 8)]);
      const at = PAGE_SIZE + i * 8;
      const next = writeHostOwned(f, BigInt(at), bytes, owned);
      expect(next).toBeDefined();
      f = next!;
      want.set(bytes, at);
      if (i === 8 * MAX_CHUNKS + 3) expect(Buffer.from(readHost(f, 0n, 2 * PAGE_SIZE)).equals(Buffer.from(want))).toBe(true);
    }
    expect(Buffer.from(hostBytes(f)).equals(Buffer.from(want))).toBe(true);
    expect(owned.get(1)!.count).toBeLessThanOrEqual(MAX_CHUNKS);
    // The file the writes started from is unchanged.
    expect(Buffer.from(readHost(writeHost(emptyHostFile(), 0n, before), 0n, 2 * PAGE_SIZE)).equals(Buffer.from(before))).toBe(true);
  });

  it('whole-page copies of chunked pages: past the bounded cache of copies, pages are copied again and read the same', () => {
    // More chunked pages than the copy cache holds (2048): hostPage makes a flat copy of each, the
    // oldest copies are dropped, and asking again gives an equal (new) array; none handed out changes.
    const pages = 2100;
    let f = emptyHostFile();
    for (let p = 0; p < pages; p++) f = writeHost(f, BigInt(p * PAGE_SIZE + (p % 60) * 8), new Uint8Array([p & 0xff, p >> 8, 7]));
    const want = (p: number): Buffer => {
      const b = Buffer.alloc(PAGE_SIZE);
      b.set([p & 0xff, p >> 8, 7], (p % 60) * 8);
      return b;
    };
    const first = Array.from({ length: pages }, (_v, p) => hostPage(f, p)!);
    for (let p = 0; p < pages; p++) expect(Buffer.from(first[p]!).equals(want(p))).toBe(true);
    for (let p = 0; p < pages; p++) {
      const again = hostPage(f, p)!;
      expect(Buffer.from(again).equals(want(p))).toBe(true);
      expect(Buffer.from(first[p]!).equals(want(p))).toBe(true);
    }
    // The first copies were dropped from the cache (the last ones are still cached).
    expect(hostPage(f, 0)).not.toBe(first[0]);
    expect(hostPage(f, pages - 1)).toBe(hostPage(f, pages - 1));
  });

  it('sharedZeros: one array per length while it stays zero; a modified one is replaced', () => {
    const a = sharedZeros(3000);
    expect(a.length).toBe(3000);
    expect(a.every((x) => x === 0)).toBe(true);
    expect(sharedZeros(3000)).toBe(a);
    a[2999] = 1; // a consumer breaking the rule
    const b = sharedZeros(3000);
    expect(b).not.toBe(a);
    expect(b.length).toBe(3000);
    expect(b.every((x) => x === 0)).toBe(true);
  });

  it('writeHostOwned declines what it must not do in place: zeros, writes past the end or across pages, large writes', () => {
    const f = writeHost(emptyHostFile(), 0n, new Uint8Array(PAGE_SIZE + 100).fill(9));
    const owned = new Map<number, ChunkedPage>();
    expect(writeHostOwned(f, 8n, new Uint8Array(8), owned)).toBeUndefined();
    expect(writeHostOwned(f, BigInt(PAGE_SIZE + 96), new Uint8Array(8).fill(1), owned)).toBeUndefined();
    expect(writeHostOwned(f, BigInt(PAGE_SIZE - 4), new Uint8Array(8).fill(1), owned)).toBeUndefined();
    expect(writeHostOwned(f, 0n, new Uint8Array(SMALL_WRITE + 1).fill(1), owned)).toBeUndefined();
    expect(owned.size).toBe(0);
  });
});
