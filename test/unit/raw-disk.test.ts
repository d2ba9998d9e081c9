/**
 * The raw-disk oracle (src/oracle/raw-disk.ts) against a deliberately different reference: one flat
 * Uint8Array per disk, initialised from the backing's bytes, with discard written per cluster
 * ("a cluster clipped to the disk size is zeroed iff it lies wholly inside the range") instead of the
 * oracle's round-up/round-down. Plus sparse cost on a 2 TiB disk, snapshots, backing semantics.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Op } from '../../src/model/ops.ts';
import { RawDisk, RawDiskError, writeRawFile, type OracleBacking, type RawChunk } from '../../src/oracle/raw-disk.ts';

const TIB = 1n << 40n;
const MIB = 1n << 20n;

/**
 * The flat reference: every byte of the disk in one array, extended to the end of the last cluster
 * (the "tail" QEMU keeps past an unaligned end, see src/oracle/raw-disk.ts), written per cluster and
 * per subcluster from QEMU's rules instead of the oracle's page bookkeeping.
 */
class FlatDisk {
  /** Content of [0, roundUp(size, cluster)). */
  ext: Uint8Array;
  size: number;
  snaps = new Map<string, { ext: Uint8Array; size: number }>();
  constructor(
    size: number,
    readonly version: 2 | 3,
    readonly cluster: number,
    readonly sub: number,
    readonly backing: Uint8Array | undefined,
  ) {
    this.size = size;
    this.ext = new Uint8Array(this.tailEnd(size));
    if (backing) this.ext.set(backing.subarray(0, this.ext.length));
  }
  get bytes(): Uint8Array {
    return this.ext.subarray(0, this.size);
  }
  tailEnd(size: number): number {
    return Math.ceil(size / this.cluster) * this.cluster;
  }
  /** Zeroes [from, to) of the extended content. */
  clear(from: number, to: number): void {
    this.ext.fill(0, from, Math.min(to, this.ext.length));
  }
  /** A write_zeroes [from, size) as QEMU's pieces reach the last cluster. */
  zeroesToEnd(from: number): void {
    const size = this.size;
    const end = this.tailEnd(size);
    if (end === size || (this.version === 2 && this.backing)) return;
    const lastCluster = end - this.cluster;
    // The block layer's last piece starts at the last subcluster boundary below the end (or at
    // `from` when that is later); qcow2 zeroes whole clusters for a piece starting on a cluster
    // boundary and whole subclusters otherwise.
    const lastSub = Math.floor(size / this.sub) * this.sub;
    const partialSub = lastSub < size;
    if (this.sub === this.cluster) {
      if (from <= lastCluster) this.clear(size, end);
      return;
    }
    if (from <= lastCluster) {
      // The pieces before the last one cover the cluster from its start.
      if (!partialSub || lastSub === lastCluster) this.clear(size, end);
      else this.clear(size, lastSub + this.sub);
    } else if (partialSub && Math.ceil(from / this.sub) * this.sub < size) {
      this.clear(size, lastSub + this.sub);
    }
  }
  /** Returns the error code the op must fail with, or undefined after applying it. */
  apply(op: Op): string | undefined {
    const size = this.size;
    const inRange = (o: bigint, n: number | bigint) => o + BigInt(n) <= BigInt(size);
    switch (op.kind) {
      case 'write':
      case 'writeCompressed':
        if (!inRange(op.offset, op.data.length)) return 'beyond-end';
        this.ext.set(op.data, Number(op.offset));
        // A compressed partial last cluster is zero padded.
        if (op.kind === 'writeCompressed' && op.data.length > 0 && Number(op.offset) + op.data.length === size) this.clear(size, this.tailEnd(size));
        return undefined;
      case 'writeZeroes':
        if (!inRange(op.offset, op.length)) return 'beyond-end';
        this.ext.fill(0, Number(op.offset), Number(op.offset + op.length));
        if (op.length > 0n && Number(op.offset + op.length) === size) this.zeroesToEnd(Number(op.offset));
        return undefined;
      case 'discard': {
        if (!inRange(op.offset, op.length)) return 'beyond-end';
        if (this.version === 2 && this.backing) return undefined;
        const from = Number(op.offset);
        const to = Number(op.offset + op.length);
        for (let cs = 0; cs < size; cs += this.cluster) {
          const ce = Math.min(cs + this.cluster, size);
          // A discarded last cluster goes whole, its tail included.
          if (from <= cs && ce <= to) this.clear(cs, ce === size ? this.tailEnd(size) : ce);
        }
        return undefined;
      }
      case 'snapshotCreate':
        if (this.snaps.has(op.name)) return 'snapshot-exists';
        this.snaps.set(op.name, { ext: this.ext.slice(), size });
        return undefined;
      case 'snapshotApply': {
        const s = this.snaps.get(op.name);
        if (!s) return 'no-such-snapshot';
        this.ext = s.ext.slice();
        this.size = s.size;
        return undefined;
      }
      case 'snapshotDelete':
        if (!this.snaps.delete(op.name)) return 'no-such-snapshot';
        return undefined;
      case 'resize': {
        const n = Number(op.size);
        const next = new Uint8Array(this.tailEnd(n));
        next.set(this.ext.subarray(0, Math.min(this.ext.length, next.length)));
        if (n > size && this.backing && this.backing.length > size) {
          // Zero-filled when the backing reaches past the old end: explicit zeros to the first
          // subcluster boundary, then zero flags on whole clusters — or, while still inside the
          // cluster holding that boundary, on the subclusters up to the new end.
          next.fill(0, size, n);
          const zeroStart = Math.ceil(size / this.sub) * this.sub;
          if (n > zeroStart) {
            const wholeClusters = n > Math.ceil(zeroStart / this.cluster) * this.cluster;
            next.fill(0, n, wholeClusters ? next.length : Math.ceil(n / this.sub) * this.sub);
          }
        }
        this.ext = next;
        this.size = n;
        return undefined;
      }
      case 'flush':
        return undefined;
    }
  }
}

