/**
 * Internal snapshots, as QEMU 7.2 creates, applies and deletes them (block/qcow2-snapshot.c,
 * block/qcow2-refcount.c qcow2_update_snapshot_refcount; docs/format/snapshots.md):
 *
 * - create: a new L1 (first fit) holding a copy of the active L1; +1 on every L2 table and data
 *   cluster (compressed: every host cluster touched) the active L1 reaches, COPIED cleared where the
 *   refcount is no longer 1; then a new snapshot table in fresh clusters, one 12-byte header write,
 *   the old table freed;
 * - apply: +1 on everything the snapshot's L1 reaches, the snapshot's entries written over the active
 *   L1 in place, -1 on everything the old active L1 reached, COPIED recomputed;
 * - delete: the table rewritten without the entry, -1 on everything the snapshot reached, its L1
 *   freed, COPIED recomputed in the active tables.
 *
 * Clusters whose refcount drops to 0 here are punched out of the file (pass-discard-snapshot is on by
 * default). The snapshot table is read and written through the generated snapshot_entry codec.
 */
import { strerror } from './errno.ts';
import {
  decodeL1EntryFields, decodeSnapshotEntry, encodeL1Entry, encodeSnapshotEntry, SNAPSHOT_ENTRY_FIXED_SIZE, SnapshotEntryLayout,
  type L1EntryFields, type L2EntryFields, type SnapshotEntry,
} from '../../generated/qcow2.ts';
import { classifyL2Entry, compressedDescriptor, l1L2Offset } from '../format/index.ts';
import { QCOW_MAX_SNAPSHOT_EXTRA_DATA, QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOTS_SIZE } from '../format/index.ts';
import { bigIntToU64, u64ToBigInt } from '../format/index.ts';
import { isZeroBytes } from '../codec/index.ts';
import { checkNotDirtyOnLoad } from './close.ts';
import { EFBIG, EINVAL, ENOTSUP, ModelError } from './errors.ts';
import { discardHost, hostPage, readHost, type HostFile } from './host-file.ts';
import { PAGE_SIZE } from './page-map.ts';
import { geometryOf, type HeaderState } from './image.ts';
import { growL1Table, readL2Entry, writeL2Entry } from './mapping.ts';
import { resize } from './resize.ts';
import { allocClusters, freeClusters, getRefcount, updateRefcount } from './refcount.ts';
import { type Tx, checkpointImg, geo, hostFlush, hostRead, hostWrite, setHeaderFields, withOwnedPages } from './tx.ts';

/** QEMU's limits (QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOTS_SIZE). */
const MAX_SNAPSHOTS = QCOW_MAX_SNAPSHOTS;
const MAX_SNAPSHOTS_SIZE = QCOW_MAX_SNAPSHOTS_SIZE;

/** One snapshot as QEMU keeps it in memory (QCowSnapshot). */
export interface SnapshotState {
  readonly l1TableOffset: bigint;
  readonly l1Size: number;
  readonly id: string;
  readonly name: string;
  readonly dateSec: number;
  readonly dateNsec: number;
  readonly vmClockNsec: bigint;
  readonly vmStateSize: bigint;
  readonly diskSize: bigint;
  readonly icount: bigint;
  /** Extra data size as read (at least 24 when written back). */
  readonly extraDataSize: number;
  readonly unknownExtraData: Uint8Array;
}

/** The sizes an entry's fixed part gives, known before the rest of the entry is read. */
export interface SnapshotEntrySizes {
  /** The entry's index in the table. */
  readonly index: number;
  /** len_extra_data, len_id and len_name of the entry's fixed part. */
  readonly extraData: number;
  readonly id: number;
  readonly name: number;
  /** Bytes of the entry (40 + extra data + id + name), without the padding to the next entry. */
  readonly size: bigint;
}

