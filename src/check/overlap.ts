/**
 * The check's view of QEMU's metadata for the one overlap check (src/model/overlap.ts,
 * qcow2_check_metadata_overlap): the image as the check sees it — its own reading of the snapshot
 * table, the in-memory reftable and L1 table of src/check/tables.ts — so a repair write is refused
 * exactly where QEMU's `check -r` refuses it. The sections made of many ranges are kept as sorted
 * cluster intervals per table version: the check of `-r all` runs before every repair write,
 * thousands of times on a badly broken image.
 */
import { L1EntryMasks, RefcountTableEntryMasks } from '../../generated/qcow2.ts';
import { AUTOCLEAR_BITMAPS } from '../model/index.ts';
import { ClusterIntervals, metadataOverlap, type MetadataView, type OverlapSection } from '../model/index.ts';
import { reftableSize } from '../model/index.ts';
import { type CheckContext, type CheckedSnapshot } from './context.ts';
import { activeL1View, reftableView, type TableView } from './tables.ts';

const U64_MASK = (1n << 64n) - 1n;

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

/** The check's MetadataView of the image it works on (see the module comment). */
function checkMetadataView(c: CheckContext): MetadataView {
  const h = c.tx.img.header;
  const cb = c.g.clusterBits;
  const bitmaps = (h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n ? c.bitmaps : undefined;
  return {
    clusterBits: cb,
    l1TableOffset: h.l1TableOffset,
    l1Size: h.l1Size,
    refcountTableOffset: h.refcountTableOffset,
    refcountTableSize: reftableSize(c.tx),
    snapshotsOffset: h.snapshotsOffset,
    snapshotsSize: c.snapshotsSize,
    ...(bitmaps !== undefined ? { bitmapDirectory: { offset: bitmaps.offset, size: bitmaps.size } } : {}),
    inactiveL1Overlaps: (start, len) => c.snapshots.length > 0 && snapshotSet(c.snapshots, cb).overlaps(start, len),
    activeL2Overlaps: (start, len) => tableSet(l2Sets, activeL1View(c.tx), L1EntryMasks.l2Offset, cb).overlaps(start, len),
    refcountBlockOverlaps: (start, len) => tableSet(refblockSets, reftableView(c.tx), ~RefcountTableEntryMasks.reserved & U64_MASK, cb).overlaps(start, len),
  };
}

/**
 * The metadata section (QEMU's name) the repair write [offset, offset+size) would touch, checking the
 * sections of the default template except `ignore` (QCOW2_OL_* bits), in QEMU's order; undefined
 * when none.
 */
export function checkMetadataOverlap(c: CheckContext, ignore: number, offset: bigint, size: bigint): OverlapSection | undefined {
  return metadataOverlap(checkMetadataView(c), ignore, offset, size);
}
