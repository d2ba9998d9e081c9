/**
 * `resize` (qemu-img resize [--shrink]) and L1 growth against real QEMU 7.2: the same image is built by
 * `qemu-img create` + qemu-io and by createImage + step, then resized by `qemu-img resize` and by
 * `step(resize)`; the files must be byte-identical after every step (each qemu-io / qemu-img process is
 * a new model session), the model's reads must equal the RawDisk oracle, the oracle must equal what
 * QEMU reads (`qemu-img convert -O raw`), the invariant checker must be clean and `qemu-img check` must
 * accept the model's file. QEMU's refusals are compared message for message. A fast-check property
 * interleaves resize with writes, zeroes and discards against the oracle.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawBackingSource } from '../../src/model/backing.ts';
import { createImage, type CreateOptions } from '../../src/model/create.ts';
import { applyHostIO, hostBytes } from '../../src/model/host-file.ts';
import { freshSession, type Image } from '../../src/model/image.ts';
import { loadImage } from '../../src/model/load-store.ts';
import { grownL1Size } from '../../src/model/mapping.ts';
import type { Op } from '../../src/model/ops.ts';
import { readGuest } from '../../src/model/read.ts';
import { readSnapshots } from '../../src/model/snapshot.ts';
import { step } from '../../src/model/step.ts';
import { reftableEntry, reftableSize } from '../../src/model/refcount.ts';
import { beginTx } from '../../src/model/tx.ts';
import { guestWrite } from '../../src/model/write.ts';
import { checkInvariants } from '../../src/oracle/invariants.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import { qemuImgCheck, qemuImgCreate, qemuImgSnapshot, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';

let dir = '';
let counter = 0;

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-resize-'));
});

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

const K = 1024n;
const M = 1024n * K;
const G = 1024n * M;
const T = 1024n * G;

/** One guest op with its qemu-io command. */
interface IoOp {
  readonly cmd: string;
  readonly op: Op;
}
const W = (offset: bigint, length: number, pattern: number): IoOp => ({
  cmd: `write -P ${pattern} ${offset} ${length}`,
  op: { kind: 'write', offset, data: new Uint8Array(length).fill(pattern) },
});
const Z = (offset: bigint, length: bigint, unmap = false): IoOp => ({
  cmd: `write -z ${unmap ? '-u ' : ''}${offset} ${length}`,
  op: { kind: 'writeZeroes', offset, length, unmap },
});
const D = (offset: bigint, length: bigint): IoOp => ({ cmd: `discard ${offset} ${length}`, op: { kind: 'discard', offset, length } });
const C = (offset: bigint, length: number, pattern: number): IoOp => ({
  cmd: `write -c -P ${pattern} ${offset} ${length}`,
  op: { kind: 'writeCompressed', offset, data: new Uint8Array(length).fill(pattern) },
});

/** A step of a case: one qemu-io process, one `qemu-img resize`, or one `qemu-img snapshot -c`. */
type Step = { readonly io: readonly IoOp[] } | { readonly resize: bigint } | { readonly snapshot: string } | { readonly apply: string };

interface Case {
  readonly name: string;
  readonly size: bigint;
  readonly options: Omit<CreateOptions, 'size'>;
  /** A raw backing file of this many bytes of pattern 0x5a (a multiple of 512). */
  readonly backing?: bigint;
  readonly steps: readonly Step[];
}

function qemuOptions(o: Omit<CreateOptions, 'size'>): Record<string, string> {
  const q: Record<string, string> = {};
  if (o.clusterSize !== undefined) q.cluster_size = String(o.clusterSize);
  if (o.compat !== undefined) q.compat = o.compat;
  if (o.refcountBits !== undefined) q.refcount_bits = String(o.refcountBits);
  if (o.extendedL2 !== undefined) q.extended_l2 = o.extendedL2 ? 'on' : 'off';
  if (o.backingFile !== undefined) q.backing_file = o.backingFile;
  if (o.backingFmt !== undefined) q.backing_fmt = o.backingFmt;
  return q;
}

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function expectSameFile(ours: Uint8Array, theirs: Uint8Array, what: string): void {
  const d = firstDiff(ours, theirs);
  expect({ what, length: ours.length, firstDifference: d }).toEqual({ what, length: theirs.length, firstDifference: -1 });
}

/** Guest content of the model image, in 1 MiB reads. */
function modelContent(img: Image): Uint8Array {
  const size = Number(img.header.size);
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += 1 << 20) out.set(readGuest(img, BigInt(at), Math.min(1 << 20, size - at)), at);
  return out;
}

