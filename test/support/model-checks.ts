/**
 * The system under test and the oracle of the model property, and the checks run after every
 * command: reads against the oracle, purity of `step` (page fingerprints), I/O replay, header changes
 * and the dirty bit, refusals.
 */
import fc from 'fast-check';
import { decodeHeader, IncompatibleFeatureMask } from '../../generated/qcow2.ts';
import { headerStateFrom } from '../../src/model/header.ts';
import { applyHostIO, readHost, type HostFile } from '../../src/model/host-file.ts';
import { hostTargetOf, type HostIO, type HostTarget } from '../../src/model/host-io.ts';
import type { BackingSource, HeaderState, Image } from '../../src/model/image.ts';
import { type Op } from '../../src/model/ops.ts';
import { readGuest, readGuestInto } from '../../src/model/read.ts';
import { step, type StepResult } from '../../src/model/step.ts';
import { RawDisk, RawDiskError } from '../../src/oracle/raw-disk.ts';
import { type Config, KiB, MiB, type Geo } from './model-configs.ts';
import { activeL2Tables, type ExpectedRefusal, compressedDirtyRule } from './model-qemu-rules.ts';
import { sizeOf, place } from './model-cmds.ts';
import { reload } from './model-commands.ts';

/** How the system steps an image; the model's `step`, or a broken stand-in. */
export type StepFn = (image: Image, op: Op) => StepResult;

export interface Real {
  image: Image;
  readonly cfg: Config;
  /** The initial geometry (the current size is the oracle's, `model.disk.size`). */
  readonly geo: Geo;
  readonly system: StepFn;
  /** Guest ranges touched so far, for the end-of-run comparisons. */
  readonly touched: { offset: bigint; length: bigint }[];
  /**
   * Every page leaf (a page or a chunked page, src/model/chunked-page.ts) seen in an image of this
   * run, with where it was seen and the hash of its bytes then.
   */
  readonly seenPages: Map<object, { readonly file: HostFile; readonly index: number; readonly hash: number }>;
  /** The backing source given to the model (also used to reload the image). */
  readonly backing?: BackingSource;
  steps: number;
  /** What the run's resizes and snapshot applies met (for the coverage checks), by outcome. */
  readonly stats: Map<string, number>;
}

export interface Model {
  readonly disk: RawDisk;
  /** The initial geometry of the configuration (cluster size, version, …). */
  readonly geo: Geo;
  /** The virtual size each existing snapshot was created at (what an apply resizes to). */
  readonly snapshotSizes: Map<string, bigint>;
  /**
   * Set when the system marked the image corrupt, as QEMU does on a fatal corruption (docs/format/overlap-checks.md#corruption-signalling):
   * QEMU refuses every later request, so no further command runs.
   */
  corrupt?: boolean;
}

/** A command; toString prints it so that the counterexample is the command list. */
export type Cmd = fc.Command<Model, Real>;

// ---- page fingerprints (purity) ---------------------------------------------------------------

export function pageHash(p: Uint8Array): number {
  let h = 0x811c9dc5 ^ p.length;
  if (p.byteOffset % 4 === 0 && p.length % 4 === 0) {
    const w = new Int32Array(p.buffer, p.byteOffset, p.length / 4);
    for (let i = 0; i < w.length; i++) h = Math.imul(h ^ w[i]!, 0x01000193) ^ (h >>> 15);
  } else {
    for (let i = 0; i < p.length; i++) h = Math.imul(h ^ p[i]!, 0x01000193) ^ (h >>> 15);
  }
  return h;
}

/** The host files of an image with the HostIO target addressing each: the qcow2 file and the data file. */
export function filesOf(img: Image): { readonly target: HostTarget; readonly file: HostFile }[] {
  return img.dataFile !== undefined ? [{ target: 'image', file: img.file }, { target: 'data', file: img.dataFile }] : [{ target: 'image', file: img.file }];
}

/** Page `i` of `file` as it reads now: a chunked page's chunks are read, not a cached copy. */
export function pageBytes(file: HostFile, i: number): Uint8Array {
  return readHost(file, BigInt(i) * 4096n, 4096);
}

