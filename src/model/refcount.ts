/**
 * Refcounts and cluster allocation, following QEMU 7.2's block/qcow2-refcount.c step by step so that
 * the model places every cluster where QEMU does (docs/format/refcounts.md, docs/format/allocation.md#cluster-allocator):
 *
 * - allocClustersNoref: first fit upward from the per-process hint `free_cluster_index`, which
 *   only moves forward while scanning and moves back when a refcount drops to 0 below it;
 * - updateRefcount: walks the clusters, allocating refcount blocks on demand; when that allocation
 *   says "again" (the caller's candidate clusters may now be taken) it moves the hint back to the
 *   start of the range ("try the same ones first"), undoes the increments it already made in this
 *   call and reports "again";
 * - allocRefcountBlock: a new refblock describes itself when it lands in its own range, otherwise
 *   its refcount goes into another block; hooked into the reftable in place, or the reftable grows;
 * - refcountArea: reftable growth — self-describing refblocks and a new table at the end of the
 *   covered area, 50 % headroom, one 12-byte header write, old table freed;
 * - allocBytes: compressed-cluster byte packing with the in-memory cursor `free_byte_offset` — except
 *   that the model drops a cursor whose cluster was freed and reused since, where QEMU 7.2 packs
 *   into the reused cluster and corrupts it (docs/layout-differences.md).
 *
 * Refcount entries and reftable entries are read and written through the generated decoders and
 * encoders (the sub-byte packing lives in spec/qcow2.ksy, not here).
 */
import { strerror } from './errno.ts';
import {
  decodeRefcountBlockFields, decodeRefcountTableEntryFields, encodeRefcountBlock, encodeRefcountTableEntry, type U64Fields,
} from '../../generated/qcow2.ts';
import { refcountBlockOffset, refcountValue } from '../format/index.ts';
import { INT64_MAX, QCOW_MAX_REFTABLE_SIZE } from '../format/index.ts';
import { bigIntToU64, offsetToParts } from '../format/index.ts';
import { EFBIG, EINVAL, EIO, ModelError } from './errors.ts';
import { hostPage, hostSpotAt, viewHost } from './host-file.ts';
import { PAGE_SIZE } from './page-map.ts';
import { type Tx, checkpointImg, geo, hostFlush, hostWrite, isOwnedPage, markFreeingBarrier, setFreeClusterIndex, setHeaderFields, setSession } from './tx.ts';

/** QEMU's limit on the refcount table: 8 MiB (QCOW_MAX_REFTABLE_SIZE). */
export const MAX_REFTABLE_BYTES = BigInt(QCOW_MAX_REFTABLE_SIZE);
/**
 * Retries of an allocation before the model gives up. QEMU retries while update_refcount says
 * -EAGAIN, without a limit; each "again" follows the allocation of a new refcount block, so a range
 * crossing many not yet covered blocks retries once per block (a 25 MiB L1 table with 512-byte
 * clusters: about 200 times). The bound is the largest number of refcount blocks a reftable can
 * hold, so it only stops a model bug, never an allocation QEMU would complete.
 */
const MAX_ALLOC_RETRIES = Number(MAX_REFTABLE_BYTES / 8n) + 64;

type Again = 'ok' | 'again';

function refblockBits(tx: Tx): number {
  // refblockEntries = clusterSize * 8 / refcountBits, a power of two.
  return geo(tx).clusterBits + 3 - tx.img.header.refcountOrder;
}

/**
 * Bytes of the qcow2 file for decoding only (no copy when they lie in one page; never modified).
 * The decoders below copy every value out, so nothing keeps a reference into the page.
 */
function viewBytes(tx: Tx, offset: bigint, length: number): Uint8Array {
  return viewHost(tx.img.file, offset, length);
}

const TWO_53 = 2 ** 53;

/** Whether `v` (≥ 0) is not a multiple of `size` (a power of two), without bigint temporaries below 2^53. */
function misaligned(v: bigint, size: number): boolean {
  const n = Number(v);
  return n < TWO_53 ? n % size !== 0 : (v & BigInt(size - 1)) !== 0n;
}

/** One refcount as the generated refcount block decodes it (boolean, number or u64 halves by width). */
type RefcountEntry = boolean | number | U64Fields;

/** Decoder parameters per refcount order (one object each, not one per decode). */
const ORDER_PARAMS: ReadonlyArray<{ readonly refcountOrder: number }> = [0, 1, 2, 3, 4, 5, 6].map((refcountOrder) => ({ refcountOrder }));

