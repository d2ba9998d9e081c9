/**
 * QEMU's metadata overlap check (block/qcow2-refcount.c qcow2_check_metadata_overlap with the default
 * "cached" template, docs/format/overlap-checks.md): before metadata or data is written at a host
 * range, the range rounded out to clusters must not touch the header, the active L1 table, the
 * refcount table, the snapshot table, an inactive (snapshot) L1 table, an active L2 table, a refcount
 * block or the bitmap directory — tested in that order, so the section named is QEMU's. An overlap is
 * a fatal corruption: QEMU refuses the write, sets the corrupt bit and stops using the image.
 *
 * One implementation serves the model's write path and the check's repairs; each supplies a
 * MetadataView of what QEMU's BDRVQcow2State holds at that moment (the model reads the tables from
 * its host file, the check from its in-memory copies). The sections made of many ranges are asked
 * through the view, which answers from cached per-page or per-table interval sets — QEMU walks every
 * entry each time, which on a badly broken image means thousands of full walks.
 */
import { decodeL1EntryFields, decodeRefcountTableEntryFields, SNAPSHOT_ENTRY_FIXED_SIZE } from '../../generated/qcow2.ts';
import { u64ToBigInt } from '../format/index.ts';
import { l1L2Offset, refcountBlockOffset } from '../format/index.ts';
import {
  QCOW2_OL_ACTIVE_L1, QCOW2_OL_ACTIVE_L2, QCOW2_OL_BITMAP_DIRECTORY, QCOW2_OL_DEFAULT_TEMPLATE, QCOW2_OL_INACTIVE_L1,
  QCOW2_OL_MAIN_HEADER, QCOW2_OL_REFCOUNT_BLOCK, QCOW2_OL_REFCOUNT_TABLE, QCOW2_OL_SNAPSHOT_TABLE,
} from '../format/index.ts';
import { EIO, ModelError } from './errors.ts';
import { headerReferences } from './header-references.ts';
import { hostPage } from './host-file.ts';
import { AUTOCLEAR_BITMAPS, INCOMPAT_CORRUPT } from './image.ts';
import { l1Entry } from './mapping.ts';
import { PAGE_SIZE } from './page-map.ts';
import { reftableEntry, reftableSize } from './refcount.ts';
import { snapshotTableEntries } from './snapshot.ts';
import { type Tx, checkpointImg, geo, isOwnedPage, setHeaderFields } from './tx.ts';

// ---------------------------------------------------------------------------------------------
// QEMU's check

/** The metadata sections by QEMU's names (metadata_ol_names), as the corruption message prints them. */
export type OverlapSection =
  | 'qcow2_header'
  | 'active L1 table'
  | 'refcount table'
  | 'snapshot table'
  | 'inactive L1 table'
  | 'active L2 table'
  | 'refcount block'
  | 'bitmap directory';

/**
 * What QEMU's BDRVQcow2State holds when a write is checked. The single-range sections are fields;
 * the many-range ones are questions about a cluster-aligned range [start, start + length).
 */
export interface MetadataView {
  readonly clusterBits: number;
  readonly l1TableOffset: bigint;
  /** s->l1_size: entries of the active L1 table. */
  readonly l1Size: number;
  readonly refcountTableOffset: bigint;
  /** s->refcount_table_size: entries of the refcount table. */
  readonly refcountTableSize: number;
  readonly snapshotsOffset: bigint;
  /** s->snapshots_size: bytes of the snapshot table (0 without snapshots). */
  readonly snapshotsSize: bigint;
  /** The bitmap directory, when autoclear bit 0 says the bitmaps extension is valid. */
  readonly bitmapDirectory?: { readonly offset: bigint; readonly size: bigint };
  /** Whether a snapshot's L1 table overlaps the range. */
  inactiveL1Overlaps(start: bigint, length: bigint): boolean;
  /** Whether an L2 table the active L1 table points to overlaps the range. */
  activeL2Overlaps(start: bigint, length: bigint): boolean;
  /** Whether a refcount block the refcount table points to overlaps the range. */
  refcountBlockOverlaps(start: bigint, length: bigint): boolean;
}

/**
 * qcow2_check_metadata_overlap: the section the write [offset, offset + size) would touch, testing
 * the sections of the default ("cached") template except those in `ignore` (QCOW2_OL_* bits), in
 * QEMU's order; undefined when none (or when size is 0).
 */