/** Records the hash of every page leaf of the image's files not seen before (leaves are immutable by contract). */
export function notePages(real: Real, img: Image): void {
  for (const { file } of filesOf(img)) {
    for (const [i, leaf] of file.pages.leaves()) if (!real.seenPages.has(leaf)) real.seenPages.set(leaf, { file, index: i, hash: pageHash(pageBytes(file, i)) });
  }
}

export function checkPage(real: Real, file: HostFile, idx: number, what: string): void {
  const leaf = file.pages.leaf(idx);
  const seen = leaf === undefined ? undefined : real.seenPages.get(leaf);
  if (seen !== undefined && pageHash(pageBytes(file, idx)) !== seen.hash) throw new Error(`${what}: page ${idx} (host offset 0x${(idx * 4096).toString(16)}) was mutated in place`);
}

export interface FileFingerprint {
  readonly target: HostTarget;
  readonly file: HostFile;
  readonly pages: HostFile['pages'];
  readonly length: bigint;
}

export interface Fingerprint {
  readonly image: Image;
  readonly files: readonly FileFingerprint[];
  readonly header: string;
  readonly session: string;
}

export const show = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x));

export function fingerprint(img: Image): Fingerprint {
  return { image: img, files: filesOf(img).map(({ target, file }) => ({ target, file, pages: file.pages, length: file.length })), header: show(img.header), session: show(img.session) };
}

/**
 * The input of a step is unchanged: same objects (qcow2 file and data file), same header and session,
 * and the pages `io` touched (in the file each op addresses) hash the same.
 */
export function checkUnchanged(real: Real, fp: Fingerprint, io: readonly HostIO[], what: string): void {
  const img = fp.image;
  const now = filesOf(img);
  if (now.length !== fp.files.length) throw new Error(`${what}: the previous image's data file was ${now.length > fp.files.length ? 'added' : 'removed'}`);
  for (const [k, f] of fp.files.entries()) {
    const name = f.target === 'data' ? 'data file' : 'file';
    const cur = now[k]!.file;
    if (cur !== f.file) throw new Error(`${what}: the previous image's ${name} object was replaced`);
    if (cur.pages !== f.pages) throw new Error(`${what}: the previous image's ${name} pages map was replaced`);
    if (cur.length !== f.length) throw new Error(`${what}: the previous image's ${name} length changed ${f.length} → ${cur.length}`);
    checkFilePages(real, cur, f.target, io, `${what} (${name})`);
  }
  if (show(img.header) !== fp.header) throw new Error(`${what}: the previous image's header changed: ${fp.header} → ${show(img.header)}`);
  if (show(img.session) !== fp.session) throw new Error(`${what}: the previous image's session changed`);
}

/** The pages of `file` still hash as when first seen: all of them when few, else those `io` addressed to `target` and a sample. */
export function checkFilePages(real: Real, file: HostFile, target: HostTarget, io: readonly HostIO[], what: string): void {
  const pages = file.pages;
  if (pages.size <= 256) {
    for (const [i] of pages.leaves()) checkPage(real, file, i, what);
    return;
  }
  // Large files: the pages this step wrote to (where an in-place write would land), plus a sample.
  const check = (i: number): void => checkPage(real, file, i, what);
  for (const o of io) {
    if (o.kind === 'flush') continue;
    if (o.kind === 'truncate') continue;
    if (hostTargetOf(o) !== target) continue;
    const len = o.kind === 'write' ? BigInt(o.bytes.length) : o.length;
    if (len <= 0n) continue;
    const first = Number(o.offset >> 12n);
    const last = Number((o.offset + len - 1n) >> 12n);
    if (last - first > 4096) {
      for (const [i] of pages.leaves()) if (i >= first && i <= last) check(i);
    } else {
      for (let i = first; i <= last; i++) check(i);
    }
  }
  check(0);
  const keys = [...pages.leaves()].map(([i]) => i);
  for (let k = 0; k < 16; k++) check(keys[(real.steps * 7919 + k * 104729) % keys.length]!);
}

