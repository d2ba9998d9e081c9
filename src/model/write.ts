/**
 * Guest writes, as QEMU 7.2 performs them (block/qcow2.c qcow2_co_pwritev_part and
 * block/qcow2-cluster.c): each round maps the longest host-contiguous run it can —
 * `handle_copied` keeps clusters that may be overwritten in place (COPIED NORMAL / ZERO_ALLOC),
 * `handle_alloc` allocates new clusters for the rest (contiguous with the run when possible),
 * `calculate_l2_meta` decides the copy-on-write regions (to subcluster granularity with extended L2),
 * then the data is written, the COW regions copied, the L2 entries linked and the old clusters freed.
 *
 * Crash-safety ordering (docs/format/allocation.md#metadata-write-ordering, ARCHITECTURE.md): refcount increases and COW data are flushed
 * before the L2 entries that use them; L2 entries are flushed before refcounts of the clusters they no
 * longer point at are decreased. With lazy refcounts the first linking write marks the image dirty
 * and refcount increases are no longer ordered before the L2 entries (close.ts says why that is safe).
 *
 * External data file (incompatible bit 2, docs/format/features.md#external-data-file): guest data and COW go to the data file
 * (HostIO `target: 'data'`) at host offset == guest offset — do_alloc_cluster_offset allocates
 * nothing and takes the guest cluster's own offset — and data clusters have no refcounts; only the
 * L2 tables (and their refcounts) change in the qcow2 file.
 */
import type { L2EntryFields } from '../../generated/qcow2.ts';
import { classifyL2Entry, compressedDescriptor, l2HostOffset, type SubclusterState } from '../format/index.ts';
import { EIO, ModelError } from './errors.ts';
import { isZeroBytes } from '../codec/index.ts';
import { checkNotDirtyOnLoad, markDirty, usesLazyRefcounts } from './close.ts';
import { clusterTable, entryAt, l1l2Index, normalEntry, readL2Entry, statesOf, writeL2Entry } from './mapping.ts';
import { readGuestTx } from './read.ts';
import { allocClusters, allocClustersAt, freeClusters } from './refcount.ts';
import type { Geometry } from './image.ts';
import { type Tx, dataWrite, dataZero, geo, hostFlush, hostWrite, hostZero, withOwnedPages } from './tx.ts';

/** BDRV_REQUEST_MAX_BYTES: the largest request the block layer passes down. */
const REQUEST_MAX_BYTES = 0x7ffffe00;

interface CowRegion {
  readonly offset: number;
  readonly nbBytes: number;
}

/** QEMU's QCowL2Meta: one run of clusters whose L2 entries must be (re)linked. */
interface L2Meta {
  readonly allocOffset: bigint;
  /** Guest offset of the first cluster. */
  readonly guestCluster: bigint;
  readonly nbClusters: number;
  readonly keepOld: boolean;
  readonly cowStart: CowRegion;
  readonly cowEnd: CowRegion;
  /** m->skip_cow: handle_alloc_space zeroed the whole span before the data write, so no COW is written. */
  skipCow?: boolean;
}

/** classifyL2Entry's context per geometry (one object, not one per entry classified). */
const ctxCache = new WeakMap<Geometry, { clusterBits: number; extendedL2: boolean; externalDataFile: boolean }>();

let lastCtxGeometry: Geometry | undefined;
let lastCtx: { clusterBits: number; extendedL2: boolean; externalDataFile: boolean } | undefined;

function ctx(tx: Tx): { clusterBits: number; extendedL2: boolean; externalDataFile: boolean } {
  const g = geo(tx);
  if (g === lastCtxGeometry) return lastCtx!;
  let c = ctxCache.get(g);
  if (c === undefined) {
    c = { clusterBits: g.clusterBits, extendedL2: g.extendedL2, externalDataFile: g.externalDataFile };
    ctxCache.set(g, c);
  }
  lastCtxGeometry = g;
  lastCtx = c;
  return c;
}

