/**
 * QEMU 7.2's own host write log (src/qemu/logged-run.ts over src/qemu/blklogwrites.ts): a varied op
 * list (unaligned uniform and non-uniform writes, write_zeroes with and without unmap, discards,
 * compressed writes, flushes, snapshot create/apply/delete, growing and shrinking resizes, a refused
 * write, a zero-length write) is run by qemu-io/qemu-img through blklogwrites on images of several
 * geometries, and:
 * - replay: the log applied to the image's bytes from before the run gives the file QEMU left, byte
 *   for byte. blklogwrites does not log truncation, so the lengths may differ: the common part must
 *   be identical and the bytes past the shorter one zero (QEMU discards what a shrink cuts off first);
 * - boundaries: for every op but compressed writes (whose metadata QEMU leaves in its cache, a
 *   compressed write getting no FUA flush even in writethrough mode), the log's prefix up to the op's
 *   end, replayed, is an image whose guest content (`qemu-img convert -O raw`) is the raw-disk
 *   oracle's after the ops so far — in write-back mode only at flushes and qemu-img processes;
 * - flushes: a flush op after a discard or a compressed write ends with a flush entry; after
 *   writethrough writes it logs nothing (the block layer skips a flush when nothing was written);
 * - malformed logs (truncated in an entry, wrong magic, huge nr_sectors or nr_entries, unknown flags)
 *   give BlkLogWritesError naming the entry and offset; a handmade log shows the FUA/MARK mapping;
 * - an image with an external data file, and a file that is not qcow2, are refused.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyHostIO, hostBytes, hostFromBytes } from '../../src/model/host-file.ts';
import type { HostIO, Op } from '../../src/model/index.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import { BlkLogWritesError, parseBlkLogWrites, WRITE_LOG_MAGIC } from '../../src/qemu/blklogwrites.ts';
import { QemuLoggedRunError, runQemuLogged, type QemuWriteLog } from '../../src/qemu/logged-run.ts';
import { qemuImgConvert, qemuImgCreate } from '../../src/qemu/qemu-img.ts';
import { requireQemu } from '../../src/qemu/run.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-blklogwrites-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(async () => {
  await requireQemu();
});

const MiB = 1n << 20n;
const SIZE = 4n * MiB;

/** Non-uniform bytes (so qemu-io reads them with -s). */
function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed + (i >> 9)) & 0xff;
  return b;
}

/** Indices into OPS of the ops the tests look at. */
const FLUSH_AFTER_WRITES = 2;
const COMPRESSED = 6;
const FLUSH_AFTER_COMPRESSED = 7;
const FLUSH_AFTER_DISCARD = 17;
const REFUSED = 18;
const ZERO_LENGTH = 20;
const FIRST_WRITE = 0;

/** The op list for cluster size `c` (every offset scales with it, so each geometry sees the same shapes). */
function opsFor(c: bigint): Op[] {
  return [
    /* 0 */ { kind: 'write', offset: 0n, data: new Uint8Array(Number((c * 3n) / 2n) + 100).fill(0xa1) },
    /* 1 */ { kind: 'write', offset: c * 5n + 17n, data: pattern(3000, 1) },
    /* 2 */ { kind: 'flush' },
    /* 3 */ { kind: 'writeZeroes', offset: c * 4n, length: 2n * c, unmap: false },
    /* 4 */ { kind: 'writeZeroes', offset: 0n, length: c, unmap: true },
    /* 5 */ { kind: 'discard', offset: c * 5n, length: 2n * c },
    /* 6 */ { kind: 'writeCompressed', offset: c * 16n, data: pattern(Number(c), 2) },
    /* 7 */ { kind: 'flush' },
    /* 8 */ { kind: 'snapshotCreate', name: 's1' },
    /* 9 */ { kind: 'write', offset: 100n, data: new Uint8Array(1000).fill(7) },
    /* 10 */ { kind: 'resize', size: 2n * SIZE },
    /* 11 */ { kind: 'write', offset: SIZE + 3n, data: pattern(700, 3) },
    /* 12 */ { kind: 'snapshotApply', name: 's1' },
    /* 13 */ { kind: 'write', offset: c * 7n + 1n, data: pattern(Number(c), 4) },
    /* 14 */ { kind: 'snapshotDelete', name: 's1' },
    /* 15 */ { kind: 'resize', size: SIZE / 2n },
    /* 16 */ { kind: 'discard', offset: c * 7n, length: c },
    /* 17 */ { kind: 'flush' },
    /* 18 */ { kind: 'write', offset: SIZE / 2n - 10n, data: new Uint8Array(100).fill(1) },
    /* 19 */ { kind: 'resize', size: SIZE },
    /* 20 */ { kind: 'write', offset: 0n, data: new Uint8Array(0) },
  ];
}

