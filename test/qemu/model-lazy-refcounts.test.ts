/**
 * Lazy refcounts (compatible bit 0) and the dirty bit (incompatible bit 0) against qemu-io 7.2:
 * - after the same ops and a clean close (qemu-io exiting normally; the model's closeImage) the files
 *   are byte-identical, and the dirty bit is clear in both;
 * - mid-session (qemu-io killed by its `abort` command, i.e. a crash; the model without closeImage)
 *   the dirty bit is what QEMU leaves — set after an allocating write, clear when no write linked new
 *   clusters — and everything outside the refcount blocks is identical (QEMU's refcount blocks lag on
 *   disk, which is the point of lazy refcounts; the model's are already up to date);
 * - an image loaded with the dirty bit set (a crashed session's) is not written by the model (QEMU
 *   would repair it first); a bit set by the model's own session does not stop writes;
 * - the host I/O: the 8-byte header write + flush of qcow2_mark_dirty before the first L2 update,
 *   and no flush barrier between a refcount update and the L2 entry that needs it once dirty.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeaderLayout } from '../../generated/qcow2.ts';
import { closeImage } from '../../src/model/close.ts';
import { createImage } from '../../src/model/create.ts';
import { hostBytes } from '../../src/model/host-file.ts';
import { type HostIO } from '../../src/model/host-io.ts';
import type { Image } from '../../src/model/image.ts';
import { loadImage, storeDataFile, storeImage } from '../../src/model/load-store.ts';
import type { Op } from '../../src/model/ops.ts';
import { readGuest } from '../../src/model/read.ts';
import { step } from '../../src/model/step.ts';
import { checkInvariants } from '../../src/oracle/invariants.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import { qemuImgCheck, qemuImgCreate, qemuImgInfo, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu } from '../../src/qemu/run.ts';

let dir = '';
let counter = 0;
beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-lazy-'));
});
afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

type TestOp =
  | { kind: 'write'; offset: number; length: number; pattern: number }
  | { kind: 'zero'; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'flush' };

interface Cfg {
  readonly size: number;
  readonly clusterSize: number;
  readonly refcountBits?: number;
  readonly dataFile?: boolean;
}

const KiB = 1024;
const MiB = 1024 * KiB;

function qemuCommand(o: TestOp): string {
  switch (o.kind) {
    case 'write': return `write -P ${o.pattern} ${o.offset} ${o.length}`;
    case 'zero': return `write -z${o.unmap ? ' -u' : ''} ${o.offset} ${o.length}`;
    case 'discard': return `discard ${o.offset} ${o.length}`;
    case 'flush': return 'flush';
  }
}

function modelOp(o: TestOp): Op {
  switch (o.kind) {
    case 'write': return { kind: 'write', offset: BigInt(o.offset), data: new Uint8Array(o.length).fill(o.pattern) };
    case 'zero': return { kind: 'writeZeroes', offset: BigInt(o.offset), length: BigInt(o.length), unmap: o.unmap };
    case 'discard': return { kind: 'discard', offset: BigInt(o.offset), length: BigInt(o.length) };
    case 'flush': return { kind: 'flush' };
  }
}

function runModel(img: Image, ops: readonly TestOp[]): { image: Image; io: HostIO[] } {
  const io: HostIO[] = [];
  for (const o of ops) {
    const r = step(img, modelOp(o));
    if (!r.ok) throw r.error;
    img = r.image;
    io.push(...r.io);
  }
  return { image: img, io };
}

/** The dirty bit as the file says: bit 0 of incompatible_features (bytes 72..79, big endian). */
function dirtyBit(file: Uint8Array): boolean {
  return (file[79]! & 1) === 1;
}

/** Host clusters holding refcount blocks, read straight from the file's header and reftable. */
function refblockClusters(file: Uint8Array): Set<number> {
  const v = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const clusterBits = v.getUint32(HeaderLayout.clusterBits.offset);
  const table = Number(v.getBigUint64(HeaderLayout.refcountTableOffset.offset));
  const entries = (v.getUint32(HeaderLayout.refcountTableClusters.offset) << clusterBits) / 8;
  const out = new Set<number>();
  for (let i = 0; i < entries; i++) {
    const e = Number(v.getBigUint64(table + i * 8) & ~0x1ffn);
    if (e !== 0) out.add(e >> clusterBits);
  }
  return out;
}

function firstDifference(a: Uint8Array, b: Uint8Array, skipCluster?: (c: number) => boolean, clusterBits = 16): number | undefined {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (skipCluster?.(i >> clusterBits) === true) continue;
    if (a[i] !== b[i]) return i;
  }
  return undefined;
}