/** `cluster_needs_new_alloc`: false only for COPIED NORMAL / ZERO_ALLOC clusters. */
function needsNewAlloc(tx: Tx, e: L2EntryFields): boolean {
  const c = classifyL2Entry(e, ctx(tx));
  return !((c.kind === 'normal' || c.kind === 'zero-alloc') && e.copied);
}

/**
 * `count_single_write_clusters`. `first`, when given, is entry `l2Index` as the table holds it now
 * (decoded by the caller with nothing written since).
 */
function countSingleWrite(tx: Tx, nb: number, l2Offset: bigint, l2Index: number, newAlloc: boolean, first?: L2EntryFields): number {
  const g = geo(tx);
  const e0 = first ?? readL2Entry(tx, l2Offset, l2Index);
  let expected = l2HostOffset(e0);
  let i = 0;
  for (; i < nb; i++) {
    const e = i === 0 ? e0 : readL2Entry(tx, l2Offset, l2Index + i);
    if (needsNewAlloc(tx, e) !== newAlloc) break;
    if (!newAlloc) {
      if (expected !== l2HostOffset(e)) break;
      expected += BigInt(g.clusterSize);
    }
  }
  return i;
}

const TWO_53 = 2 ** 53;

/** `v mod clusterSize` for `v` ≥ 0: exact, and without bigint temporaries below 2^53. */
function offsetInCluster(g: Geometry, v: bigint): number {
  const n = Number(v);
  return n < TWO_53 ? n % g.clusterSize : Number(v & BigInt(g.clusterSize - 1));
}

const ctz32 = (x: number): number => (x === 0 ? 32 : 31 - Math.clz32(x & -x));
const cto32 = (x: number): number => ctz32(~x >>> 0);
/** Bits [from, to) of a 32-bit mask. */
const range32 = (from: number, to: number): number => (to >= 32 ? 0xffffffff : (1 << to) - 1) & ~((1 << from) - 1);

/** `qcow2_get_subcluster_range_type`: the type at subcluster `from` and how many follow with it. */
function subclusterRange(tx: Tx, e: L2EntryFields, from: number): { type: SubclusterState; count: number } {
  const g = geo(tx);
  const type = statesOf(tx, e)[g.extendedL2 ? from : 0]!;
  if (type === 'invalid') return { type, count: 0 };
  if (!g.extendedL2 || type === 'compressed') return { type, count: g.subclusters - from };
  const alloc = (e.allocBitmap ?? 0) >>> 0;
  const zero = (e.zeroBitmap ?? 0) >>> 0;
  switch (type) {
    case 'normal':
      return { type, count: cto32((alloc | range32(0, from)) >>> 0) - from };
    case 'zero-plain':
    case 'zero-alloc':
      return { type, count: cto32((zero | range32(0, from)) >>> 0) - from };
    default:
      return { type, count: ctz32(((zero | alloc) & ~range32(0, from)) >>> 0) - from };
  }
}

/** The subcluster of byte `o` of a cluster (`o` may run past the cluster: taken modulo the subclusters). */
function scOf(g: Geometry, o: number): number {
  return Math.floor(o / (g.clusterSize / g.subclusters)) % g.subclusters;
}

