/**
 * write_zeroes and discard, as QEMU 7.2's block layer and qcow2 driver perform them (see
 * docs/format/allocation.md#write_zeroes, #discard, docs/format/surprises.md items 8/9; block/io.c bdrv_co_do_pwrite_zeroes / bdrv_co_pdiscard, block/qcow2.c
 * qcow2_co_pwrite_zeroes / qcow2_co_pdiscard, block/qcow2-cluster.c qcow2_subcluster_zeroize,
 * zero_in_l2_slice, zero_l2_subclusters, discard_in_l2_slice):
 *
 * - write_zeroes is split at subcluster boundaries; an unaligned piece uses the zero flag only when
 *   the rest of its subcluster already reads as zero and is unallocated or zero, otherwise (and on
 *   v2 images with a backing file, or partial zeroing of a compressed cluster) the block layer
 *   falls back to writing a buffer of zeros through the normal write path;
 * - discard only acts on whole clusters (and the partial last cluster of the disk); v2 images with
 *   a backing file ignore it;
 * - clusters whose refcount drops to 0 because of a guest request are punched out of the host file
 *   (qemu-io and qemu-img pass discard requests down by default).
 *
 * Crash safety: L2 entries are rewritten before the clusters they pointed at are freed.
 *
 * External data file (docs/format/features.md#external-data-file, docs/format/allocation.md#write_zeroes; qcow2_free_any_cluster, qcow2_subcluster_zeroize):
 * data clusters have no refcounts; when an L2 entry that pointed at a NORMAL or ZERO_ALLOC cluster is
 * dropped by a guest zero-with-unmap or discard, the cluster is punched out of the data file
 * (bdrv_pdiscard, discard passthrough as qemu-io opens images). A zero write without unmap keeps the
 * mapping as ZERO_ALLOC and leaves the old bytes in the data file — except with data_file_raw
 * (autoclear bit 1), where the whole zeroed range is first written as zeros in the data file so that
 * it stays a valid raw image [7.2].
 */
import type { L2EntryFields } from '../../generated/qcow2.ts';
import { classifyL2Entry, compressedDescriptor } from '../format/index.ts';
import { checkNotDirtyOnLoad } from './close.ts';
import { discardHost } from './host-file.ts';
import { AUTOCLEAR_DATA_FILE_RAW } from './image.ts';
import { clusterTable, l1l2Index, readL2Entry, rewriteL2Slice, statesOf, writeL2Entry, entryAt, zeroedL2Entry } from './mapping.ts';
import { getRefcount } from './refcount.ts';
import { type Tx, checkpointImg, dataDiscard, dataZero, geo, withOwnedPages } from './tx.ts';
import { ENOTSUP, ModelError } from './errors.ts';
import { strerror } from './errno.ts';
import { freeAnyCluster, guestWrite } from './write.ts';

type Result = 'ok' | 'enotsup';

const range32 = (from: number, to: number): number => (to >= 32 ? 0xffffffff : (1 << to) - 1) & ~((1 << from) - 1);

function ctxOf(tx: Tx) {
  const g = geo(tx);
  return { clusterBits: g.clusterBits, extendedL2: g.extendedL2, externalDataFile: g.externalDataFile };
}

/** Whether an entry's cluster is allocated in QEMU's sense (qcow2_cluster_is_allocated). */
function isAllocated(tx: Tx, e: L2EntryFields): boolean {
  const k = classifyL2Entry(e, ctxOf(tx)).kind;
  return k === 'normal' || k === 'zero-alloc' || k === 'compressed';
}

/**
 * Frees what entry `e` pointed at and punches out every host cluster whose refcount reached 0
 * (QCOW2_DISCARD_REQUEST with discard passthrough, as qemu-io and qemu-img open images; not when the
 * session was opened without it, SessionState.noDiscardPassthrough). With an
 * external data file a NORMAL / ZERO_ALLOC cluster is punched out of the data file instead
 * (qcow2_free_any_cluster: no refcount, bdrv_pdiscard on s->data_file).
 */
