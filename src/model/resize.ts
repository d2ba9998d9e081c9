/**
 * `qemu-img resize [--shrink] SIZE` as QEMU 7.2 performs it (qemu-img.c img_resize → block/io.c
 * bdrv_co_truncate → block/qcow2.c qcow2_co_truncate; docs/format/allocation.md#shrinking, docs/format/surprises.md#18-l1-tables-move-and-never-shrink), step by step so the
 * file is byte-identical:
 *
 * - refusals, in QEMU's order: a size that is 0 or does not fit an int64 (qemu-img: "New image size
 *   must be positive"), past BDRV_MAX_LENGTH (bdrv_check_request), not a multiple of 512, a version 2
 *   image with internal snapshots ("Can't resize a v2 image which has snapshots" — version 3 images
 *   with snapshots can be resized);
 * - shrink: every cluster from the first cluster boundary at or after the new size to the old end is
 *   fully discarded (entries set to 0, even with a backing file; each L2 slice fetched through
 *   get_cluster_table, which allocates or copies an L2 table that is not COPIED even when there is
 *   nothing to discard), the L1 entries past the new L1 size zeroed on disk and their L2 tables freed
 *   (l1_size itself is kept), refcount blocks left without any reference dropped from the reftable
 *   (qcow2_shrink_reftable), and the file cut after the last cluster with a refcount;
 * - grow: the L1 table grows to the exact size the new disk needs (qcow2_grow_l1_table, new table
 *   elsewhere); when a backing file longer than the old size would show through, the new area is
 *   zero-filled (BDRV_REQ_ZERO_WRITE): zero flags from the first subcluster boundary, explicit zeros for
 *   the unaligned head; a version 2 image cannot have zero flags and fails with "Failed to zero out new
 *   clusters: Operation not supported" after the L1 growth;
 * - finally the header's size field (one 8-byte write, flushed).
 *
 * Clusters whose refcount drops to 0 during a shrink are punched out of the file (QCOW2_DISCARD_ALWAYS
 * is always passed down); the old L1 table freed by a grow is not (QCOW2_DISCARD_OTHER).
 *
 * After a shrink to a size that is not a multiple of the cluster size, the partial last cluster keeps
 * its bytes past the new end, and a later grow without zero-fill shows them again — QEMU's behaviour,
 * which src/oracle/raw-disk.ts reproduces.
 */
import type { L2EntryFields } from '../../generated/qcow2.ts';
import { classifyL2Entry, compressedDescriptor } from '../format/index.ts';
import { BDRV_MAX_LENGTH, INT64_MAX } from '../format/index.ts';
import { EINVAL, EIO, ENOTSUP, ModelError } from './errors.ts';
import { discardHost, truncateHost } from './host-file.ts';
import { AUTOCLEAR_BITMAPS } from './image.ts';
import { clusterTable, emptyL2Entry, growL1Table, l1Entry, l1l2Index, readL2Entry, rewriteL2Slice, writeL2Entry, zeroedL2Entry } from './mapping.ts';
import { freeClusters, getRefcount, reftableEntry, reftableSize, updateRefcount } from './refcount.ts';
import { type Tx, geo, hostFlush, hostRead, hostWrite, hostZero, setHeaderFields, setSession } from './tx.ts';
import { freeAnyCluster, guestWrite } from './write.ts';


/** Records the punching of host cluster range [offset, offset+length) (a discard passed to the file). */
function punch(tx: Tx, offset: bigint, length: bigint): void {
  tx.img = { ...tx.img, file: discardHost(tx.img.file, offset, length) };
  tx.io.push({ kind: 'discard', offset, length });
}

/** The host clusters an entry's reference covers ([first, last] cluster indexes), or undefined. */
function referencedClusters(tx: Tx, e: L2EntryFields): { first: bigint; last: bigint } | undefined {
  const g = geo(tx);
  const c = classifyL2Entry(e, { clusterBits: g.clusterBits, extendedL2: g.extendedL2, externalDataFile: g.externalDataFile });
  if (c.kind === 'compressed') {
    const d = compressedDescriptor(e, g.clusterBits);
    return { first: d.hostOffset >> BigInt(g.clusterBits), last: (d.hostOffset + BigInt(d.compressedBytes) - 1n) >> BigInt(g.clusterBits) };
  }
  if (c.kind === 'normal' || c.kind === 'zero-alloc') {
    const ci = c.hostOffset >> BigInt(g.clusterBits);
    return { first: ci, last: ci };
  }
  return undefined;
}