/** `x` rounded up to a multiple of `a`. */
function roundUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/** `calculate_l2_meta`: the COW regions of a write of `bytes` at `guest` into clusters at `host`. */
function calculateL2Meta(tx: Tx, host: bigint, guest: bigint, bytes: number, l2Offset: bigint, keepOld: boolean, metas: L2Meta[]): void {
  const g = geo(tx);
  const cs = g.clusterSize;
  const scSize = cs / g.subclusters;
  const { l2: l2Index } = l1l2Index(tx, guest);
  const cowStartTo = offsetInCluster(g, guest);
  const cowEndFrom = cowStartTo + bytes;
  const nb = Math.ceil(cowEndFrom / cs);
  let skipCow = keepOld;
  // The first and last entries again below: nothing is written in between, so the decoded ones.
  let firstEntry: L2EntryFields | undefined;
  let lastEntry: L2EntryFields | undefined;
  for (let i = 0; i < nb; i++) {
    const e = readL2Entry(tx, l2Offset, l2Index + i);
    if (i === 0) firstEntry = e;
    if (i === nb - 1) lastEntry = e;
    let type: SubclusterState;
    if (skipCow) {
      const from = Math.max(cowStartTo, i * cs) - i * cs;
      const to = Math.min(cowEndFrom, (i + 1) * cs) - i * cs;
      const first = scOf(g, from);
      const last = scOf(g, to - 1);
      const r = subclusterRange(tx, e, first);
      type = r.type;
      if (type !== 'normal' || first + r.count <= last) skipCow = false;
    } else {
      type = statesOf(tx, e)[0]!;
    }
    if (type === 'invalid') {
      throw new ModelError('corrupt', EIO, `Invalid cluster entry found  (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${(l2Index + i).toString(16)})`);
    }
  }
  if (skipCow) return;
  firstEntry ??= readL2Entry(tx, l2Offset, l2Index);
  lastEntry ??= readL2Entry(tx, l2Offset, l2Index + nb - 1);

  const sc0 = scOf(g, cowStartTo);
  const t0 = statesOf(tx, firstEntry)[g.extendedL2 ? sc0 : 0]!;
  let cowStartFrom: number;
  if (!keepOld) {
    if (t0 === 'compressed') cowStartFrom = 0;
    else if (t0 === 'normal' || t0 === 'zero-alloc' || t0 === 'unallocated-alloc') {
      cowStartFrom = g.extendedL2 ? Math.min(sc0, ctz32((firstEntry.allocBitmap ?? 0) >>> 0)) * scSize : 0;
    } else cowStartFrom = sc0 * scSize;
  } else {
    cowStartFrom = t0 === 'normal' ? cowStartTo : sc0 * scSize;
  }

  const endInCluster = cowStartTo + bytes - 1 - (nb - 1) * cs;
  const scN = scOf(g, endInCluster);
  const tN = statesOf(tx, lastEntry)[g.extendedL2 ? scN : 0]!;
  let cowEndTo: number;
  if (!keepOld) {
    if (tN === 'compressed') cowEndTo = roundUp(cowEndFrom, cs);
    else if (tN === 'normal' || tN === 'zero-alloc' || tN === 'unallocated-alloc') {
      cowEndTo = roundUp(cowEndFrom, cs);
      if (g.extendedL2) cowEndTo -= Math.min(g.subclusters - scN - 1, Math.clz32((lastEntry.allocBitmap ?? 0) >>> 0)) * scSize;
    } else cowEndTo = roundUp(cowEndFrom, scSize);
  } else {
    cowEndTo = tN === 'normal' ? cowEndFrom : roundUp(cowEndFrom, scSize);
  }
  metas.unshift({
    allocOffset: host,
    guestCluster: guest & ~BigInt(cs - 1),
    nbClusters: nb,
    keepOld,
    cowStart: { offset: cowStartFrom, nbBytes: cowStartTo - cowStartFrom },
    cowEnd: { offset: cowEndFrom, nbBytes: cowEndTo - cowEndFrom },
  });
}

function clustersToLookAt(tx: Tx, guest: bigint, bytes: number): { nb: number; l2Index: number } {
  const g = geo(tx);
  const inCluster = offsetInCluster(g, guest);
  const { l2: l2Index } = l1l2Index(tx, guest);
  let nb = Math.ceil((inCluster + bytes) / g.clusterSize);
  nb = Math.min(nb, g.l2Entries - l2Index, Math.floor(REQUEST_MAX_BYTES / g.clusterSize));
  return { nb, l2Index };
}

/**
 * What handle_copied looked up when the cluster needs a new allocation. handle_alloc looks up the
 * same (get_cluster_table, the clusters to look at, the first entry) with nothing written in
 * between — the first get_cluster_table left the L1 entry COPIED, so the second one only reads —
 * and takes these instead of decoding them again.
 */
interface Lookup {
  readonly l2Offset: bigint;
  readonly l2Index: number;
  readonly nb: number;
  readonly first: L2EntryFields;
}