/** Whether a decoded refcount is 0 (what refcountValue(v) === 0n says, without a bigint). */
function isZeroEntry(v: RefcountEntry): boolean {
  return typeof v === 'boolean' ? !v : typeof v === 'number' ? v === 0 : v.hi === 0 && v.lo === 0;
}

/**
 * Decode memo: the entries last decoded from refcount-block bytes, by the array and position the
 * bytes were found at (host-file.ts hostSpotAt), their length and the refcount order. A HostFile
 * never changes an array it hands out (chunked-page.ts), so the same key decodes to the same
 * entries. An allocation scans the refcount of the cluster it then increments: one decode, not two.
 */
let memoBytes: Uint8Array | undefined;
let memoAt = -1;
let memoLength = -1;
let memoOrder = -1;
let memoEntries: readonly RefcountEntry[] = [];

/** The refcount-block entries held by the `length` bytes at `offset` (refcount order `order`). Never modify the result. */
function decodeRefcountBytes(tx: Tx, offset: bigint, length: number, order: number): readonly RefcountEntry[] {
  const o = Number(offset);
  const spot = o < TWO_53 ? hostSpotAt(tx.img.file, o, length) : undefined;
  if (spot !== undefined && spot.bytes === memoBytes && spot.at === memoAt && length === memoLength && order === memoOrder) return memoEntries;
  const entries = decodeRefcountBlockFields(viewBytes(tx, offset, length), 0, ORDER_PARAMS[order]!).entries;
  if (spot !== undefined) {
    memoBytes = spot.bytes;
    memoAt = spot.at;
    memoLength = length;
    memoOrder = order;
    memoEntries = entries;
  }
  return entries;
}

/** Number of entries in the current refcount table. */
export function reftableSize(tx: Tx): number {
  return (tx.img.header.refcountTableClusters * geo(tx).clusterSize) / 8;
}

/**
 * Decoded reftable entries per page object (slot → offset, filled on first read). Pages are
 * immutable, so a page's decoded entries never go stale; a table change makes a new page. The
 * offset does not depend on the decoder's params (they only locate the refcount block instance).
 */
const reftablePageEntries = new WeakMap<Uint8Array, Array<bigint | undefined>>();

let lastReftablePage: Uint8Array | undefined;
let lastReftableWithin = -1;
let lastReftableValue = 0n;

/** The refcount block offset in reftable slot `index` (0n when absent or past the table). */
export function reftableEntry(tx: Tx, index: number): bigint {
  if (index >= reftableSize(tx)) return 0n;
  const g = geo(tx);
  // The entry's offset as an exact number when it is below 2^53 (no bigint temporaries).
  const o = Number(tx.img.header.refcountTableOffset) + index * 8;
  const at = o < TWO_53 ? undefined : tx.img.header.refcountTableOffset + BigInt(index) * 8n;
  if (at === undefined && o % 8 === 0) {
    // Entry inside one page: decode it once per page version.
    const pageIndex = Math.floor(o / PAGE_SIZE);
    const page = hostPage(tx.img.file, pageIndex);
    if (page === undefined) return 0n;
    const within = o - pageIndex * PAGE_SIZE;
    // A page this operation may still change in place is decoded, never cached.
    if (isOwnedPage(tx, pageIndex, page)) {
      return refcountBlockOffset(decodeRefcountTableEntryFields(page, within, { clusterBits: g.clusterBits, refcountOrder: tx.img.header.refcountOrder }));
    }
    // The entry asked for last (every refcount access asks for its block's entry, often the same).
    if (page === lastReftablePage && within === lastReftableWithin) return lastReftableValue;
    let cache = reftablePageEntries.get(page);
    if (cache === undefined) {
      cache = new Array<bigint | undefined>(PAGE_SIZE / 8);
      reftablePageEntries.set(page, cache);
    }
    let v = cache[within / 8];
    if (v === undefined) {
      v = refcountBlockOffset(decodeRefcountTableEntryFields(page, within, { clusterBits: g.clusterBits, refcountOrder: tx.img.header.refcountOrder }));
      cache[within / 8] = v;
    }
    lastReftablePage = page;
    lastReftableWithin = within;
    lastReftableValue = v;
    return v;
  }
  const raw = viewBytes(tx, at ?? BigInt(o), 8);
  return refcountBlockOffset(decodeRefcountTableEntryFields(raw, 0, { clusterBits: g.clusterBits, refcountOrder: tx.img.header.refcountOrder }));
}