/** Two host files have the same length and bytes (absent pages are zeros). */
export function sameFile(a: HostFile, b: HostFile): string | undefined {
  if (a.length !== b.length) return `lengths differ: ${a.length} vs ${b.length}`;
  if (a.pages === b.pages && a.base === b.base) return undefined;
  const zero = new Uint8Array(4096);
  const keys = new Set<number>([...a.pages.keys(), ...b.pages.keys()]);
  for (const k of keys) {
    const pa = a.pages.get(k) ?? zero;
    const pb = b.pages.get(k) ?? zero;
    if (pa === pb) continue;
    if (!Buffer.from(pa.buffer, pa.byteOffset, pa.length).equals(Buffer.from(pb.buffer, pb.byteOffset, pb.length))) {
      let j = 0;
      while (pa[j] === pb[j]) j++;
      return `bytes differ at host offset 0x${(k * 4096 + j).toString(16)}`;
    }
  }
  return undefined;
}

/**
 * `applyHostIO(previous, io)` gives the new image's files: the qcow2 file from the ops addressed to it,
 * the data file from those with `target: 'data'`; an image without a data file gets no such ops and
 * none appears. Returns what differs, or undefined.
 */
export function replayDiff(prev: Image, io: readonly HostIO[], next: Image): string | undefined {
  const diff = sameFile(applyHostIO(prev.file, io), next.file);
  if (diff !== undefined) return `qcow2 file: ${diff}`;
  if (prev.dataFile === undefined) {
    if (next.dataFile !== undefined) return 'a data file appeared';
    const stray = io.find((o) => hostTargetOf(o) === 'data');
    return stray !== undefined ? `a ${stray.kind} addressed to a data file the image does not have` : undefined;
  }
  if (next.dataFile === undefined) return 'the data file disappeared';
  const d = sameFile(applyHostIO(prev.dataFile, io, 'data'), next.dataFile);
  return d !== undefined ? `data file: ${d}` : undefined;
}

// ---- read comparisons -------------------------------------------------------------------------

/** Compares two readers over [from, to): whole when small, else edges and sampled windows. */
export function compareReads(
  what: string,
  size: bigint,
  from: bigint,
  to: bigint,
  a: (o: bigint, n: number) => Uint8Array,
  b: (o: bigint, n: number) => Uint8Array,
): void {
  if (from < 0n) from = 0n;
  if (to > size) to = size;
  if (to <= from) return;
  const windows: [bigint, bigint][] = [];
  const WHOLE = 4n * MiB;
  if (to - from <= WHOLE) {
    windows.push([from, to]);
  } else {
    const edge = 2n * MiB;
    windows.push([from, from + edge], [to - edge, to]);
    for (let k = 1n; k <= 6n; k++) {
      const at = from + ((to - from) * k) / 7n;
      windows.push([at, at + 64n * KiB < to ? at + 64n * KiB : to]);
    }
  }
  for (const [f, t] of windows) {
    const n = Number(t - f);
    const x = a(f, n);
    const y = b(f, n);
    if (!Buffer.from(x.buffer, x.byteOffset, x.length).equals(Buffer.from(y.buffer, y.byteOffset, y.length))) {
      let j = 0;
      while (x[j] === y[j]) j++;
      throw new Error(`${what}: reads differ at guest offset ${f + BigInt(j)} (0x${(f + BigInt(j)).toString(16)}): image ${x[j]}, oracle ${y[j]} (compared [${f}, ${t}))`);
    }
  }
}

/** readGuestInto at an odd position of a buffer filled with 0xa5, returning the bytes it stored. */
export function readIntoGarbage(img: Image, offset: bigint, length: number): Uint8Array {
  const buf = new Uint8Array(length + 8).fill(0xa5);
  readGuestInto(img, offset, length, buf, 3);
  return buf.subarray(3, 3 + length);
}

export function checkAround(model: Model, real: Real, offset: bigint, length: bigint, what: string): void {
  const cs = real.geo.cs;
  compareReads(what, model.disk.size, offset - cs, offset + length + cs, (o, n) => readGuest(real.image, o, n), (o, n) => model.disk.read(o, n));
  // The same reads into a reused buffer (what convert streams through): every byte must be stored,
  // zeros included, so the buffer starts full of garbage.
  compareReads(`${what} (readGuestInto)`, model.disk.size, offset - cs, offset + length + cs, (o, n) => readIntoGarbage(real.image, o, n), (o, n) => model.disk.read(o, n));
  if (real.cfg.dataFile === 'raw') checkRawDataFile(model, real, offset - cs, offset + length + cs, what);
}

