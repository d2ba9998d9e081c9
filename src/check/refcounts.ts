/**
 * qcow2_check_refcounts of QEMU 7.2 (block/qcow2-refcount.c): the references of everything counted
 * into an in-memory table independently of the allocator (calculate_refcounts, check_refcounts_l1 /
 * _l2 with their per-entry checks, check_refblocks), compared with the on-disk refcounts
 * (compare_refcounts), the refcount structure rebuilt when it must be and may be
 * (rebuild_refcount_structure, src/check/rebuild-refcounts.ts), and OFLAG_COPIED checked against
 * the refcounts (check_oflag_copied). With fix flags the repairs are written through the pass's
 * transaction in QEMU's order.
 *
 * It walks the metadata itself rather than through walkImage (src/format/walk.ts): its findings,
 * messages and repairs depend on QEMU's own walk order and on what QEMU reads at each step.
 */
import { decodeL2EntryFields, L1EntryMasks, L2EntryMasks, RefcountTableEntryMasks } from '../../generated/qcow2.ts';
import { isZeroBytes } from '../codec/index.ts';
import { classifyL2Entry, l2EntryWords } from '../format/index.ts';
import { ModelError } from '../model/index.ts';
import { discardHost, readHost, truncateHost } from '../model/index.ts';
import { Imrt } from './imrt.ts';
import { getRefcount, updateRefcount } from '../model/index.ts';
import { checkpointImg, hostFlush, hostWrite } from '../model/index.ts';
import { checkBitmapsRefcounts } from './bitmaps.ts';
import { CheckAbort, FIX_ERRORS, FIX_LEAKS, fileLength, hashHex, hex, inFileLength, incRefcounts, l1WordAt, pread, readable, reftableSize, signalCorruption, sizeToClusters, zeroCounters, type CheckContext, type Counters, type FixMode } from './context.ts';
import { EFBIG, EINVAL, EIO, strerror } from '../model/index.ts';
import { cacheMarkDirty, getRefcountChecked, nonZeroRefcounts, readRefblock, refblockBits } from './refblocks.ts';
import { reftableView } from './tables.ts';
import { BDRV_MAX_LENGTH, INT64_MAX, INT_MAX, QCOW2_OL_ACTIVE_L1, QCOW2_OL_ACTIVE_L2, QCOW2_OL_INACTIVE_L2, QCOW_MAX_L1_SIZE } from '../format/index.ts';
import { checkMetadataOverlap } from './overlap.ts';

/** CHECK_FRAG_INFO (block/qcow2-refcount.c): check_refcounts_l2 also counts fragmented clusters. */
const CHECK_FRAG_INFO = 2;

/** check_refcounts_l1: the L1 table at `l1Offset` with `l1Size` entries, its L2 tables and data. */
function checkRefcountsL1(c: CheckContext, res: Counters, imrt: Imrt, l1Offset: bigint, l1Size: number, flags: number, active: boolean): void {
  if (l1Size === 0) return;
  const bytes = BigInt(l1Size) * 8n;
  incRefcounts(c, res, imrt, l1Offset, bytes);
  if (!readable(l1Offset, bytes)) {
    c.out.emit('check-error', 'ERROR: I/O error in check_refcounts_l1');
    res.checkErrors++;
    throw new CheckAbort(EIO);
  }
  // The table as read before any entry is looked at (entries past the end of the file are 0).
  const inFile = inFileLength(c, l1Offset, bytes);
  const table = readHost(c.tx.img.file, l1Offset, inFile + ((8 - (inFile % 8)) % 8));
  const n = Math.ceil(inFile / 8);
  const cs = BigInt(c.g.clusterSize);
  for (let i = 0; i < n; i++) {
    if (isZeroBytes(table, i * 8, 8)) continue;
    const word = l1WordAt(table, i * 8, c.g);
    if ((word & L1EntryMasks.reserved) !== 0n) {
      c.out.emit('corruption', `ERROR found L1 entry with reserved bits set: ${hex(word)}`);
      res.corruptions++;
    }
    const l2Offset = word & L1EntryMasks.l2Offset;
    incRefcounts(c, res, imrt, l2Offset, cs);
    if ((l2Offset & (cs - 1n)) !== 0n) {
      c.out.emit('corruption', `ERROR l2_offset=${hex(l2Offset)}: Table is not cluster aligned; L1 entry corrupted`);
      res.corruptions++;
    }
    checkRefcountsL2(c, res, imrt, l2Offset, flags, active);
  }
}

