/**
 * Guest → host mapping: L1 and L2 entries read and written through the generated codecs, L2 table
 * allocation (QEMU's get_cluster_table / l2_allocate, docs/format/mapping.md, docs/format/allocation.md#l2-table-allocation), L1 table growth
 * (qcow2_grow_l1_table, docs/format/allocation.md#l1-table-growth) and the per-subcluster type of a guest offset.
 */
import { strerror } from './errno.ts';
import { decodeL1EntryFields, decodeL2EntryFields, encodeL1Entry, encodeL2Entry, type L2EntryFields } from '../../generated/qcow2.ts';
import { l1L2Offset, l2EntryWords, subclusterStates, type SubclusterState } from '../format/index.ts';
import { INT_MAX, QCOW_MAX_L1_SIZE } from '../format/index.ts';
import { offsetToParts } from '../format/index.ts';
import { EFBIG, EIO, ModelError } from './errors.ts';
import { hostSpotAt, sharedZeros } from './host-file.ts';
import type { Geometry } from './image.ts';
import { allocClusters, freeClusters } from './refcount.ts';
import { type Tx, geo, hostFlush, hostRead, hostView, hostWrite, setHeaderFields } from './tx.ts';

const TWO_53 = 2 ** 53;

/** The L1 index and L2 index of guest offset `offset`. */
export function l1l2Index(tx: Tx, offset: bigint): { l1: number; l2: number } {
  const g = geo(tx);
  const o = Number(offset);
  if (o < TWO_53 && o >= 0) {
    // Exact below 2^53 (the number is the offset itself), and no bigint temporaries.
    const cluster = Math.floor(o / g.clusterSize);
    return { l1: Math.floor(cluster / g.l2Entries), l2: cluster % g.l2Entries };
  }
  return {
    l1: Number(offset >> BigInt(g.clusterBits + g.l2Bits)),
    l2: Number((offset >> BigInt(g.clusterBits)) & BigInt(g.l2Entries - 1)),
  };
}

/** Decoder parameters per geometry (one object, not one per decoded entry). */
const codecParams = new WeakMap<Geometry, { clusterBits: number; extendedL2: boolean }>();

/** The last geometry asked for and its parameters (a WeakMap lookup per decoded entry shows in profiles). */
let lastParamsGeometry: Geometry | undefined;
let lastParams: { clusterBits: number; extendedL2: boolean } | undefined;

function paramsOf(g: Geometry): { clusterBits: number; extendedL2: boolean } {
  if (g === lastParamsGeometry) return lastParams!;
  let p = codecParams.get(g);
  if (p === undefined) {
    p = { clusterBits: g.clusterBits, extendedL2: g.extendedL2 };
    codecParams.set(g, p);
  }
  lastParamsGeometry = g;
  lastParams = p;
  return p;
}


/**
 * Decode memos: the last L1 entry and the last L2 entry decoded in place, by the byte array and
 * position they were decoded from and the decoder parameters. A HostFile never changes an array it
 * hands out (chunked-page.ts), so the same array, position and parameters decode to the same
 * fields. The write path reads the same L1 and L2 entry several times per operation
 * (get_cluster_table, handle_copied, calculate_l2_meta, the COW shortcut, link_l2); decoding one
 * costs far more than comparing three references. Callers get fresh objects, never the memo's.
 */
let l1MemoBytes: Uint8Array | undefined;
let l1MemoAt = -1;
let l1MemoParams: object | undefined;
let l1MemoOffset = 0n;
let l1MemoCopied = false;
let l2MemoBytes: Uint8Array | undefined;
let l2MemoAt = -1;
let l2MemoParams: object | undefined;
let l2MemoFields: L2EntryFields | undefined;

/** The byte offset `base + index * size` as an exact number, or -1 when it is not below 2^53. */
function offsetNumber(base: bigint, index: number, size: number): number {
  const o = Number(base) + index * size;
  return o < TWO_53 ? o : -1;
}