/**
 * data_file_raw promises that the data file is a valid raw image of the disk (QEMU: "the data file
 * stays consistent as a raw image"): with every cluster preallocated at host offset == guest offset,
 * its bytes over [from, to) equal the oracle's, whatever the mapping says.
 */
export function checkRawDataFile(model: Model, real: Real, from: bigint, to: bigint, what: string): void {
  const df = real.image.dataFile;
  if (df === undefined) throw new Error(`${what}: the data_file_raw image has no data file`);
  compareReads(`${what}, data_file_raw: the data file read as a raw image`, model.disk.size, from, to, (o, n) => readHost(df, o, n), (o, n) => model.disk.read(o, n));
}

// ---- the header and the dirty bit -------------------------------------------------------------

export const INCOMPAT_DIRTY_BIT = IncompatibleFeatureMask.DIRTY;

export const isDirtyHeader = (h: HeaderState): boolean => (h.incompatibleFeatures & INCOMPAT_DIRTY_BIT) !== 0n;

/**
 * What a step may do to the dirty bit (incompatible bit 0) of an image with lazy refcounts, decided by
 * the command from QEMU's rules (not from the model): 'set' — a guest write that links new clusters
 * into an L2 table (qcow2_alloc_cluster_link_l2 calls qcow2_mark_dirty), so the bit is set after it;
 * 'keep' — the bit stays as it was (in-place writes, zero writes that cannot fall back to a write,
 * discards, clusters written compressed, snapshots, resizes, flushes [7.2,
 * test/qemu/model-lazy-refcounts.test.ts]); 'may-set' — a write_zeroes the block layer may turn into an
 * explicit write of zeros (unaligned to subclusters, or a partial cluster with extended L2), which
 * links clusters like a write. A "compressed" write of data that does not compress is a normal write
 * (compressedDirtyRule).
 * Without lazy refcounts the bit is never set; nothing but a clean close ever clears it.
 */
export type DirtyRule = 'set' | 'keep' | 'may-set';

/**
 * The header of a successful step (or of the image a refused one leaves behind) against the previous
 * one: the feature fields (but the dirty bit), version, geometry, backing file and compression type
 * never change; guest writes, zeroes, discards, compressed writes and flushes change nothing but the
 * refcount table's place and size and the dirty bit (`dirty`, see DirtyRule). When the step sets the
 * dirty bit, its io holds qcow2_mark_dirty: an 8-byte write of incompatible_features at offset 72,
 * directly followed by a flush — for a guest write before any write into an L2 table the image
 * already had.
 */
