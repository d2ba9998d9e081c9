/**
 * The snapshot table as `qemu-img check` reads and repairs it (block/qcow2-snapshot.c
 * qcow2_check_read_snapshot_table, qcow2_do_read_snapshots in repair mode,
 * qcow2_check_fix_snapshot_table): QEMU's check-mode open skips the table, so the check reads it
 * again from the header — limits (65536 entries, 64 MiB, 1024 bytes of extra data per entry),
 * v3 entries with less than 16 bytes of extra data — and with -r all drops what is over the limits
 * and rewrites the table.
 */
import { SNAPSHOT_ENTRY_FIXED_SIZE, SnapshotExtraDataLayout } from '../../generated/qcow2.ts';
import { INT64_MAX, INT_MAX, QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOTS_SIZE, QCOW_MAX_SNAPSHOT_EXTRA_DATA } from '../format/index.ts';
import { ModelError } from '../model/index.ts';
import { writeSnapshots, type SnapshotState } from '../model/index.ts';
import { hostFlush, setHeaderFields } from '../model/index.ts';
import { CheckAbort, FIX_ERRORS, cString, pread, readable, roundUp8, signalCorruption, type CheckContext, type CheckedSnapshot, type Counters } from './context.ts';
import { EFBIG, EINVAL, EIO, strerror } from '../model/index.ts';
import { checkMetadataOverlap } from './overlap.ts';
import { cacheTakeWrites, cacheWrite } from './refblocks.ts';
import { INCOMPAT_DIRTY } from '../model/index.ts';

/** sizeof(QCowSnapshotExtraData): vm_state_size_large, disk_size, icount. */
const SNAPSHOT_KNOWN_EXTRA = SnapshotExtraDataLayout.icount.offset + SnapshotExtraDataLayout.icount.size;
const U64_RANGE = 1n << 64n;


/** qcow2_validate_table: the error message and errno, or undefined when the table is acceptable. */
function validateTable(c: CheckContext, offset: bigint, entries: bigint, entryLen: bigint, maxBytes: bigint, name: string): { message: string; errno: number } | undefined {
  if (entries > maxBytes / entryLen) return { message: `${name} too large`, errno: EFBIG };
  if (INT64_MAX - entries * entryLen < offset || (offset & BigInt(c.g.clusterSize - 1)) !== 0n) {
    return { message: `${name} offset invalid`, errno: EINVAL };
  }
  return undefined;
}

class SnapshotReadError extends Error {
  constructor(readonly errno: number, readonly text: string, readonly hint?: string) {
    super(text);
  }
}

/** qcow2_check_read_snapshot_table. */
export function checkReadSnapshotTable(c: CheckContext, res: Counters): void {
  const h = c.tx.img.header;
  let nb = h.nbSnapshots >>> 0;
  const offset = h.snapshotsOffset;
  let reduced = 0;
  let dropped = 0;
  if (nb > QCOW_MAX_SNAPSHOTS && (c.fix & FIX_ERRORS) !== 0) {
    c.out.emit('corruption', `Discarding ${nb - QCOW_MAX_SNAPSHOTS} overhanging snapshots`);
    reduced += nb - QCOW_MAX_SNAPSHOTS;
    nb = QCOW_MAX_SNAPSHOTS;
  }
  const bad = validateTable(c, offset, BigInt(nb), BigInt(SNAPSHOT_ENTRY_FIXED_SIZE), BigInt(SNAPSHOT_ENTRY_FIXED_SIZE * QCOW_MAX_SNAPSHOTS), 'snapshot table');
  if (bad !== undefined) {
    res.checkErrors++;
    c.out.emit('check-error', `qemu-img: ERROR ${bad.message}`);
    if (nb > QCOW_MAX_SNAPSHOTS) {
      c.out.note(`You can force-remove all ${nb - QCOW_MAX_SNAPSHOTS} overhanging snapshots with qemu-img check -r all`, 'previous');
    }
    throw new CheckAbort(bad.errno);
  }
  try {
    const read = readSnapshots(c, offset, nb, (c.fix & FIX_ERRORS) !== 0);
    reduced += read.reduced;
    dropped += read.dropped;
    c.snapshots = read.snapshots;
    c.snapshotsSize = read.size;
  } catch (e) {
    if (!(e instanceof SnapshotReadError)) throw e;
    res.checkErrors++;
    c.out.emit('check-error', `qemu-img: ERROR failed to read the snapshot table: ${e.text}`);
    if (e.hint !== undefined) c.out.note(e.hint, 'previous');
    c.snapshots = [];
    c.snapshotsSize = 0n;
    throw new CheckAbort(e.errno);
  }
  res.corruptions += reduced + dropped;
  if (reduced > 0) {
    // The header says how many snapshots there are before the refcounts are checked.
    setHeaderFields(c.tx, { nbSnapshots: c.snapshots.length });
    hostFlush(c.tx);
    res.corruptionsFixed += reduced;
    res.corruptions -= reduced;
  }
  if (h.version >= 3) {
    c.snapshots.forEach((sn, i) => {
      if (sn.extraDataSize < 16) {
        res.corruptions++;
        c.out.emit('corruption', `${(c.fix & FIX_ERRORS) !== 0 ? 'Repairing' : 'ERROR'} snapshot table entry ${i} is incomplete`);
      }
    });
  }
}