function encodeReftableEntry(tx: Tx, blockOffset: bigint): Uint8Array {
  const { hi, lo9 } = offsetToParts(blockOffset, 32, { structure: 'refcount_table_entry', field: 'refblock_offset', offset: 0 });
  return encodeRefcountTableEntry(
    { refblockOffsetHi: hi, refblockOffsetLo: lo9, reserved: 0 },
    { clusterBits: geo(tx).clusterBits, refcountOrder: tx.img.header.refcountOrder },
  );
}

/** Byte range of refcount `index` inside its block, and its position among the entries decoded there. */
function entrySlot(order: number, index: number): { byte: number; length: number; sub: number } {
  const width = 1 << order;
  if (width >= 8) return { byte: (index * width) / 8, length: width / 8, sub: 0 };
  const perByte = 8 / width;
  return { byte: Math.floor(index / perByte), length: 1, sub: index % perByte };
}

function readRefcountAt(tx: Tx, block: bigint, index: number): bigint {
  const order = tx.img.header.refcountOrder;
  const slot = entrySlot(order, index);
  return refcountValue(decodeRefcountBytes(tx, block + BigInt(slot.byte), slot.length, order)[slot.sub]!);
}

function writeRefcountAt(tx: Tx, block: bigint, index: number, value: bigint): void {
  const order = tx.img.header.refcountOrder;
  const slot = entrySlot(order, index);
  const at = block + BigInt(slot.byte);
  const entries: RefcountEntry[] = decodeRefcountBytes(tx, at, slot.length, order).slice();
  entries[slot.sub] = order === 0 ? value !== 0n : order === 6 ? bigIntToU64(value) : Number(value);
  hostWrite(tx, at, encodeRefcountBlock({ entries }, ORDER_PARAMS[order]!));
}

/**
 * The byte range holding refcounts [index, index+count) of a block, and the position of `index`
 * among the entries decoded from it (sub-byte widths share bytes with their neighbours).
 */
function runSlot(order: number, index: number, count: number): { byte: number; length: number; sub: number } {
  const width = 1 << order;
  if (width >= 8) return { byte: (index * width) / 8, length: (count * width) / 8, sub: 0 };
  const perByte = 8 / width;
  const byte = Math.floor(index / perByte);
  return { byte, length: Math.ceil((index + count) / perByte) - byte, sub: index % perByte };
}

/** Refcounts [index, index+count) of the block at `block` (all inside that block), one read. */
function readRefcountRun(tx: Tx, block: bigint, index: number, count: number): bigint[] {
  const order = tx.img.header.refcountOrder;
  const slot = runSlot(order, index, count);
  const entries = decodeRefcountBytes(tx, block + BigInt(slot.byte), slot.length, order);
  const out = new Array<bigint>(count);
  for (let i = 0; i < count; i++) out[i] = refcountValue(entries[slot.sub + i]!);
  return out;
}

/**
 * Sets refcounts [index, index+values.length) of the block at `block` with one write of the bytes
 * holding them (the same bytes as one write per refcount, in one request).
 */
function writeRefcountRun(tx: Tx, block: bigint, index: number, values: readonly bigint[]): void {
  if (values.length === 0) return;
  const order = tx.img.header.refcountOrder;
  const slot = runSlot(order, index, values.length);
  const at = block + BigInt(slot.byte);
  let entries: RefcountEntry[];
  if (order >= 3) {
    // Whole bytes per refcount: the bytes written hold exactly these values, no neighbour to keep.
    entries = values.map((v) => (order === 6 ? bigIntToU64(v) : Number(v)));
  } else {
    entries = decodeRefcountBytes(tx, at, slot.length, order).slice();
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      entries[slot.sub + i] = order === 0 ? v !== 0n : Number(v);
    }
  }
  hostWrite(tx, at, encodeRefcountBlock({ entries }, ORDER_PARAMS[order]!));
}

/**
 * The refcounts of clusters [clusterIndex, clusterIndex+count), read a block at a time (zeros where
 * no refcount block covers them); `count` is capped at the end of the block holding the first one.
 */
function refcountsFrom(tx: Tx, clusterIndex: bigint, count: number): bigint[] {
  const rbe = geo(tx).refblockEntries;
  const index = blockIndexOf(tx, clusterIndex);
  const n = Math.min(count, rbe - index);
  const block = checkedBlock(tx, Number(clusterIndex >> BigInt(refblockBits(tx))));
  if (block === 0n) return new Array<bigint>(n).fill(0n);
  return readRefcountRun(tx, block, index, n);
}