/**
 * `qcow2_cluster_discard(offset, bytes, QCOW2_DISCARD_ALWAYS, full_discard = true)`: every cluster of
 * [offset, offset+bytes) (offset cluster aligned, the end aligned or the end of the disk) gets an
 * all-zero entry, so it reads from the backing file (which a shrink makes unreachable anyway).
 */
function fullDiscard(tx: Tx, offset: bigint, bytes: bigint): void {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  // size_to_clusters on QEMU's uint64: a "negative" byte count (the new end's cluster reaches past
  // the old end) wraps around to 0 clusters.
  let nb = bytes > 0n ? (bytes + cs - 1n) / cs : 0n;
  const freed: L2EntryFields[] = [];
  while (nb > 0n) {
    // discard_in_l2_slice: every entry emptied.
    const { covered, dropped } = rewriteL2Slice(tx, offset, nb, () => emptyL2Entry(g.extendedL2), () => true, freeAnyCluster);
    freed.push(...dropped);
    nb -= BigInt(covered);
    offset += BigInt(covered) * cs;
  }
  // cache_discards: the discards are collected and passed to the file at the end (qcow2_process_discards).
  for (const e of freed) {
    const r = referencedClusters(tx, e);
    if (r === undefined || g.externalDataFile) continue;
    for (let ci = r.first; ci <= r.last; ci++) {
      if (getRefcount(tx, ci) === 0n) punch(tx, ci << BigInt(g.clusterBits), cs);
    }
  }
}

/**
 * `qcow2_shrink_l1_table`: zeroes the active L1 entries from `exactSize` on (l1_size is not changed,
 * docs/format/allocation.md#shrinking) and frees the L2 tables they pointed at, last index first.
 */
function shrinkL1Table(tx: Tx, exactSize: number): void {
  const h = tx.img.header;
  if (exactSize >= h.l1Size) return;
  const g = geo(tx);
  const l2Tables: bigint[] = [];
  for (let i = h.l1Size - 1; i > exactSize - 1; i--) l2Tables.push(l1Entry(tx, i).l2Offset);
  hostZero(tx, h.l1TableOffset + BigInt(exactSize) * 8n, BigInt(h.l1Size - exactSize) * 8n);
  // Crash safety: the entries are gone on disk (bdrv_flush) before the tables' refcounts drop.
  hostFlush(tx);
  for (const l2 of l2Tables) {
    if (l2 === 0n) continue;
    // qcow2_free_clusters with QCOW2_DISCARD_ALWAYS: a table whose refcount reaches 0 is punched
    // right away (a failure only leaks it, as in QEMU).
    freeClusters(tx, l2, BigInt(g.clusterSize));
    if (getRefcount(tx, l2 >> BigInt(g.clusterBits)) === 0n) punch(tx, l2, BigInt(g.clusterSize));
  }
}