/** The L2 table offset and COPIED flag of active L1 entry `index` (offset 0 past l1_size). */
export function l1Entry(tx: Tx, index: number): { l2Offset: bigint; copied: boolean } {
  if (index >= tx.img.header.l1Size) return { l2Offset: 0n, copied: false };
  const g = geo(tx);
  const params = paramsOf(g);
  // Fields only (no computed instances), decoded in place in the page: the hot path of every op.
  const o = offsetNumber(tx.img.header.l1TableOffset, index, 8);
  const p = o >= 0 ? hostSpotAt(tx.img.file, o, 8) : undefined;
  if (p !== undefined && p.bytes === l1MemoBytes && p.at === l1MemoAt && params === l1MemoParams) {
    // Decoded (and checked for alignment: same parameters, same cluster size) before.
    return { l2Offset: l1MemoOffset, copied: l1MemoCopied };
  }
  const e = p !== undefined
    ? decodeL1EntryFields(p.bytes, p.at, params)
    : decodeL1EntryFields(hostView(tx, tx.img.header.l1TableOffset + BigInt(index) * 8n, 8), 0, params);
  const l2Offset = l1L2Offset(e);
  if ((l2Offset & BigInt(g.clusterSize - 1)) !== 0n) {
    throw new ModelError('corrupt', EIO, `L2 table offset 0x${l2Offset.toString(16)} unaligned (L1 index: 0x${index.toString(16)})`);
  }
  if (p !== undefined) {
    l1MemoBytes = p.bytes;
    l1MemoAt = p.at;
    l1MemoParams = params;
    l1MemoOffset = l2Offset;
    l1MemoCopied = e.copied;
  }
  return { l2Offset, copied: e.copied };
}

/**
 * `qcow2_write_l1_entry`: sets active L1 entry `index` and writes it. QEMU writes a buffer of
 * MAX(8, MIN(request_alignment, cluster_size)) bytes; file-posix without O_DIRECT (qemu-img, qemu-io,
 * the default cache mode) has request_alignment 1, so that is the 8-byte entry alone [7.2, strace].
 * (Writing the 512-byte chunk instead, as iotest 107's note suggested, extends the file when a grown
 * L1 table ends less than 512 bytes before the end of the file: test/unit/model-l1-entry-write.test.ts.)
 */
export function writeL1Entry(tx: Tx, index: number, l2Offset: bigint, copied: boolean): void {
  const g = geo(tx);
  const { hi, lo9 } = offsetToParts(l2Offset, 24, { structure: 'l1_entry', field: 'l2_offset', offset: 0 });
  const entry = encodeL1Entry({ copied, reservedHi: 0, l2OffsetHi: hi, l2OffsetLo: lo9, reservedLo: 0 }, { clusterBits: g.clusterBits, extendedL2: g.extendedL2 });
  hostWrite(tx, tx.img.header.l1TableOffset + BigInt(index) * 8n, entry);
}

/** L2 entry `index` of the table at `l2Offset` (a fresh object). */
export function readL2Entry(tx: Tx, l2Offset: bigint, index: number): L2EntryFields {
  const g = geo(tx);
  const params = paramsOf(g);
  const o = offsetNumber(l2Offset, index, g.l2EntrySize);
  const p = o >= 0 ? hostSpotAt(tx.img.file, o, g.l2EntrySize) : undefined;
  if (p === undefined) return decodeL2EntryFields(hostView(tx, l2Offset + BigInt(index * g.l2EntrySize), g.l2EntrySize), 0, params);
  if (p.bytes === l2MemoBytes && p.at === l2MemoAt && params === l2MemoParams) return { ...l2MemoFields! };
  const e = decodeL2EntryFields(p.bytes, p.at, params);
  l2MemoBytes = p.bytes;
  l2MemoAt = p.at;
  l2MemoParams = params;
  l2MemoFields = { ...e };
  return e;
}

/** Writes L2 entry `index` of the table at `l2Offset`. */
export function writeL2Entry(tx: Tx, l2Offset: bigint, index: number, e: L2EntryFields): void {
  const g = geo(tx);
  hostWrite(tx, l2Offset + BigInt(index * g.l2EntrySize), encodeL2Entry(e, { clusterBits: g.clusterBits, extendedL2: g.extendedL2 }));
}

/** An L2 entry with every bit 0 (and a zero bitmap with extended L2): no cluster, no flag. */
export function emptyL2Entry(extendedL2: boolean): L2EntryFields {
  const e: L2EntryFields = { copied: false, compressed: false, reservedHi: 0, hostOffsetHi: 0, hostOffsetLo: 0, reservedLo: 0, zero: false };
  return extendedL2 ? { ...e, zeroBitmap: 0, allocBitmap: 0 } : e;
}

/**
 * `base` (undefined: an empty entry) made to read as zeros: with extended L2 every subcluster zero,
 * otherwise the zero flag set to `zeroFlag`.
 */
export function zeroedL2Entry(extendedL2: boolean, base: L2EntryFields | undefined, zeroFlag: boolean): L2EntryFields {
  const b = base ?? emptyL2Entry(extendedL2);
  return extendedL2 ? { ...b, zeroBitmap: 0xffffffff, allocBitmap: 0 } : { ...b, zero: zeroFlag };
}