/**
 * qcow2_do_read_snapshots in check mode (`repair` = -r all): the entries, their total size, how many
 * overhanging snapshots were dropped and how many entries lost extra data. Throws SnapshotReadError
 * with QEMU's message when it gives up.
 */
function readSnapshots(c: CheckContext, tableOffset: bigint, count: number, repair: boolean):
  { snapshots: CheckedSnapshot[]; size: bigint; reduced: number; dropped: number } {
  const snapshots: CheckedSnapshot[] = [];
  let reduced = 0;
  let dropped = 0;
  if (count === 0) return { snapshots, size: 0n, reduced, dropped };
  const readOrFail = (at: bigint, n: number): Uint8Array => {
    // Past the end of the file the read gives zeros: not read at all (an entry there has 40 bytes
    // and nothing else to read), so entries the file does not hold cost no file reads.
    if (at >= c.tx.img.file.length && n <= SNAPSHOT_ENTRY_FIXED_SIZE && readable(at, BigInt(n))) return new Uint8Array(n);
    const b = pread(c, at, n);
    if (b === undefined) throw new SnapshotReadError(EIO, `Failed to read snapshot table: ${strerror(EIO)}`);
    return b;
  };
  let offset = tableOffset;
  let tableLength = 0n;
  // Bounded: at most `count` (≤ 65536) iterations, each reading at most ~130 KiB.
  for (let i = 0; i < count; i++) {
    let truncateUnknown = false;
    const pre = offset;
    tableLength = roundUp8(tableLength);
    offset = roundUp8(offset);
    const hb = readOrFail(offset, SNAPSHOT_ENTRY_FIXED_SIZE);
    offset += BigInt(SNAPSHOT_ENTRY_FIXED_SIZE);
    const dv = new DataView(hb.buffer, hb.byteOffset, hb.byteLength);
    const l1TableOffset = dv.getBigUint64(0);
    const l1Size = dv.getUint32(8);
    const idSize = dv.getUint16(12);
    const nameSize = dv.getUint16(14);
    const dateSec = dv.getUint32(16);
    const dateNsec = dv.getUint32(20);
    const vmClockNsec = dv.getBigUint64(24);
    let vmStateSize = BigInt(dv.getUint32(32));
    let extraDataSize = dv.getUint32(36);
    if (extraDataSize > QCOW_MAX_SNAPSHOT_EXTRA_DATA) {
      if (!repair) {
        throw new SnapshotReadError(EFBIG, `Too much extra metadata in snapshot table entry ${i}`,
          'You can force-remove this extra metadata with qemu-img check -r all');
      }
      c.out.emit('corruption', `Discarding too much extra metadata in snapshot table entry ${i} (${extraDataSize} > ${QCOW_MAX_SNAPSHOT_EXTRA_DATA})`);
      dropped++;
      truncateUnknown = true;
    }
    const knownLen = Math.min(SNAPSHOT_KNOWN_EXTRA, extraDataSize);
    const known = new Uint8Array(SNAPSHOT_KNOWN_EXTRA);
    known.set(readOrFail(offset, knownLen));
    offset += BigInt(knownLen);
    const kv = new DataView(known.buffer);
    if (extraDataSize >= 8) vmStateSize = kv.getBigUint64(0);
    const diskSize = extraDataSize >= 16 ? kv.getBigUint64(8) : c.virtualBytes;
    const icount = extraDataSize >= 24 ? kv.getBigUint64(16) : U64_RANGE - 1n;
    let unknownExtraData: Uint8Array = new Uint8Array(0);
    if (extraDataSize > SNAPSHOT_KNOWN_EXTRA) {
      const extraEnd = offset + BigInt(extraDataSize - SNAPSHOT_KNOWN_EXTRA);
      if (truncateUnknown) extraDataSize = QCOW_MAX_SNAPSHOT_EXTRA_DATA;
      unknownExtraData = readOrFail(offset, extraDataSize - SNAPSHOT_KNOWN_EXTRA);
      offset = extraEnd;
    }
    const id = cString(readOrFail(offset, idSize));
    offset += BigInt(idSize);
    const name = cString(readOrFail(offset, nameSize));
    offset += BigInt(nameSize);
    tableLength += BigInt(SNAPSHOT_ENTRY_FIXED_SIZE + extraDataSize + idSize + nameSize);
    if (tableLength > BigInt(QCOW_MAX_SNAPSHOTS_SIZE) || offset - tableOffset > BigInt(INT_MAX)) {
      if (!repair) {
        throw new SnapshotReadError(EFBIG, 'Snapshot table is too big',
          `You can force-remove all ${count - i} overhanging snapshots with qemu-img check -r all`);
      }
      c.out.emit('corruption', `Discarding ${count - i} overhanging snapshots (snapshot table is too big)`);
      reduced += count - i;
      offset = pre;
      break;
    }
    snapshots.push({ l1TableOffset, l1Size, id, name, dateSec, dateNsec, vmClockNsec, vmStateSize, diskSize, icount, extraDataSize, unknownExtraData });
  }
  return { snapshots, size: offset - tableOffset, reduced, dropped };
}