function isZeroRange(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * Whether the refcount block at `blockOffset` (reftable slot `tableIndex`) counts nothing: all zero,
 * ignoring its own refcount when it lies in its own range (qcow2_shrink_reftable's buffer_is_zero).
 */
function refblockUnused(tx: Tx, blockOffset: bigint, tableIndex: number): boolean {
  const g = geo(tx);
  const block = hostRead(tx, blockOffset, g.clusterSize);
  const rbBits = BigInt(Math.log2(g.refblockEntries));
  const ci = blockOffset >> BigInt(g.clusterBits);
  if (Number(ci >> rbBits) === tableIndex) {
    // "the refblock has own reference": ignore its own refcount (the bits of entry `own`).
    const own = Number(ci & BigInt(g.refblockEntries - 1));
    const bits = g.refcountBits;
    const copy = block.slice();
    if (bits >= 8) {
      copy.fill(0, (own * bits) / 8, ((own + 1) * bits) / 8);
    } else {
      const byte = Math.floor((own * bits) / 8);
      const shift = (own * bits) % 8;
      copy[byte] = copy[byte]! & ~(((1 << bits) - 1) << shift) & 0xff;
    }
    return isZeroRange(copy);
  }
  return isZeroRange(block);
}

/**
 * `qcow2_shrink_reftable`: refcount blocks that count nothing (except, for a block in its own range,
 * itself) are removed from the reftable, which is rewritten whole; then each removed block's own
 * refcount is cleared, the allocation hint moved back, and the block punched out of the file.
 */
function shrinkReftable(tx: Tx): void {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const rbBits = BigInt(Math.log2(g.refblockEntries));
  const size = reftableSize(tx);
  const old: bigint[] = [];
  for (let i = 0; i < size; i++) old.push(reftableEntry(tx, i));
  const keep = old.map((b, i) => (b !== 0n && !refblockUnused(tx, b, i) ? b : 0n));
  const table = hostRead(tx, tx.img.header.refcountTableOffset, size * 8);
  // reftable_tmp: the kept entries as they are, 0 for everything else.
  for (let i = 0; i < size; i++) if (keep[i] === 0n) table.fill(0, i * 8, i * 8 + 8);
  // bdrv_pwrite_sync of the whole table: stable before any removed block is reused or punched.
  hostWrite(tx, tx.img.header.refcountTableOffset, table);
  hostFlush(tx);
  const discarded: bigint[] = [];
  const inMemory = old.slice();
  for (let i = 0; i < size; i++) {
    if (old[i] === 0n || keep[i] !== 0n) continue;
    const block = old[i]!;
    const ci = block >> BigInt(g.clusterBits);
    const covering = inMemory[Number(ci >> rbBits)] ?? 0n;
    if (covering === 0n) {
      throw new ModelError('corrupt', EIO, `Refblock at 0x${block.toString(16)} is not covered by the refcount structures`);
    }
    // qcow2_discard_refcount_block: its refcount (which must be 1) becomes 0. A block in its own range
    // holds that refcount itself; it leaves the cache unwritten, so only another covering block changes.
    if (covering !== block) {
      if (getRefcount(tx, ci) !== 1n) {
        throw new ModelError('corrupt', EIO, `Invalid refcount: refblock offset 0x${covering.toString(16)}, reftable index ${Number(ci >> rbBits)}, block offset 0x${block.toString(16)}, refcount 0x${getRefcount(tx, ci).toString(16)}`);
      }
      updateRefcount(tx, block, cs, 1n, true);
    } else if (ci < tx.img.session.freeClusterIndex) {
      setSession(tx, { freeClusterIndex: ci });
    }
    inMemory[i] = 0n;
    discarded.push(block);
  }
  for (const b of discarded) punch(tx, b, cs);
}

/** `qcow2_get_last_cluster`: the last cluster below `fileLength` with a refcount, or -1n. */
function lastUsedCluster(tx: Tx, fileLength: bigint): bigint {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const rbe = BigInt(g.refblockEntries);
  let i = (fileLength + cs - 1n) / cs - 1n;
  while (i >= 0n) {
    // A range without a refcount block has refcounts 0: skip it in one step (same answer).
    if (reftableEntry(tx, Number(i / rbe)) === 0n) {
      i = (i / rbe) * rbe - 1n;
      continue;
    }
    if (getRefcount(tx, i) > 0n) return i;
    i--;
  }
  return -1n;
}

/**
 * The new area [oldSize, newSize) reads as zeros although a backing file reaches into it
 * (BDRV_REQ_ZERO_WRITE in qcow2_co_truncate): `qcow2_subcluster_zeroize` from the first subcluster
 * boundary at or after the old size (zero flags, no unmap), explicit zeros through the write path for
 * the unaligned head before it.
 */
function zeroNewArea(tx: Tx, oldSize: bigint, newSize: bigint): void {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const sc = BigInt(g.clusterSize / g.subclusters);
  const zeroStart = ((oldSize + sc - 1n) / sc) * sc;
  if (newSize > zeroStart) {
    // qcow2_subcluster_zeroize: version 2 has no zero flag, and with a backing file it cannot
    // discard instead (that would expose the backing file): -ENOTSUP.
    if (tx.img.header.version < 3) {
      throw new ModelError('unsupported', ENOTSUP, 'Failed to zero out new clusters: Operation not supported');
    }
    let offset = zeroStart;
    const end = newSize;
    // The end is the new end of the disk, past the current size: no tail (total_sectors is still old).
    const head = (end < ((offset + cs - 1n) / cs) * cs ? end : ((offset + cs - 1n) / cs) * cs) - offset;
    offset += head;
    if (head > 0n) zeroL2Subclusters(tx, offset - head, Number((head + sc - 1n) / sc));
    let nb = (end - offset + cs - 1n) / cs;
    while (nb > 0n) {
      const cleared = zeroInL2Slice(tx, offset, nb);
      nb -= cleared;
      offset += cleared * cs;
    }
  }
  // "Write explicit zeros for the unaligned head".
  if (zeroStart > oldSize) {
    const end = zeroStart < newSize ? zeroStart : newSize;
    guestWrite(tx, oldSize, new Uint8Array(Number(end - oldSize)));
  }
}

/** `zero_l2_subclusters` (extended L2): subclusters [offset, +nb) become zero, not allocated. */
function zeroL2Subclusters(tx: Tx, offset: bigint, nb: number): void {
  const g = geo(tx);
  const l2Offset = clusterTable(tx, offset);
  const { l2: l2Index } = l1l2Index(tx, offset);
  const e = readL2Entry(tx, l2Offset, l2Index);
  if (classifyL2Entry(e, { clusterBits: g.clusterBits, extendedL2: g.extendedL2, externalDataFile: g.externalDataFile }).kind === 'compressed') {
    // "We cannot partially zeroize compressed clusters": the whole truncate fails.
    throw new ModelError('unsupported', ENOTSUP, 'Failed to zero out new clusters: Operation not supported');
  }
  const sc = Number((offset & BigInt(g.clusterSize - 1)) / BigInt(g.clusterSize / g.subclusters));
  const mask = (nb + sc >= 32 ? 0xffffffff : (1 << (sc + nb)) - 1) & ~((1 << sc) - 1);
  const zero = ((e.zeroBitmap ?? 0) | mask) >>> 0;
  const alloc = ((e.allocBitmap ?? 0) & ~mask) >>> 0;
  if (zero !== e.zeroBitmap || alloc !== e.allocBitmap) writeL2Entry(tx, l2Offset, l2Index, { ...e, zeroBitmap: zero, allocBitmap: alloc });
}

/** `zero_in_l2_slice` without BDRV_REQ_MAY_UNMAP: whole clusters read as zero; returns how many. */
function zeroInL2Slice(tx: Tx, offset: bigint, nbClusters: bigint): bigint {
  const g = geo(tx);
  const ctx = { clusterBits: g.clusterBits, extendedL2: g.extendedL2, externalDataFile: g.externalDataFile };
  // Only a compressed cluster is unmapped (it cannot carry a zero flag). (QCOW2_DISCARD_REQUEST:
  // qemu-img resize does not open with discard=unmap, so nothing is punched.)
  const unmaps = (old: L2EntryFields): boolean => classifyL2Entry(old, ctx).kind === 'compressed';
  const zeroed = (old: L2EntryFields): L2EntryFields => zeroedL2Entry(g.extendedL2, unmaps(old) ? undefined : old, true);
  return BigInt(rewriteL2Slice(tx, offset, nbClusters, zeroed, unmaps, freeAnyCluster).covered);
}

/**
 * Resizes the virtual disk of the working image to `size` bytes (ResizeOp, `qemu-img resize` with
 * `--shrink` when smaller, preallocation off), writing what QEMU 7.2 writes in QEMU's order with flush
 * barriers (see the module comment). Promises: afterwards the header says `size`; reads of
 * [0, min(old, size)) are unchanged; a grown range reads as zeros when a backing file reaching past the
 * old size exists, otherwise it reads what QEMU shows there (zeros, except the bytes a shrink to an
 * unaligned size left in the partial last cluster); the refcounts and COPIED flags stay exact.
 * Throws ModelError with qemu-img's message for every refusal; a failure after the L1 table grew (a
 * version 2 image with a backing file) carries what QEMU leaves on disk in `committed`.
 *
 * The backing file is the one the caller supplied with the image (`Image.backing`); without one the
 * image is treated as having none, as reads do. Images with an external data file or persistent
 * bitmaps are not modelled yet ('unsupported').
 */
export function resize(tx: Tx, size: bigint): void {
  // qemu-img: total_size is an int64; 0 and anything that reads as negative are refused first.
  if (size <= 0n || size > INT64_MAX) throw new ModelError('unsupported', EINVAL, 'New image size must be positive');
  // bdrv_co_truncate → bdrv_check_request.
  if (size > BDRV_MAX_LENGTH) throw new ModelError('too-big', EIO, `offset(${size}) exceeds maximum(${BDRV_MAX_LENGTH})`);
  if (size % 512n !== 0n) throw new ModelError('unsupported', EINVAL, 'The new size must be a multiple of 512');
  const h = tx.img.header;
  const g = geo(tx);
  // "Even though we store snapshot size for all images, it was not required until v3".
  if (h.nbSnapshots > 0 && h.version < 3) throw new ModelError('unsupported', ENOTSUP, "Can't resize a v2 image which has snapshots");
  if (g.externalDataFile) throw new ModelError('unsupported', ENOTSUP, 'resize of images with an external data file is not modelled yet');
  // qcow2_truncate_bitmaps_check / the bitmaps stored on close are not modelled.
  if ((h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n) throw new ModelError('unsupported', ENOTSUP, 'resize of images with persistent bitmaps is not modelled yet');

  const cs = BigInt(g.clusterSize);
  // bs->total_sectors * BDRV_SECTOR_SIZE: the header size rounded down to a sector.
  const oldSize = (h.size / 512n) * 512n;
  const perL2 = cs * BigInt(g.l2Entries);
  const newL1Size = (size + perL2 - 1n) / perL2;

  if (size < oldSize) {
    const from = ((size + cs - 1n) / cs) * cs;
    fullDiscard(tx, from, oldSize - from);
    shrinkL1Table(tx, Number(newL1Size));
    shrinkReftable(tx);
    const fileLength = tx.img.file.length;
    const last = lastUsedCluster(tx, fileLength);
    if (last < 0n) throw new ModelError('corrupt', EIO, 'There are no references in the refcount table.');
    if ((last + 1n) * cs < fileLength) {
      // Crash safety: the refcounts that freed the tail are stable before the tail is cut off
      // (a cut-off cluster that still had a refcount on disk would only be a harmless leak).
      hostFlush(tx);
      tx.img = { ...tx.img, file: truncateHost(tx.img.file, (last + 1n) * cs) };
      tx.io.push({ kind: 'truncate', length: (last + 1n) * cs });
    }
  } else {
    try {
      growL1Table(tx, newL1Size, true);
    } catch (e) {
      if (e instanceof ModelError) e.message = `Failed to grow the L1 table: ${e.message}`;
      throw e;
    }
  }

  // bdrv_co_truncate: BDRV_REQ_ZERO_WRITE when the backing file would provide data for the new area.
  const backing = tx.img.backing;
  if (size > oldSize && backing !== undefined && backing.size > oldSize) {
    try {
      zeroNewArea(tx, oldSize, size);
    } catch (e) {
      // The L1 growth before it stays on disk.
      if (e instanceof ModelError && e.committed === undefined && tx.io.length > 0) e.committed = { image: tx.img, io: [...tx.io] };
      throw e;
    }
  }

  // Crash safety: everything that makes the new range read right is on disk before the header
  // publishes the new size; then "write updated header.size" with bdrv_pwrite_sync.
  if (tx.io.length > 0) hostFlush(tx);
  setHeaderFields(tx, { size });
  hostFlush(tx);
}