/** `qemu-img resize` (with --shrink when smaller); returns exit code and stderr. */
async function qemuResize(path: string, size: bigint, shrink: boolean): Promise<{ code: number | null; stderr: string }> {
  const r = await runTool('qemu-img', ['resize', '-q', '-f', 'qcow2', ...(shrink ? ['--shrink'] : []), path, String(size)]);
  return { code: r.code, stderr: r.stderr };
}

/** What QEMU reads from the whole disk (`qemu-img convert -O raw`). */
async function qemuContent(path: string): Promise<Uint8Array> {
  const out = join(dir, `content-${counter++}.raw`);
  const r = await runTool('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path, out]);
  if (r.code !== 0) throw new Error(r.stderr);
  const bytes = new Uint8Array(await readFile(out));
  await rm(out);
  return bytes;
}

/**
 * Runs a case on QEMU and on the model; compares files after each step and everything else at the end.
 * Returns the model's final image.
 */
async function runCase(c: Case, opts: { contentSizeLimit?: bigint } = {}): Promise<{ img: Image; trace: ResizeTrace[] }> {
  const trace: ResizeTrace[] = [];
  const id = counter++;
  const theirs = join(dir, `qemu-${id}.qcow2`);
  const ours = join(dir, `model-${id}.qcow2`);
  let backingBytes: Uint8Array | undefined;
  let options = c.options;
  if (c.backing !== undefined) {
    const path = join(dir, `backing-${id}.raw`);
    backingBytes = new Uint8Array(Number(c.backing)).fill(0x5a);
    await writeFile(path, backingBytes);
    options = { ...options, backingFile: path, backingFmt: 'raw' };
  }
  await qemuImgCreate(theirs, String(c.size), qemuOptions(options));
  let img = createImage({ ...options, size: c.size }).image;
  if (backingBytes !== undefined) img = { ...img, backing: rawBackingSource(backingBytes) };
  expectSameFile(hostBytes(img.file), new Uint8Array(await readFile(theirs)), `${c.name}: created`);
  const oracle = new RawDisk({
    size: c.size,
    version: img.header.version,
    clusterSize: BigInt(1 << img.header.clusterBits),
    subclusterSize: BigInt(1 << img.header.clusterBits) / (c.options.extendedL2 === true ? 32n : 1n),
    ...(backingBytes !== undefined ? { backing: rawBackingSource(backingBytes) } : {}),
  });

  for (const [n, s] of c.steps.entries()) {
    const what = `${c.name}: step ${n} ${JSON.stringify(s, (_k, v) => (typeof v === 'bigint' ? String(v) : v instanceof Uint8Array ? `<${v.length} bytes>` : v))}`;
    if ('io' in s) {
      await qemuIo(theirs, s.io.map((o) => o.cmd));
      for (const o of s.io) {
        const r = step(img, o.op);
        if (!r.ok) throw r.error;
        img = r.image;
        oracle.apply(o.op);
      }
    } else if ('snapshot' in s) {
      await qemuImgSnapshot(theirs, 'create', s.snapshot);
      const q = readSnapshots(beginTx(loadImage(new Uint8Array(await readFile(theirs))))).find((x) => x.name === s.snapshot)!;
      const op: Op = { kind: 'snapshotCreate', name: s.snapshot, dateSec: q.dateSec, dateNsec: q.dateNsec };
      const r = step(img, op);
      if (!r.ok) throw r.error;
      img = r.image;
      oracle.apply(op);
    } else if ('apply' in s) {
      await qemuImgSnapshot(theirs, 'apply', s.apply);
      const op: Op = { kind: 'snapshotApply', name: s.apply };
      const r = step(img, op);
      if (!r.ok) throw r.error;
      expect(firstDiff(hostBytes(applyHostIO(img.file, r.io)), hostBytes(r.image.file)), `${what}: io replay`).toBe(-1);
      img = r.image;
      oracle.apply(op);
    } else {
      const q = await qemuResize(theirs, s.resize, s.resize < img.header.size);
      expect(q, what).toEqual({ code: 0, stderr: '' });
      const r = step(img, { kind: 'resize', size: s.resize });
      if (!r.ok) throw r.error;
      // The returned I/O replays the old file into the new one.
      expect(firstDiff(hostBytes(applyHostIO(img.file, r.io)), hostBytes(r.image.file)), `${what}: io replay`).toBe(-1);
      img = r.image;
      trace.push({ size: s.resize, l1Size: img.header.l1Size, refblocks: liveRefblocks(img), fileLength: img.file.length });
      oracle.apply({ kind: 'resize', size: s.resize });
    }
    img = { ...img, session: freshSession() }; // the next qemu-io / qemu-img is a new process
    expectSameFile(hostBytes(img.file), new Uint8Array(await readFile(theirs)), what);
  }

  const bytes = hostBytes(img.file);
  await writeFile(ours, bytes);
  expect(checkInvariants(bytes), `${c.name}: invariants`).toEqual([]);
  const check = await qemuImgCheck(ours);
  expect({ code: check.code, stderr: check.stderr }, `${c.name}: qemu-img check`).toEqual({ code: 0, stderr: '' });
  if (img.header.size <= (opts.contentSizeLimit ?? 64n * M)) {
    const expected = oracle.read(0n, Number(oracle.size));
    const fromModel = modelContent(img);
    const fromQemu = await qemuContent(theirs);
    expect(firstDiff(fromModel, expected), `${c.name}: model reads vs oracle`).toBe(-1);
    expect(firstDiff(fromQemu, expected), `${c.name}: QEMU reads vs oracle`).toBe(-1);
  } else {
    // Big sparse disks: compare the first and last MiB and the old ends.
    const probes = [0n, img.header.size - M];
    for (const at of probes) {
      expect(firstDiff(readGuest(img, at, Number(M)), oracle.read(at, Number(M))), `${c.name}: reads at ${at}`).toBe(-1);
    }
  }
  return { img, trace };
}

/** The state after each resize step of a case. */
interface ResizeTrace {
  readonly size: bigint;
  readonly l1Size: number;
  readonly refblocks: number;
  readonly fileLength: bigint;
}

/** Number of refcount blocks the reftable points at. */
function liveRefblocks(img: Image): number {
  const tx = beginTx(img);
  let n = 0;
  for (let i = 0; i < reftableSize(tx); i++) if (reftableEntry(tx, i) !== 0n) n++;
  return n;
}

describe('resize: byte-identical to qemu-img resize', () => {
  it('grow 1G→4G then shrink back (64 KiB clusters): L1 relocated, L2 tables allocated by the discard then freed, file cut', async () => {
    await runCase({ name: 'basic', size: G, options: {}, steps: [
      { io: [W(0n, 65536, 1), W(G - 4096n, 4096, 2)] },
      { resize: 4n * G },
      { io: [W(3n * G, 70000, 3), W(4n * G - 512n, 512, 4)] },
      { resize: G },
      { resize: G },
      { resize: 2n * G + 512n },
    ] });
  });

  it('512-byte clusters: the L1 table grows past one cluster, a shrink drops refcount blocks', async () => {
    const { trace } = await runCase({ name: '512', size: M, options: { clusterSize: 512 }, steps: [
      { io: [W(0n, 300000, 1), W(700n * K, 200000, 2)] },
      { resize: 40n * M },
      { io: [W(39n * M, 150000, 3), W(20n * M + 100n, 1000, 4)] },
      { resize: 64n * K + 1024n },
      { resize: 3n * M },
    ] });
    // The scenario reaches what it is named for (QEMU's file is identical, so QEMU did the same):
    // a multi-cluster L1 (1280 entries), fewer refcount blocks after the shrink, l1_size kept.
    expect(trace[0]!.l1Size).toBe(1280);
    expect(trace[1]!.refblocks).toBeLessThan(trace[0]!.refblocks);
    expect(trace[1]!.l1Size).toBe(1280);
  });

  it('2 MiB clusters: grow to 2 TiB, shrink to an unaligned size', async () => {
    await runCase({ name: '2M', size: G, options: { clusterSize: 2 * 1024 * 1024 }, steps: [
      { io: [W(0n, 4096, 1), W(30n * M, 3 * 1024 * 1024, 2), W(600n * M, 4096, 5)] },
      { resize: 2n * T },
      { io: [W(2n * T - 4096n, 4096, 3), W(700n * G, 512, 4)] },
      { resize: 31n * M + 512n * K },
    ] });
  });

  it('compat 0.10, 4 KiB clusters: grow, write, shrink unaligned, grow again (old bytes of the partial cluster come back)', async () => {
    await runCase({ name: 'v2', size: 8n * M, options: { compat: '0.10', clusterSize: 4096 }, steps: [
      { io: [W(0n, 8 * 1024 * 1024, 7)] },
      { resize: 300n * M },
      { io: [W(200n * M, 12345, 8)] },
      { resize: 5n * M + 1536n },
      { resize: 6n * M },
    ] });
  });

  for (const bits of [1, 2, 4, 8, 32, 64]) {
    it(`refcount_bits=${bits}, 1 KiB clusters: shrink frees data and refcount blocks, grow needs a bigger L1`, async () => {
      await runCase({ name: `rc${bits}`, size: 2n * M, options: { clusterSize: 1024, refcountBits: bits }, steps: [
        { io: [W(0n, 2 * 1024 * 1024, 1), D(512n * K, 64n * K), C(512n * K, 1024, 3), C(513n * K, 1024, 4)] },
        { resize: 100n * K + 512n },
        { resize: 40n * M },
        { io: [W(39n * M, 4096, 2)] },
        { resize: 200n * K },
      ] });
    });
  }

  it('extended L2 (64 KiB clusters): shrink inside a cluster keeps its subcluster bitmap, grow', async () => {
    await runCase({ name: 'extl2', size: 4n * M, options: { extendedL2: true }, steps: [
      { io: [W(0n, 100000, 1), W(3n * M, 5000, 2), Z(M, 64n * K)] },
      { resize: 3n * M + 2560n },
      { resize: 10n * G },
      { resize: 90000n * 512n },
    ] });
  });

  it('zero and compressed clusters past the new end are freed (ZERO_ALLOC, compressed, shared host cluster)', async () => {
    await runCase({ name: 'kinds', size: 2n * M, options: { clusterSize: 4096 }, steps: [
      { io: [W(0n, Number(M), 1), W(M + 128n * K, 4096, 2), Z(M, 8192n), Z(M + 8192n, 8192n, true), C(M + 65536n, 4096, 4), C(M + 69632n, 4096, 5), C(M + 73728n, 4096, 6)] },
      { resize: M + 69632n },
      { resize: 16n * K },
    ] });
  });

  describe('with a raw backing file', () => {
    it('v3: a grow past the old size zero-fills the new area where the backing file reaches', async () => {
      await runCase({ name: 'backing-v3', size: M, backing: 3n * M, options: {}, steps: [
        { io: [W(0n, 4096, 1)] },
        { resize: 2n * M },
        { resize: M + 512n * K },
        { resize: 5n * M },
      ] });
    });

    it('v3: growth from an unaligned size writes explicit zeros for the head of the partial cluster', async () => {
      await runCase({ name: 'backing-head', size: 1000n * K, backing: 3n * M, options: {}, steps: [
        { io: [W(900n * K, 4096, 1)] },
        { resize: 1100n * K },
        { resize: 1050n * K },
        { resize: 2n * M },
      ] });
    });

    it('extended L2: zero flags per subcluster from the first subcluster boundary', async () => {
      await runCase({ name: 'backing-extl2', size: 1000n * K + 512n, backing: 4n * M, options: { extendedL2: true }, steps: [
        { io: [W(4096n, 4096, 1)] },
        { resize: 1000n * K + 4608n },
        { resize: 3n * M },
        { resize: 600n * K },
        { resize: 2n * M + 1024n },
      ] });
    });

    it('a backing file that ends at the old size is not zero-filled over', async () => {
      await runCase({ name: 'backing-short', size: 2n * M, backing: 2n * M, options: { compat: '0.10' }, steps: [
        { resize: 4n * M },
        { io: [W(3n * M, 512, 1)] },
      ] });
    });

    it('512-byte clusters, backing file: L1 grows past one cluster and every new cluster gets a zero flag', async () => {
      await runCase({ name: 'backing-512', size: 64n * K, backing: 2n * M, options: { clusterSize: 512 }, steps: [
        { io: [W(0n, 1000, 1)] },
        { resize: 2n * M + 512n },
      ] });
    });
  });

  it('version 3 with internal snapshots: grow and shrink are allowed; shared L2 tables are copied', async () => {
    await runCase({ name: 'snapshots', size: 4n * M, options: { clusterSize: 16384 }, steps: [
      { io: [W(0n, 4 * 1024 * 1024, 1)] },
      { snapshot: 's1' },
      { resize: 8n * G },
      { io: [W(5n * G, 20000, 2), W(0n, 512, 3)] },
      { snapshot: 's2' },
      { resize: M + 512n },
      { resize: 2n * M },
    ] });
  });

  it('applying a snapshot taken at another size resizes first (QEMU 7.2 qcow2_snapshot_goto; docs/format/snapshots.md#applying-a-snapshot)', async () => {
    await runCase({ name: 'apply-other-size', size: 4n * M, options: { clusterSize: 4096 }, steps: [
      { io: [W(0n, 100000, 1), W(3n * M, 5000, 2)] },
      { snapshot: 'small' },
      { resize: 64n * M },
      { io: [W(40n * M, 70000, 3), W(1000n, 10, 4)] },
      { snapshot: 'big' },
      { apply: 'small' },
      { io: [W(2n * M, 4096, 5)] },
      { apply: 'big' },
      { resize: 2n * M + 512n },
      { apply: 'small' },
    ] });
  });

  it('512-byte clusters: applying a snapshot with a larger L1 table grows the active L1 first', async () => {
    await runCase({ name: 'apply-larger-l1', size: 1n * M, options: { clusterSize: 512 }, steps: [
      { io: [W(0n, 3000, 1)] },
      { resize: 40n * M },
      { io: [W(39n * M, 3000, 2)] },
      { snapshot: 'big' },
      { resize: 1n * M },
      { apply: 'big' },
    ] });
  });
});

describe('the partial last cluster after a shrink to an unaligned size (QEMU shows it again on grow)', () => {
  // Each case: fill the disk, shrink into the middle of a cluster, run one op that reaches the new
  // end, grow again; QEMU's reads (qemu-img convert) must equal the oracle's tail rules.
  const L = M - 64n * K; // start of the last cluster after the shrink (64 KiB clusters)
  const tails: { name: string; ext: boolean; end: bigint; io: IoOp[] }[] = [
    { name: 'ext-L2, zero exactly the last partial subcluster', ext: true, end: L + 5632n, io: [Z(L + 4096n, 1536n)] },
    { name: 'ext-L2, zero from the cluster start', ext: true, end: L + 5632n, io: [Z(L, 5632n)] },
    { name: 'ext-L2, zero from before the cluster', ext: true, end: L + 5632n, io: [Z(L - 65536n, 65536n + 5632n)] },
    { name: 'ext-L2, zero from an unaligned offset in the cluster', ext: true, end: L + 5632n, io: [Z(L + 1024n, 4608n)] },
    { name: 'ext-L2, zero inside the last subcluster only', ext: true, end: L + 5632n, io: [Z(L + 4608n, 1024n)] },
    { name: 'ext-L2, subcluster-aligned end, zero from the cluster start', ext: true, end: L + 4096n, io: [Z(L, 4096n)] },
    { name: 'ext-L2, subcluster-aligned end, zero the last subclusters', ext: true, end: L + 4096n, io: [Z(L + 2048n, 2048n)] },
    { name: 'ext-L2, end in the first subcluster', ext: true, end: L + 1024n, io: [Z(L, 1024n, true)] },
    { name: 'ext-L2, discard the last cluster', ext: true, end: L + 5632n, io: [D(L, 5632n)] },
    { name: 'standard L2, zero from the cluster start', ext: false, end: L + 5632n, io: [Z(L, 5632n)] },
    { name: 'standard L2, zero from inside the cluster', ext: false, end: L + 5632n, io: [Z(L + 512n, 5120n)] },
    { name: 'standard L2, discard from inside the cluster (ignored)', ext: false, end: L + 5632n, io: [D(L + 512n, 5120n)] },
    { name: 'standard L2, discard the last cluster', ext: false, end: L + 5632n, io: [D(L - 512n, 6144n)] },
    { name: 'standard L2, compressed partial last cluster', ext: false, end: L + 5632n, io: [D(L, 5632n), C(L, 5632, 3)] },
    { name: 'standard L2, a write keeps the tail', ext: false, end: L + 5632n, io: [W(L + 100n, 1000, 4)] },
  ];
  for (const t of tails) {
    it(t.name, async () => {
      await runCase({ name: t.name, size: M, options: { extendedL2: t.ext }, steps: [
        { io: [W(0n, Number(M), 0x61)] },
        { resize: t.end },
        { io: t.io },
        { resize: 2n * M },
      ] });
    });
  }
  // A grow zero-filled because of the backing file, then a grow that is not (the backing file ends
  // before): what the first grow left in its partial last cluster shows.
  for (const [name, ext, backing, end] of [
    ['ext-L2: zero-filled grow inside the first subcluster keeps the tail', true, L + 1536n, L + 1536n],
    ['ext-L2: zero-filled grow past the first subcluster zeroes the subclusters up to the end', true, L + 4096n, L + 5120n],
    ['standard L2: zero-filled grow inside the cluster keeps the tail', false, L + 2048n, L + 1536n],
    ['standard L2: zero-filled grow into a new cluster', false, L + 65536n, L + 70656n],
  ] as const) {
    it(name, async () => {
      await runCase({ name, size: M, backing, options: { extendedL2: ext }, steps: [
        { io: [W(0n, Number(M), 0x61)] },
        { resize: L + 1024n },
        { resize: end },
        { resize: 2n * M },
      ] });
    });
  }
  it('version 2 with a short backing file: write_zeroes writes explicit zeros and keeps the tail', async () => {
    await runCase({ name: 'v2-tail', size: M, backing: 64n * K, options: { compat: '0.10' }, steps: [
      { io: [W(0n, Number(M), 0x61)] },
      { resize: L + 5632n },
      { io: [Z(L, 5632n)] },
      { resize: 2n * M },
    ] });
  });
});

describe('resize: QEMU refusals', () => {
  /** The model's refusal vs qemu-img's on the same image, and neither changed anything. */
  async function refusal(options: Omit<CreateOptions, 'size'>, size: bigint, newSize: bigint, prepare: (path: string) => Promise<void> = async () => {}): Promise<string> {
    const path = join(dir, `refuse-${counter++}.qcow2`);
    await qemuImgCreate(path, String(size), qemuOptions(options));
    await prepare(path);
    const before = new Uint8Array(await readFile(path));
    const q = await runTool('qemu-img', ['resize', '-q', '-f', 'qcow2', '--shrink', path, String(newSize)]);
    expect(q.code).toBe(1);
    expect(firstDiff(new Uint8Array(await readFile(path)), before)).toBe(-1);
    const r = step(loadImage(before), { kind: 'resize', size: newSize });
    expect(r.ok).toBe(false);
    if (r.ok) return '';
    expect(r.io).toEqual([]);
    expect(`qemu-img: ${r.error.message}`).toBe(q.stderr.trim());
    return r.error.message;
  }

  it('size 0 and sizes that are negative as int64', async () => {
    expect(await refusal({}, M, 0n)).toBe('New image size must be positive');
    expect(await refusal({}, M, (1n << 64n) - 512n)).toBe('New image size must be positive');
    expect(await refusal({}, M, 1n << 63n)).toBe('New image size must be positive');
  });
  it('past the block layer maximum', async () => {
    expect(await refusal({}, M, (1n << 63n) - 1n)).toBe('offset(9223372036854775807) exceeds maximum(9223372035781033984)');
  });
  it('not a multiple of 512', async () => {
    expect(await refusal({}, M, M + 1000n)).toBe('The new size must be a multiple of 512');
  });
  it('an L1 table over 32 MiB, or more than INT_MAX / 8 entries', async () => {
    expect(await refusal({}, M, 3n * 1024n * T)).toBe('Failed to grow the L1 table: File too large');
    expect(await refusal({}, M, 9223372035781033984n)).toBe('Failed to grow the L1 table: File too large');
    expect(await refusal({ clusterSize: 2 * 1024 * 1024 }, M, 9223372035781033984n)).toBe('Failed to grow the L1 table: File too large');
  });
  it('a version 2 image with internal snapshots', async () => {
    const msg = await refusal({ compat: '0.10' }, M, 2n * M, async (p) => { await qemuImgSnapshot(p, 'create', 's'); });
    expect(msg).toBe("Can't resize a v2 image which has snapshots");
  });

  it('version 2 with a backing file longer than the old size: the L1 grows, then zero-filling fails', async () => {
    const id = counter++;
    const backing = join(dir, `v2-backing-${id}.raw`);
    const bytes = new Uint8Array(3 * 1024 * 1024).fill(0x5a);
    await writeFile(backing, bytes);
    const path = join(dir, `v2-${id}.qcow2`);
    const options: Omit<CreateOptions, 'size'> = { compat: '0.10', clusterSize: 512, backingFile: backing, backingFmt: 'raw' };
    await qemuImgCreate(path, '32768', qemuOptions(options));
    const img = { ...createImage({ ...options, size: 32n * K }).image, backing: rawBackingSource(bytes) };
    expect(firstDiff(hostBytes(img.file), new Uint8Array(await readFile(path)))).toBe(-1);
    const q = await runTool('qemu-img', ['resize', '-q', '-f', 'qcow2', path, String(M)]);
    expect({ code: q.code, stderr: q.stderr.trim() }).toEqual({ code: 1, stderr: 'qemu-img: Failed to zero out new clusters: Operation not supported' });
    const r = step(img, { kind: 'resize', size: M });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(`qemu-img: ${r.error.message}`).toBe(q.stderr.trim());
    // QEMU leaves the grown L1 table (32 entries) and the old size.
    expect(r.image.header.l1Size).toBe(32);
    expect(r.image.header.size).toBe(32n * K);
    expectSameFile(hostBytes(r.image.file), new Uint8Array(await readFile(path)), 'v2 backing');
  });
});

describe('L1 growth rule', () => {
  it('exact for resize, 1.5x (rounded as (n*3+1)/2) for a write past l1_size', () => {
    // Values of qcow2_grow_l1_table's loop: 0 → 1, 1 → 2, 2 → 3, 3 → 5, 5 → 8, 8 → 12, 12 → 18.
    expect(grownL1Size(0, 1n, false)).toBe(1n);
    expect(grownL1Size(1, 2n, false)).toBe(2n);
    expect(grownL1Size(2, 4n, false)).toBe(5n);
    expect(grownL1Size(8, 13n, false)).toBe(18n);
    expect(grownL1Size(8, 13n, true)).toBe(13n);
  });

  // qemu-io `write -b` writes the VM state area, which starts at the first L1 entry past the disk
  // (qcow2_vm_state_offset): get_cluster_table finds the L1 index past l1_size and grows the table by
  // the 1.5x rule. The model's clusterTable must do the same (guestWrite at that guest offset is what
  // qcow2_save_vmstate does).
  for (const [size, vmLength] of [[256n * K, 4096], [1920n * K, 100 * 1024]] as const) {
    it(`a VM-state write past l1_size (512-byte clusters, ${size / K} KiB disk) grows the L1 like qemu-io write -b`, async () => {
      const path = join(dir, `vmstate-${counter++}.qcow2`);
      await qemuImgCreate(path, String(size), { cluster_size: '512' });
      const created = new Uint8Array(await readFile(path));
      await qemuIo(path, [`write -b -P 9 0 ${vmLength}`]);
      const img = createImage({ size, clusterSize: 512 }).image;
      expect(firstDiff(hostBytes(img.file), created)).toBe(-1);
      const tx = beginTx(img);
      const perL1 = 512n * 64n;
      const l1Before = img.header.l1Size;
      guestWrite(tx, BigInt(l1Before) * perL1, new Uint8Array(vmLength).fill(9));
      expect(tx.img.header.l1Size).toBe(Number(grownL1Size(l1Before, BigInt(l1Before) + 1n, false)));
      expectSameFile(hostBytes(tx.img.file), new Uint8Array(await readFile(path)), 'vmstate');
      expect(checkInvariants(hostBytes(tx.img.file))).toEqual([]);
    });
  }
});

describe('resize: I/O order', () => {
  it('grow: L1 table written and flushed before the header switches to it; the size written last, flushed', () => {
    const img = createImage({ size: 64n * K, clusterSize: 512 }).image;
    const r = step(img, { kind: 'resize', size: 4n * M });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const io = r.io;
    const kinds = io.map((o) => (o.kind === 'write' ? `w${o.offset}+${o.bytes.length}` : o.kind));
    const l1Write = io.findIndex((o) => o.kind === 'write' && o.offset === r.image.header.l1TableOffset);
    const headerL1 = kinds.indexOf('w36+12');
    const headerSize = kinds.indexOf('w24+8');
    expect(l1Write).toBeGreaterThan(0);
    expect(io[l1Write - 1]!.kind).toBe('flush'); // refcounts of the new table first
    expect(io[l1Write + 1]!.kind).toBe('flush');
    expect(headerL1).toBe(l1Write + 2);
    expect(io[headerL1 + 1]!.kind).toBe('flush');
    expect(headerSize).toBe(io.length - 2);
    expect(io[headerSize - 1]!.kind).toBe('flush');
    expect(io[io.length - 1]!.kind).toBe('flush');
  });

  it('shrink: the tail is cut after a flush, the size written last', () => {
    let img = createImage({ size: 4n * M, clusterSize: 512 }).image;
    const w = step(img, { kind: 'write', offset: 3n * M, data: new Uint8Array(65536).fill(1) });
    expect(w.ok).toBe(true);
    if (!w.ok) return;
    img = { ...w.image, session: freshSession() };
    const r = step(img, { kind: 'resize', size: M });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const t = r.io.findIndex((o) => o.kind === 'truncate');
    expect(t).toBeGreaterThan(0);
    expect(r.io[t - 1]!.kind).toBe('flush');
    expect(r.image.file.length).toBeLessThan(img.file.length);
    const last = r.io[r.io.length - 2]!;
    expect(last.kind === 'write' && last.offset).toBe(24n);
  });
});

describe('resize interleaved with writes, zeroes and discards: model reads equal the raw-disk oracle', () => {
  type AbstractOp =
    | { readonly kind: 'write'; readonly at: number; readonly length: number; readonly pattern: number }
    | { readonly kind: 'zero'; readonly at: number; readonly length: number; readonly unmap: boolean }
    | { readonly kind: 'discard'; readonly at: number; readonly length: number }
    | { readonly kind: 'resize'; readonly sectors: number }
    | { readonly kind: 'flush' };

  const opArb: fc.Arbitrary<AbstractOp> = fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), length: fc.oneof(fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 1, max: 70000 })), pattern: fc.integer({ min: 1, max: 255 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('zero' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), length: fc.integer({ min: 1, max: 200000 }), unmap: fc.boolean() }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('discard' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), length: fc.integer({ min: 1, max: 200000 }) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('resize' as const), sectors: fc.oneof(fc.integer({ min: 1, max: 256 }), fc.integer({ min: 1, max: 8192 })) }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  );

  const configArb = fc.record({
    clusterBits: fc.constantFrom(9, 10, 12, 14, 16),
    version: fc.constantFrom(2 as const, 3 as const),
    extendedL2: fc.boolean(),
    refcountBits: fc.constantFrom(1, 2, 4, 8, 16, 64),
    sectors: fc.integer({ min: 1, max: 4096 }),
    backingSectors: fc.option(fc.integer({ min: 1, max: 8192 }), { nil: undefined }),
  });

  /** A concrete op for the current disk size (ranges clipped inside it). */
  function concrete(a: AbstractOp, size: bigint): Op {
    const offsetOf = (at: number): bigint => (size === 0n ? 0n : BigInt(Math.floor(at * Number(size - 1n))));
    switch (a.kind) {
      case 'write': {
        const offset = offsetOf(a.at);
        const n = Math.min(a.length, Number(size - offset));
        return { kind: 'write', offset, data: new Uint8Array(n).fill(a.pattern) };
      }
      case 'zero': {
        const offset = offsetOf(a.at);
        return { kind: 'writeZeroes', offset, length: BigInt(Math.min(a.length, Number(size - offset))), unmap: a.unmap };
      }
      case 'discard': {
        const offset = offsetOf(a.at);
        return { kind: 'discard', offset, length: BigInt(Math.min(a.length, Number(size - offset))) };
      }
      case 'resize':
        return { kind: 'resize', size: BigInt(a.sectors) * 512n };
      case 'flush':
        return { kind: 'flush' };
    }
  }

  it('random configurations and op lists (fixed seed)', () => {
    fc.assert(
      fc.property(configArb, fc.array(opArb, { minLength: 1, maxLength: 25 }), (cfg, ops) => {
        const extendedL2 = cfg.extendedL2 && cfg.version === 3 && cfg.clusterBits >= 14;
        const size = BigInt(cfg.sectors) * 512n;
        const clusterSize = 1 << cfg.clusterBits;
        const backingBytes = cfg.backingSectors === undefined ? undefined
          : Uint8Array.from({ length: cfg.backingSectors * 512 }, (_, i) => ((i >> 9) * 7 + 3) & 255);
        let img = createImage({
          size,
          clusterSize,
          compat: cfg.version === 2 ? '0.10' : '1.1',
          refcountBits: cfg.version === 2 ? 16 : cfg.refcountBits,
          extendedL2,
          ...(backingBytes !== undefined ? { backingFile: 'b.raw', backingFmt: 'raw' } : {}),
        }).image;
        if (backingBytes !== undefined) img = { ...img, backing: rawBackingSource(backingBytes) };
        const oracle = new RawDisk({
          size,
          version: cfg.version,
          clusterSize: BigInt(clusterSize),
          subclusterSize: BigInt(clusterSize / (extendedL2 ? 32 : 1)),
          ...(backingBytes !== undefined ? { backing: rawBackingSource(backingBytes) } : {}),
        });
        for (const a of ops) {
          const op = concrete(a, img.header.size);
          const r = step(img, op);
          if (!r.ok) {
            // The one refusal this op mix can meet: v2 + a backing file longer than the old size.
            expect(op.kind, r.error.message).toBe('resize');
            expect(r.error.message).toBe('Failed to zero out new clusters: Operation not supported');
            expect(cfg.version).toBe(2);
            img = r.image;
            continue;
          }
          img = op.kind === 'resize' ? { ...r.image, session: freshSession() } : r.image;
          oracle.apply(op);
          expect(img.header.size).toBe(oracle.size);
          const d = firstDiff(modelContent(img), oracle.read(0n, Number(oracle.size)));
          expect(d, `after ${op.kind} ${JSON.stringify(a)}`).toBe(-1);
        }
        expect(checkInvariants(hostBytes(img.file))).toEqual([]);
      }),
      { numRuns: 80 },
    );
  }, 600_000);
});