/**
 * refcountsFrom for a cluster index given as an exact number, without converting the refcounts:
 * entries [sub, sub + n) of `entries` are the refcounts of clusters [clusterIndex, clusterIndex + n)
 * (`entries` undefined: no refcount block covers them, all 0). Never modify `entries`.
 */
function refcountEntriesFrom(tx: Tx, clusterIndex: number, count: number): { entries: readonly RefcountEntry[] | undefined; sub: number; n: number } {
  const rbe = geo(tx).refblockEntries;
  const index = clusterIndex % rbe;
  const n = Math.min(count, rbe - index);
  const block = checkedBlock(tx, Math.floor(clusterIndex / rbe));
  if (block === 0n) return { entries: undefined, sub: 0, n };
  const order = tx.img.header.refcountOrder;
  const slot = runSlot(order, index, n);
  return { entries: decodeRefcountBytes(tx, block + BigInt(slot.byte), slot.length, order), sub: slot.sub, n };
}

/** The largest refcount per refcount width in bits (1..64). */
const MAX_REFCOUNT: readonly bigint[] = Array.from({ length: 65 }, (_v, bits) => (1n << BigInt(bits)) - 1n);

/** The cluster the compressed-packing cursor points into, or -1n when there is no cursor. */
function cursorCluster(tx: Tx): bigint {
  const o = tx.img.session.freeByteOffset;
  return o === 0n ? -1n : o >> BigInt(geo(tx).clusterBits);
}

function blockIndexOf(tx: Tx, clusterIndex: bigint): number {
  return Number(clusterIndex & BigInt(geo(tx).refblockEntries - 1));
}

function checkedBlock(tx: Tx, tableIndex: number): bigint {
  const block = reftableEntry(tx, tableIndex);
  if (block !== 0n && misaligned(block, geo(tx).clusterSize)) {
    throw new ModelError('corrupt', EIO, `Refblock offset 0x${block.toString(16)} unaligned (reftable index: 0x${tableIndex.toString(16)})`);
  }
  return block;
}

/** The refcount of host cluster `clusterIndex` (0 when no refcount block covers it). */
export function getRefcount(tx: Tx, clusterIndex: bigint): bigint {
  const tableIndex = Number(clusterIndex >> BigInt(refblockBits(tx)));
  const block = checkedBlock(tx, tableIndex);
  if (block === 0n) return 0n;
  return readRefcountAt(tx, block, blockIndexOf(tx, clusterIndex));
}

/** Cluster indexes below this are scanned with numbers (allocClustersNoref). */
const SCAN_NUMBER_LIMIT = 1n << 52n;

/**
 * `alloc_clusters_noref`: the first run of `ceil(size / cluster)` clusters with refcount 0 at or after
 * the hint; the hint ends just past the run. Refcounts are not changed.
 */
export function allocClustersNoref(tx: Tx, size: bigint): bigint {
  const g = geo(tx);
  const nb = (size + BigInt(g.clusterSize) - 1n) >> BigInt(g.clusterBits);
  let hint = tx.img.session.freeClusterIndex;
  // QEMU reads one refcount per cluster; the model reads them a run at a time (same result). Runs
  // start at one refcount — the hint usually sits on a free cluster, whose refcount the allocation
  // then increments (decoded once: decodeRefcountBytes) — and double while the scan goes on.
  let found = 0n;
  let chunk = 1;
  if (hint < SCAN_NUMBER_LIMIT && nb < 1n << 32n) {
    // The same scan with exact numbers (no bigint per cluster) while the index is below 2^52; it
    // hands over to the bigint loop below at the limit, which no refcount structure reaches.
    let h = Number(hint);
    const n = Number(nb);
    let f = 0;
    while (f < n && h < Number(SCAN_NUMBER_LIMIT)) {
      const run = refcountEntriesFrom(tx, h, Math.max(chunk, Math.min(n - f, 65536)));
      if (chunk < 65536) chunk *= 2;
      for (let i = 0; i < run.n; i++) {
        h++;
        if (run.entries !== undefined && !isZeroEntry(run.entries[run.sub + i]!)) f = 0; // `goto retry`
        else if (++f === n) break;
      }
    }
    hint = BigInt(h);
    found = BigInt(f);
  }
  while (found < nb) {
    const want = nb - found;
    const run = refcountsFrom(tx, hint, Math.max(chunk, Number(want < 65536n ? want : 65536n)));
    if (chunk < 65536) chunk *= 2;
    for (const rc of run) {
      hint++;
      if (rc !== 0n) found = 0n; // `goto retry`: start a new run after this cluster
      else if (++found === nb) break;
    }
  }
  setFreeClusterIndex(tx, hint);
  if (hint > 0n && hint - 1n > INT64_MAX >> BigInt(g.clusterBits)) {
    throw new ModelError('too-big', EFBIG, strerror(EFBIG));
  }
  return (hint - nb) << BigInt(g.clusterBits);
}