/** The word and (extended L2) bitmap of entry `i` of an L2 table's bytes, and its decoded fields. */
function l2EntryAt(c: CheckContext, table: Uint8Array, i: number): { fields: ReturnType<typeof decodeL2EntryFields>; word: bigint; bitmap: bigint } {
  const fields = decodeL2EntryFields(table, i * c.g.l2EntrySize, { clusterBits: c.g.clusterBits, extendedL2: c.g.extendedL2 });
  const w = l2EntryWords(fields);
  return { fields, word: w.word, bitmap: w.bitmap ?? 0n };
}

function l2Ctx(c: CheckContext): { clusterBits: number; extendedL2: boolean; externalDataFile: boolean } {
  return { clusterBits: c.g.clusterBits, extendedL2: c.g.extendedL2, externalDataFile: c.g.externalDataFile };
}

/** check_refcounts_l2: the entries of the L2 table at `l2Offset` (which may be unaligned). */
function checkRefcountsL2(c: CheckContext, res: Counters, imrt: Imrt, l2Offset: bigint, flags: number, active: boolean): void {
  const g = c.g;
  const cs = BigInt(g.clusterSize);
  // A table past the end of the file reads as zeros: nothing to count or report.
  if (l2Offset >= fileLength(c)) return;
  const table = readHost(c.tx.img.file, l2Offset, g.clusterSize);
  if (isZeroBytes(table)) return;
  let nextContiguous = 0n;
  for (let i = 0; i < g.l2Entries; i++) {
    // An all-zero entry is unallocated with an empty bitmap: nothing to count, nothing to report.
    if (isZeroBytes(table, i * g.l2EntrySize, g.l2EntrySize)) continue;
    const { fields, word, bitmap } = l2EntryAt(c, table, i);
    const cls = classifyL2Entry(fields, l2Ctx(c));
    if (cls.kind !== 'compressed' && (word & L2EntryMasks.reserved) !== 0n) {
      c.out.emit('corruption', `ERROR found l2 entry with reserved bits set: ${hex(word)}`);
      res.corruptions++;
    }
    switch (cls.kind) {
      case 'compressed': {
        let entry = word;
        if ((entry & L2EntryMasks.copied) !== 0n) {
          c.out.emit('corruption', `ERROR: coffset=0x${hex(cls.hostOffset)}: copied flag must never be set for compressed clusters`);
          entry &= ~L2EntryMasks.copied;
          res.corruptions++;
        }
        if (g.externalDataFile) {
          c.out.emit('corruption', `ERROR compressed cluster ${i} with data file, entry=0x${hex(entry)}`);
          res.corruptions++;
          break;
        }
        if (bitmap !== 0n) {
          c.out.emit('corruption', `ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=0x${hex(entry)}`);
          res.corruptions++;
          break;
        }
        incRefcounts(c, res, imrt, cls.hostOffset, BigInt(cls.compressedBytes));
        if ((flags & CHECK_FRAG_INFO) !== 0) {
          res.allocatedClusters++;
          res.compressedClusters++;
          // Compressed clusters are fragmented by nature.
          res.fragmentedClusters++;
        }
        break;
      }
      case 'zero-alloc':
      case 'normal': {
        const offset = word & L2EntryMasks.hostOffset;
        if (((bitmap >> 32n) & bitmap) !== 0n) {
          res.corruptions++;
          c.out.emit('corruption', `ERROR offset=${hex(offset)}: Allocated cluster has corrupted subcluster allocation bitmap`);
        }
        if ((offset & (cs - 1n)) !== 0n) {
          res.corruptions++;
          const containsData = g.extendedL2 ? (bitmap & L2EntryMasks.allocBitmap) !== 0n : (word & L2EntryMasks.zero) === 0n;
          if (!containsData) {
            const repair = (c.fix & FIX_ERRORS) !== 0;
            c.out.emit('corruption', `${repair ? 'Repairing' : 'ERROR'} offset=${hex(offset)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
            if (repair) {
              // Skip marking the cluster as used (it is unused now) when the fix worked.
              if (fixL2EntryByZero(c, res, l2Offset, table, i, bitmap, active)) continue;
            }
          } else {
            c.out.emit('corruption', `ERROR offset=${hex(offset)}: Data cluster is not properly aligned; L2 entry corrupted.`);
          }
        }
        if ((flags & CHECK_FRAG_INFO) !== 0) {
          res.allocatedClusters++;
          if (nextContiguous !== 0n && offset !== nextContiguous) res.fragmentedClusters++;
          nextContiguous = offset + cs;
        }
        if (!g.externalDataFile) incRefcounts(c, res, imrt, offset, cs);
        break;
      }
      case 'zero-plain':
        break;
      case 'unallocated':
        if ((bitmap & L2EntryMasks.allocBitmap) !== 0n) {
          res.corruptions++;
          c.out.emit('corruption', 'ERROR: Unallocated cluster has non-zero subcluster allocation map');
        }
        break;
    }
  }
}

/**
 * fix_l2_entry_by_zero: turns entry `i` into a plain zero entry (all its allocated subclusters zero
 * with extended L2) and writes it. Returns true when fixed; false when the write failed (counted as a
 * check error); throws CheckAbort when the overlap check refused the write (QEMU stops checking).
 */
function fixL2EntryByZero(c: CheckContext, res: Counters, l2Offset: bigint, table: Uint8Array, i: number, bitmap: bigint, active: boolean): boolean {
  const g = c.g;
  const entryBytes = new Uint8Array(g.l2EntrySize);
  const dv = new DataView(entryBytes.buffer);
  if (g.extendedL2) {
    let b = bitmap | (bitmap << 32n);
    b &= L2EntryMasks.zeroBitmap;
    dv.setBigUint64(0, 0n);
    dv.setBigUint64(8, BigInt.asUintN(64, b));
  } else {
    dv.setBigUint64(0, L2EntryMasks.zero);
  }
  table.set(entryBytes, i * g.l2EntrySize);
  const at = l2Offset + BigInt(i * g.l2EntrySize);
  const overlap = checkMetadataOverlap(c, active ? QCOW2_OL_ACTIVE_L2 : QCOW2_OL_INACTIVE_L2, at, BigInt(g.l2EntrySize));
  if (overlap !== undefined) {
    signalCorruption(c, `Preventing invalid write on metadata (overlaps with ${overlap})`, 'previous');
    c.out.emit('check-error', 'ERROR: Overlap check failed');
    res.checkErrors++;
    throw new CheckAbort(EIO);
  }
  hostWrite(c.tx, at, entryBytes);
  hostFlush(c.tx);
  res.corruptions--;
  res.corruptionsFixed++;
  return true;
}

/** check_oflag_copied: COPIED of active L1 and L2 entries against the on-disk refcounts. */
function checkOflagCopied(c: CheckContext, res: Counters): void {
  const g = c.g;
  const h = c.tx.img.header;
  const repair = (c.fix & FIX_ERRORS) !== 0
    ? true
    : (c.fix & FIX_LEAKS) !== 0
      // Only when that seems safe: the refcounts were fixed before, so they are accurate if it worked.
      ? res.checkErrors === 0 && res.corruptions === 0 && res.leaks === 0
      : false;
  const l1Bytes = BigInt(h.l1Size) * 8n;
  const inFile = inFileLength(c, h.l1TableOffset, l1Bytes);
  const n = Math.ceil(inFile / 8);
  const l1 = readHost(c.tx.img.file, h.l1TableOffset, n * 8);
  for (let i = 0; i < n; i++) {
    if (isZeroBytes(l1, i * 8, 8)) continue;
    let l1Entry = l1WordAt(l1, i * 8, g);
    const l2Offset = l1Entry & L1EntryMasks.l2Offset;
    if (l2Offset === 0n) continue;
    const r = getRefcountChecked(c, l2Offset >> BigInt(g.clusterBits), 'next');
    if (r.ok) {
      const refcount = r.value;
      if ((refcount === 1n) !== ((l1Entry & L1EntryMasks.copied) !== 0n)) {
        res.corruptions++;
        c.out.emit('corruption', `${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${hex(l1Entry)} refcount=${refcount}`);
        if (repair) {
          l1Entry = refcount === 1n ? l1Entry | L1EntryMasks.copied : l1Entry & ~L1EntryMasks.copied;
          writeL1EntryWord(c, res, i, l1Entry);
          res.corruptions--;
          res.corruptionsFixed++;
        }
      }
    } else {
      // Don't print a message nor count a check error (compare_refcounts did).
      continue;
    }
    // A table past the end of the file reads as zeros: no entry to look at.
    if (l2Offset >= fileLength(c)) continue;
    const table = pread(c, l2Offset, g.clusterSize);
    if (table === undefined) {
      c.out.emit('check-error', `ERROR: Could not read L2 table: ${strerror(EIO)}`);
      res.checkErrors++;
      throw new CheckAbort(EIO);
    }
    let dirty = 0;
    if (isZeroBytes(table)) continue;
    for (let j = 0; j < g.l2Entries; j++) {
      if (isZeroBytes(table, j * g.l2EntrySize, g.l2EntrySize)) continue;
      const { fields, word } = l2EntryAt(c, table, j);
      const cls = classifyL2Entry(fields, l2Ctx(c));
      if (cls.kind !== 'normal' && cls.kind !== 'zero-alloc') continue;
      let refcount = 1n;
      if (!g.externalDataFile) {
        const rr = getRefcountChecked(c, (word & L2EntryMasks.hostOffset) >> BigInt(g.clusterBits), 'next');
        if (!rr.ok) continue;
        refcount = rr.value;
      }
      if ((refcount === 1n) !== ((word & L2EntryMasks.copied) !== 0n)) {
        res.corruptions++;
        c.out.emit('corruption', `${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED data cluster: l2_entry=${hex(word)} refcount=${refcount}`);
        if (repair) {
          const next = refcount === 1n ? word | L2EntryMasks.copied : word & ~L2EntryMasks.copied;
          new DataView(table.buffer, table.byteOffset).setBigUint64(j * g.l2EntrySize, next);
          dirty++;
        }
      }
    }
    if (dirty > 0) {
      const overlap = checkMetadataOverlap(c, QCOW2_OL_ACTIVE_L2, l2Offset, BigInt(g.clusterSize));
      if (overlap !== undefined) {
        signalCorruption(c, `Preventing invalid write on metadata (overlaps with ${overlap})`, 'previous');
        c.out.emit('check-error', `ERROR: Could not write L2 table; metadata overlap check failed: ${strerror(EIO)}`);
        res.checkErrors++;
        throw new CheckAbort(EIO);
      }
      hostWrite(c.tx, l2Offset, table);
      res.corruptions -= dirty;
      res.corruptionsFixed += dirty;
    }
  }
}

/** qcow2_write_l1_entry (8 bytes: request_alignment 1) after QEMU's overlap check. */
function writeL1EntryWord(c: CheckContext, res: Counters, i: number, word: bigint): void {
  const at = c.tx.img.header.l1TableOffset + BigInt(i) * 8n;
  const overlap = checkMetadataOverlap(c, QCOW2_OL_ACTIVE_L1, at, 8n);
  if (overlap !== undefined) {
    signalCorruption(c, `Preventing invalid write on metadata (overlaps with ${overlap})`, 'previous');
    res.checkErrors++;
    throw new CheckAbort(EIO);
  }
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, word);
  hostWrite(c.tx, at, b);
  hostFlush(c.tx);
}

/** check_refblocks: each refcount block must be aligned, inside the image and referenced once. */
function checkRefblocks(c: CheckContext, res: Counters, imrt: Imrt, rebuild: { value: boolean }): void {
  const cs = BigInt(c.g.clusterSize);
  // The non-zero entries (a zero entry is aligned, inside the image and skipped); nothing below
  // writes the reftable, so the view holds for the whole walk.
  const view = reftableView(c.tx);
  for (let k = 0; k < view.indexes.length; k++) {
    const i = view.indexes[k]!;
    const word = view.words[k]!;
    const offset = word & ~RefcountTableEntryMasks.reserved;
    const cluster = offset >> BigInt(c.g.clusterBits);
    if ((word & RefcountTableEntryMasks.reserved) !== 0n) {
      c.out.emit('corruption', `ERROR refcount table entry ${i} has reserved bits set`);
      res.corruptions++;
      rebuild.value = true;
      continue;
    }
    if ((offset & (cs - 1n)) !== 0n) {
      c.out.emit('corruption', `ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
      res.corruptions++;
      rebuild.value = true;
      continue;
    }
    if (cluster >= BigInt(imrt.size)) {
      res.corruptions++;
      const repair = (c.fix & FIX_ERRORS) !== 0;
      c.out.emit('corruption', `${repair ? 'Repairing' : 'ERROR'} refcount block ${i} is outside image`);
      if (repair) {
        const { errno, report } = growFileFor(c, offset);
        if (errno === 0) {
          const newNb = Number(sizeToClusters(c, fileLength(c)));
          if (newNb > imrt.size) imrt.size = newNb;
          res.corruptions--;
          res.corruptionsFixed++;
          incRefcounts(c, res, imrt, offset, cs);
          continue;
        }
        rebuild.value = true;
        // bdrv_co_truncate reports its own error first, unless QEMU refused before truncating.
        if (report !== undefined) c.out.note(`qemu-img: ${report}`, 'previous');
        c.out.note(`ERROR could not resize image: ${strerror(errno)}`, 'previous');
      }
      continue;
    }
    if (offset !== 0n) {
      incRefcounts(c, res, imrt, offset, cs);
      const rc = imrt.get(Number(cluster));
      if (rc !== 1) {
        c.out.emit('corruption', `ERROR refcount block ${i} refcount=${rc}`);
        res.corruptions++;
        rebuild.value = true;
      }
    }
  }
}

/**
 * Largest file ftruncate can make on the file system QEMU's behaviour was measured on (ext4 with
 * 4 KiB blocks: 2^44 - 4096 bytes); a refcount block past it cannot be brought inside the image
 * (EFBIG, "Could not resize file: File too large"). On another file system QEMU's limit differs.
 */
export const MAX_FILE_BYTES = (1n << 44n) - 4096n;

/**
 * bdrv_co_truncate(bs->file, offset + cluster): grows the file, or fails with an errno and the error
 * the block layer reports for it (none when QEMU refuses before truncating).
 */
function growFileFor(c: CheckContext, offset: bigint): { errno: number; report?: string } {
  const cs = BigInt(c.g.clusterSize);
  if (offset > INT64_MAX - cs) return { errno: EINVAL };
  const length = offset + cs;
  // bdrv_check_request of the new length, then the file system's limit (raw_co_truncate).
  if (length > BDRV_MAX_LENGTH) return { errno: EIO, report: `offset(${length}) exceeds maximum(${BDRV_MAX_LENGTH})` };
  if (length > MAX_FILE_BYTES) return { errno: EFBIG, report: `Could not resize file: ${strerror(EFBIG)}` };
  c.tx.img = { ...c.tx.img, file: truncateHost(c.tx.img.file, length) };
  c.tx.io.push({ kind: 'truncate', length });
  return { errno: 0 };
}

/** calculate_refcounts: the references of everything, into `imrt`. */
export function calculateRefcounts(c: CheckContext, res: Counters, imrt: Imrt, rebuild: { value: boolean }, fix: FixMode): void {
  const h = c.tx.img.header;
  const cs = BigInt(c.g.clusterSize);
  const saved = c.fix;
  // The pass after a rebuild counts without fixing (QEMU passes fix = 0).
  c.fix = fix;
  try {
    incRefcounts(c, res, imrt, 0n, cs);
    checkRefcountsL1(c, res, imrt, h.l1TableOffset, h.l1Size, CHECK_FRAG_INFO, true);
    if (c.g.externalDataFile && c.snapshots.length > 0) {
      c.out.emit('corruption', `ERROR ${c.snapshots.length} snapshots in image with data file`);
      res.corruptions++;
    }
    for (const sn of c.snapshots) {
      if ((sn.l1TableOffset & (cs - 1n)) !== 0n) {
        c.out.emit('corruption', `ERROR snapshot ${sn.id} (${sn.name}) l1_offset=${hashHex(sn.l1TableOffset)}: L1 table is not cluster aligned; snapshot table entry corrupted`);
        res.corruptions++;
        continue;
      }
      if (sn.l1Size > QCOW_MAX_L1_SIZE / 8) {
        c.out.emit('corruption', `ERROR snapshot ${sn.id} (${sn.name}) l1_size=${hashHex(BigInt(sn.l1Size))}: L1 table is too large; snapshot table entry corrupted`);
        res.corruptions++;
        continue;
      }
      checkRefcountsL1(c, res, imrt, sn.l1TableOffset, sn.l1Size, 0, false);
    }
    incRefcounts(c, res, imrt, h.snapshotsOffset, c.snapshotsSize);
    incRefcounts(c, res, imrt, h.refcountTableOffset, BigInt(reftableSize(c)) * 8n);
    if (c.crypto !== undefined) incRefcounts(c, res, imrt, c.crypto.offset, c.crypto.length);
    checkBitmapsRefcounts(c, res, imrt);
    checkRefblocks(c, res, imrt, rebuild);
  } finally {
    c.fix = saved;
  }
}

/**
 * compare_refcounts: every cluster's on-disk refcount against the references counted; with fix
 * flags, leaks are lowered and (-r all) too-low non-zero refcounts raised. Returns the highest
 * cluster with a refcount or a reference (QEMU's highest_cluster, 0 when there is none).
 */
export function compareRefcounts(c: CheckContext, res: Counters, fix: FixMode, rebuild: { value: boolean }, imrt: Imrt): number {
  const rbBits = refblockBits(c);
  const rbe = 2 ** rbBits;
  const referenced = imrt.sortedClusters();
  let ri = 0;
  let highest = 0;
  const nb = imrt.size;
  // The clusters QEMU visits one by one, grouped by the refcount block that describes them; only
  // clusters with a reference or a non-zero refcount can print anything, unless the block is
  // unreadable (then every cluster of its range reports the error).
  for (let start = 0; start < nb; start += rbe) {
    const t = Math.floor(start / rbe);
    const end = Math.min(nb, start + rbe);
    while (ri < referenced.length && referenced[ri]! < start) ri++;
    const block = t < reftableSize(c) ? readRefblock(c, t, 'next') : ({ kind: 'none' } as const);
    if (block.kind === 'error') {
      for (let i = start; i < end; i++) {
        c.out.emit('check-error', `Can't get refcount for cluster ${i}: ${strerror(block.errno)}`);
        res.checkErrors++;
      }
      continue;
    }
    const candidates: number[] = [];
    let rj = ri;
    while (rj < referenced.length && referenced[rj]! < end) candidates.push(referenced[rj++]!);
    if (block.kind === 'block') {
      for (const k of nonZeroRefcounts(c, block.offset, 0, end - start)) candidates.push(start + k);
      candidates.sort((a, b) => a - b);
    }
    let prev = -1;
    for (const i of candidates) {
      if (i === prev) continue;
      prev = i;
      // Through the block cache: a repair earlier in this range changed the file, so it reads again.
      const r = getRefcountChecked(c, BigInt(i), 'next');
      if (!r.ok) {
        c.out.emit('check-error', `Can't get refcount for cluster ${i}: ${strerror(r.errno)}`);
        res.checkErrors++;
        continue;
      }
      const refcount1 = r.value;
      const refcount2 = BigInt(imrt.get(i));
      if (refcount1 > 0n || refcount2 > 0n) highest = i;
      if (refcount1 === refcount2) continue;
      let fixKind: 'leak' | 'corruption' | undefined;
      if (refcount1 === 0n) rebuild.value = true;
      else if (refcount1 > refcount2 && (fix & FIX_LEAKS) !== 0) fixKind = 'leak';
      else if (refcount1 < refcount2 && (fix & FIX_ERRORS) !== 0) fixKind = 'corruption';
      const word = fixKind !== undefined ? 'Repairing' : refcount1 < refcount2 ? 'ERROR' : 'Leaked';
      c.out.emit(refcount1 < refcount2 ? 'corruption' : 'leak', `${word} cluster ${i} refcount=${refcount1} reference=${refcount2}`);
      if (fixKind !== undefined && setRefcount(c, BigInt(i), refcount1, refcount2)) {
        if (fixKind === 'leak') res.leaksFixed++;
        else res.corruptionsFixed++;
        continue;
      }
      if (refcount1 < refcount2) res.corruptions++;
      else res.leaks++;
    }
  }
  return highest;
}

/**
 * update_refcount(cluster, diff, QCOW2_DISCARD_ALWAYS) through the model's refcount code: the block
 * is got through QEMU's refcount-block cache and changed there (the write waits for the block's
 * write-back, check-refblocks.ts); a cluster whose refcount drops to 0 is punched out of the file at
 * once. False when the update fails.
 */
function setRefcount(c: CheckContext, cluster: bigint, from: bigint, to: bigint): boolean {
  const tx = c.tx;
  const cb = BigInt(c.g.clusterBits);
  // alloc_refcount_block → load_refcount_block: the block the refcount was just read from (a hit).
  const block = readRefblock(c, Number(cluster >> BigInt(refblockBits(c))), 'next');
  if (block.kind !== 'block') return false;
  const before = checkpointImg(tx);
  const ioLength = tx.io.length;
  try {
    const r = updateRefcount(tx, cluster << cb, 1n, from > to ? from - to : to - from, from > to);
    if (r !== 'ok') throw new ModelError('corrupt', -EIO, 'refcount block missing');
  } catch (e) {
    if (!(e instanceof ModelError)) throw e;
    tx.img = before;
    tx.io.length = ioLength;
    return false;
  }
  cacheMarkDirty(c, block.offset, tx.io.slice(ioLength).filter((op) => op.kind === 'write'));
  if (to === 0n && getRefcount(tx, cluster) === 0n) {
    const at = cluster << cb;
    const len = BigInt(c.g.clusterSize);
    tx.img = { ...tx.img, file: discardHost(tx.img.file, at, len) };
    tx.io.push({ kind: 'discard', offset: at, length: len });
  }
  return true;
}

/** qcow2_check_refcounts. */
export function checkRefcounts(c: CheckContext, res: Counters, rebuild: { value: boolean }): void {
  const size = fileLength(c);
  const nbClusters = sizeToClusters(c, size);
  if (nbClusters > BigInt(INT_MAX)) {
    res.checkErrors++;
    throw new CheckAbort(EFBIG);
  }
  res.totalClusters = sizeToClusters(c, c.virtualBytes);
  const imrt = new Imrt(Number(nbClusters), c.tx.img.header.refcountOrder);
  calculateRefcounts(c, res, imrt, rebuild, c.fix);
  const preCompare = { ...res };
  let highest = compareRefcounts(c, res, 0, rebuild, imrt);
  if (rebuild.value && (c.fix & FIX_ERRORS) !== 0) {
    const old = { ...res };
    let freshLeaks = 0;
    c.out.note('Rebuilding refcount structure', 'previous');
    if (c.rebuild === undefined) throw new Error('runCheckPass: -r all needs the rebuild (src/check/rebuild-refcounts.ts)');
    c.rebuild(c, res, imrt);
    res.corruptions = 0;
    res.leaks = 0;
    // The old reftable has been exchanged for a new one: the references are counted again.
    rebuild.value = false;
    imrt.clear();
    calculateRefcounts(c, res, imrt, rebuild, 0);
    if ((c.fix & FIX_LEAKS) !== 0) {
      // The old refcount structures are now leaked: fix that; only leaks the rebuild introduced and
      // that could not be fixed count.
      const saved = { ...res };
      const fresh = zeroCounters();
      highest = compareRefcounts(c, fresh, FIX_LEAKS, rebuild, imrt);
      if (rebuild.value) c.out.emit('corruption', 'ERROR rebuilt refcount structure is still broken');
      freshLeaks = fresh.leaks;
      Object.assign(res, saved);
    }
    if (res.corruptions < old.corruptions) res.corruptionsFixed += old.corruptions - res.corruptions;
    if (res.leaks < old.leaks) res.leaksFixed += old.leaks - res.leaks;
    res.leaks += freshLeaks;
  } else if (c.fix !== 0) {
    if (rebuild.value) {
      c.out.emit('check-error', 'ERROR need to rebuild refcount structures');
      res.checkErrors++;
      throw new CheckAbort(EIO);
    }
    if (res.leaks > 0 || res.corruptions > 0) {
      Object.assign(res, preCompare);
      highest = compareRefcounts(c, res, c.fix, rebuild, imrt);
    }
  }
  checkOflagCopied(c, res);
  res.imageEndOffset = BigInt(highest + 1) * BigInt(c.g.clusterSize);
}