export function checkHeaderChange(real: Real, prev: Image, next: Image, op: Op, io: readonly HostIO[], dirty: DirtyRule, what: string): void {
  const a = prev.header;
  const b = next.header;
  const fixed: (keyof HeaderState)[] = ['version', 'backingFileOffset', 'backingFileSize', 'clusterBits', 'cryptMethod', 'compatibleFeatures', 'autoclearFeatures', 'refcountOrder', 'headerLength', 'compressionType'];
  if (op.kind === 'write' || op.kind === 'writeZeroes' || op.kind === 'discard' || op.kind === 'writeCompressed' || op.kind === 'flush') {
    fixed.push('size', 'l1Size', 'l1TableOffset', 'nbSnapshots', 'snapshotsOffset');
  }
  for (const k of fixed) if (a[k] !== b[k]) throw new Error(`${what}: header field ${k} changed ${show(a[k])} → ${show(b[k])}`);
  const changed = a.incompatibleFeatures ^ b.incompatibleFeatures;
  if ((changed & ~INCOMPAT_DIRTY_BIT) !== 0n) throw new Error(`${what}: incompatible features changed 0x${a.incompatibleFeatures.toString(16)} → 0x${b.incompatibleFeatures.toString(16)}`);
  const was = isDirtyHeader(a);
  const is = isDirtyHeader(b);
  if (was && !is) throw new Error(`${what}: the dirty bit was cleared (only a clean close may clear it)`);
  if (!real.geo.lazy) {
    if (is) throw new Error(`${what}: the dirty bit is set on an image without lazy refcounts`);
    return;
  }
  if (dirty === 'set' && !is) throw new Error(`${what}: an allocating write (it links new clusters into an L2 table) left the dirty bit of a lazy-refcounts image clear`);
  if (dirty === 'keep' && !was && is) throw new Error(`${what}: the dirty bit was set by an op that links no new cluster into an L2 table`);
  if (was || !is) return;
  const at = io.findIndex((o) => o.kind === 'write' && hostTargetOf(o) === 'image' && o.offset === 72n && o.bytes.length === 8);
  const w = io[at];
  if (w === undefined || w.kind !== 'write') throw new Error(`${what}: the dirty bit was set without an 8-byte write of incompatible_features at offset 72`);
  if (new DataView(w.bytes.buffer, w.bytes.byteOffset, 8).getBigUint64(0) !== b.incompatibleFeatures) throw new Error(`${what}: the dirty-bit write does not write the new incompatible_features`);
  if (io[at + 1]?.kind !== 'flush') throw new Error(`${what}: the dirty-bit write is not followed by a flush`);
  // A guest write updates existing L2 tables only to link clusters; other ops (a write_zeroes whose
  // aligned part zeroes entries before its unaligned part falls back to a write) may do so earlier.
  if (op.kind !== 'write') return;
  const tables = activeL2Tables(prev);
  const cs = 1n << BigInt(a.clusterBits);
  const early = io.slice(0, at).find((o) => o.kind === 'write' && hostTargetOf(o) === 'image' && tables.has((o.offset / cs) * cs));
  if (early !== undefined && early.kind === 'write') throw new Error(`${what}: an L2 table (0x${((early.offset / cs) * cs).toString(16)}) was written before the dirty bit`);
}

/** The header the image's file holds (decoded from its first cluster); a decoding error names `what`. */
export function fileHeader(img: Image, what: string): HeaderState {
  try {
    return headerStateFrom(decodeHeader(readHost(img.file, 0n, 1 << img.header.clusterBits)));
  } catch (e) {
    throw new Error(`${what}: the image's header does not decode: ${(e as Error).message}`);
  }
}

// ---- stepping ---------------------------------------------------------------------------------

/**
 * Steps the system with `op` and checks purity, io completeness (both files) and the header (also
 * against the previous one: checkHeaderChange with `dirty`); on success applies `op` to the oracle
 * and installs the new image. Returns the failed result instead when the system refuses the op (the
 * caller decides whether that was expected). `refusal`: QEMU refuses this op, so success is an error
 * (thrown before the oracle sees the op).
 */
export function stepChecked(model: Model, real: Real, op: Op, what: string, refusal?: ExpectedRefusal, dirty: DirtyRule = 'keep'): StepResult {
  const prev = real.image;
  const fp = fingerprint(prev);
  const r = real.system(prev, op);
  real.steps++;
  checkUnchanged(real, fp, r.ok ? r.io : [], what);
  if (!r.ok) return r;
  const diff = replayDiff(prev, r.io, r.image);
  if (diff !== undefined) throw new Error(`${what}: applyHostIO(previous files, io) is not the new image: ${diff}`);
  const decoded = fileHeader(r.image, what);
  if (show(decoded) !== show(r.image.header)) throw new Error(`${what}: the image header ${show(r.image.header)} is not what the file says: ${show(decoded)}`);
  if (op.kind !== 'resize' && op.kind !== 'snapshotApply' && r.image.header.size !== prev.header.size) throw new Error(`${what}: the virtual size changed`);
  if (refusal !== undefined) throw new Error(`${what}: accepted; QEMU refuses it with '${refusal.message.source}'`);
  checkHeaderChange(real, prev, r.image, op, r.io, dirty, what);
  if (real.geo.lazy && !isDirtyHeader(prev.header) && isDirtyHeader(r.image.header)) count(real, `lazy: ${op.kind} set the dirty bit`);
  try {
    model.disk.apply(op);
  } catch (e) {
    if (e instanceof RawDiskError) throw new Error(`${what}: accepted an op beyond the end of the disk that the oracle refuses (${e.message})`);
    throw e;
  }
  if (r.image.header.size !== model.disk.size) throw new Error(`${what}: the virtual size is ${r.image.header.size}, the oracle's ${model.disk.size}`);
  notePages(real, r.image);
  real.image = r.image;
  return r;
}