/**
 * `update_refcount`: adds (or with `decrease` subtracts) `addend` to every cluster touched by
 * [offset, offset+length). Returns 'again' when a refcount block had to be allocated: the increments
 * made so far in this call are undone (QEMU's error path) and the caller must search again.
 */
export function updateRefcount(tx: Tx, offset: bigint, length: bigint, addend: bigint, decrease: boolean): Again {
  if (decrease && addend !== 0n) markFreeingBarrier(tx);
  if (length <= 0n) return 'ok';
  if (offset >= 0n && offset + length <= 1n << 53n) return updateRefcountBelow2p53(tx, Number(offset), Number(length), addend, decrease);
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const start = offset & ~(cs - 1n);
  const last = (offset + length - 1n) & ~(cs - 1n);
  const max = (1n << BigInt(g.refcountBits)) - 1n;
  let oldTableIndex = -1;
  for (let co = start; co <= last;) {
    const ci = co >> BigInt(g.clusterBits);
    const tableIndex = Number(ci >> BigInt(refblockBits(tx)));
    if (tableIndex !== oldTableIndex) {
      if (allocRefcountBlock(tx, ci) === 'again') {
        // QEMU: "If the caller needs to restart the search for free clusters, try the same ones
        // first to see if they're still free" — the hint moves back to the start of this range.
        const startIndex = start >> BigInt(g.clusterBits);
        if (tx.img.session.freeClusterIndex > startIndex) setSession(tx, { freeClusterIndex: startIndex });
        // QEMU: "Try do undo any updates if an error is returned".
        updateRefcount(tx, offset, co - offset, addend, !decrease);
        return 'again';
      }
    }
    oldTableIndex = tableIndex;
    // The clusters of this range that this refcount block covers, updated together: QEMU updates
    // them one by one in its cached block; the resulting bytes and hint are the same.
    const block = checkedBlock(tx, tableIndex);
    const index = blockIndexOf(tx, ci);
    const count = Math.min(g.refblockEntries - index, Number((last - co) / cs) + 1);
    const values = readRefcountRun(tx, block, index, count);
    const k = addToRefcounts(tx, values, count, ci, addend, decrease, max);
    writeRefcountRun(tx, block, index, values.slice(0, k));
    if (k < count) {
      const bad = co + BigInt(k) * cs;
      updateRefcount(tx, offset, bad - offset, addend, !decrease);
      throw refcountOverflow(tx, ci + BigInt(k), values[k]!, addend, decrease);
    }
    co += BigInt(count) * cs;
  }
  return 'ok';
}

/**
 * updateRefcount for a range below 2^53, with its byte and cluster positions as exact numbers
 * (a guest write updates one or two refcounts, and bigint temporaries were most of that). Step for
 * step the same as the general loop in updateRefcount; refcount values stay bigint.
 */
function updateRefcountBelow2p53(tx: Tx, offset: number, length: number, addend: bigint, decrease: boolean): Again {
  const g = geo(tx);
  const cs = g.clusterSize;
  const rbe = g.refblockEntries;
  const start = offset - (offset % cs);
  const lastByte = offset + length - 1;
  const last = lastByte - (lastByte % cs);
  const max = MAX_REFCOUNT[g.refcountBits]!;
  let oldTableIndex = -1;
  for (let co = start; co <= last;) {
    const ci = co / cs;
    const tableIndex = Math.floor(ci / rbe);
    if (tableIndex !== oldTableIndex) {
      // allocRefcountBlock answers 'ok' at once when a block covers the cluster: asked only when none does.
      const covered = tableIndex < reftableSize(tx) && checkedBlock(tx, tableIndex) !== 0n;
      if (!covered && allocRefcountBlock(tx, BigInt(ci)) === 'again') {
        // As in updateRefcount: the hint moves back to the start of the range, and the updates
        // made so far are undone.
        const startIndex = BigInt(start / cs);
        if (tx.img.session.freeClusterIndex > startIndex) setSession(tx, { freeClusterIndex: startIndex });
        updateRefcount(tx, BigInt(offset), BigInt(co - offset), addend, !decrease);
        return 'again';
      }
    }
    oldTableIndex = tableIndex;
    const block = checkedBlock(tx, tableIndex);
    const index = ci % rbe;
    const count = Math.min(rbe - index, (last - co) / cs + 1);
    const values = readRefcountRun(tx, block, index, count);
    const k = addToRefcounts(tx, values, count, ci, addend, decrease, max);
    writeRefcountRun(tx, block, index, k === count ? values : values.slice(0, k));
    if (k < count) {
      updateRefcount(tx, BigInt(offset), BigInt(co + k * cs - offset), addend, !decrease);
      throw refcountOverflow(tx, ci + k, values[k]!, addend, decrease);
    }
    co += count * cs;
  }
  return 'ok';
}