const MAX_OFF = 20000;

/** Offsets and sizes: anywhere, or on 512-byte sectors (what QEMU sizes are), so that ranges end
 * exactly at the disk's end and start on cluster boundaries often. */
const arbPos = (max: number) =>
  fc.oneof(fc.bigInt(0n, BigInt(max)), fc.nat({ max: Math.floor(max / 512) }).map((k) => BigInt(k) * 512n));

/** Data with runs, so pages that are all zero or partly equal occur. */
const arbData = (max: number) =>
  fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.tuple(fc.nat({ max }), fc.integer({ min: 0, max: 255 })).map(([n, seed]) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255)),
    fc.tuple(fc.nat({ max }), fc.integer({ min: 0, max: 255 })).map(([n, b]) => new Uint8Array(n).fill(b)),
  );

const arbOp: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), offset: arbPos(MAX_OFF), data: arbData(9000) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('writeCompressed' as const), offset: arbPos(MAX_OFF), data: arbData(9000) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('writeZeroes' as const),
      offset: arbPos(MAX_OFF),
      length: arbPos(12000),
      unmap: fc.boolean(),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('discard' as const), offset: arbPos(MAX_OFF), length: arbPos(12000) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('snapshotCreate' as const), name: fc.constantFrom('a', 'b', 'c') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('snapshotApply' as const), name: fc.constantFrom('a', 'b', 'c') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('snapshotDelete' as const), name: fc.constantFrom('a', 'b', 'c') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('resize' as const), size: arbPos(MAX_OFF) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
);

const arbConfig = fc.record({
  size: arbPos(MAX_OFF).map(Number),
  version: fc.constantFrom(2 as const, 3 as const),
  cluster: fc.constantFrom(512, 1024, 4096, 8192),
  subDivisor: fc.constantFrom(1, 1, 4, 32),
  backing: fc.option(
    fc.record({ bytes: fc
          .tuple(fc.integer({ min: 0, max: MAX_OFF + 4000 }), fc.integer({ min: 1, max: 255 }))
          .map(([n, seed]) => Uint8Array.from({ length: n }, (_, i) => ((i >> 9) * seed) & 255)), asRawDisk: fc.boolean() }),
    { nil: undefined },
  ),
});

/** A backing over `bytes`, either a plain read function object or a RawDisk holding them. */
function makeBacking(bytes: Uint8Array, asRawDisk: boolean): OracleBacking {
  if (asRawDisk) {
    const d = new RawDisk({ size: BigInt(bytes.length) });
    d.apply({ kind: 'write', offset: 0n, data: bytes });
    return d;
  }
  return {
    size: BigInt(bytes.length),
    read(offset, length) {
      if (offset < 0n || offset + BigInt(length) > BigInt(bytes.length)) throw new Error(`backing read out of range ${offset}+${length}`);
      return bytes.slice(Number(offset), Number(offset) + length);
    },
  };
}

