/**
 * QEMU's metadata overlap check as the check's repairs meet it (block/qcow2-refcount.c
 * qcow2_check_metadata_overlap with the default "cached" template, fact sheet §8): before a repair
 * writes, the range (rounded out to clusters) must not touch the header, the active L1 and L2
 * tables, the refcount table and blocks, the snapshot table, the inactive L1 tables or the bitmap
 * directory — seen as the check sees the image (its own reading of the snapshot table).
 */
import { isZeroBytes } from '../format/bytes.ts';
import { readHost } from './host-file.ts';
import { AUTOCLEAR_BITMAPS } from './image.ts';
import {
  L1E_OFFSET_MASK, REFT_RESERVED_MASK, inFileLength, l1WordAt, reftableEntriesInFile, reftableSize, reftableWord,
  type CheckContext,
} from './check-context.ts';


export const OL_MAIN_HEADER = 1 << 0;
export const OL_ACTIVE_L1 = 1 << 1;
export const OL_ACTIVE_L2 = 1 << 2;
export const OL_REFCOUNT_TABLE = 1 << 3;
export const OL_REFCOUNT_BLOCK = 1 << 4;
export const OL_SNAPSHOT_TABLE = 1 << 5;
export const OL_INACTIVE_L1 = 1 << 6;
export const OL_INACTIVE_L2 = 1 << 7;
export const OL_BITMAP_DIRECTORY = 1 << 8;
/** QCOW2_OL_CACHED: everything but the inactive L2 tables. */
const OL_CACHED = 0x1ff & ~OL_INACTIVE_L2;

/**
 * The metadata section (QEMU's name) the write [offset, offset+size) would touch, checking the
 * sections of the "cached" template except `ignore`; undefined when none. Uses the check's view of
 * the image (its snapshot list, the reftable and L1 as on disk).
 */
export function metadataOverlap(c: CheckContext, ignore: number, offset: bigint, size: bigint): string | undefined {
  const chk = OL_CACHED & ~ignore;
  if (size === 0n) return undefined;
  const cs = BigInt(c.g.clusterSize);
  const h = c.tx.img.header;
  if ((chk & OL_MAIN_HEADER) !== 0 && offset < cs) return 'qcow2_header';
  const start = offset & ~(cs - 1n);
  const len = (((offset & (cs - 1n)) + size + cs - 1n) / cs) * cs;
  const overlaps = (ofs: bigint, sz: bigint): boolean => start < ofs + sz && ofs < start + len;
  if ((chk & OL_ACTIVE_L1) !== 0 && h.l1Size > 0 && overlaps(h.l1TableOffset, BigInt(h.l1Size) * 8n)) return 'active L1 table';
  const rtSize = reftableSize(c);
  if ((chk & OL_REFCOUNT_TABLE) !== 0 && rtSize > 0 && overlaps(h.refcountTableOffset, BigInt(rtSize) * 8n)) return 'refcount table';
  if ((chk & OL_SNAPSHOT_TABLE) !== 0 && c.snapshotsSize > 0n && overlaps(h.snapshotsOffset, c.snapshotsSize)) return 'snapshot table';
  if ((chk & OL_INACTIVE_L1) !== 0) {
    for (const sn of c.snapshots) if (sn.l1Size > 0 && overlaps(sn.l1TableOffset, BigInt(sn.l1Size) * 8n)) return 'inactive L1 table';
  }
  if ((chk & OL_ACTIVE_L2) !== 0) {
    const n = Math.ceil(inFileLength(c, h.l1TableOffset, BigInt(h.l1Size) * 8n) / 8);
    const l1 = readHost(c.tx.img.file, h.l1TableOffset, n * 8);
    for (let i = 0; i < n; i++) {
      if (isZeroBytes(l1, i * 8, 8)) continue;
      const l2 = l1WordAt(l1, i * 8, c.g) & L1E_OFFSET_MASK;
      if (l2 !== 0n && overlaps(l2, cs)) return 'active L2 table';
    }
  }
  if ((chk & OL_REFCOUNT_BLOCK) !== 0) {
    const n = reftableEntriesInFile(c);
    for (let i = 0; i < n; i++) {
      const b = reftableWord(c, i) & ~REFT_RESERVED_MASK;
      if (b !== 0n && overlaps(b, cs)) return 'refcount block';
    }
  }
  if ((chk & OL_BITMAP_DIRECTORY) !== 0 && (h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n && c.bitmaps !== undefined
    && overlaps(c.bitmaps.offset, c.bitmaps.size)) {
    return 'bitmap directory';
  }
  return undefined;
}