/** qcow2_check_fix_snapshot_table: with -r all and snapshot-table corruptions, rewrite the table. */
export function checkFixSnapshotTable(c: CheckContext, res: Counters): void {
  if (res.corruptions === 0 || (c.fix & FIX_ERRORS) === 0) return;
  const list: SnapshotState[] = c.snapshots.map((sn) => ({
    l1TableOffset: sn.l1TableOffset,
    l1Size: sn.l1Size,
    id: sn.id,
    name: sn.name,
    dateSec: sn.dateSec,
    dateNsec: sn.dateNsec,
    vmClockNsec: sn.vmClockNsec,
    vmStateSize: sn.vmStateSize,
    diskSize: sn.diskSize,
    icount: sn.icount,
    extraDataSize: sn.extraDataSize,
    unknownExtraData: sn.unknownExtraData,
  }));
  // The model's refcount changes go through QEMU's refcount-block cache (check-refblocks.ts): those
  // up to an index of the operation log are accounted for.
  let taken = c.tx.io.length;
  let newSize = c.snapshotsSize;
  const overlapCheck = (offset: bigint, size: bigint): void => {
    newSize = size;
    // qcow2_alloc_clusters changed refcounts in the cache; the bdrv_flush that followed wrote the
    // cache back — unless the dirty bit says refcounts need not be accurate.
    cacheTakeWrites(c, taken, c.tx.io.length, 'previous');
    taken = c.tx.io.length;
    if ((c.tx.img.header.incompatibleFeatures & INCOMPAT_DIRTY) === 0n) {
      const r = cacheWrite(c, 'previous');
      if (r !== 0) throw new CheckAbort(r);
    }
    const overlap = checkMetadataOverlap(c, 0, offset, size);
    if (overlap !== undefined) {
      signalCorruption(c, `Preventing invalid write on metadata (overlaps with ${overlap})`, 'previous');
      throw new CheckAbort(EIO);
    }
  };
  try {
    // qcow2_write_snapshots frees the old table by s->snapshots_size (the size the check read).
    writeSnapshots(c.tx, list, Number(c.snapshotsSize), overlapCheck);
    // The new table and the header were written directly; freeing the old table, after the last
    // flush, stays in the cache.
    let last = c.tx.io.length - 1;
    while (last >= taken && c.tx.io[last]!.kind !== 'flush') last--;
    cacheTakeWrites(c, Math.max(taken, last + 1), c.tx.io.length, 'previous');
    // s->snapshots_size follows the new table (the overlap checks of later writes use it).
    c.snapshotsSize = newSize;
  } catch (e) {
    // Freeing the new clusters again (or what the model did before failing) stays in the cache.
    cacheTakeWrites(c, taken, c.tx.io.length, 'previous');
    let errno: number;
    if (e instanceof CheckAbort) {
      errno = e.errno;
    } else if (e instanceof ModelError) {
      errno = -e.errno;
    } else {
      throw e;
    }
    res.checkErrors++;
    c.out.emit('check-error', `ERROR failed to update snapshot table: ${strerror(errno)}`);
    throw new CheckAbort(errno);
  }
  res.corruptionsFixed += res.corruptions;
  res.corruptions = 0;
}