function qemuOptions(c: Cfg): Record<string, string> {
  return {
    cluster_size: String(c.clusterSize),
    lazy_refcounts: 'on',
    ...(c.refcountBits !== undefined ? { refcount_bits: String(c.refcountBits) } : {}),
    ...(c.dataFile === true ? { data_file: 'img.raw' } : {}),
  };
}

interface Pair {
  readonly d: string;
  readonly qcow2: Uint8Array;
  readonly data?: Uint8Array;
}

async function qemuCreate(c: Cfg): Promise<Pair> {
  const d = await mkdtemp(join(dir, `case${counter++}-`));
  await qemuImgCreate('img.qcow2', c.size, qemuOptions(c), [], 'qcow2', { cwd: d });
  const qcow2 = new Uint8Array(await readFile(join(d, 'img.qcow2')));
  return c.dataFile === true ? { d, qcow2, data: new Uint8Array(await readFile(join(d, 'img.raw'))) } : { d, qcow2 };
}

/**
 * Runs `ops` with qemu-io twice on fresh qemu-img images — once closing normally, once ending in
 * `abort` — and with the model on the same image and on createImage's, then compares.
 */
async function checkAgainstQemu(c: Cfg, ops: readonly TestOp[], expectDirtyMidSession: boolean): Promise<void> {
  const clean = await qemuCreate(c);
  const crashed = await qemuCreate(c);
  const made = createImage({
    size: BigInt(c.size), clusterSize: c.clusterSize, lazyRefcounts: true,
    ...(c.refcountBits !== undefined ? { refcountBits: c.refcountBits } : {}),
    ...(c.dataFile === true ? { dataFile: 'img.raw' } : {}),
  });
  expect(Buffer.compare(storeImage(made.image), clean.qcow2)).toBe(0);
  if (c.dataFile === true) expect(Buffer.compare(hostBytes(made.dataFile!), clean.data!)).toBe(0);

  await qemuIo('img.qcow2', ops.map(qemuCommand), { cwd: clean.d });
  await qemuIo('img.qcow2', [...ops.map(qemuCommand), 'abort'], { cwd: crashed.d, expectAbort: true });
  const qemuClean = new Uint8Array(await readFile(join(clean.d, 'img.qcow2')));
  const qemuCrashed = new Uint8Array(await readFile(join(crashed.d, 'img.qcow2')));

  // The dirty bit QEMU leaves, read back by QEMU itself (qemu-img info "dirty-flag").
  const infoCrashed = await qemuImgInfo(join(crashed.d, 'img.qcow2'), { cwd: crashed.d });
  expect(JSON.stringify(infoCrashed)).toContain(`"dirty-flag":${expectDirtyMidSession}`);
  expect(dirtyBit(qemuCrashed)).toBe(expectDirtyMidSession);
  expect(dirtyBit(qemuClean)).toBe(false);

  for (const start of [loadImage(clean.qcow2, clean.data !== undefined ? { dataFile: clean.data } : {}), made.image]) {
    const open = runModel(start, ops).image;
    // Mid-session: QEMU's crashed file, except for the refcount blocks.
    const ours = storeImage(open);
    expect(dirtyBit(ours)).toBe(expectDirtyMidSession);
    expect(ours.length).toBe(qemuCrashed.length);
    const blocks = refblockClusters(ours);
    const cb = Math.log2(c.clusterSize);
    expect(firstDifference(ours, qemuCrashed, (cl) => blocks.has(cl), cb)).toBeUndefined();
    // …and with the dirty bit set QEMU's on-disk refcounts of new data clusters really lag behind
    // (its refcount-block cache is not written by a flush while dirty, qcow2_write_caches), the
    // model's do not. (Data-file clusters have no refcounts; new L2 tables' refcounts are flushed
    // by l2_allocate either way.)
    if (expectDirtyMidSession && c.dataFile !== true) expect(firstDifference(ours, qemuCrashed)).toBeDefined();
    // After a clean close: QEMU's file byte for byte (and its data file).
    const closed = closeImage(open).image;
    const closedBytes = storeImage(closed);
    const diff = firstDifference(closedBytes, qemuClean);
    if (diff !== undefined) expect.fail(`closed model image differs from QEMU's at 0x${diff.toString(16)} (lengths ${closedBytes.length} / ${qemuClean.length})`);
    if (c.dataFile === true) {
      expect(Buffer.compare(storeDataFile(closed)!, await readFile(join(clean.d, 'img.raw')))).toBe(0);
    }
    expect(checkInvariants(closedBytes, c.dataFile === true ? { dataFile: storeDataFile(closed)! } : {})).toEqual([]);

    const oracle = new RawDisk({ size: BigInt(c.size), clusterSize: BigInt(c.clusterSize) });
    for (const o of ops) {
      const op = modelOp(o);
      if (op.kind !== 'flush') oracle.apply(op);
    }
    expect(Buffer.compare(readGuest(closed, 0n, c.size), oracle.read(0n, c.size))).toBe(0);
  }

  // QEMU finds the model's closed image clean.
  const m = await mkdtemp(join(dir, `model${counter++}-`));
  const closed = closeImage(runModel(made.image, ops).image).image;
  await writeFile(join(m, 'img.qcow2'), storeImage(closed));
  if (c.dataFile === true) await writeFile(join(m, 'img.raw'), storeDataFile(closed)!);
  const check = await qemuImgCheck('img.qcow2', { cwd: m });
  expect({ code: check.code, stderr: check.stderr }).toEqual({ code: 0, stderr: '' });
}