function concatChunks(chunks: RawChunk[], size: bigint): Uint8Array {
  const out = new Uint8Array(Number(size));
  let pos = 0n;
  for (const c of chunks) {
    expect(c.offset).toBe(pos);
    if (c.kind === 'data') {
      out.set(c.bytes, Number(c.offset));
      pos += BigInt(c.bytes.length);
    } else {
      pos += c.length;
    }
  }
  expect(pos).toBe(size);
  return out;
}

/** Byte equality without vitest's element-by-element deep equal (slow on large arrays). */
function sameBytes(actual: Uint8Array, expected: Uint8Array): void {
  if (Buffer.compare(actual, expected) === 0) return;
  let i = 0;
  while (i < actual.length && i < expected.length && actual[i] === expected[i]) i++;
  expect.fail(`bytes differ at ${i} (lengths ${actual.length}/${expected.length}): got ${actual[i]}, expected ${expected[i]}`);
}

function errorCode(f: () => void): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    if (e instanceof RawDiskError) return e.code;
    throw e;
  }
}

describe('RawDisk against a flat Uint8Array reference', () => {
  it('every read equals the reference after every op (all configurations, with and without backing)', () => {
    fc.assert(
      fc.property(arbConfig, fc.array(arbOp, { size: 'max', maxLength: 60 }), (cfg, ops) => {
        const backingBytes = cfg.backing?.bytes;
        const disk = new RawDisk({
          size: BigInt(cfg.size),
          version: cfg.version,
          clusterSize: BigInt(cfg.cluster),
          subclusterSize: BigInt(Math.max(1, cfg.cluster / cfg.subDivisor)),
          ...(cfg.backing ? { backing: makeBacking(cfg.backing.bytes, cfg.backing.asRawDisk) } : {}),
        });
        const ref = new FlatDisk(cfg.size, cfg.version, cfg.cluster, Math.max(1, cfg.cluster / cfg.subDivisor), backingBytes);
        sameBytes(disk.read(0n, cfg.size), ref.bytes);
        for (const op of ops) {
          const expected = ref.apply(op);
          expect(errorCode(() => disk.apply(op))).toBe(expected);
          expect(disk.size).toBe(BigInt(ref.size));
          sameBytes(disk.read(0n, ref.bytes.length), ref.bytes);
        }
        const chunks = [...disk.rawChunks(4096)];
        for (const c of chunks) if (c.kind === 'data') expect(c.bytes.length).toBeLessThanOrEqual(4096);
        sameBytes(concatChunks(chunks, disk.size), ref.bytes);
        expect(disk.contentSha256()).toBe(createHash('sha256').update(ref.bytes).digest('hex'));
      }),
      { numRuns: 300 },
    );
  });

  it('snapshotApply restores exactly the content and size read at snapshotCreate', () => {
    fc.assert(
      fc.property(
        arbConfig,
        fc.array(arbOp, { maxLength: 20 }),
        fc.array(arbOp, { size: 'max', maxLength: 40 }),
        (cfg, before, after) => {
          const disk = new RawDisk({
            size: BigInt(cfg.size),
            version: cfg.version,
            clusterSize: BigInt(cfg.cluster),
            ...(cfg.backing ? { backing: makeBacking(cfg.backing.bytes, cfg.backing.asRawDisk) } : {}),
          });
          const quiet = (op: Op) => errorCode(() => disk.apply(op));
          for (const op of before) if (op.kind !== 'snapshotCreate' || op.name !== 'keep') quiet(op);
          disk.apply({ kind: 'snapshotCreate', name: 'keep' });
          const size = disk.size;
          const content = disk.read(0n, Number(size));
          for (const op of after) quiet(op);
          disk.apply({ kind: 'snapshotApply', name: 'keep' });
          expect(disk.size).toBe(size);
          sameBytes(disk.read(0n, Number(size)), content);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('a rejected op changes nothing and reports QEMU errno', () => {
    const disk = new RawDisk({ size: 8192n });
    disk.apply({ kind: 'write', offset: 0n, data: new Uint8Array(8192).fill(5) });
    let err: unknown;
    try {
      disk.apply({ kind: 'write', offset: 8000n, data: new Uint8Array(193).fill(1) });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RawDiskError);
    expect((err as RawDiskError).code).toBe('beyond-end');
    expect((err as RawDiskError).errno).toBe('EIO');
    expect((err as RawDiskError).message).toBe(
      'write: offset 8000 length 193: beyond end of device (virtual size 8192): Input/output error',
    );
    sameBytes(disk.read(0n, 8192), new Uint8Array(8192).fill(5));
    expect(errorCode(() => disk.apply({ kind: 'writeZeroes', offset: 8192n, length: 1n, unmap: false }))).toBe('beyond-end');
    expect(errorCode(() => disk.apply({ kind: 'writeZeroes', offset: 8192n, length: 0n, unmap: false }))).toBeUndefined();
    expect(errorCode(() => disk.read(-1n, 1))).toBe('invalid-argument');
    expect(errorCode(() => disk.apply({ kind: 'snapshotApply', name: 'x' }))).toBe('no-such-snapshot');
    // A zero-length disk refuses every non-empty write (docs/format/surprises.md#27-zero-length-images).
    const empty = new RawDisk({ size: 0n });
    expect(errorCode(() => empty.apply({ kind: 'write', offset: 0n, data: new Uint8Array(1) }))).toBe('beyond-end');
  });
});

describe('sparse cost', () => {
  it('a 2 TiB disk costs only the pages written, and zeroing it all frees them', () => {
    const size = 2n * TIB;
    const disk = new RawDisk({ size });
    const writes: [bigint, Uint8Array][] = [
      [0n, new Uint8Array(10).fill(1)],
      [TIB + 4090n, new Uint8Array(20).fill(2)], // straddles two pages
      [size - 7n, new Uint8Array(7).fill(3)],
    ];
    for (const [offset, data] of writes) disk.apply({ kind: 'write', offset, data });
    expect(disk.pageCount).toBe(4);
    for (const [offset, data] of writes) sameBytes(disk.read(offset, data.length), data);
    sameBytes(disk.read(TIB + 4080n, 40), Uint8Array.from({ length: 40 }, (_, i) => (i >= 10 && i < 30 ? 2 : 0)));

    const snap = disk.clone();
    disk.apply({ kind: 'snapshotCreate', name: 's' });
    disk.apply({ kind: 'writeZeroes', offset: 0n, length: size, unmap: true });
    expect(disk.pageCount).toBe(0);
    sameBytes(disk.read(size - 7n, 7), new Uint8Array(7));
    disk.apply({ kind: 'discard', offset: 0n, length: size });
    disk.apply({ kind: 'snapshotApply', name: 's' });
    expect(disk.pageCount).toBe(4);
    sameBytes(disk.read(size - 7n, 7), new Uint8Array(7).fill(3));
    sameBytes(snap.read(size - 7n, 7), new Uint8Array(7).fill(3));

    // Streaming: a handful of chunks covering 2 TiB, never materialised.
    const chunks = [...disk.rawChunks()];
    expect(chunks.length).toBeLessThanOrEqual(7);
    const dataBytes = chunks.reduce((n, c) => n + (c.kind === 'data' ? c.bytes.length : 0), 0);
    expect(dataBytes).toBe(4 * 4096);
    const covered = chunks.reduce((n, c) => n + (c.kind === 'data' ? BigInt(c.bytes.length) : c.length), 0n);
    expect(covered).toBe(size);

    // Growing and shrinking a huge disk stays cheap too.
    disk.apply({ kind: 'resize', size: TIB });
    expect(disk.pageCount).toBe(1);
    disk.apply({ kind: 'resize', size: 4n * TIB });
    expect(disk.pageCount).toBe(1);
    sameBytes(disk.read(2n * TIB - 7n, 7), new Uint8Array(7));
  });

  it('a 1 TiB sparse RawDisk backing streams through rawChunks at the cost of its pages (regression: forward property hung for hours)', () => {
    // test/qemu/qemu-forward.test.ts 'backing' class: writeRawFile of an overlay over a 1 TiB raw backing
    // read the backing byte by byte (268 M pages) instead of streaming its sparse content.
    const backing = new RawDisk({ size: TIB + 27648n });
    backing.apply({ kind: 'write', offset: 5000n, data: new Uint8Array(10_000).fill(4) });
    backing.apply({ kind: 'write', offset: TIB - 100n, data: new Uint8Array(300).fill(5) });
    // The backing through a counting proxy: the work is what it is asked for, bytes and chunks.
    const asked = { bytes: 0, chunks: 0 };
    const counted: OracleBacking = {
      size: backing.size,
      read: (offset, length) => {
        asked.bytes += length;
        return backing.read(offset, length);
      },
      rawChunks: function* (maxChunk) {
        for (const c of backing.rawChunks(maxChunk)) {
          asked.chunks++;
          yield c;
        }
      },
    };
    const disk = new RawDisk({ size: TIB + MIB, backing: counted });
    disk.apply({ kind: 'write', offset: 8192n, data: new Uint8Array(100).fill(6) }); // inside the backing's data
    disk.apply({ kind: 'discard', offset: 0n, length: 4096n }); // v3 + backing: a zero page
    disk.apply({ kind: 'write', offset: TIB + 27000n, data: new Uint8Array(2000).fill(7) }); // across the backing's end
    asked.bytes = 0;
    asked.chunks = 0;
    const chunks = [...disk.rawChunks()];
    // The backing's stored pages, streamed: a handful of chunks and no byte-by-byte reads (the
    // regression read its 1 TiB range by range). The test's timeout is the hang detector.
    expect(asked.chunks).toBeLessThanOrEqual(16);
    expect(asked.bytes).toBeLessThanOrEqual(64 * 1024);
    const covered = chunks.reduce((n, c) => n + (c.kind === 'data' ? BigInt(c.bytes.length) : c.length), 0n);
    expect(covered).toBe(disk.size);
    const at = (o: bigint, n: number): Uint8Array => {
      const out = new Uint8Array(n);
      for (const c of chunks) {
        if (c.kind !== 'data') continue;
        const a = c.offset > o ? c.offset : o;
        const b = c.offset + BigInt(c.bytes.length) < o + BigInt(n) ? c.offset + BigInt(c.bytes.length) : o + BigInt(n);
        if (a < b) out.set(c.bytes.subarray(Number(a - c.offset), Number(b - c.offset)), Number(a - o));
      }
      return out;
    };
    for (const [o, n] of [[0n, 20_000], [TIB - 4096n, 8192], [TIB + 20_000n, 20_000], [disk.size - 4096n, 4096]] as const) {
      sameBytes(at(o, n), disk.read(o, n));
    }
  });

  it('writeRawFile writes a sparse raw file equal to the content', () => {
    const dir = mkdtempSync(join(tmpdir(), 'raw-disk-'));
    try {
      const disk = new RawDisk({ size: 3n << 20n });
      disk.apply({ kind: 'write', offset: 12345n, data: new Uint8Array(100).fill(9) });
      disk.apply({ kind: 'write', offset: (3n << 20n) - 1n, data: Uint8Array.of(7) });
      const path = join(dir, 'disk.raw');
      writeRawFile(disk, path);
      const file = new Uint8Array(readFileSync(path));
      sameBytes(file, disk.read(0n, 3 << 20));
      expect(statSync(path).size).toBe(3 << 20);

      const big = new RawDisk({ size: 2n * TIB });
      big.apply({ kind: 'write', offset: TIB, data: new Uint8Array(4096).fill(1) });
      writeRawFile(big, path);
      const st = statSync(path);
      expect(st.size).toBe(2 * 2 ** 40);
      expect(st.blocks * 512).toBeLessThan(1 << 20);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('backing semantics (docs/format/allocation.md#write_zeroes, #discard, surprises.md items 8/9)', () => {
  const C = 4096n;
  const backingBytes = new Uint8Array(4 * 4096).fill(0xbb);
  const backing = () => makeBacking(backingBytes, false);
  const all = (n: number, b: number) => new Uint8Array(n).fill(b);

  it('unwritten ranges read the backing, and zeros past a short backing', () => {
    const d = new RawDisk({ size: 8n * C, clusterSize: C, backing: backing() });
    sameBytes(d.read(0n, 4 * 4096), all(4 * 4096, 0xbb));
    sameBytes(d.read(4n * C, 4096), all(4096, 0));
    d.apply({ kind: 'write', offset: 10n, data: all(5, 1) });
    const page = all(4096, 0xbb);
    page.fill(1, 10, 15);
    sameBytes(d.read(0n, 4096), page);
  });

  it('v3 + backing: discard of whole clusters reads zeros, partial clusters are unchanged', () => {
    const d = new RawDisk({ size: 4n * C, version: 3, clusterSize: C, backing: backing() });
    d.apply({ kind: 'discard', offset: 100n, length: 2n * C });
    sameBytes(d.read(0n, 4096), all(4096, 0xbb)); // head cluster only partly covered
    sameBytes(d.read(C, 4096), all(4096, 0)); // wholly covered
    sameBytes(d.read(2n * C, 4096), all(4096, 0xbb)); // tail cluster only partly covered
  });

  it('v2 + backing: discard is a no-op, write_zeroes still writes zeros', () => {
    const d = new RawDisk({ size: 4n * C, version: 2, clusterSize: C, backing: backing() });
    d.apply({ kind: 'write', offset: C, data: all(4096, 7) });
    d.apply({ kind: 'discard', offset: 0n, length: 4n * C });
    sameBytes(d.read(0n, 4096), all(4096, 0xbb));
    sameBytes(d.read(C, 4096), all(4096, 7));
    d.apply({ kind: 'writeZeroes', offset: 0n, length: 2n * C, unmap: true });
    sameBytes(d.read(0n, 8192), all(8192, 0));
    sameBytes(d.read(2n * C, 4096), all(4096, 0xbb));
  });

  it('v2 without backing: discard reads zeros (clusters deallocated)', () => {
    const d = new RawDisk({ size: 4n * C, version: 2, clusterSize: C });
    d.apply({ kind: 'write', offset: 0n, data: all(4 * 4096, 7) });
    d.apply({ kind: 'discard', offset: C, length: C });
    sameBytes(d.read(C - 1n, 4098), Uint8Array.from({ length: 4098 }, (_, i) => (i === 0 || i === 4097 ? 7 : 0)));
  });

  it('the partial last cluster of an unaligned disk is discarded when the range reaches the end', () => {
    const size = 2n * C + 1024n;
    const d = new RawDisk({ size, clusterSize: C });
    d.apply({ kind: 'write', offset: 0n, data: all(Number(size), 7) });
    d.apply({ kind: 'discard', offset: 2n * C + 512n, length: 512n }); // unaligned start: ignored
    sameBytes(d.read(2n * C, 1024), all(1024, 7));
    d.apply({ kind: 'discard', offset: 2n * C, length: 512n }); // does not reach the end: ignored
    sameBytes(d.read(2n * C, 1024), all(1024, 7));
    d.apply({ kind: 'discard', offset: 2n * C, length: 1024n });
    sameBytes(d.read(2n * C, 1024), all(1024, 0));
    sameBytes(d.read(0n, 8192), all(8192, 7));
  });

  it('growing never exposes the backing; a RawDisk backing is copied', () => {
    const b = new RawDisk({ size: 4n * C });
    b.apply({ kind: 'write', offset: 0n, data: all(4 * 4096, 0xbb) });
    const d = new RawDisk({ size: C, clusterSize: C, backing: b });
    b.apply({ kind: 'write', offset: 0n, data: all(10, 1) }); // later change to the original: not seen
    sameBytes(d.read(0n, 10), all(10, 0xbb));
    d.apply({ kind: 'resize', size: 512n });
    d.apply({ kind: 'resize', size: 4n * C });
    sameBytes(d.read(0n, 512), all(512, 0xbb));
    sameBytes(d.read(512n, 4 * 4096 - 512), all(4 * 4096 - 512, 0));
  });

  it('the tail of the partial last cluster survives a shrink and shows again on a grow (QEMU 7.2)', () => {
    const d = new RawDisk({ size: 4n * C, clusterSize: C });
    d.apply({ kind: 'write', offset: 0n, data: all(4 * 4096, 7) });
    d.apply({ kind: 'resize', size: C + 512n });
    d.apply({ kind: 'resize', size: 4n * C });
    // [C+512, 2C) is the old content of the last cluster; past it, zeros.
    sameBytes(d.read(0n, 2 * 4096), all(2 * 4096, 7));
    sameBytes(d.read(2n * C, 2 * 4096), all(2 * 4096, 0));
    // A write_zeroes reaching the end from the last cluster's start zeroes the tail too.
    d.apply({ kind: 'resize', size: C + 512n });
    d.apply({ kind: 'writeZeroes', offset: C, length: 512n, unmap: false });
    d.apply({ kind: 'resize', size: 2n * C });
    sameBytes(d.read(C, 4096), all(4096, 0));
  });
});