/**
 * `handle_copied`: in-place clusters at `guest`; returns the host offset and bytes, 'stop', or
 * (the cluster needs a new allocation) what it looked up, for handleAlloc.
 */
function handleCopied(tx: Tx, guest: bigint, host: bigint | undefined, bytes: number, metas: L2Meta[]): { host: bigint; bytes: number } | 'stop' | Lookup {
  const g = geo(tx);
  const inCluster = offsetInCluster(g, guest);
  const { nb, l2Index } = clustersToLookAt(tx, guest, bytes);
  const l2Offset = clusterTable(tx, guest);
  const e = readL2Entry(tx, l2Offset, l2Index);
  if (needsNewAlloc(tx, e)) return { l2Offset, l2Index, nb, first: e };
  const clusterOffset = l2HostOffset(e);
  if ((clusterOffset & BigInt(g.clusterSize - 1)) !== 0n) {
    throw new ModelError('corrupt', EIO, `${e.zero ? 'Preallocated zero' : 'Data'} cluster offset 0x${clusterOffset.toString(16)} unaligned (guest offset: 0x${guest.toString(16)})`);
  }
  if (host !== undefined && clusterOffset + BigInt(inCluster) !== host) return 'stop';
  const keep = countSingleWrite(tx, nb, l2Offset, l2Index, false, e);
  const n = Math.min(bytes, keep * g.clusterSize - inCluster);
  calculateL2Meta(tx, clusterOffset, guest, n, l2Offset, true, metas);
  return { host: clusterOffset + BigInt(inCluster), bytes: n };
}

/** `handle_alloc` + `do_alloc_cluster_offset`: new clusters at `guest`, contiguous with `host` if given. */
function handleAlloc(tx: Tx, guest: bigint, host: bigint | undefined, bytes: number, metas: L2Meta[], lookup: Lookup): { host: bigint; bytes: number } | undefined {
  const g = geo(tx);
  const cs = g.clusterSize;
  const inCluster = offsetInCluster(g, guest);
  const { l2Offset, l2Index } = lookup;
  let nb = countSingleWrite(tx, lookup.nb, l2Offset, l2Index, true, lookup.first);
  let alloc: bigint;
  if (g.externalDataFile) {
    // do_alloc_cluster_offset with a data file: no allocation, the host cluster is the guest
    // cluster itself (a run continued from `host` is contiguous by construction), nb unchanged.
    alloc = guest & ~BigInt(cs - 1);
  } else if (host === undefined) {
    alloc = allocClusters(tx, BigInt(nb) * BigInt(cs));
  } else {
    alloc = host & ~BigInt(cs - 1);
    nb = allocClustersAt(tx, alloc, nb);
  }
  if (nb === 0) return undefined;
  const requested = bytes + inCluster;
  const nbBytes = Math.min(requested, nb * cs);
  const n = Math.min(bytes, nbBytes - inCluster);
  calculateL2Meta(tx, alloc, guest, n, l2Offset, false, metas);
  return { host: alloc + BigInt(inCluster), bytes: n };
}

/** `qcow2_alloc_host_offset`: the longest host-contiguous mapping for [offset, offset+bytes). */
function allocHostOffset(tx: Tx, offset: bigint, bytes: number, metas: L2Meta[]): { host: bigint; bytes: number } {
  let start = offset;
  let remaining = bytes;
  let clusterOffset: bigint | undefined;
  let hostOffset: bigint | undefined;
  let cur = 0;
  for (;;) {
    if (hostOffset === undefined && clusterOffset !== undefined) hostOffset = clusterOffset;
    start += BigInt(cur);
    remaining -= cur;
    if (clusterOffset !== undefined) clusterOffset += BigInt(cur);
    if (remaining === 0) break;
    cur = remaining;
    const copied = handleCopied(tx, start, clusterOffset, cur, metas);
    if (copied === 'stop') break;
    if (!('first' in copied)) {
      clusterOffset = copied.host;
      cur = copied.bytes;
      continue;
    }
    const allocated = handleAlloc(tx, start, clusterOffset, cur, metas, copied);
    if (allocated === undefined) break;
    clusterOffset = allocated.host;
    cur = allocated.bytes;
  }
  if (hostOffset === undefined) throw new ModelError('corrupt', EIO, 'no host mapping found for a write');
  return { host: hostOffset, bytes: bytes - remaining };
}