/** Options of snapshotTableEntries. */
export interface SnapshotTableWalk {
  /**
   * Runs each entry's decode (e.g. to check bounds first or move error offsets into the file).
   * `sizes` come from the entry's fixed part: a guard may refuse an entry on them (QEMU's limits)
   * before `decode` reads the rest of it.
   */
  readonly guard?: <T>(pos: bigint, decode: () => T, sizes: SnapshotEntrySizes) => T;
}

/** Bytes of an entry's fixed part (l1_table_offset .. len_extra_data). */
const SNAPSHOT_FIXED_PART = SNAPSHOT_ENTRY_FIXED_SIZE;

/**
 * The entries of the snapshot table of `file` with header `h`, in order, each with its file offset
 * (8-byte aligned as QEMU places them), decoded by the generated codec from a window of the entry's
 * own size (40 + extra data + id + name; never more than the largest entry QEMU accepts, 40 + 1024
 * extra + two 64 KiB strings), zeros past the end of the file (as QEMU's bdrv_pread; an entry wholly
 * past it is one shared decoding of 40 zero bytes). Lazy: an entry is read only when the caller asks
 * for it, so a caller that stops early reads no further.
 */
export function* snapshotTableEntries(file: HostFile, h: HeaderState, opts: SnapshotTableWalk = {}): Generator<{ readonly pos: bigint; readonly entry: SnapshotEntry }> {
  const g = geometryOf(h);
  const params = { clusterBits: g.clusterBits, extendedL2: g.extendedL2, isLast: true };
  const max = BigInt(SNAPSHOT_FIXED_PART + QCOW_MAX_SNAPSHOT_EXTRA_DATA + 2 * 65536 + 8);
  const guard = opts.guard ?? (<T>(_pos: bigint, decode: () => T): T => decode());
  let pos = h.snapshotsOffset;
  let zeroEntry: SnapshotEntry | undefined;
  for (let i = 0; i < h.nbSnapshots; i++) {
    pos = (pos + 7n) & ~7n;
    if (pos >= file.length) {
      // Past the end of the file an entry is 40 zero bytes (no extra data, empty id and name):
      // decoded once and not read, so the table costs what the file holds, not what nb_snapshots
      // claims (up to 65536 entries).
      const at = pos;
      const entry = guard(at, () => (zeroEntry ??= decodeSnapshotEntry(new Uint8Array(SNAPSHOT_FIXED_PART), 0, params)),
        { index: i, extraData: 0, id: 0, name: 0, size: BigInt(SNAPSHOT_FIXED_PART) });
      yield { pos: at, entry };
      pos += BigInt(SNAPSHOT_FIXED_PART);
      continue;
    }
    // The three length fields of the fixed part (SnapshotEntryLayout) size the window; the entry
    // itself is decoded by the codec.
    const fixed = readHost(file, pos, SNAPSHOT_FIXED_PART);
    const dv = new DataView(fixed.buffer, fixed.byteOffset, fixed.byteLength);
    const extraData = dv.getUint32(SnapshotEntryLayout.lenExtraData.offset);
    const id = dv.getUint16(SnapshotEntryLayout.lenId.offset);
    const name = dv.getUint16(SnapshotEntryLayout.lenName.offset);
    const size = BigInt(SNAPSHOT_FIXED_PART + extraData + id + name);
    const at = pos;
    const entry = guard(at, () => {
      const len = size < max ? size : max;
      return decodeSnapshotEntry(readHost(file, at, Number(len)), 0, params);
    }, { index: i, extraData, id, name, size });
    yield { pos: at, entry };
    pos += size;
  }
}