/**
 * Adds `addend` (subtracts it when `decrease`) to the refcounts `values[0, count)` of the clusters
 * from `firstCluster` on, in place, stopping at the first that would leave [0, max]. A cluster that
 * drops to 0 moves the free-cluster hint back to it and, if the compressed cursor is in it, marks
 * that cluster freed. Returns how many were updated (`count` when none would overflow).
 */
function addToRefcounts(tx: Tx, values: bigint[], count: number, firstCluster: number | bigint, addend: bigint, decrease: boolean, max: bigint): number {
  let k = 0;
  for (; k < count; k++) {
    const next = decrease ? values[k]! - addend : values[k]! + addend;
    if (next < 0n || next > max) break;
    values[k] = next;
    if (next === 0n) {
      const c = BigInt(firstCluster) + BigInt(k);
      if (c < tx.img.session.freeClusterIndex) setSession(tx, { freeClusterIndex: c });
      if (cursorCluster(tx) === c) setSession(tx, { cursorClusterFreed: true });
    }
  }
  return k;
}

/** The refusal of a refcount update that would take cluster `cluster`'s refcount `rc` out of range. */
function refcountOverflow(tx: Tx, cluster: number | bigint, rc: bigint, addend: bigint, decrease: boolean): ModelError {
  return new ModelError('refcount-overflow', EINVAL,
    `refcount of cluster ${cluster} would become ${decrease ? rc - addend : rc + addend} (refcount_bits=${geo(tx).refcountBits})`);
}

/**
 * `alloc_refcount_block`: makes sure a refcount block covers cluster `ci`. 'ok' when one already
 * did; 'again' after allocating one (hooked into the table, or with a grown table).
 */
function allocRefcountBlock(tx: Tx, ci: bigint): Again {
  const g = geo(tx);
  const rbBits = BigInt(refblockBits(tx));
  const tableIndex = Number(ci >> rbBits);
  if (tableIndex < reftableSize(tx) && checkedBlock(tx, tableIndex) !== 0n) return 'ok';

  const cs = BigInt(g.clusterSize);
  const newBlock = allocClustersNoref(tx, cs);
  const newBlockCi = newBlock >> BigInt(g.clusterBits);
  if (newBlockCi >> rbBits === ci >> rbBits) {
    // The block describes itself: a zeroed block with its own refcount set to 1.
    hostWrite(tx, newBlock, new Uint8Array(g.clusterSize));
    writeRefcountAt(tx, newBlock, Number(newBlockCi & BigInt(g.refblockEntries - 1)), 1n);
  } else {
    // Described by another block (this recurses at most twice, QEMU's comment says).
    if (updateRefcount(tx, newBlock, cs, 1n, false) === 'again') return 'again';
    hostWrite(tx, newBlock, new Uint8Array(g.clusterSize));
  }
  // Crash safety: the new block (and its own refcount) must be on disk before the reftable points
  // at it (QEMU flushes the refblock cache, then bdrv_pwrite_sync's the table entry).
  hostFlush(tx);
  if (tableIndex < reftableSize(tx)) {
    hostWrite(tx, tx.img.header.refcountTableOffset + BigInt(tableIndex) * 8n, encodeReftableEntry(tx, newBlock));
    hostFlush(tx);
    return 'again';
  }
  // The table is full: grow it at the end of the area covered so far.
  const rbe = BigInt(g.refblockEntries);
  const need = ci + 1n > newBlockCi + 1n ? ci + 1n : newBlockCi + 1n;
  const blocksUsed = (need + rbe - 1n) / rbe;
  refcountArea(tx, blocksUsed * rbe * cs, 0n, false, tableIndex, newBlock);
  return 'again';
}