/** Whether two L2 entries encode to the same words. */
export function sameL2Entry(a: L2EntryFields, b: L2EntryFields): boolean {
  const wa = l2EntryWords(a);
  const wb = l2EntryWords(b);
  return wa.word === wb.word && (wa.bitmap ?? 0n) === (wb.bitmap ?? 0n);
}

/**
 * Rewrites one L2 slice (QEMU's discard_in_l2_slice and zero_in_l2_slice): the entries from guest
 * `offset`, at most `nbClusters` of them and no further than the end of their L2 table, each to
 * what `next` makes of it; an entry left the same is not written. get_cluster_table comes first, so
 * a missing or shared (not COPIED) table is allocated or copied even when no entry changes. The old
 * entries that changed and that `drops` says lose their cluster are freed with `free`. Returns how
 * many clusters the slice covered and the entries freed.
 */
export function rewriteL2Slice(
  tx: Tx,
  offset: bigint,
  nbClusters: number | bigint,
  next: (old: L2EntryFields) => L2EntryFields,
  drops: (old: L2EntryFields) => boolean,
  free: (tx: Tx, e: L2EntryFields) => void,
): { readonly covered: number; readonly dropped: readonly L2EntryFields[] } {
  const g = geo(tx);
  const l2Offset = clusterTable(tx, offset);
  const { l2: l2Index } = l1l2Index(tx, offset);
  const room = g.l2Entries - l2Index;
  const covered = nbClusters < room ? Number(nbClusters) : room;
  const dropped: L2EntryFields[] = [];
  for (let i = 0; i < covered; i++) {
    const old = readL2Entry(tx, l2Offset, l2Index + i);
    const e = next(old);
    if (sameL2Entry(old, e)) continue;
    writeL2Entry(tx, l2Offset, l2Index + i, e);
    if (drops(old)) dropped.push(old);
  }
  // Crash safety: the L2 entries stop pointing at the clusters (the L2 cache is a dependency of
  // the refcount cache on a decrease) before their refcounts drop.
  if (dropped.length > 0) hostFlush(tx);
  for (const e of dropped) free(tx, e);
  return { covered, dropped };
}

/** A standard-descriptor L2 entry for host cluster `hostOffset` (bitmaps as given for extended L2). */
export function normalEntry(tx: Tx, hostOffset: bigint, copied: boolean, zero: boolean, bitmaps?: { alloc: number; zero: number }): L2EntryFields {
  const { hi, lo9 } = offsetToParts(hostOffset, 24, { structure: 'l2_entry', field: 'host_offset', offset: 0 });
  // Two literals rather than a conditional spread (a spread into a literal is V8's slow generic path).
  if (!geo(tx).extendedL2) return { copied, compressed: false, reservedHi: 0, hostOffsetHi: hi, hostOffsetLo: lo9, reservedLo: 0, zero };
  return {
    copied,
    compressed: false,
    reservedHi: 0,
    hostOffsetHi: hi,
    hostOffsetLo: lo9,
    reservedLo: 0,
    zero,
    zeroBitmap: bitmaps?.zero ?? 0,
    allocBitmap: bitmaps?.alloc ?? 0,
  };
}

/** The entry of guest cluster at `offset` in the active tables (unallocated when there is no L2). */
export function entryAt(tx: Tx, offset: bigint): { entry: L2EntryFields | undefined; l2Offset: bigint; l2Index: number } {
  const { l1, l2 } = l1l2Index(tx, offset);
  const { l2Offset } = l1Entry(tx, l1);
  if (l2Offset === 0n) return { entry: undefined, l2Offset: 0n, l2Index: l2 };
  return { entry: readL2Entry(tx, l2Offset, l2), l2Offset, l2Index: l2 };
}

/** The state of every subcluster (one per cluster without extended L2) of an entry. */
export function statesOf(tx: Tx, entry: L2EntryFields | undefined): SubclusterState[] {
  const g = geo(tx);
  if (!entry) return new Array<SubclusterState>(g.subclusters).fill('unallocated-plain');
  return subclusterStates(entry, { clusterBits: g.clusterBits, extendedL2: g.extendedL2, externalDataFile: g.externalDataFile });
}

/** INT_MAX: qcow2_grow_l1_table refuses more than INT_MAX / 8 entries before computing a size. */
const INT_MAX_N = BigInt(INT_MAX);
/** QCOW_MAX_L1_SIZE: 32 MiB of L1 table. */
const MAX_L1_BYTES = BigInt(QCOW_MAX_L1_SIZE);