/** The snapshot table of the working image, decoded with the generated codec. */
export function readSnapshots(tx: Tx): SnapshotState[] {
  const h = tx.img.header;
  const out: SnapshotState[] = [];
  for (const { entry: e } of snapshotTableEntries(tx.img.file, h)) {
    const x = e.extraData;
    out.push({
      l1TableOffset: u64ToBigInt(e.l1TableOffset),
      l1Size: e.l1Size,
      id: e.idStr,
      name: e.name,
      dateSec: e.dateSec,
      dateNsec: e.dateNsec,
      vmClockNsec: u64ToBigInt(e.vmClockNsec),
      vmStateSize: x.vmStateSizeLarge ? u64ToBigInt(x.vmStateSizeLarge) : BigInt(e.vmStateSize),
      diskSize: x.diskSize ? u64ToBigInt(x.diskSize) : h.size,
      icount: x.icount ? u64ToBigInt(x.icount) : (1n << 64n) - 1n,
      extraDataSize: e.lenExtraData,
      unknownExtraData: e.lenExtraData > 24 ? x.unknown : new Uint8Array(0),
    });
  }
  return out;
}

/** Bytes of the snapshot table QEMU computes (entries 8-aligned, no padding after the last). */
function tableSize(list: readonly SnapshotState[]): number {
  let offset = 0;
  for (const sn of list) {
    offset = Math.ceil(offset / 8) * 8;
    offset += 40 + Math.max(24, sn.extraDataSize) + sn.id.length + sn.name.length;
  }
  return offset;
}

/**
 * `qcow2_write_snapshots`: a new table in fresh clusters, the header switched, the old one freed.
 * `overlapCheck`, when given, is QEMU's qcow2_pre_write_overlap_check of the new table's range, run
 * once the clusters are allocated and flushed: when it throws, the new clusters are freed again (as
 * QEMU's fail path does) and the error propagates.
 */
export function writeSnapshots(tx: Tx, list: readonly SnapshotState[], oldSize: number,
  overlapCheck?: (offset: bigint, size: bigint) => void): void {
  const g = geo(tx);
  const size = tableSize(list);
  if (size > MAX_SNAPSHOTS_SIZE) throw new ModelError('too-big', EFBIG, strerror(EFBIG));
  const offset = allocClusters(tx, BigInt(size));
  hostFlush(tx);
  if (overlapCheck !== undefined) {
    try {
      overlapCheck(offset, BigInt(size));
    } catch (e) {
      freeClusters(tx, offset, BigInt(size));
      throw e;
    }
  }
  const parts: Uint8Array[] = list.map((sn, i) => encodeSnapshotEntry({
    l1TableOffset: bigIntToU64(sn.l1TableOffset),
    l1Size: sn.l1Size,
    lenId: sn.id.length,
    lenName: sn.name.length,
    dateSec: sn.dateSec,
    dateNsec: sn.dateNsec,
    vmClockNsec: bigIntToU64(sn.vmClockNsec),
    vmStateSize: sn.vmStateSize <= 0xffffffffn ? Number(sn.vmStateSize) : 0,
    lenExtraData: Math.max(24, sn.extraDataSize),
    extraData: {
      vmStateSizeLarge: bigIntToU64(sn.vmStateSize),
      diskSize: bigIntToU64(sn.diskSize),
      icount: bigIntToU64(sn.icount),
      unknown: sn.unknownExtraData,
    },
    idStr: sn.id,
    name: sn.name,
    ...(i + 1 < list.length ? { padding: new Uint8Array((8 - ((40 + Math.max(24, sn.extraDataSize) + sn.id.length + sn.name.length) % 8)) % 8) } : {}),
  }, { clusterBits: g.clusterBits, extendedL2: g.extendedL2, isLast: i + 1 === list.length }));
  const table = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    table.set(p, at);
    at += p.length;
  }
  if (size > 0) hostWrite(tx, offset, table);
  // Crash safety: the new table and its refcounts are stable before the header points at it.
  hostFlush(tx);
  const oldOffset = tx.img.header.snapshotsOffset;
  setHeaderFields(tx, { nbSnapshots: list.length, snapshotsOffset: list.length === 0 ? 0n : offset });
  hostFlush(tx);
  decreaseAndPunch(tx, oldOffset, BigInt(oldSize));
}