/**
 * `qcow2_refcount_metadata_size`: the number of refcount blocks needed to cover `clusters` clusters
 * plus the refcount structures themselves (fixed point), with 50 % more table when `generous`.
 */
export function refcountMetadataBlocks(clusters: bigint, clusterSize: number, refcountOrder: number, generous: boolean): bigint {
  const perTableCluster = BigInt(clusterSize / 8);
  const perBlock = BigInt((clusterSize * 8) >> refcountOrder);
  const divUp = (a: bigint, b: bigint): bigint => (a + b - 1n) / b;
  let table = 0n;
  let blocks = 0n;
  let n = 0n;
  let c = clusters;
  let last: bigint;
  do {
    last = n;
    blocks = divUp(c + table + blocks, perBlock);
    table = divUp(blocks, perTableCluster);
    n = c + blocks + table;
    if (n === last && generous) {
      c += divUp(table, 2n);
      n = 0n;
      generous = false;
    }
  } while (n !== last);
  return blocks;
}

/**
 * `qcow2_refcount_area`: new self-covering refcount structures from `startOffset` (the end of the
 * image): refblocks for the not yet covered ranges, then a new reftable (50 % larger than needed
 * unless `exactSize`) that also covers `additionalClusters` beyond; switches the header to it and
 * frees the old table. Returns the offset after the new structures.
 */
export function refcountArea(tx: Tx, startOffset: bigint, additionalClusters: bigint, exactSize: boolean,
  newRefblockIndex: number, newRefblockOffset: bigint): bigint {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const rbe = BigInt(g.refblockEntries);
  const total = refcountMetadataBlocks(startOffset / cs + additionalClusters, g.clusterSize, tx.img.header.refcountOrder, !exactSize);
  if (total * 8n > MAX_REFTABLE_BYTES) throw new ModelError('too-big', EFBIG, strerror(EFBIG));
  const totalCount = Number(total);
  const areaIndex = Number(startOffset / cs / rbe);
  let tableSize = exactSize ? totalCount : totalCount + Math.ceil(totalCount / 2);
  const perCluster = g.clusterSize / 8;
  tableSize = Math.ceil(tableSize / perCluster) * perCluster;
  const tableClusters = (tableSize * 8) / g.clusterSize;
  if (BigInt(tableSize) * 8n > MAX_REFTABLE_BYTES) throw new ModelError('too-big', EFBIG, strerror(EFBIG));

  const oldSize = reftableSize(tx);
  const table: bigint[] = new Array<bigint>(tableSize).fill(0n);
  for (let i = 0; i < Math.min(oldSize, tableSize); i++) table[i] = reftableEntry(tx, i);
  if (newRefblockOffset !== 0n) table[newRefblockIndex] = newRefblockOffset;

  let additional = 0n;
  for (let i = areaIndex; i < totalCount; i++) if (table[i] === 0n) additional++;
  const tableOffset = startOffset + additional * cs;
  const endOffset = tableOffset + BigInt(tableClusters) * cs;

  let blockOffset = startOffset;
  for (let i = areaIndex; i < totalCount; i++) {
    let block = table[i]!;
    if (block === 0n) {
      block = blockOffset;
      hostWrite(tx, block, new Uint8Array(g.clusterSize));
      table[i] = block;
      blockOffset += cs;
    }
    const firstCovered = BigInt(i) * rbe * cs;
    if (firstCovered < endOffset) {
      // Set the refcount of all of the new refcount structures to 1.
      let j = firstCovered < startOffset ? (startOffset - firstCovered) / cs : 0n;
      const endIndex = (endOffset - firstCovered) / cs < rbe ? (endOffset - firstCovered) / cs : rbe;
      if (j < endIndex) writeRefcountRun(tx, block, Number(j), new Array<bigint>(Number(endIndex - j)).fill(1n));
    }
  }
  // Crash safety: refblocks, then the table, are on disk before the header switches to them.
  hostFlush(tx);
  const tableBytes = new Uint8Array(tableSize * 8);
  for (let i = 0; i < totalCount; i++) if (table[i] !== 0n) tableBytes.set(encodeReftableEntry(tx, table[i]!), i * 8);
  hostWrite(tx, tableOffset, tableBytes);
  hostFlush(tx);
  const oldOffset = tx.img.header.refcountTableOffset;
  setHeaderFields(tx, { refcountTableOffset: tableOffset, refcountTableClusters: tableClusters });
  hostFlush(tx);
  // Free the old table (only after nothing points at it any more).
  freeClusters(tx, oldOffset, BigInt(oldSize) * 8n);
  return endOffset;
}