/** `qcow2_free_any_cluster`: drops the reference an L2 entry held (nothing for zero/unallocated). */
export function freeAnyCluster(tx: Tx, e: L2EntryFields): void {
  const g = geo(tx);
  const c = classifyL2Entry(e, ctx(tx));
  if (c.kind === 'compressed') {
    const d = compressedDescriptor(e, g.clusterBits);
    freeClusters(tx, d.hostOffset & ~511n, BigInt((d.additionalSectors + 1) * 512));
  } else if ((c.kind === 'normal' || c.kind === 'zero-alloc') && !g.externalDataFile) {
    // QEMU: an unaligned offset is reported ("Cannot free unaligned cluster") and not freed.
    if ((c.hostOffset & BigInt(g.clusterSize - 1)) === 0n) freeClusters(tx, c.hostOffset, BigInt(g.clusterSize));
  }
}

/** Whether every byte is 0 (a plain loop: a per-byte closure was 63 % of write time, bench/README.md). */
function isAllZero(b: Uint8Array): boolean {
  return isZeroBytes(b);
}

/**
 * Whether `[offset, offset + length)` reads as zeros from the mapping alone: every subcluster is
 * unallocated without a backing file, or a zero (sub)cluster of a v3 image. A shortcut for COW: such
 * a region need not be read (a v2 image's zero flag is left to the read path, which refuses it).
 */
function readsAsZeroByMapping(tx: Tx, offset: bigint, length: number): boolean {
  if (tx.img.backing) return false;
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const scSize = g.clusterSize / g.subclusters;
  const end = offset + BigInt(length);
  for (let at = offset; at < end;) {
    const cStart = at & ~(cs - 1n);
    const stop = cStart + cs < end ? cStart + cs : end;
    const states = statesOf(tx, entryAt(tx, at).entry);
    const first = g.extendedL2 ? Math.floor(Number(at - cStart) / scSize) : 0;
    const last = g.extendedL2 ? Math.floor(Number(stop - 1n - cStart) / scSize) : 0;
    for (let i = first; i <= last; i++) {
      const st = states[i]!;
      if (st === 'unallocated-plain' || st === 'unallocated-alloc') continue;
      if ((st === 'zero-plain' || st === 'zero-alloc') && tx.img.header.version >= 3) continue;
      return false;
    }
    at = stop;
  }
  return true;
}

/** Writes guest data at `host`: into the external data file when the image has one (s->data_file). */
/** Writes guest data at `host` of the file that holds data clusters; `fresh` as hostWrite. */
function writeData(tx: Tx, host: bigint, data: Uint8Array, fresh: boolean): void {
  if (geo(tx).externalDataFile) dataWrite(tx, host, data, fresh);
  else hostWrite(tx, host, data, fresh);
}

/**
 * Writes the COW region `r` of meta `m`: the guest's current content there, at the new host place.
 * Returns whether anything was written.
 */
function copyRegion(tx: Tx, m: L2Meta, r: CowRegion): boolean {
  if (r.nbBytes === 0) return false;
  const from = m.guestCluster + BigInt(r.offset);
  const data = readsAsZeroByMapping(tx, from, r.nbBytes) ? undefined : readGuestTx(tx, from, r.nbBytes);
  const at = m.allocOffset + BigInt(r.offset);
  // QEMU zero-fills COW areas that read as zero with write_zeroes (handle_alloc_space); same bytes.
  // Both go to s->data_file: the data file when the image has one.
  if (data !== undefined && !isAllZero(data)) writeData(tx, at, data, true);
  else if (geo(tx).externalDataFile) dataZero(tx, at, BigInt(r.nbBytes));
  else hostZero(tx, at, BigInt(r.nbBytes));
  return true;
}

/**
 * Whether word 0 of `e` has a bit set — `l2EntryWords(e).word !== 0n` (format/entries.ts), term by
 * term, without building the 64-bit bigint (once per linked cluster).
 */