/** Drops one reference on [offset, offset+length) and punches out clusters that reach refcount 0. */
function decreaseAndPunch(tx: Tx, offset: bigint, length: bigint): void {
  if (length <= 0n) return;
  const g = geo(tx);
  updateRefcount(tx, offset, length, 1n, true);
  const first = offset >> BigInt(g.clusterBits);
  const last = (offset + length - 1n) >> BigInt(g.clusterBits);
  for (let ci = first; ci <= last; ci++) {
    if (getRefcount(tx, ci) !== 0n) continue;
    const at = ci << BigInt(g.clusterBits);
    tx.img = { ...tx.img, file: discardHost(tx.img.file, at, BigInt(g.clusterSize)) };
    tx.io.push({ kind: 'discard', offset: at, length: BigInt(g.clusterSize) });
  }
}

function readL1(tx: Tx, offset: bigint, size: number): L1EntryFields[] {
  const g = geo(tx);
  const raw = hostRead(tx, offset, size * 8);
  const out: L1EntryFields[] = [];
  // Fields only: the entries are copied and re-encoded, never asked for computed instances.
  for (let i = 0; i < size; i++) out.push(decodeL1EntryFields(raw, i * 8, { clusterBits: g.clusterBits, extendedL2: g.extendedL2 }));
  return out;
}

function encodeL1(tx: Tx, entries: readonly L1EntryFields[]): Uint8Array {
  const g = geo(tx);
  const out = new Uint8Array(entries.length * 8);
  entries.forEach((e, i) => out.set(encodeL1Entry(e, { clusterBits: g.clusterBits, extendedL2: g.extendedL2 }), i * 8));
  return out;
}

function isZeroRange(b: Uint8Array, from: number, length: number): boolean {
  for (let i = from; i < from + length; i++) if (b[i] !== 0) return false;
  return true;
}

/** Entries per block tested at once with the native zero check before looking at single entries. */
const SCAN_BLOCK_BYTES = 512;

/**
 * The indexes of the entries of the L2 table at `l2Offset` whose bytes are not all zero, as the table
 * reads now (the caller takes them before changing anything). Pages that are holes are skipped
 * whole and stored pages are scanned in place, 512 bytes at a time; the same indexes as testing
 * every entry of a copy of the table.
 */
function nonZeroEntries(tx: Tx, l2Offset: bigint): number[] {
  const g = geo(tx);
  const es = g.l2EntrySize;
  const out: number[] = [];
  if ((l2Offset & BigInt(es - 1)) !== 0n) {
    // An unaligned table (a corrupt image): entries may straddle pages, test a copy.
    const table = hostRead(tx, l2Offset, g.clusterSize);
    for (let j = 0; j < g.l2Entries; j++) if (!isZeroRange(table, j * es, es)) out.push(j);
    return out;
  }
  const file = tx.img.file;
  let j = 0;
  while (j < g.l2Entries) {
    const at = l2Offset + BigInt(j * es);
    const pageIndex = Number(at / BigInt(PAGE_SIZE));
    const within = Number(at % BigInt(PAGE_SIZE));
    const n = Math.min(g.l2Entries - j, (PAGE_SIZE - within) / es);
    const page = hostPage(file, pageIndex);
    if (page !== undefined) {
      for (let k = 0; k < n; k += SCAN_BLOCK_BYTES / es) {
        const m = Math.min(SCAN_BLOCK_BYTES / es, n - k);
        const from = within + k * es;
        if (isZeroBytes(page, from, m * es)) continue;
        for (let e = 0; e < m; e++) if (!isZeroRange(page, from + e * es, es)) out.push(j + k + e);
      }
    }
    j += n;
  }
  return out;
}

function withCopied<T extends { copied: boolean }>(e: T, copied: boolean): T {
  return { ...e, copied };
}

/**
 * `qcow2_update_snapshot_refcount`: adds `addend` (-1, 0, +1) to every L2 table and cluster reachable
 * from `l1` (the caller's copy of an L1 table at `l1Offset`), recomputes COPIED on the L2 entries and
 * returns the L1 with recomputed COPIED flags (written back by the caller when `addend >= 0`).
 */