export function metadataOverlap(view: MetadataView, ignore: number, offset: bigint, size: bigint): OverlapSection | undefined {
  const chk = QCOW2_OL_DEFAULT_TEMPLATE & ~ignore;
  if (size === 0n) return undefined;
  const cs = 1n << BigInt(view.clusterBits);
  if ((chk & QCOW2_OL_MAIN_HEADER) !== 0 && offset < cs) return 'qcow2_header';
  // Align the range to test to cluster boundaries.
  const start = offset & ~(cs - 1n);
  const len = (((offset & (cs - 1n)) + size + cs - 1n) / cs) * cs;
  const overlaps = (ofs: bigint, sz: bigint): boolean => rangesOverlap(start, len, ofs, sz);
  if ((chk & QCOW2_OL_ACTIVE_L1) !== 0 && view.l1Size > 0 && overlaps(view.l1TableOffset, BigInt(view.l1Size) * 8n)) return 'active L1 table';
  if ((chk & QCOW2_OL_REFCOUNT_TABLE) !== 0 && view.refcountTableSize > 0 && overlaps(view.refcountTableOffset, BigInt(view.refcountTableSize) * 8n)) {
    return 'refcount table';
  }
  if ((chk & QCOW2_OL_SNAPSHOT_TABLE) !== 0 && view.snapshotsSize > 0n && overlaps(view.snapshotsOffset, view.snapshotsSize)) return 'snapshot table';
  if ((chk & QCOW2_OL_INACTIVE_L1) !== 0 && view.inactiveL1Overlaps(start, len)) return 'inactive L1 table';
  if ((chk & QCOW2_OL_ACTIVE_L2) !== 0 && view.activeL2Overlaps(start, len)) return 'active L2 table';
  if ((chk & QCOW2_OL_REFCOUNT_BLOCK) !== 0 && view.refcountBlockOverlaps(start, len)) return 'refcount block';
  if ((chk & QCOW2_OL_BITMAP_DIRECTORY) !== 0 && view.bitmapDirectory !== undefined && overlaps(view.bitmapDirectory.offset, view.bitmapDirectory.size)) {
    return 'bitmap directory';
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Ranges as QEMU compares them

const U64_MASK = (1n << 64n) - 1n;
const TWO_53 = 2 ** 53;

/**
 * ranges_overlap(first1, len1, first2, len2) of QEMU (include/qemu/range.h) on uint64 values: the
 * last bytes are `first + len - 1` modulo 2^64 (so a length of 0 wraps to the top: QEMU checks the
 * bitmap directory without testing its size).
 */
export function rangesOverlap(first1: bigint, len1: bigint, first2: bigint, len2: bigint): boolean {
  const last1 = (first1 + len1 - 1n) & U64_MASK;
  const last2 = (first2 + len2 - 1n) & U64_MASK;
  return !(last2 < first1 || last1 < first2);
}

/**
 * Many ranges of one section, for "does [start, start+len) overlap any?" with start and len cluster
 * aligned: the ranges as cluster intervals [first, last] sorted by first, with the running maximum
 * of last. Exact for queries below 2^53 clusters; others (offsets of 2^62 bytes and more) go through
 * `exact`, which walks the original ranges. `ranges` must visit the same ranges every time.
 */
export class ClusterIntervals {
  private readonly first: Float64Array;
  private readonly maxLast: Float64Array;
  /** Ranges whose last byte wraps past 2^64: [offset, wrapped last byte] (rare: see the constructor). */
  private readonly wrapped: [bigint, bigint][] = [];
  private wrappedMinOffset = U64_MASK;
  private wrappedMaxLast = -1n;

  constructor(
    private readonly clusterBits: number,
    private readonly ranges: (visit: (offset: bigint, length: bigint) => void) => void,
  ) {
    const firsts: number[] = [];
    const lasts: number[] = [];
    const cb = BigInt(clusterBits);
    ranges((offset, length) => {
      const last = offset + length - 1n;
      if (last > U64_MASK) {
        // Its last byte is below its start: it overlaps a query reaching both below that byte and up
        // to its start — never one of the check's (a table entry's range is at most 2^35 bytes, so
        // such a range starts above 2^64 - 2^35), but kept exact.
        const l = last & U64_MASK;
        this.wrapped.push([offset, l]);
        if (offset < this.wrappedMinOffset) this.wrappedMinOffset = offset;
        if (l > this.wrappedMaxLast) this.wrappedMaxLast = l;
        return;
      }
      const f = offset >> cb;
      if (f >= BigInt(TWO_53)) return;
      firsts.push(Number(f));
      // Rounding above 2^53 keeps the value above every fast query, so comparisons stay exact.
      lasts.push(Number(last >> cb));
    });
    const order = firsts.map((_v, i) => i).sort((a, b) => firsts[a]! - firsts[b]!);
    this.first = new Float64Array(order.length);
    this.maxLast = new Float64Array(order.length);
    let max = -1;
    order.forEach((i, k) => {
      this.first[k] = firsts[i]!;
      max = Math.max(max, lasts[i]!);
      this.maxLast[k] = max;
    });
  }

  /** Whether the cluster-aligned range [start, start+len) overlaps one of the ranges (as rangesOverlap). */
  overlaps(start: bigint, len: bigint): boolean {
    const cb = BigInt(this.clusterBits);
    const last = start + len - 1n;
    if (this.wrapped.length > 0 && last >= this.wrappedMinOffset && this.wrappedMaxLast >= start) {
      for (const [o, l] of this.wrapped) if (l >= start && last >= o) return true;
    }
    const qe = last >> cb;
    if (qe >= BigInt(TWO_53)) return this.exact(start, len);
    const s = Number(start >> cb);
    const e = Number(qe);
    // The last interval starting at or before the query's last cluster.
    let lo = 0;
    let hi = this.first.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.first[mid]! <= e) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && this.maxLast[lo - 1]! >= s;
  }

  private exact(start: bigint, len: bigint): boolean {
    let found = false;
    this.ranges((offset, length) => {
      if (!found && rangesOverlap(start, len, offset, length)) found = true;
    });
    return found;
  }
}

// ---------------------------------------------------------------------------------------------
// The model's view: the tables as the host file holds them

/**
 * The non-zero table-entry offsets of one 4 KiB page of an L1 table or refcount table, decoded once
 * per page object through the generated decoders. Pages are immutable, so the page object is the
 * cache key: a step that changes one entry makes a new page, and only that page is decoded again.
 * The overlap check runs before every compressed write, and the tables of a large disk hold
 * thousands of entries (2048 L1 + 8192 reftable entries for 1 TiB with 64 KiB clusters).
 */
interface PageEntries {
  readonly clusterBits: number;
  /** Entry index within the page (the 8-byte slot), ascending. */
  readonly slots: number[];
  /** The exact offset each entry holds (non-zero). */
  readonly offsets: bigint[];
  /** offset / cluster size when the offset is cluster aligned and below 2^53, else -1. */
  readonly clusters: number[];
}

const SLOTS_PER_PAGE = PAGE_SIZE / 8;
const l1PageCache = new WeakMap<Uint8Array, PageEntries>();
const reftablePageCache = new WeakMap<Uint8Array, PageEntries>();

function decodePage(page: Uint8Array, clusterBits: number, kind: 'l1' | 'reftable'): PageEntries {
  const slots: number[] = [];
  const offsets: bigint[] = [];
  const clusters: number[] = [];
  const mask = (1n << BigInt(clusterBits)) - 1n;
  for (let slot = 0; slot < SLOTS_PER_PAGE; slot++) {
    const at = slot * 8;
    // An all-zero entry holds offset 0 (no table): skip it without decoding.
    let any = 0;
    for (let k = 0; k < 8; k++) any |= page[at + k]!;
    if (any === 0) continue;
    const offset = kind === 'l1'
      ? l1L2Offset(decodeL1EntryFields(page, at, { clusterBits, extendedL2: false }))
      : refcountBlockOffset(decodeRefcountTableEntryFields(page, at, { clusterBits, refcountOrder: 0 }));
    if (offset === 0n) continue;
    slots.push(slot);
    offsets.push(offset);
    clusters.push((offset & mask) === 0n && offset < 1n << 53n ? Number(offset >> BigInt(clusterBits)) : -1);
  }
  return { clusterBits, slots, offsets, clusters };
}

function pageEntries(page: Uint8Array, clusterBits: number, kind: 'l1' | 'reftable', cacheable: boolean): PageEntries {
  // A page the running operation may still change in place is decoded, never cached.
  if (!cacheable) return decodePage(page, clusterBits, kind);
  const cache = kind === 'l1' ? l1PageCache : reftablePageCache;
  let e = cache.get(page);
  if (e === undefined || e.clusterBits !== clusterBits) {
    e = decodePage(page, clusterBits, kind);
    cache.set(page, e);
  }
  return e;
}

/**
 * Visits, in index order, the entries [0, count) of the table at `tableOffset` whose offset is not
 * 0, until `visit` returns true; returns whether it did. The table must start 8-byte aligned.
 */
function someEntry(tx: Tx, tableOffset: bigint, count: number, kind: 'l1' | 'reftable',
  visit: (index: number, offset: bigint, cluster: number) => boolean): boolean {
  if (count <= 0) return false;
  const cb = geo(tx).clusterBits;
  const end = tableOffset + BigInt(count) * 8n;
  const firstPage = Number(tableOffset / BigInt(PAGE_SIZE));
  const lastPage = Number((end - 1n) / BigInt(PAGE_SIZE));
  for (let p = firstPage; p <= lastPage; p++) {
    const page = hostPage(tx.img.file, p);
    if (page === undefined) continue; // a hole: every entry is 0
    const e = pageEntries(page, cb, kind, !isOwnedPage(tx, p, page));
    // Table index of slot 0 of this page (may be negative for the page holding the table start).
    const base = Number((BigInt(p) * BigInt(PAGE_SIZE) - tableOffset) / 8n);
    for (let k = 0; k < e.slots.length; k++) {
      const index = base + e.slots[k]!;
      if (index < 0 || index >= count) continue;
      if (visit(index, e.offsets[k]!, e.clusters[k]!)) return true;
    }
  }
  return false;
}

/** Inactive L1 tables and the snapshot table's size, per snapshot-table page object (see snapshotFacts). */
const snapshotCache = new WeakMap<Uint8Array, { readonly key: string; readonly size: bigint; readonly l1s: ClusterIntervals }>();

/**
 * s->snapshots_size and the snapshots' L1 tables as QEMU holds them, from the snapshot table in the
 * host file; cached per page object of a table that lies in one page (a table spanning pages, rare,
 * is read each time).
 */
function snapshotFacts(tx: Tx): { readonly size: bigint; readonly l1s: ClusterIntervals } {
  const h = tx.img.header;
  const cb = geo(tx).clusterBits;
  const read = (): { size: bigint; l1s: ClusterIntervals } => {
    const tables: [bigint, bigint][] = [];
    let end = h.snapshotsOffset;
    for (const { pos, entry } of snapshotTableEntries(tx.img.file, h)) {
      if (entry.l1Size > 0) tables.push([u64ToBigInt(entry.l1TableOffset), BigInt(entry.l1Size) * 8n]);
      end = pos + BigInt(SNAPSHOT_ENTRY_FIXED_SIZE + entry.lenExtraData + entry.lenId + entry.lenName);
    }
    return { size: end - h.snapshotsOffset, l1s: new ClusterIntervals(cb, (visit) => { for (const [o, l] of tables) visit(o, l); }) };
  };
  const p = Number(h.snapshotsOffset / BigInt(PAGE_SIZE));
  const page = hostPage(tx.img.file, p);
  if (page === undefined || isOwnedPage(tx, p, page)) return read();
  const key = `${h.snapshotsOffset}:${h.nbSnapshots}:${cb}`;
  const hit = snapshotCache.get(page);
  if (hit !== undefined && hit.key === key) return hit;
  const facts = read();
  // Only a table inside this one page can be keyed by it.
  if (h.snapshotsOffset + facts.size <= BigInt(p + 1) * BigInt(PAGE_SIZE)) snapshotCache.set(page, { key, ...facts });
  return facts;
}

/** The bitmap directory per header page object (headerReferences decodes cluster 0). */
const bitmapCache = new WeakMap<Uint8Array, { readonly offset: bigint; readonly size: bigint } | null>();

function bitmapDirectory(tx: Tx): { readonly offset: bigint; readonly size: bigint } | undefined {
  if ((tx.img.header.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0n) return undefined;
  const page = hostPage(tx.img.file, 0);
  const cached = page !== undefined && !isOwnedPage(tx, 0, page) ? bitmapCache.get(page) : undefined;
  if (cached !== undefined) return cached ?? undefined;
  const b = headerReferences(tx.img).bitmaps;
  const dir = b !== undefined && b.count > 0 ? { offset: b.directoryOffset, size: b.directorySize } : null;
  if (page !== undefined && !isOwnedPage(tx, 0, page)) bitmapCache.set(page, dir);
  return dir ?? undefined;
}

/** The model's MetadataView of the image in `tx` (the tables read from its host file). */
export function modelMetadataView(tx: Tx): MetadataView {
  const g = geo(tx);
  const h = tx.img.header;
  const cs = BigInt(g.clusterSize);
  const hasSnapshots = h.nbSnapshots > 0;
  const snapshots = hasSnapshots ? snapshotFacts(tx) : undefined;
  /** Whether the cluster at `from` (its cluster index `cluster`, -1 when not exact) overlaps [start, start+len). */
  const hitsCluster = (start: bigint, len: bigint, from: bigint, cluster: number): boolean => {
    const end = start + len;
    if (end < 1n << 53n && cluster >= 0) return cluster >= Number(start >> BigInt(g.clusterBits)) && cluster < Number(end >> BigInt(g.clusterBits));
    return rangesOverlap(start, len, from, cs);
  };
  const dir = bitmapDirectory(tx);
  return {
    clusterBits: g.clusterBits,
    l1TableOffset: h.l1TableOffset,
    l1Size: h.l1Size,
    refcountTableOffset: h.refcountTableOffset,
    refcountTableSize: reftableSize(tx),
    snapshotsOffset: h.snapshotsOffset,
    snapshotsSize: snapshots?.size ?? 0n,
    ...(dir !== undefined ? { bitmapDirectory: dir } : {}),
    inactiveL1Overlaps: (start, len) => snapshots !== undefined && snapshots.l1s.overlaps(start, len),
    activeL2Overlaps: (start, len) => {
      if ((h.l1TableOffset & 7n) !== 0n) {
        for (let i = 0; i < h.l1Size; i++) {
          const l2 = l1Entry(tx, i).l2Offset;
          if (l2 !== 0n && rangesOverlap(start, len, l2, cs)) return true;
        }
        return false;
      }
      return someEntry(tx, h.l1TableOffset, h.l1Size, 'l1', (i, l2, cluster) => {
        // An unaligned L2 offset fails as reading the entry does (l1Entry throws QEMU's error).
        if ((l2 & (cs - 1n)) !== 0n) l1Entry(tx, i);
        return hitsCluster(start, len, l2, cluster);
      });
    },
    refcountBlockOverlaps: (start, len) => {
      if ((h.refcountTableOffset & 7n) !== 0n) {
        for (let i = 0; i < reftableSize(tx); i++) {
          const block = reftableEntry(tx, i);
          if (block !== 0n && rangesOverlap(start, len, block, cs)) return true;
        }
        return false;
      }
      return someEntry(tx, h.refcountTableOffset, reftableSize(tx), 'reftable', (_i, block, cluster) => hitsCluster(start, len, block, cluster));
    },
  };
}

/** The section the model's write of [offset, offset + length) would touch (QEMU's pre-write check), or undefined. */
export function modelMetadataOverlap(tx: Tx, offset: bigint, length: bigint): OverlapSection | undefined {
  return metadataOverlap(modelMetadataView(tx), 0, offset, length);
}

/**
 * `qcow2_signal_corruption` (fatal, writable image): writes the corrupt bit and throws the EIO the
 * request fails with, carrying the image as QEMU leaves it (what `tx` holds now plus the bit).
 */
export function signalFatalCorruption(tx: Tx, message: string): never {
  setHeaderFields(tx, { incompatibleFeatures: tx.img.header.incompatibleFeatures | INCOMPAT_CORRUPT });
  const e = new ModelError('corrupt', EIO, `qcow2: Marking image as corrupt: ${message}; further corruption events will be suppressed`);
  e.committed = { image: checkpointImg(tx), io: [...tx.io] };
  throw e;
}