/** `qcow2_alloc_clusters`: allocates `size` bytes of contiguous clusters with refcount 1. */
export function allocClusters(tx: Tx, size: bigint): bigint {
  for (let attempt = 0; attempt < MAX_ALLOC_RETRIES; attempt++) {
    const offset = allocClustersNoref(tx, size);
    if (updateRefcount(tx, offset, size, 1n, false) === 'ok') return offset;
  }
  throw new ModelError('corrupt', EIO, 'cluster allocation did not converge');
}

/**
 * `qcow2_alloc_clusters_at`: allocates as many of the `nb` clusters starting at `offset` as are free
 * (stopping at the first used one); returns how many were allocated (0 when the first is in use).
 */
export function allocClustersAt(tx: Tx, offset: bigint, nb: number): number {
  if (nb === 0) return 0;
  const g = geo(tx);
  for (let attempt = 0; attempt < MAX_ALLOC_RETRIES; attempt++) {
    const ci = offset >> BigInt(g.clusterBits);
    let i = 0;
    scan: while (i < nb) {
      for (const rc of refcountsFrom(tx, ci + BigInt(i), nb - i)) {
        if (rc !== 0n) break scan;
        i++;
      }
    }
    if (updateRefcount(tx, offset, BigInt(i) << BigInt(g.clusterBits), 1n, false) === 'ok') return i;
  }
  throw new ModelError('corrupt', EIO, 'cluster allocation did not converge');
}

/**
 * `qcow2_free_clusters`: drops one reference on every cluster of [offset, offset+size). Like QEMU,
 * a failure (a refcount already 0) is not fatal: the clusters leak and the operation goes on.
 */
export function freeClusters(tx: Tx, offset: bigint, size: bigint): void {
  const before = checkpointImg(tx);
  const ioLength = tx.io.length;
  try {
    updateRefcount(tx, offset, size, 1n, true);
  } catch (e) {
    if (!(e instanceof ModelError)) throw e;
    // QEMU prints "qcow2_free_clusters failed" and carries on; the undo already ran.
    tx.img = { ...before, session: tx.img.session };
    tx.io.length = ioLength;
  }
}

/**
 * `qcow2_alloc_bytes`: `size` (≤ cluster) bytes for a compressed cluster, packed right after the
 * previous blob while it fits in the current cluster (or the next cluster is the next allocated one),
 * and only while that cluster's refcount is below the maximum (docs/format/compression.md#packing-compressed-clusters).
 */
export function allocBytes(tx: Tx, size: number): bigint {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const max = (1n << BigInt(g.refcountBits)) - 1n;
  let offset = tx.img.session.freeByteOffset;
  if (offset !== 0n) {
    const rc = getRefcount(tx, offset >> BigInt(g.clusterBits));
    if (rc === max) {
      offset = 0n;
    } else if (rc !== 0n && tx.img.session.cursorClusterFreed) {
      // Deliberate difference from QEMU 7.2: the cursor's cluster was freed and has been reused
      // since (as data or metadata). QEMU packs into it anyway — corrupting that cluster, or
      // tripping its overlap check — so the model starts a new cluster instead and counts it.
      offset = 0n;
      setSession(tx, { staleCursorAvoided: tx.img.session.staleCursorAvoided + 1 });
    }
  }
  let freeInCluster = cs - (offset & (cs - 1n));
  for (let attempt = 0; attempt < MAX_ALLOC_RETRIES; attempt++) {
    if (offset === 0n || freeInCluster < BigInt(size)) {
      const newCluster = allocClustersNoref(tx, cs);
      if (offset === 0n || ((offset + cs - 1n) & ~(cs - 1n)) !== newCluster) {
        offset = newCluster;
        freeInCluster = cs;
      } else {
        freeInCluster += cs;
      }
    }
    if (offset === 0n) {
      throw new ModelError('corrupt', EIO, 'Preventing invalid allocation of compressed cluster at offset 0');
    }
    if (updateRefcount(tx, offset, BigInt(size), 1n, false) === 'ok') {
      let next = offset + BigInt(size);
      if ((next & (cs - 1n)) === 0n) next = 0n;
      setSession(tx, { freeByteOffset: next, cursorClusterFreed: false });
      return offset;
    }
    offset = 0n;
  }
  throw new ModelError('corrupt', EIO, 'compressed allocation did not converge');
}