function updateSnapshotRefcount(tx: Tx, l1: readonly L1EntryFields[], addend: -1 | 0 | 1): { l1: L1EntryFields[]; modified: boolean } {
  const g = geo(tx);
  const ctx = { clusterBits: g.clusterBits, extendedL2: g.extendedL2, externalDataFile: g.externalDataFile };
  const next = l1.map((e) => ({ ...e }));
  let modified = false;
  /** With addend +1, the L2 entries that lose COPIED: written after the refcounts they depend on. */
  const deferred: { l2Offset: bigint; j: number; entry: L2EntryFields }[] = [];
  const change = (offset: bigint, length: bigint): void => {
    if (addend === 0) return;
    if (addend > 0) {
      if (updateRefcount(tx, offset, length, 1n, false) === 'again') throw new ModelError('corrupt', EINVAL, 'refcount block missing for an allocated cluster');
    } else {
      decreaseAndPunch(tx, offset, length);
    }
  };
  for (let i = 0; i < l1.length; i++) {
    const l2Offset = l1L2Offset(l1[i]!);
    if (l2Offset === 0n && !l1[i]!.copied) continue;
    if (l2Offset !== 0n) {
      // The table's non-zero entries, found before anything changes; all-zero entries
      // (unallocated, no flags) need no work and no decode.
      for (const j of nonZeroEntries(tx, l2Offset)) {
        const old = readL2Entry(tx, l2Offset, j);
        const c = classifyL2Entry({ ...old, copied: false }, ctx);
        let refcount = 0n;
        if (c.kind === 'compressed') {
          const d = compressedDescriptor(old, g.clusterBits);
          change(d.hostOffset, BigInt(d.compressedBytes));
          refcount = 2n; // compressed clusters are never modified
        } else if (c.kind === 'normal' || c.kind === 'zero-alloc') {
          change(c.hostOffset, 1n);
          refcount = getRefcount(tx, c.hostOffset >> BigInt(g.clusterBits));
        }
        const copied = refcount === 1n;
        if (old.copied === copied) continue;
        if (addend > 0) deferred.push({ l2Offset, j, entry: withCopied(old, copied) });
        else writeL2Entry(tx, l2Offset, j, withCopied(old, copied));
      }
      change(l2Offset, 1n);
    }
    const rc = l2Offset === 0n ? 0n : getRefcount(tx, l2Offset >> BigInt(g.clusterBits));
    const copied = l2Offset !== 0n && rc === 1n;
    if (next[i]!.copied !== copied) {
      next[i] = withCopied(next[i]!, copied);
      modified = true;
    }
  }
  // Crash safety: QEMU marks each L2 table it rewrote as depending on the refcount block cache
  // (qcow2_cache_set_dependency), so the raised refcounts are on disk, with a flush, before any entry
  // loses COPIED; an entry without COPIED on a cluster whose refcount is still 1 is never on disk.
  if (deferred.length > 0) {
    hostFlush(tx);
    for (const d of deferred) writeL2Entry(tx, d.l2Offset, d.j, d.entry);
  }
  hostFlush(tx);
  return { l1: next, modified };
}

function findByIdOrName(list: readonly SnapshotState[], idOrName: string): number {
  const byId = list.findIndex((s) => s.id === idOrName);
  return byId >= 0 ? byId : list.findIndex((s) => s.name === idOrName);
}

/**
 * Internal snapshots are refused on images with an external data file, with qemu-img 7.2's messages
 * (measured [7.2]): create and apply fail with ENOTSUP; delete finds no snapshot (a data-file image
 * cannot have one). Writes to an image loaded with the dirty bit set are refused (close.ts).
 */