function freeAndDiscard(tx: Tx, e: L2EntryFields): void {
  const g = geo(tx);
  const c = classifyL2Entry(e, ctxOf(tx));
  // Opened without BDRV_O_UNMAP: the refcounts drop, the host file keeps the bytes.
  const passthrough = tx.img.session.noDiscardPassthrough !== true;
  if (g.externalDataFile) {
    if (passthrough && (c.kind === 'normal' || c.kind === 'zero-alloc')) dataDiscard(tx, c.hostOffset, BigInt(g.clusterSize));
    return;
  }
  let first: bigint;
  let last: bigint;
  if (c.kind === 'compressed') {
    const d = compressedDescriptor(e, g.clusterBits);
    first = d.hostOffset >> BigInt(g.clusterBits);
    last = (d.hostOffset + BigInt(d.compressedBytes) - 1n) >> BigInt(g.clusterBits);
  } else if ((c.kind === 'normal' || c.kind === 'zero-alloc') && !g.externalDataFile) {
    first = c.hostOffset >> BigInt(g.clusterBits);
    last = first;
  } else {
    return;
  }
  freeAnyCluster(tx, e);
  if (!passthrough) return;
  for (let ci = first; ci <= last; ci++) {
    if (getRefcount(tx, ci) === 0n) {
      const at = ci << BigInt(g.clusterBits);
      tx.img = { ...tx.img, file: discardHost(tx.img.file, at, BigInt(g.clusterSize)) };
      tx.io.push({ kind: 'discard', offset: at, length: BigInt(g.clusterSize) });
    }
  }
}

/**
 * Whether [offset, offset+bytes) reads as zero by block status (QEMU's is_zero in block/qcow2.c:
 * bdrv_block_status_above over the whole backing chain, looped until a non-zero extent): zero
 * (sub)clusters, and unallocated ones whose backing chain reports zeros there — past the backing
 * file's end, zero or unallocated clusters of a qcow2 backing image, holes of a raw backing file
 * (file-posix SEEK_HOLE), as the backing source's `map` reports them. A backing source without a map
 * is a raw file without holes: data, never zero.
 */
function readsAsZeroByStatus(tx: Tx, offset: bigint, bytes: number): boolean {
  const size = tx.img.header.size;
  if (offset + BigInt(bytes) > size) bytes = Number(size - offset);
  if (bytes <= 0) return true;
  const g = geo(tx);
  const scSize = g.clusterSize / g.subclusters;
  let pos = 0;
  while (pos < bytes) {
    const at = offset + BigInt(pos);
    const inCluster = Number(at & BigInt(g.clusterSize - 1));
    const sc = Math.floor(inCluster / scSize);
    const state = statesOf(tx, entryAt(tx, at).entry)[g.extendedL2 ? sc : 0]!;
    const span = Math.min(bytes - pos, (g.extendedL2 ? (sc + 1) * scSize : g.clusterSize) - inCluster);
    if (state === 'zero-plain' || state === 'zero-alloc') {
      // reads as zero
    } else if (state === 'unallocated-plain' || state === 'unallocated-alloc') {
      // Below an unallocated range is the backing chain; past its end the block layer reports zeros.
      const b = tx.img.backing;
      if (b !== undefined && at < b.size) {
        if (b.map === undefined) return false;
        const n = at + BigInt(span) <= b.size ? BigInt(span) : b.size - at;
        if (!b.map(at, n).every((e) => e.zero)) return false;
      }
    } else {
      return false;
    }
    pos += span;
  }
  return true;
}

/** `zero_in_l2_slice`: whole clusters from `offset`, at most up to the end of one L2 table. */
function zeroInL2Slice(tx: Tx, offset: bigint, nbClusters: number, unmap: boolean): number {
  const g = geo(tx);
  const drops = (old: L2EntryFields): boolean => classifyL2Entry(old, ctxOf(tx)).kind === 'compressed' || (unmap && isAllocated(tx, old));
  const zeroed = (old: L2EntryFields): L2EntryFields => zeroedL2Entry(g.extendedL2, drops(old) ? undefined : old, true);
  return rewriteL2Slice(tx, offset, nbClusters, zeroed, drops, freeAndDiscard).covered;
}