const allocating: TestOp[] = [
  { kind: 'write', offset: 0, length: 4096, pattern: 1 },
  { kind: 'write', offset: 100_000, length: 70_000, pattern: 2 },
  { kind: 'flush' },
  { kind: 'zero', offset: 0, length: 64 * KiB, unmap: true },
  { kind: 'write', offset: 5000, length: 300, pattern: 3 },
  { kind: 'discard', offset: 128 * KiB, length: 64 * KiB },
  { kind: 'write', offset: 900_000, length: 123_456, pattern: 4 },
];

describe('lazy refcounts: model vs qemu-io 7.2', () => {
  it('requires qemu-img and qemu-io', async () => {
    await requireQemu();
  });

  it('allocating writes: dirty mid-session, clean and identical after close (64 KiB clusters)', async () => {
    await checkAgainstQemu({ size: 2 * MiB, clusterSize: 64 * KiB }, allocating, true);
  });

  it('512-byte clusters with 1-bit refcounts: new refcount blocks while dirty', async () => {
    const ops: TestOp[] = Array.from({ length: 12 }, (_, i) => ({ kind: 'write' as const, offset: i * 170_000 + i, length: 20_000 + i, pattern: i + 1 }));
    await checkAgainstQemu({ size: 2 * MiB, clusterSize: 512, refcountBits: 1 }, ops, true);
  });

  it('with an external data file: the first linking write sets the dirty bit too', async () => {
    await checkAgainstQemu({ size: MiB, clusterSize: 64 * KiB, dataFile: true }, allocating.filter((o) => o.kind !== 'write' || o.offset < MiB - o.length), true);
  });

  it('zero writes and discards alone never mark the image dirty', async () => {
    await checkAgainstQemu({ size: MiB, clusterSize: 64 * KiB }, [
      { kind: 'zero', offset: 0, length: 64 * KiB, unmap: false },
      { kind: 'zero', offset: 64 * KiB, length: 128 * KiB, unmap: true },
      { kind: 'discard', offset: 0, length: MiB },
      { kind: 'flush' },
    ], false);
  });

  it('an in-place write to allocated clusters does not mark the image dirty (second session)', async () => {
    const c: Cfg = { size: MiB, clusterSize: 64 * KiB };
    const { d, qcow2 } = await qemuCreate(c);
    await qemuIo('img.qcow2', ['write -P 1 0 128k'], { cwd: d });
    const afterFirst = new Uint8Array(await readFile(join(d, 'img.qcow2')));
    expect(dirtyBit(afterFirst)).toBe(false);
    await qemuIo('img.qcow2', ['write -P 2 4096 4096', 'abort'], { cwd: d, expectAbort: true });
    const crashed = new Uint8Array(await readFile(join(d, 'img.qcow2')));
    expect(dirtyBit(crashed)).toBe(false);

    const first = closeImage(runModel(loadImage(qcow2), [{ kind: 'write', offset: 0, length: 128 * KiB, pattern: 1 }]).image).image;
    expect(Buffer.compare(storeImage(first), afterFirst)).toBe(0);
    const second = runModel(loadImage(storeImage(first)), [{ kind: 'write', offset: 4096, length: 4096, pattern: 2 }]);
    expect(dirtyBit(storeImage(second.image))).toBe(false);
    expect(Buffer.compare(storeImage(second.image), crashed)).toBe(0);
  });
});

