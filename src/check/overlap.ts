/**
 * QEMU's metadata overlap check as the check's repairs meet it (block/qcow2-refcount.c
 * qcow2_check_metadata_overlap with the default "cached" template, docs/format/overlap-checks.md#sections-and-templates): before a repair
 * writes, the range (rounded out to clusters) must not touch the header, the active L1 and L2
 * tables, the refcount table and blocks, the snapshot table, the inactive L1 tables or the bitmap
 * directory — seen as the check sees the image (its own reading of the snapshot table, the in-memory
 * reftable and L1 table of src/check/tables.ts).
 *
 * QEMU walks every L1, reftable and snapshot entry on each check; here the sections made of many
 * ranges (active L2 tables, refcount blocks, inactive L1 tables) are kept as sorted cluster
 * intervals per table version, so a check costs a binary search — the check of `-r all` runs before
 * every repair write, thousands of times on a badly broken image. The ranges compare as QEMU's
 * ranges_overlap does: uint64 arithmetic, a range whose last byte wraps past 2^64 included.
 */
import {
  QCOW2_OL_ACTIVE_L1, QCOW2_OL_ACTIVE_L2, QCOW2_OL_BITMAP_DIRECTORY, QCOW2_OL_DEFAULT_TEMPLATE, QCOW2_OL_INACTIVE_L1,
  QCOW2_OL_INACTIVE_L2, QCOW2_OL_MAIN_HEADER, QCOW2_OL_REFCOUNT_BLOCK, QCOW2_OL_REFCOUNT_TABLE, QCOW2_OL_SNAPSHOT_TABLE,
} from '../format/limits.ts';
import { AUTOCLEAR_BITMAPS } from '../model/image.ts';
import { L1E_OFFSET_MASK, REFT_RESERVED_MASK, reftableSize, type CheckContext, type CheckedSnapshot } from './context.ts';
import { activeL1View, reftableView, type TableView } from './tables.ts';


// The overlap sections (QCOW2_OL_*, src/format/limits.ts) under this module's short names.
export const OL_MAIN_HEADER = QCOW2_OL_MAIN_HEADER;
export const OL_ACTIVE_L1 = QCOW2_OL_ACTIVE_L1;
export const OL_ACTIVE_L2 = QCOW2_OL_ACTIVE_L2;
export const OL_REFCOUNT_TABLE = QCOW2_OL_REFCOUNT_TABLE;
export const OL_REFCOUNT_BLOCK = QCOW2_OL_REFCOUNT_BLOCK;
export const OL_SNAPSHOT_TABLE = QCOW2_OL_SNAPSHOT_TABLE;
export const OL_INACTIVE_L1 = QCOW2_OL_INACTIVE_L1;
export const OL_INACTIVE_L2 = QCOW2_OL_INACTIVE_L2;
export const OL_BITMAP_DIRECTORY = QCOW2_OL_BITMAP_DIRECTORY;
/** The sections checked: QEMU 7.2's default template, QCOW2_OL_CACHED (everything but the inactive L2 tables). */
const OL_CACHED = QCOW2_OL_DEFAULT_TEMPLATE;

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

/** The L2 tables the active L1 view points to, per view. */
const l2Sets = new WeakMap<TableView, ClusterIntervals>();
/** The refcount blocks the reftable view points to, per view. */
const refblockSets = new WeakMap<TableView, ClusterIntervals>();
/** The inactive L1 tables of a snapshot list, per list. */
const snapshotL1Sets = new WeakMap<readonly CheckedSnapshot[], ClusterIntervals>();

function tableSet(cache: WeakMap<TableView, ClusterIntervals>, view: TableView, mask: bigint, clusterBits: number): ClusterIntervals {
  let set = cache.get(view);
  if (set === undefined) {
    const cs = 1n << BigInt(clusterBits);
    set = new ClusterIntervals(clusterBits, (visit) => {
      for (const w of view.words) {
        const o = w & mask;
        if (o !== 0n) visit(o, cs);
      }
    });
    cache.set(view, set);
  }
  return set;
}

function snapshotSet(snapshots: readonly CheckedSnapshot[], clusterBits: number): ClusterIntervals {
  let set = snapshotL1Sets.get(snapshots);
  if (set === undefined) {
    set = new ClusterIntervals(clusterBits, (visit) => {
      for (const sn of snapshots) if (sn.l1Size > 0) visit(sn.l1TableOffset, BigInt(sn.l1Size) * 8n);
    });
    snapshotL1Sets.set(snapshots, set);
  }
  return set;
}

/**
 * The metadata section (QEMU's name) the write [offset, offset+size) would touch, checking the
 * sections of the "cached" template except `ignore`, in QEMU's order; undefined when none. Uses the
 * check's view of the image (its snapshot list, the in-memory reftable and L1 table).
 */
export function metadataOverlap(c: CheckContext, ignore: number, offset: bigint, size: bigint): string | undefined {
  const chk = OL_CACHED & ~ignore;
  if (size === 0n) return undefined;
  const cs = BigInt(c.g.clusterSize);
  const h = c.tx.img.header;
  if ((chk & OL_MAIN_HEADER) !== 0 && offset < cs) return 'qcow2_header';
  const start = offset & ~(cs - 1n);
  const len = (((offset & (cs - 1n)) + size + cs - 1n) / cs) * cs;
  const overlaps = (ofs: bigint, sz: bigint): boolean => rangesOverlap(start, len, ofs, sz);
  if ((chk & OL_ACTIVE_L1) !== 0 && h.l1Size > 0 && overlaps(h.l1TableOffset, BigInt(h.l1Size) * 8n)) return 'active L1 table';
  const rtSize = reftableSize(c);
  if ((chk & OL_REFCOUNT_TABLE) !== 0 && rtSize > 0 && overlaps(h.refcountTableOffset, BigInt(rtSize) * 8n)) return 'refcount table';
  if ((chk & OL_SNAPSHOT_TABLE) !== 0 && c.snapshotsSize > 0n && overlaps(h.snapshotsOffset, c.snapshotsSize)) return 'snapshot table';
  if ((chk & OL_INACTIVE_L1) !== 0 && c.snapshots.length > 0 && snapshotSet(c.snapshots, c.g.clusterBits).overlaps(start, len)) {
    return 'inactive L1 table';
  }
  if ((chk & OL_ACTIVE_L2) !== 0 && tableSet(l2Sets, activeL1View(c.tx), L1E_OFFSET_MASK, c.g.clusterBits).overlaps(start, len)) {
    return 'active L2 table';
  }
  if ((chk & OL_REFCOUNT_BLOCK) !== 0 && tableSet(refblockSets, reftableView(c.tx), ~REFT_RESERVED_MASK & U64_MASK, c.g.clusterBits).overlaps(start, len)) {
    return 'refcount block';
  }
  if ((chk & OL_BITMAP_DIRECTORY) !== 0 && (h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n && c.bitmaps !== undefined
    && overlaps(c.bitmaps.offset, c.bitmaps.size)) {
    return 'bitmap directory';
  }
  return undefined;
}