/**
 * A refusal that must change nothing (QEMU refuses before touching the image): the expected code,
 * errno and message, no io, and the holder keeps the previous image object.
 */
export function expectRefusedUnchanged(real: Real, prev: Image, r: StepResult, expected: ExpectedRefusal & { readonly errno: number }, what: string): void {
  if (r.ok) throw new Error(`${what}: accepted; QEMU refuses it with '${expected.message.source}'`);
  if (r.error.code !== expected.code || r.error.errno !== expected.errno || !expected.message.test(r.error.message)) {
    throw new Error(`${what}: refused with ${r.error.code} (errno ${r.error.errno}): ${r.error.message}; expected ${expected.code} (errno ${expected.errno}): ${expected.message.source}`);
  }
  if (r.image !== prev || r.io.length > 0 || real.image !== prev) throw new Error(`${what}: refused, but the image changed (${r.io.length} io)`);
  count(real, `refused unchanged: ${expected.label}`);
}

export function expectOk(r: StepResult, what: string): void {
  if (!r.ok) throw new Error(`${what}: refused with ${r.error.code}: ${r.error.message}`);
}


/*
 * Where a command lands after the size changed. fc.commands generates every command up front, against
 * the initial size (`Geo.size`); a resize or a snapshot apply moves the end of the disk later. Each
 * range command therefore keeps the offset and length it was generated with (what it prints) and is
 * placed on the current disk when it runs, by `place`:
 * - while the size is the initial one, the range is used as generated (a sequence without a size
 *   change runs exactly as printed);
 * - a range generated `fromEnd` (drawn only in the last two clusters of the initial disk) keeps its
 *   distance in clusters from the last cluster and its offset inside the cluster, so the partial last
 *   cluster stays the partial last cluster after a resize;
 * - any other range keeps its offset when that is inside the disk, else moves to cluster
 *   (index mod the current number of clusters) at the same offset inside the cluster;
 * - the offset is clamped to the last byte; a range that reached the initial end reaches the current
 *   end (one not `fromEnd` keeps its length: when the end is farther away it moves to end there),
 *   any other range is cut at it.
 * A placed range that differs from the printed one is printed with it in every failure message.
 */

export function count(real: Real, key: string): void {
  real.stats.set(key, (real.stats.get(key) ?? 0) + 1);
}

/**
 * A refused step that QEMU also refuses: the oracle is not applied; the model either returned the
 * image unchanged with no io, or (a grow whose zero-fill failed after the L1 table grew) an image
 * with the same virtual size whose io replays to it, which the holder then keeps — in both cases
 * every read is as before (compared around the end and on the whole disk, sampled).
 */
export function acceptRefusal(model: Model, real: Real, prev: Image, op: Op, r: StepResult, expected: ExpectedRefusal, what: string): void {
  if (r.ok) throw new Error(`${what}: accepted; QEMU refuses it with '${expected.message.source}'`);
  if (r.error.code !== expected.code || !expected.message.test(r.error.message)) {
    throw new Error(`${what}: refused with ${r.error.code}: ${r.error.message}; expected ${expected.code}: ${expected.message.source}`);
  }
  if (r.image === prev) {
    if (r.io.length > 0) throw new Error(`${what}: refused with the image unchanged but ${r.io.length} io`);
    return;
  }
  const diff = replayDiff(prev, r.io, r.image);
  if (diff !== undefined) throw new Error(`${what}: refused; applyHostIO(previous files, io) is not the image left behind: ${diff}`);
  if (r.image.header.size !== prev.header.size) throw new Error(`${what}: refused, but the virtual size changed to ${r.image.header.size}`);
  checkHeaderChange(real, prev, r.image, op, r.io, 'keep', `${what} (refused, left changed)`);
  notePages(real, r.image);
  real.image = r.image;
  const size = sizeOf(model);
  checkAround(model, real, size - real.geo.cs, real.geo.cs, `${what} (refused, left changed)`);
  compareReads(`${what} (refused, left changed)`, size, 0n, size, (o, n) => readGuest(real.image, o, n), (o, n) => model.disk.read(o, n));
}