/** `zero_l2_subclusters`: marks `nb` subclusters of one cluster as zero (extended L2 only). */
function zeroL2Subclusters(tx: Tx, offset: bigint, nb: number): Result {
  const g = geo(tx);
  const l2Offset = clusterTable(tx, offset);
  const { l2: l2Index } = l1l2Index(tx, offset);
  const e = readL2Entry(tx, l2Offset, l2Index);
  if (classifyL2Entry(e, ctxOf(tx)).kind === 'compressed') return 'enotsup'; // cannot partially zeroize
  const sc = Number((offset & BigInt(g.clusterSize - 1)) / BigInt(g.clusterSize / g.subclusters));
  const zero = ((e.zeroBitmap ?? 0) | range32(sc, sc + nb)) >>> 0;
  const alloc = ((e.allocBitmap ?? 0) & ~range32(sc, sc + nb)) >>> 0;
  if (zero !== e.zeroBitmap || alloc !== e.allocBitmap) writeL2Entry(tx, l2Offset, l2Index, { ...e, zeroBitmap: zero, allocBitmap: alloc });
  return 'ok';
}

/** `qcow2_subcluster_zeroize`: zero flags for a subcluster-aligned range (v2: discard or ENOTSUP). */
function subclusterZeroize(tx: Tx, offset: bigint, bytes: bigint, unmap: boolean): Result {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const scSize = BigInt(g.clusterSize / g.subclusters);
  // "If we have to stay in sync with an external data file, zero out s->data_file first."
  if ((tx.img.header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n && g.externalDataFile) dataZero(tx, offset, bytes);
  if (tx.img.header.version < 3) {
    if (!tx.img.backing) {
      clusterDiscard(tx, offset, bytes);
      return 'ok';
    }
    return 'enotsup';
  }
  let end = offset + bytes;
  const roundUp = ((offset + cs - 1n) / cs) * cs;
  const head = (end < roundUp ? end : roundUp) - offset;
  offset += head;
  const startOfEndCluster = end & ~(cs - 1n);
  const tail = end >= tx.img.header.size ? 0n : end - (offset > startOfEndCluster ? offset : startOfEndCluster);
  end -= tail;
  if (head > 0n && zeroL2Subclusters(tx, offset - head, Number((head + scSize - 1n) / scSize)) === 'enotsup') return 'enotsup';
  let nb = Number((end - offset + cs - 1n) / cs);
  while (nb > 0) {
    const cleared = zeroInL2Slice(tx, offset, nb, unmap);
    nb -= cleared;
    offset += BigInt(cleared) * cs;
  }
  if (tail > 0n && zeroL2Subclusters(tx, end, Number((tail + scSize - 1n) / scSize)) === 'enotsup') return 'enotsup';
  return 'ok';
}

/** `qcow2_co_pwrite_zeroes` for one piece handed down by the block layer. */
function qcow2PwriteZeroes(tx: Tx, offset: bigint, bytes: bigint, unmap: boolean): Result {
  const g = geo(tx);
  const sc = BigInt(g.clusterSize / g.subclusters);
  const head = offset % sc;
  let tail = ((offset + bytes + sc - 1n) / sc) * sc - (offset + bytes);
  if (offset + bytes === tx.img.header.size) tail = 0n;
  if (head > 0n || tail > 0n) {
    if (!(readsAsZeroByStatus(tx, offset - head, Number(head)) && readsAsZeroByStatus(tx, offset + bytes, Number(tail)))) return 'enotsup';
    offset -= head;
    bytes = sc;
    const inCluster = Number(offset & BigInt(g.clusterSize - 1));
    const state = statesOf(tx, entryAt(tx, offset).entry)[g.extendedL2 ? Math.floor(inCluster / Number(sc)) : 0]!;
    if (!['unallocated-plain', 'unallocated-alloc', 'zero-plain', 'zero-alloc'].includes(state)) return 'enotsup';
  }
  return subclusterZeroize(tx, offset, bytes, unmap);
}

/**
 * write_zeroes of `length` bytes at `offset` (`unmap`: BDRV_REQ_MAY_UNMAP, qemu-io `write -z -u`).
 * The caller checks the range is inside the virtual disk. Throws ModelError 'unsupported' for an
 * image whose dirty bit was set when it was loaded (close.ts).
 */
export function guestWriteZeroes(tx: Tx, offset: bigint, length: bigint, unmap: boolean, noFallback = false): void {
  withOwnedPages(tx, () => writeZeroes(tx, offset, length, unmap, noFallback));
}

function writeZeroes(tx: Tx, offset: bigint, length: bigint, unmap: boolean, noFallback: boolean): void {
  checkNotDirtyOnLoad(tx, 'write_zeroes');
  const g = geo(tx);
  // bdrv_co_do_pwrite_zeroes refuses BDRV_REQ_NO_FALLBACK up front when the driver does not support
  // it, and qcow2_do_open supports it only on v3 images (bs->supported_zero_flags).
  if (noFallback && tx.img.header.version < 3) throw new ModelError('unsupported', ENOTSUP, strerror(ENOTSUP));
  for (const [at, num] of blockLayerPieces(offset, length, BigInt(g.clusterSize / g.subclusters))) {
    if (qcow2PwriteZeroes(tx, at, num, unmap) === 'enotsup') {
      if (noFallback) {
        // bdrv_co_do_pwrite_zeroes: -ENOTSUP with BDRV_REQ_NO_FALLBACK ends the request; what the
        // earlier pieces did stays done (QEMU does not roll back).
        const e = new ModelError('unsupported', ENOTSUP, strerror(ENOTSUP));
        if (tx.io.length > 0) e.committed = { image: checkpointImg(tx), io: [...tx.io] };
        throw e;
      }
      // The block layer's fallback: a buffer of zeros through the normal write path.
      guestWrite(tx, at, new Uint8Array(Number(num)));
    }
  }
}

/**
 * How QEMU's block layer (bdrv_co_do_pwrite_zeroes, bdrv_co_pdiscard) cuts a request for a driver
 * with this alignment: the unaligned head up to the first boundary, the aligned bulk, then the
 * unaligned tail, as [offset, length] pieces in order.
 */
function* blockLayerPieces(offset: bigint, length: bigint, alignment: bigint): Generator<[bigint, bigint]> {
  let head = offset % alignment;
  const tail = (offset + length) % alignment;
  let bytes = length;
  while (bytes > 0n) {
    let num = bytes;
    if (head > 0n) {
      num = bytes < alignment - head ? bytes : alignment - head;
      head = (head + num) % alignment;
    } else if (tail > 0n && num > alignment) {
      num -= tail;
    }
    yield [offset, num];
    offset += num;
    bytes -= num;
  }
}

/** `qcow2_cluster_discard` with full_discard = false: whole clusters from a cluster-aligned offset. */
function clusterDiscard(tx: Tx, offset: bigint, bytes: bigint): void {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  let nb = Number((bytes + cs - 1n) / cs);
  const emptied = (old: L2EntryFields): L2EntryFields =>
    (tx.img.backing || isAllocated(tx, old) ? zeroedL2Entry(g.extendedL2, undefined, tx.img.header.version >= 3) : old);
  while (nb > 0) {
    const { covered } = rewriteL2Slice(tx, offset, nb, emptied, () => true, freeAndDiscard);
    nb -= covered;
    offset += BigInt(covered) * cs;
  }
}

/**
 * discard of `length` bytes at `offset`: whole clusters (and the partial last cluster of the disk)
 * read as zeros afterwards; partial clusters are left alone; v2 images with a backing file ignore
 * it. The caller checks the range is inside the virtual disk. Throws ModelError 'unsupported' for an
 * image whose dirty bit was set when it was loaded (close.ts).
 */
export function guestDiscard(tx: Tx, offset: bigint, length: bigint): void {
  withOwnedPages(tx, () => discard(tx, offset, length));
}

function discard(tx: Tx, offset: bigint, length: bigint): void {
  checkNotDirtyOnLoad(tx, 'discard');
  const g = geo(tx);
  const align = BigInt(g.clusterSize);
  const size = tx.img.header.size;
  for (const [at, num] of blockLayerPieces(offset, length, align)) {
    // qcow2_co_pdiscard
    const v2WithBacking = tx.img.header.version < 3 && tx.img.backing !== undefined;
    const aligned = at % align === 0n && num % align === 0n;
    const lastPartial = at % align === 0n && at + num === size;
    if (!v2WithBacking && (aligned || lastPartial)) clusterDiscard(tx, at, num);
  }
}