/**
 * The number of entries the L1 table grows to for `minSize` needed entries (qcow2_grow_l1_table):
 * exactly `minSize` when `exactSize` (resize), else the current size (at least 1) times 1.5, rounded
 * as `(n * 3 + 1) / 2`, repeatedly until it reaches `minSize` (a write past l1_size).
 */
export function grownL1Size(currentSize: number, minSize: bigint, exactSize: boolean): bigint {
  if (exactSize) return minSize;
  let n = currentSize === 0 ? 1n : BigInt(currentSize);
  while (minSize > n) n = (n * 3n + 1n) / 2n;
  return n;
}

/**
 * `qcow2_grow_l1_table`: makes the active L1 table hold at least `minSize` entries. Nothing happens
 * when it already does. Otherwise, as QEMU 7.2 does (docs/format/allocation.md#l1-table-growth, docs/format/surprises.md#18-l1-tables-move-and-never-shrink): the new size is
 * `minSize` when `exactSize` (resize) or the 1.5x rule (grownL1Size); a new table of exactly
 * `newSize * 8` bytes is allocated first fit (always elsewhere: the old one is still in use), the old
 * entries copied into it, the header's l1_size + l1_table_offset switched with one 12-byte write, and
 * the old table's clusters freed (QCOW2_DISCARD_OTHER: not punched). Throws ModelError 'too-big'
 * (EFBIG, "File too large") before changing anything when more than INT_MAX / 8 entries are asked
 * for or the table would exceed QEMU's 32 MiB limit.
 */
export function growL1Table(tx: Tx, minSize: bigint, exactSize: boolean): void {
  const h = tx.img.header;
  if (minSize <= BigInt(h.l1Size)) return;
  // "Do a sanity check on min_size before trying to calculate new_l1_size".
  if (minSize > INT_MAX_N / 8n) throw new ModelError('too-big', EFBIG, strerror(EFBIG));
  const newSize = grownL1Size(h.l1Size, minSize, exactSize);
  if (newSize > MAX_L1_BYTES / 8n) throw new ModelError('too-big', EFBIG, strerror(EFBIG));
  const n = Number(newSize);
  const table = new Uint8Array(n * 8);
  if (h.l1Size > 0) table.set(hostRead(tx, h.l1TableOffset, h.l1Size * 8));
  const offset = allocClusters(tx, BigInt(n * 8));
  // Crash safety: the new table's refcounts are on disk (refcount cache flushed) before the table is
  // written, and the table (exactly n * 8 bytes, bdrv_pwrite_sync) before the header points at it.
  hostFlush(tx);
  hostWrite(tx, offset, table);
  hostFlush(tx);
  const oldOffset = h.l1TableOffset;
  const oldSize = h.l1Size;
  setHeaderFields(tx, { l1Size: n, l1TableOffset: offset });
  hostFlush(tx);
  // Only now nothing points at the old table: drop its reference.
  freeClusters(tx, oldOffset, BigInt(oldSize) * 8n);
}

/**
 * `get_cluster_table`: the L2 table for guest `offset`, allocating it when the L1 entry is not COPIED
 * (new zeroed table, or a copy of a shared one whose reference is then dropped). An L1 index past
 * l1_size first grows the L1 table with the 1.5x rule (growL1Table, not exact). Returns its offset.
 */
export function clusterTable(tx: Tx, offset: bigint): bigint {
  const { l1 } = l1l2Index(tx, offset);
  // get_cluster_table: an L1 index past l1_size grows the table by QEMU's 1.5x rule first.
  if (l1 >= tx.img.header.l1Size) growL1Table(tx, BigInt(l1) + 1n, false);
  const { l2Offset, copied } = l1Entry(tx, l1);
  if (copied) return l2Offset;
  const g = geo(tx);
  // l2_allocate: allocate, fill (zeros or COW copy), then point the L1 entry at it.
  const fresh = allocClusters(tx, BigInt(g.clusterSize));
  if (fresh === 0n) throw new ModelError('corrupt', EIO, 'Preventing invalid allocation of L2 table at offset 0');
  // Crash safety: the new table's refcount is on disk before anything points at the table.
  hostFlush(tx);
  hostWrite(tx, fresh, l2Offset === 0n ? sharedZeros(g.clusterSize) : hostRead(tx, l2Offset, g.clusterSize));
  hostFlush(tx);
  writeL1Entry(tx, l1, fresh, true);
  hostFlush(tx);
  // Then decrease the refcount of the old table (mapping removed first).
  if (l2Offset !== 0n) freeClusters(tx, l2Offset, BigInt(g.clusterSize));
  return fresh;
}
