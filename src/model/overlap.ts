/**
 * QEMU's metadata overlap check (qcow2_pre_write_overlap_check, fact sheet §8) with the default
 * "cached" template: before data is written at a host range, the range (rounded out to clusters) must
 * not touch the header cluster, the active L1 table, an active L2 table, the refcount table, a
 * refcount block or the snapshot table. An overlap is a fatal corruption: QEMU refuses the write,
 * sets the corrupt bit and stops using the image.
 */
import { EIO, ModelError } from './errors.ts';
import { INCOMPAT_CORRUPT } from './image.ts';
import { l1Entry } from './mapping.ts';
import { reftableEntry, reftableSize } from './refcount.ts';
import { type Tx, geo, setHeaderFields } from './tx.ts';

/** The metadata section [offset, offset+length) overlaps, by QEMU's name, or undefined. */
export function metadataOverlap(tx: Tx, offset: bigint, length: bigint): string | undefined {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const start = offset & ~(cs - 1n);
  const end = (offset + length + cs - 1n) & ~(cs - 1n);
  const hits = (from: bigint, len: bigint): boolean => len > 0n && from < end && start < from + len;
  const h = tx.img.header;
  if (hits(0n, cs)) return 'qcow2_header';
  if (hits(h.l1TableOffset, BigInt(h.l1Size) * 8n)) return 'active L1 table';
  for (let i = 0; i < h.l1Size; i++) {
    const l2 = l1Entry(tx, i).l2Offset;
    if (l2 !== 0n && hits(l2, cs)) return 'active L2 table';
  }
  if (hits(h.refcountTableOffset, BigInt(h.refcountTableClusters) * cs)) return 'refcount table';
  for (let i = 0; i < reftableSize(tx); i++) {
    const block = reftableEntry(tx, i);
    if (block !== 0n && hits(block, cs)) return 'refcount block';
  }
  if (h.nbSnapshots > 0 && hits(h.snapshotsOffset, cs)) return 'snapshot table';
  return undefined;
}

/**
 * `qcow2_signal_corruption` (fatal, writable image): writes the corrupt bit and throws the EIO the
 * request fails with, carrying the image as QEMU leaves it (what `tx` holds now plus the bit).
 */
export function signalFatalCorruption(tx: Tx, message: string): never {
  setHeaderFields(tx, { incompatibleFeatures: tx.img.header.incompatibleFeatures | INCOMPAT_CORRUPT });
  const e = new ModelError('corrupt', EIO, `qcow2: Marking image as corrupt: ${message}; further corruption events will be suppressed`);
  e.committed = { image: tx.img, io: [...tx.io] };
  throw e;
}
