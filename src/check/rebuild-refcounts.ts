/**
 * `rebuild_refcount_structure` of QEMU 7.2 (block/qcow2-refcount.c, the version rewritten in 7.1;
 * docs/format/check.md#-r-all): new refcount blocks and a new refcount table made from the check's in-memory
 * refcount table alone, placed first-fit in clusters that table says are free, so nothing the old
 * (possibly broken) structures say is trusted. The old structures are left behind as leaks, which the
 * check's next step frees.
 *
 * 1. Every refcount block's range holding a referenced cluster gets a block, allocated in the
 *    in-memory table at the first free cluster at or after the start of that range, and written as
 *    the slice of the in-memory table it describes (its own refcount included).
 * 2. The reftable is allocated first-fit from cluster 0; the blocks covering it are written again
 *    (they now count it). If that needed a new block beyond the table's size, the table grows and is
 *    placed again (the old place stays allocated and leaks).
 * 3. The reftable is written, then the header's refcount_table_offset and refcount_table_clusters in
 *    one 12-byte write.
 *
 * Every write first passes QEMU's metadata overlap check against the image's current metadata.
 */
import { encodeRefcountTableEntry } from '../../generated/qcow2.ts';
import { offsetToParts } from '../format/index.ts';
import { CheckAbort, signalCorruption, type CheckContext, type Counters } from './context.ts';
import { EIO, strerror } from '../model/index.ts';
import { cacheEmpty } from './refblocks.ts';
import { checkMetadataOverlap } from './overlap.ts';
import type { Imrt } from './imrt.ts';
import { lowerBound } from './tables.ts';
import { hostFlush, hostWrite, hostZero, setHeaderFields } from '../model/index.ts';

/** A refcount rebuild failed: QEMU's message (printed as `qemu-img: <message>`) and errno. */
class RebuildError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/**
 * rebuild_refcount_structure: writes new refcount structures for the references in `imrt` (which
 * gains the new structures' own references) and switches the header to them. On failure prints
 * QEMU's message, counts a check error where QEMU does, and throws CheckAbort.
 */
/** A rebuilt reftable up to this size is written as one buffer; a larger one (mostly zeros) sparsely. */
const DENSE_REFTABLE_BYTES = 1 << 20;