function checkSnapshotsSupported(tx: Tx, what: 'create' | 'apply' | 'delete', name: string): void {
  if (geo(tx).externalDataFile) {
    if (what === 'create') throw new ModelError('unsupported', ENOTSUP, `Could not create snapshot '${name}': -95 (Operation not supported)`);
    if (what === 'apply') throw new ModelError('unsupported', ENOTSUP, `Could not apply snapshot '${name}': Failed to load snapshot: Operation not supported`);
    if (findByIdOrName(readSnapshots(tx), name) < 0) throw new ModelError('unsupported', -2, `Could not delete snapshot '${name}': snapshot not found`);
  }
  checkNotDirtyOnLoad(tx, `snapshot ${what}`);
}

/**
 * Runs `step`. A ModelError it throws carries what QEMU has done by then (the image and the I/O of
 * `tx` at that point: QEMU does not roll back) and the message `message` makes of it.
 */
function failKeepingWhatWasDone<T>(tx: Tx, step: () => T, message: (e: ModelError) => string): T {
  try {
    return step();
  } catch (e) {
    if (e instanceof ModelError) {
      e.committed = { image: checkpointImg(tx), io: [...tx.io] };
      e.message = message(e);
    }
    throw e;
  }
}

/** `qcow2_snapshot_create` (qemu-img snapshot -c NAME). */
export function snapshotCreate(tx: Tx, name: string, opts: { dateSec?: number; dateNsec?: number; vmClockNsec?: bigint } = {}): void {
  withOwnedPages(tx, () => snapshotCreateBody(tx, name, opts));
}

function snapshotCreateBody(tx: Tx, name: string, opts: { dateSec?: number; dateNsec?: number; vmClockNsec?: bigint } = {}): void {
  checkSnapshotsSupported(tx, 'create', name);
  const list = readSnapshots(tx);
  if (list.length >= MAX_SNAPSHOTS) throw new ModelError('too-big', EFBIG, strerror(EFBIG));
  const oldSize = tableSize(list);
  let idMax = 0n;
  for (const s of list) {
    const m = /^\s*[+-]?\d+/.exec(s.id);
    const v = m ? BigInt(m[0].trim()) : 0n;
    if (v > idMax) idMax = v;
  }
  const h = tx.img.header;
  // The new L1: allocated first fit, then a copy of the active one written into it.
  const l1Offset = allocClusters(tx, BigInt(h.l1Size) * 8n);
  const active = readL1(tx, h.l1TableOffset, h.l1Size);
  if (h.l1Size > 0) hostWrite(tx, l1Offset, encodeL1(tx, active));
  // Everything the active L1 reaches gains a reference; COPIED is cleared where it is shared now.
  // On failure (e.g. refcount_bits=1 overflows) QEMU keeps what it did so far: the L1 leaks.
  failKeepingWhatWasDone(tx, () => {
    const r = updateSnapshotRefcount(tx, active, 1);
    if (r.modified) hostWrite(tx, h.l1TableOffset, encodeL1(tx, r.l1));
  }, (e) => `Could not create snapshot '${name}': ${e.errno} (${e.errno === -EINVAL ? strerror(EINVAL) : e.message})`);
  const sn: SnapshotState = {
    l1TableOffset: l1Offset,
    l1Size: h.l1Size,
    id: String(idMax + 1n),
    name,
    dateSec: opts.dateSec ?? 0,
    dateNsec: opts.dateNsec ?? 0,
    vmClockNsec: opts.vmClockNsec ?? 0n,
    vmStateSize: 0n,
    diskSize: h.size,
    icount: 0n,
    extraDataSize: 24,
    unknownExtraData: new Uint8Array(0),
  };
  writeSnapshots(tx, [...list, sn], oldSize);
}

/** `qcow2_snapshot_goto` (qemu-img snapshot -a ID_OR_NAME). */
export function snapshotApply(tx: Tx, idOrName: string): void {
  withOwnedPages(tx, () => snapshotApplyBody(tx, idOrName));
}