function wordNonZero(e: L2EntryFields): boolean {
  if (e.copied || e.compressed) return true; // bits 63, 62
  return ((e.reservedHi ?? 0) >>> 0) !== 0 || ((e.hostOffsetHi ?? 0) >>> 0) !== 0 || ((e.hostOffsetLo ?? 0) >>> 0) !== 0
    || ((e.reservedLo ?? 0) >>> 0) !== 0 || e.zero === true;
}

/**
 * QEMU's handle_alloc_space (qcow2_co_pwritev_task, before the data write): when the COW regions of
 * `m` read as zeros, the whole span from the start of the first to the end of the last — the guest
 * data's place included — is zeroed with one write_zeroes (BDRV_REQ_NO_FALLBACK) and the COW is
 * skipped (trace event qcow2_skip_cow). The same bytes as zero COW regions written after the data;
 * what differs is a crash between the two: where the cluster still reads through old metadata (a
 * data file's zero cluster rewritten in place), a sector must not show the zero fill of its end
 * without the data before it (regression: test/regressions/crash-model-zero-cow.test.ts).
 * Deviation: the model zeroes only when the whole span reads as zeros, not just the COW regions
 * (QEMU's is_zero_cow): with extended L2 the data's place can hold allocated subclusters, which
 * QEMU zeroes before rewriting them — a crash in between loses their old data
 * (docs/format/crash-consistency.md section 5).
 */
function handleAllocSpace(tx: Tx, m: L2Meta): void {
  if (m.cowStart.nbBytes === 0 && m.cowEnd.nbBytes === 0) return;
  const at = m.allocOffset + BigInt(m.cowStart.offset);
  const span = m.cowEnd.offset + m.cowEnd.nbBytes - m.cowStart.offset;
  if (!readsAsZeroByMapping(tx, m.guestCluster + BigInt(m.cowStart.offset), span)) return;
  const length = BigInt(span);
  if (geo(tx).externalDataFile) dataZero(tx, at, length);
  else hostZero(tx, at, length);
  m.skipCow = true;
}

/** `qcow2_alloc_cluster_link_l2` (with perform_cow before it). */
function linkL2(tx: Tx, m: L2Meta): void {
  const g = geo(tx);
  const cs = g.clusterSize;
  if (m.skipCow !== true) {
    copyRegion(tx, m, m.cowStart);
    copyRegion(tx, m, m.cowEnd);
  }
  // qcow2_alloc_cluster_link_l2: "Update L2 table." — with lazy refcounts the first one in a session
  // sets the dirty bit (8-byte header write + flush) before any L2 entry changes.
  if (usesLazyRefcounts(tx.img)) markDirty(tx);
  // Crash safety: new clusters' refcounts (qcow2_cache_set_dependency, only while refcounts must be
  // accurate, i.e. the image is not dirty), their COW data (perform_cow's
  // qcow2_cache_depends_on_flush) and the guest data written into them reach the disk before the
  // L2 entries. On a dirty image a refcount that lags behind its L2 entry after a crash is what the
  // repair on the next open fixes; an L2 entry ahead of its data is not. QEMU 7.2 flushes here only
  // for the first two, so with lazy refcounts an allocating write without COW may put its L2 entry
  // on disk before the data: after a crash the entry points past the end of the file or at a freed
  // cluster's old bytes, and the repair on open leaves corruptions (docs/format/crash-consistency.md).
  // The model flushes always — one fdatasync more than QEMU, the same bytes.
  hostFlush(tx);
  const l2Offset = clusterTable(tx, m.guestCluster);
  const { l2: l2Index } = l1l2Index(tx, m.guestCluster);
  const scSize = cs / g.subclusters;
  const old: L2EntryFields[] = [];
  for (let i = 0; i < m.nbClusters; i++) {
    const prev = readL2Entry(tx, l2Offset, l2Index + i);
    if (wordNonZero(prev)) old.push(prev);
    const host = m.allocOffset + BigInt(i * cs);
    let bitmaps: { alloc: number; zero: number } | undefined;
    if (g.extendedL2) {
      let alloc = (prev.allocBitmap ?? 0) >>> 0;
      let zero = (prev.zeroBitmap ?? 0) >>> 0;
      const from = Math.max(m.cowStart.offset, i * cs) - i * cs;
      const to = Math.min(m.cowEnd.offset + m.cowEnd.nbBytes, (i + 1) * cs) - i * cs;
      const first = Math.floor(from / scSize);
      const last = Math.floor((to - 1) / scSize);
      alloc = (alloc | range32(first, last + 1)) >>> 0;
      zero = (zero & ~range32(first, last + 1)) >>> 0;
      bitmaps = { alloc, zero };
    }
    writeL2Entry(tx, l2Offset, l2Index + i, normalEntry(tx, host, true, false, bitmaps));
  }
  // Crash safety: the L2 entries no longer point at the old clusters before their refcounts drop
  // (QEMU: update_refcount makes the refcount block cache depend on the L2 cache for a decrease).
  // Nothing dropped, nothing to order: QEMU issues no flush at the end of a write either.
  if (!m.keepOld && old.length > 0) {
    hostFlush(tx);
    for (const e of old) freeAnyCluster(tx, e);
  }
}