export function rebuildRefcountStructure(c: CheckContext, res: Counters, imrt: Imrt): void {
  const g = c.g;
  const cs = g.clusterSize;
  const rbBits = g.clusterBits + 3 - c.tx.img.header.refcountOrder;
  const rbe = 2 ** rbBits;
  const entriesPerCluster = cs / 8;
  // The clusters with a non-zero count: those at the start, and those the rebuild allocates.
  const initial = imrt.sortedClusters();
  const added: number[] = [];
  // The in-memory reftable, sparse: index → refblock cluster. A hostile image can put one used
  // cluster terabytes out (a flipped refcount-table bit), which makes QEMU's table millions of
  // entries of which a handful are set; a dense array of them cost 128 MiB and more.
  const reftable = new Map<number, number>();
  let entries = 0;

  const nextUsed = (from: number): number => {
    const a = initial[lowerBound(initial, from)];
    const b = added[lowerBound(added, from)];
    if (a === undefined) return b ?? Infinity;
    return b === undefined ? a : Math.min(a, b);
  };
  const allocate = (count: number, first: { value: number }): number => {
    const cluster = imrt.allocClusters(count, first);
    for (let i = 0; i < count; i++) added.splice(lowerBound(added, cluster + i), 0, cluster + i);
    return cluster;
  };
  const checkedWrite = (offset: bigint, bytes: Uint8Array, what: string): void => {
    const overlap = checkMetadataOverlap(c, 0, offset, BigInt(bytes.length));
    if (overlap !== undefined) {
      signalCorruption(c, `Preventing invalid write on metadata (overlaps with ${overlap})`, 'previous');
      throw new RebuildError(EIO, `${what}: ${strerror(EIO)}`);
    }
    hostWrite(c.tx, offset, bytes);
  };

  /** checkedWrite of a mostly-zero range: one overlap check, a zero request, then the non-zero pieces. */
  const checkedZeroThenWrite = (offset: bigint, length: bigint, pieces: readonly (readonly [number, Uint8Array])[], what: string): void => {
    const overlap = checkMetadataOverlap(c, 0, offset, length);
    if (overlap !== undefined) {
      signalCorruption(c, `Preventing invalid write on metadata (overlaps with ${overlap})`, 'previous');
      throw new RebuildError(EIO, `${what}: ${strerror(EIO)}`);
    }
    hostZero(c.tx, offset, length);
    for (const [at, bytes] of pieces) hostWrite(c.tx, offset + BigInt(at), bytes);
  };

  /** rebuild_refcounts_write_refblocks over clusters [firstCluster, endCluster); whether the table grew. */
  const writeRefblocks = (firstCluster: number, endCluster: number): boolean => {
    let firstFree = { value: 0 };
    let grown = false;
    let end = endCluster;
    // Bounded: each iteration moves to the next used cluster and then past its whole refblock range;
    // `end` grows at most once per allocated refblock.
    for (let cluster = nextUsed(firstCluster); cluster < end; cluster = nextUsed(cluster + 1)) {
      const index = Math.floor(cluster / rbe);
      const start = index * rbe;
      let offsetCluster: number;
      const known = reftable.get(index);
      if (known !== undefined) {
        offsetCluster = known;
      } else {
        // Don't allocate a cluster in a refblock already written to disk.
        if (firstFree.value < start) firstFree = { value: start };
        offsetCluster = allocate(1, firstFree);
        // The refblock that holds this refblock's refcount must be written too.
        if (offsetCluster >= end) end = offsetCluster + 1;
        if (entries <= index) {
          entries = Math.ceil(((index + 1) * 8) / cs) * entriesPerCluster;
          grown = true;
        }
        reftable.set(index, offsetCluster);
      }
      checkedWrite(BigInt(offsetCluster) * BigInt(cs), imrt.refblockBytes(index, rbe, cs), 'ERROR writing refblock');
      // This refblock is done: skip to its end.
      cluster = start + rbe - 1;
    }
    return grown;
  };

  // qcow2_cache_empty: the refcount-block cache is written back and dropped first (QEMU ignores a
  // failure: the cache then stays as it is).
  cacheEmpty(c, 'previous');
  try {
    writeRefblocks(0, imrt.size);
    let reftableCluster = -1;
    let reftableClusters = 0;
    let grown: boolean;
    // Bounded: every round that grows the table adds a refblock range it must cover, and a table
    // cluster covers entriesPerCluster blocks, so the table stops growing after a few rounds.
    do {
      reftableClusters = Math.ceil((entries * 8) / cs);
      reftableCluster = allocate(reftableClusters, { value: 0 });
      grown = writeRefblocks(reftableCluster, reftableCluster + reftableClusters);
    } while (grown);
    const reftableOffset = BigInt(reftableCluster) * BigInt(cs);
    const entryBytes = (i: number, cluster: number): Uint8Array => {
      const { hi, lo9 } = offsetToParts(BigInt(cluster) * BigInt(cs), 32, { structure: 'refcount_table_entry', field: 'refblock_offset', offset: i * 8 });
      return encodeRefcountTableEntry({ refblockOffsetHi: hi, refblockOffsetLo: lo9, reserved: 0 },
        { clusterBits: g.clusterBits, refcountOrder: c.tx.img.header.refcountOrder });
    };
    if (entries * 8 <= DENSE_REFTABLE_BYTES) {
      const table = new Uint8Array(entries * 8);
      for (const [i, cluster] of reftable) table.set(entryBytes(i, cluster), i * 8);
      checkedWrite(reftableOffset, table, 'ERROR writing reftable');
    } else {
      // The same bytes as one write of the whole table: zeros over its range, then its set entries.
      checkedZeroThenWrite(reftableOffset, BigInt(entries * 8), [...reftable].sort((a, b) => a[0] - b[0]).map(([i, cluster]) => [i * 8, entryBytes(i, cluster)] as const), 'ERROR writing reftable');
    }
    // Crash safety (stronger than QEMU, which only syncs after the header write): the new blocks and
    // table are on disk before the header points at them.
    hostFlush(c.tx);
    setHeaderFields(c.tx, { refcountTableOffset: reftableOffset, refcountTableClusters: reftableClusters });
    hostFlush(c.tx);
  } catch (e) {
    if (!(e instanceof RebuildError)) throw e;
    // QEMU counts a check error when writing the refblocks fails, not the reftable.
    if (e.message.startsWith('ERROR writing refblock')) res.checkErrors++;
    c.out.emit('check-error', `qemu-img: ${e.message}`);
    throw new CheckAbort(e.errno);
  }
}