interface Geometry {
  readonly name: string;
  readonly options: Readonly<Record<string, string>>;
  readonly clusterSize: bigint;
  readonly subclusterSize?: bigint;
  readonly cache?: 'writeback';
}

const GEOMETRIES: readonly Geometry[] = [
  { name: '512-byte clusters', options: { cluster_size: '512' }, clusterSize: 512n },
  { name: '4 KiB clusters, zstd', options: { cluster_size: '4096', compression_type: 'zstd' }, clusterSize: 4096n },
  { name: '64 KiB clusters', options: { cluster_size: '65536' }, clusterSize: 65536n },
  { name: '64 KiB clusters, extended L2', options: { cluster_size: '65536', extended_l2: 'on' }, clusterSize: 65536n, subclusterSize: 2048n },
  { name: '64 KiB clusters, lazy refcounts', options: { cluster_size: '65536', lazy_refcounts: 'on' }, clusterSize: 65536n },
  { name: '64 KiB clusters, write-back cache', options: { cluster_size: '65536' }, clusterSize: 65536n, cache: 'writeback' },
];

/** `base` with `host` applied (what a disk that persisted exactly those operations holds). */
function replay(base: Uint8Array, host: readonly HostIO[]): Uint8Array {
  return hostBytes(applyHostIO(hostFromBytes(base), host));
}

/** Index of the first differing byte of `a` and `b` over their common length, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function allZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** The ops whose end is a state QEMU has written out completely (see the file header). */
function settledAfter(g: Geometry, op: Op): boolean {
  if (g.cache === 'writeback') return op.kind === 'flush' || op.kind.startsWith('snapshot') || op.kind === 'resize';
  return op.kind !== 'writeCompressed';
}