function snapshotApplyBody(tx: Tx, idOrName: string): void {
  checkSnapshotsSupported(tx, 'apply', idOrName);
  const list = readSnapshots(tx);
  const index = findByIdOrName(list, idOrName);
  if (index < 0) throw new ModelError('unsupported', -2, `Could not apply snapshot '${idOrName}': Failed to load snapshot: No such file or directory`);
  const sn = list[index]!;
  // QEMU 7.2 first resizes the disk to the snapshot's size (blk_truncate(exact, PREALLOC_MODE_OFF)
  // in qcow2_snapshot_goto: the same path as `qemu-img resize`, zero-fill over a backing file
  // included), then grows the L1 table to hold the snapshot's exactly. It does not refuse a
  // different size (measured: docs/format/snapshots.md#applying-a-snapshot, test/qemu/model-resize.test.ts).
  if (sn.diskSize !== tx.img.header.size) {
    failKeepingWhatWasDone(tx, () => resize(tx, sn.diskSize), (e) => `Could not apply snapshot '${idOrName}': ${e.message}`);
  }
  growL1Table(tx, BigInt(sn.l1Size), true);
  const h = tx.img.header;
  const snL1 = readL1(tx, sn.l1TableOffset, sn.l1Size);
  const empty: L1EntryFields = { copied: false, reservedHi: 0, l2OffsetHi: 0, l2OffsetLo: 0, reservedLo: 0 };
  const newActive = [...snL1, ...new Array<L1EntryFields>(h.l1Size - sn.l1Size).fill(empty)];
  // QEMU writes the snapshot's own L1 back when the pass changed its COPIED flags (addend >= 0).
  // A refcount overflow here (refcount_bits 1 or 2) fails the apply with the active L1 untouched
  // and the references raised so far kept, as in QEMU.
  const snPass = failKeepingWhatWasDone(tx, () => updateSnapshotRefcount(tx, snL1, 1),
    (e) => `Could not apply snapshot '${idOrName}': Failed to load snapshot: ${e.errno === -EINVAL ? strerror(EINVAL) : e.message}`);
  if (snPass.modified) hostWrite(tx, sn.l1TableOffset, encodeL1(tx, snPass.l1));
  const oldActive = readL1(tx, h.l1TableOffset, h.l1Size);
  // Crash safety: the new L1's references are counted before the active L1 is overwritten.
  hostWrite(tx, h.l1TableOffset, encodeL1(tx, newActive));
  hostFlush(tx);
  updateSnapshotRefcount(tx, oldActive, -1);
  const r = updateSnapshotRefcount(tx, newActive, 0);
  if (r.modified) hostWrite(tx, h.l1TableOffset, encodeL1(tx, r.l1));
}

/** `qcow2_snapshot_delete` (qemu-img snapshot -d ID_OR_NAME: by id, else by name). */
export function snapshotDelete(tx: Tx, idOrName: string): void {
  withOwnedPages(tx, () => snapshotDeleteBody(tx, idOrName));
}

function snapshotDeleteBody(tx: Tx, idOrName: string): void {
  checkSnapshotsSupported(tx, 'delete', idOrName);
  const list = readSnapshots(tx);
  const index = findByIdOrName(list, idOrName);
  if (index < 0) throw new ModelError('unsupported', -2, `Could not delete snapshot '${idOrName}': snapshot not found`);
  const sn = list[index]!;
  const oldSize = tableSize(list);
  writeSnapshots(tx, list.filter((_s, i) => i !== index), oldSize);
  updateSnapshotRefcount(tx, readL1(tx, sn.l1TableOffset, sn.l1Size), -1);
  decreaseAndPunch(tx, sn.l1TableOffset, BigInt(sn.l1Size) * 8n);
  const h = tx.img.header;
  const r = updateSnapshotRefcount(tx, readL1(tx, h.l1TableOffset, h.l1Size), 0);
  if (r.modified) hostWrite(tx, h.l1TableOffset, encodeL1(tx, r.l1));
}