describe('the dirty bit in the model', () => {
  it('an image QEMU left dirty is refused for writes; a bit set by this session is not', async () => {
    const c: Cfg = { size: MiB, clusterSize: 64 * KiB };
    const { d } = await qemuCreate(c);
    await qemuIo('img.qcow2', ['write -P 1 0 4k', 'abort'], { cwd: d, expectAbort: true });
    const crashed = loadImage(new Uint8Array(await readFile(join(d, 'img.qcow2'))));
    for (const op of [
      { kind: 'write', offset: 0n, data: new Uint8Array(512) },
      { kind: 'writeZeroes', offset: 0n, length: 512n, unmap: false },
      { kind: 'discard', offset: 0n, length: 65536n },
      { kind: 'snapshotCreate', name: 's' },
      { kind: 'writeCompressed', offset: 65536n, data: new Uint8Array(65536).fill(3) },
      { kind: 'resize', size: 2n << 20n },
    ] satisfies Op[]) {
      const r = step(crashed, op);
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.error.code).toBe('dirty');
        expect(r.error.message).toMatch(/dirty/);
        expect(r.io).toEqual([]);
      }
    }
    // A flush is fine, and closing leaves the crashed session's bit alone (the model did not repair).
    expect(step(crashed, { kind: 'flush' }).ok).toBe(true);
    const closed = closeImage(crashed);
    expect(dirtyBit(storeImage(closed.image))).toBe(true);
    expect(closed.io.every((x) => x.kind === 'flush')).toBe(true);

    // A session that set the bit itself keeps writing.
    const made = createImage({ size: BigInt(MiB), lazyRefcounts: true }).image;
    const r = runModel(made, [{ kind: 'write', offset: 0, length: 512, pattern: 1 }, { kind: 'write', offset: 65536, length: 512, pattern: 2 }]);
    expect(dirtyBit(storeImage(r.image))).toBe(true);
    // …but once stored and loaded again (a new process after a crash) it is QEMU's repair case.
    const reloaded = step(loadImage(storeImage(r.image)), { kind: 'write', offset: 0n, data: new Uint8Array(1) });
    expect(reloaded.ok).toBe(false);
  });

  it('qcow2_mark_dirty is an 8-byte write at offset 72 and a flush, before the first L2 update; dirty: the data, not the refcount, is ordered before L2', () => {
    // Expected sequence from QEMU 7.2's source: qcow2_alloc_cluster_link_l2 calls qcow2_mark_dirty
    // (bdrv_pwrite of incompatible_features + bdrv_flush) before get_cluster_table/set_l2_entry, and
    // sets the L2 → refcount-block cache dependency only while qcow2_need_accurate_refcounts().
    const lazy = createImage({ size: BigInt(MiB), lazyRefcounts: true }).image;
    const first = step(lazy, { kind: 'write', offset: 0n, data: new Uint8Array(65536).fill(1) });
    if (!first.ok) throw first.error;
    const l2Table = 0x40000n; // the first L2 table of a fresh 1 MiB / 64 KiB image (docs/format/allocation.md#l2-table-allocation)
    const headerAt = first.io.findIndex((x) => x.kind === 'write' && x.offset === 72n && x.bytes.length === 8);
    const l2At = first.io.findIndex((x) => x.kind === 'write' && x.offset === l2Table && x.bytes.length === 8);
    expect(headerAt).toBeGreaterThanOrEqual(0);
    expect(first.io[headerAt + 1]).toEqual({ kind: 'flush' });
    expect(l2At).toBeGreaterThan(headerAt);

    // Second allocating write, whole cluster (no COW), L2 table already there. QEMU 7.2 issues no
    // flush before the L2 entry once the image is dirty, so its entry can reach the disk before the
    // data (docs/format/crash-consistency.md); the model flushes the data first — and the refcount
    // update, written before the data, is then on disk too.
    const order = (io: readonly HostIO[]): { data: number; l2: number; flushes: number } => {
      const data = io.findIndex((x) => x.kind === 'write' && x.bytes.length === 65536 && x.bytes[0] === 2);
      const l2 = io.findIndex((x) => x.kind === 'write' && x.offset === l2Table + 8n);
      expect(data).toBeGreaterThanOrEqual(0);
      expect(l2).toBeGreaterThan(data);
      return { data, l2, flushes: io.slice(data + 1, l2).filter((x) => x.kind === 'flush').length };
    };
    const second = step(first.image, { kind: 'write', offset: 65536n, data: new Uint8Array(65536).fill(2) });
    if (!second.ok) throw second.error;
    expect(order(second.io).flushes).toBe(1);
    // Without lazy refcounts the same one flush orders refcount and data before the L2 entry.
    const eager = createImage({ size: BigInt(MiB) }).image;
    const e1 = step(eager, { kind: 'write', offset: 0n, data: new Uint8Array(65536).fill(1) });
    if (!e1.ok) throw e1.error;
    const e2 = step(e1.image, { kind: 'write', offset: 65536n, data: new Uint8Array(65536).fill(2) });
    if (!e2.ok) throw e2.error;
    expect(order(e2.io).flushes).toBe(1);

    // closeImage: flush, the header write clearing the bit, flush.
    const closed = closeImage(second.image);
    expect(closed.io.map((x) => (x.kind === 'write' ? `write@${x.offset}+${x.bytes.length}` : x.kind))).toEqual(['flush', 'write@72+8', 'flush']);
    expect(dirtyBit(storeImage(closed.image))).toBe(false);
  });
});