/**
 * Writes `data` at guest `offset` (any alignment and length). The caller checks the range is inside
 * the virtual disk. Extended L2 COW works at subcluster granularity; data goes to the qcow2 file, or
 * to the external data file at host offset == guest offset when the image has one. With lazy
 * refcounts the first write that links new clusters sets the dirty bit (close.ts). Throws
 * ModelError 'unsupported' for an image whose dirty bit was set when it was loaded.
 */
export function guestWrite(tx: Tx, offset: bigint, data: Uint8Array): void {
  // The model's own copy of the guest's bytes, made once: the host writes it records must not
  // change when the caller reuses its buffer (a write-back driver issues them later), and the file
  // keeps its whole pages as views of it instead of copying them again.
  const own = data.slice();
  withOwnedPages(tx, () => writeGuest(tx, offset, own));
}

function writeGuest(tx: Tx, offset: bigint, data: Uint8Array): void {
  checkNotDirtyOnLoad(tx, 'write');
  let pos = 0;
  // The chunks of one request overlap in QEMU 7.2: qcow2_co_pwritev_part allocates a chunk under
  // s->lock and hands its data write, COW and L2 update (qcow2_handle_l2meta, which frees the
  // clusters the chunk replaced) to an AIO task, which needs s->lock again to link. The request's
  // coroutine goes straight on to allocate the next chunk; the tasks get the lock only when it
  // waits for I/O. So the chunks allocated so far are linked — and, say, a compressed cluster one of
  // them overwrote is freed, lowering free_cluster_index — right after an allocation that wrote
  // metadata (a new or copied L2 table, a new refcount block: they flush), otherwise only after the
  // last chunk is allocated. (Reads of tables not yet cached in the QEMU process also wait for I/O;
  // the model does not track QEMU's caches: docs/layout-differences.md.) Regressions:
  // test/qemu/model-write-chunks.test.ts.
  let pending: L2Meta[] = [];
  while (pos < data.length) {
    const metas: L2Meta[] = [];
    const ioBefore = tx.io.length;
    const { host, bytes } = allocHostOffset(tx, offset + BigInt(pos), data.length - pos, metas);
    let waitedForIo = false;
    for (let i = ioBefore; i < tx.io.length && !waitedForIo; i++) waitedForIo = tx.io[i]!.kind === 'flush';
    for (const m of metas) handleAllocSpace(tx, m);
    // Regression (test/unit/model-commands.test.ts): preallocated clusters of a data-file image
    // were written into the qcow2 file at host offset = guest offset.
    writeData(tx, host, data.subarray(pos, pos + bytes), true);
    if (waitedForIo) {
      for (const m of pending) linkL2(tx, m);
      pending = [];
    }
    pending.push(...metas);
    pos += bytes;
  }
  for (const m of pending) linkL2(tx, m);
}