describe('QEMU 7.2 write logs through blklogwrites', () => {
  describe.each(GEOMETRIES)('$name', (g) => {
    const img = join(dir, `${g.name.replace(/[^a-z0-9]+/gi, '-')}.qcow2`);
    let base: Uint8Array;
    let log: QemuWriteLog;
    const ops = opsFor(g.clusterSize);

    beforeAll(async () => {
      await qemuImgCreate(img, String(SIZE), g.options);
      base = readFileSync(img);
      log = await runQemuLogged(img, ops, g.cache === undefined ? {} : { cache: g.cache });
    }, 60_000);

    it('replaying the whole log gives the file QEMU left (lengths aside: truncation is not logged)', () => {
      const real = readFileSync(img);
      const replayed = replay(base, log.host);
      expect(firstDifference(replayed, real)).toBe(-1);
      // The longer one's extra bytes are zeros: what QEMU cut off it had discarded first.
      expect(allZero(replayed.subarray(real.length))).toBe(true);
      expect(allZero(real.subarray(replayed.length))).toBe(true);
      expect(log.guest.map((r) => r.op)).toEqual(ops);
    });

    it('ranges are ordered and disjoint; a refused op and a zero-length write have empty ranges', () => {
      let prev = 0;
      for (const r of log.guest) {
        expect(r.start).toBeGreaterThanOrEqual(prev);
        expect(r.end).toBeGreaterThanOrEqual(r.start);
        prev = r.end;
      }
      expect(prev).toBeLessThanOrEqual(log.host.length);
      expect(log.guest.filter((r) => !r.ok).map((r) => ops.indexOf(r.op))).toEqual([REFUSED]);
      const refused = log.guest[REFUSED]!;
      expect(refused.message).toContain('Input/output error');
      expect(refused.end).toBe(refused.start);
      expect(log.guest[ZERO_LENGTH]!.end).toBe(log.guest[ZERO_LENGTH]!.start);
    });

    it('a flush op after a discard or a compressed write ends with a flush entry', () => {
      for (const i of [FLUSH_AFTER_COMPRESSED, FLUSH_AFTER_DISCARD]) {
        const r = log.guest[i]!;
        expect(r.end).toBeGreaterThan(r.start);
        expect(log.host[r.end - 1]).toEqual({ kind: 'flush' });
      }
      const first = log.guest[FIRST_WRITE]!;
      const flush = log.guest[FLUSH_AFTER_WRITES]!;
      if (g.cache === 'writeback') {
        // Write-back: the write leaves metadata in QEMU's caches; the flush op writes it and flushes.
        expect(log.host[flush.end - 1]).toEqual({ kind: 'flush' });
      } else {
        // Writethrough: every write is followed by a flush, so the flush op finds nothing to do.
        expect(log.host[first.end - 1]).toEqual({ kind: 'flush' });
        expect(flush.end).toBe(flush.start);
        // A compressed write gets no flush, writethrough or not (bdrv_driver_pwritev_compressed has no FUA emulation).
        expect(log.host[log.guest[COMPRESSED]!.end - 1]?.kind).toBe('write');
      }
    });

    it('each op boundary is exact: the log prefix up to it reads as the oracle after the ops so far', async () => {
      const oracle = new RawDisk({ size: SIZE, clusterSize: g.clusterSize, ...(g.subclusterSize === undefined ? {} : { subclusterSize: g.subclusterSize }) });
      const prefixPath = join(dir, 'prefix.qcow2');
      const rawPath = join(dir, 'prefix.raw');
      let checked = 0;
      for (let i = 0; i < ops.length; i++) {
        const r = log.guest[i]!;
        if (r.ok) oracle.apply(r.op);
        if (!r.ok || !settledAfter(g, r.op)) continue;
        writeFileSync(prefixPath, replay(base, log.host.slice(0, r.end)));
        await qemuImgConvert(prefixPath, rawPath);
        const raw = readFileSync(rawPath);
        expect(BigInt(raw.length), `virtual size after op ${i} (${r.op.kind})`).toBe(oracle.size);
        expect(firstDifference(raw, oracle.read(0n, Number(oracle.size))), `first difference after op ${i} (${r.op.kind})`).toBe(-1);
        checked++;
      }
      expect(checked).toBeGreaterThanOrEqual(g.cache === 'writeback' ? 8 : 18);
    }, 60_000);
  });

  describe('malformed logs', () => {
    let logBytes: Uint8Array;

    beforeAll(async () => {
      const img = join(dir, 'malformed.qcow2');
      const logPath = join(dir, 'malformed.log');
      await qemuImgCreate(img, '1M', { cluster_size: '4096' });
      const run = await runQemuLogged(img, [{ kind: 'write', offset: 0n, data: pattern(6000, 9) }, { kind: 'discard', offset: 0n, length: 4096n }, { kind: 'flush' }], { logPath });
      logBytes = new Uint8Array(readFileSync(logPath)); // a copy whose slice() copies (a Buffer's is a view)
      expect(parseBlkLogWrites(logBytes).host).toEqual(run.host);
    }, 30_000);

    /** The error parsing `bytes` throws (failing the test when it parses). */
    function errorOf(bytes: Uint8Array): BlkLogWritesError {
      try {
        parseBlkLogWrites(bytes);
      } catch (e) {
        expect(e).toBeInstanceOf(BlkLogWritesError);
        return e as BlkLogWritesError;
      }
      throw new Error('the log parsed');
    }

    it('a log truncated in the middle of an entry', () => {
      const parsed = parseBlkLogWrites(logBytes);
      const k = parsed.entries.findIndex((e) => e.nrSectors > 1n);
      expect(k).toBeGreaterThanOrEqual(0);
      const at = parsed.entries[k]!.logOffset;
      const err = errorOf(logBytes.slice(0, at + parsed.sectorSize + 100));
      expect(err.entryIndex).toBe(k);
      expect(err.byteOffset).toBe(at);
      expect(err.message).toContain(`entry ${k} at byte offset ${at}`);
      // Cut inside the entry header itself.
      expect(errorOf(logBytes.slice(0, at + 10)).entryIndex).toBe(k);
    });

    it('a wrong magic', () => {
      const bad = logBytes.slice();
      bad[0] = bad[0]! ^ 0xff;
      const err = errorOf(bad);
      expect(err.entryIndex).toBeUndefined();
      expect(err.message).toContain('superblock at byte offset 0: bad magic');
    });

    it('an implausibly large nr_sectors, nr_entries or unknown flags', () => {
      const parsed = parseBlkLogWrites(logBytes);
      const e0 = parsed.entries[0]!;
      const huge = logBytes.slice();
      new DataView(huge.buffer).setBigUint64(e0.logOffset + 8, 1n << 62n, true);
      expect(errorOf(huge)).toMatchObject({ entryIndex: 0, byteOffset: e0.logOffset });
      const many = logBytes.slice();
      new DataView(many.buffer).setBigUint64(16, (1n << 64n) - 1n, true);
      expect(errorOf(many).message).toContain(`entry ${parsed.entries.length} at byte offset ${parsed.end}: truncated: the superblock counts 18446744073709551615 entries`);
      const flags = logBytes.slice();
      new DataView(flags.buffer).setBigUint64(e0.logOffset + 16, 0x10n, true);
      expect(errorOf(flags).message).toContain('entry 0 at byte offset 512: invalid flags 0x10');
      expect(errorOf(new Uint8Array(10)).message).toContain('truncated');
    });

    it('FUA, MARK and DISCARD entries of a handmade log', () => {
      const ss = 512;
      const log = new Uint8Array(ss * 6);
      const v = new DataView(log.buffer);
      v.setBigUint64(0, WRITE_LOG_MAGIC, true);
      v.setBigUint64(8, 1n, true);
      v.setBigUint64(16, 3n, true);
      v.setUint32(24, ss, true);
      const entry = (sector: number, fields: [bigint, bigint, bigint]): void => {
        v.setBigUint64(sector * ss, fields[0], true);
        v.setBigUint64(sector * ss + 8, fields[1], true);
        v.setBigUint64(sector * ss + 16, fields[2], true);
      };
      entry(1, [3n, 2n, 2n]); // FUA write of 2 sectors at sector 3 (data: sectors 2-3)
      log.fill(0x5a, 2 * ss, 4 * ss);
      entry(4, [0n, 0n, 8n]); // MARK without data
      entry(5, [10n, 4n, 4n]); // DISCARD of 4 sectors: no data follows
      const parsed = parseBlkLogWrites(log);
      expect(parsed.host).toEqual([
        { kind: 'write', offset: 1536n, bytes: new Uint8Array(1024).fill(0x5a) },
        { kind: 'flush' },
        { kind: 'discard', offset: 5120n, length: 2048n },
      ]);
      expect(parsed.hostStart).toEqual([0, 2, 2, 3]);
      expect(parsed.end).toBe(6 * ss);
      expect(parseBlkLogWrites(new Uint8Array(0)).host).toEqual([]);
    });
  });

  describe('refusals', () => {
    it('an image with an external data file, and a file that is not qcow2', async () => {
      const img = join(dir, 'with-data-file.qcow2');
      await qemuImgCreate(img, '1M', { data_file: join(dir, 'with-data-file.raw') });
      await expect(runQemuLogged(img, [{ kind: 'flush' }])).rejects.toMatchObject({ name: 'QemuLoggedRunError', code: 'data-file' });
      const raw = join(dir, 'plain.raw');
      await qemuImgCreate(raw, '1M', {}, [], 'raw');
      await expect(runQemuLogged(raw, [{ kind: 'flush' }])).rejects.toBeInstanceOf(QemuLoggedRunError);
      await expect(runQemuLogged(raw, [])).rejects.toMatchObject({ code: 'not-qcow2' });
    });
  });
});
