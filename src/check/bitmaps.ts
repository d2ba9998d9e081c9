/**
 * The persistent dirty bitmaps' share of `qemu-img check` (block/qcow2-bitmap.c
 * qcow2_check_bitmaps_refcounts, bitmap_list_load, check_dir_entry, check_table_entry): the bitmap
 * directory, each bitmap table and each data cluster count one reference; a directory or table QEMU
 * refuses makes the check fail (EINVAL). Only when autoclear bit 0 says the bitmaps are consistent
 * (QEMU ignores them otherwise).
 */
import { BitmapDirectoryEntryMasks, decodeBitmapTableEntryFields } from '../../generated/qcow2.ts';
import { BME_MAX_NAME_SIZE, BME_MAX_PHYS_SIZE, BME_MAX_TABLE_SIZE, BME_RESERVED_FLAGS, QCOW2_MAX_BITMAP_DIRECTORY_SIZE } from '../format/index.ts';
import { isZeroBytes } from '../codec/index.ts';
import { offsetFromParts } from '../format/index.ts';
import type { Imrt } from './imrt.ts';
import { CheckAbort, incRefcounts, pread, type CheckContext, type Counters } from './context.ts';
import { EINVAL, EIO } from '../model/index.ts';


interface BitmapRef {
  readonly tableOffset: bigint;
  readonly tableSize: number;
}

/** bitmap_list_load + check_dir_entry: the bitmaps of the directory, or undefined when QEMU refuses it. */
function bitmapListLoad(c: CheckContext, offset: bigint, size: bigint, count: number): BitmapRef[] | undefined {
  if (size === 0n || size > BigInt(QCOW2_MAX_BITMAP_DIRECTORY_SIZE)) return undefined;
  const dir = pread(c, offset, Number(size));
  if (dir === undefined) return undefined;
  const dv = new DataView(dir.buffer, dir.byteOffset, dir.byteLength);
  const out: BitmapRef[] = [];
  const n = dir.length;
  let e = 0;
  let entries = 0;
  // Bounded: every entry moves `e` forward by at least 24 bytes.
  while (e < n) {
    if (e + 24 > n) return undefined;
    if (++entries > count) return undefined;
    const tableOffset = dv.getBigUint64(e);
    const tableSize = dv.getUint32(e + 8);
    const flags = dv.getUint32(e + 12);
    const type = dv.getUint8(e + 16);
    const granularityBits = dv.getUint8(e + 17);
    const nameSize = dv.getUint16(e + 18);
    const extraDataSize = dv.getUint32(e + 20);
    const entrySize = Math.ceil((24 + nameSize + extraDataSize) / 8) * 8;
    if (e + entrySize > n) return undefined;
    if (extraDataSize !== 0) return undefined;
    const fail = tableSize === 0 || tableOffset === 0n || (tableOffset & BigInt(c.g.clusterSize - 1)) !== 0n
      || tableSize > BME_MAX_TABLE_SIZE || granularityBits > 31 || granularityBits < 9
      || (flags & BME_RESERVED_FLAGS) !== 0 || nameSize > BME_MAX_NAME_SIZE || type !== 1;
    if (fail) return undefined;
    const phys = BigInt(tableSize) * BigInt(c.g.clusterSize);
    if (phys > BigInt(BME_MAX_PHYS_SIZE)) return undefined;
    if ((flags & Number(BitmapDirectoryEntryMasks.inUse)) === 0 && c.virtualBytes > (phys * 8n) << BigInt(granularityBits)) return undefined;
    out.push({ tableOffset, tableSize });
    e += entrySize;
  }
  if (entries !== count) return undefined;
  return out;
}

/** qcow2_check_bitmaps_refcounts: the directory, each bitmap table and its data clusters. */
export function checkBitmapsRefcounts(c: CheckContext, res: Counters, imrt: Imrt): void {
  const bm = c.bitmaps;
  if (bm === undefined) return;
  incRefcounts(c, res, imrt, bm.offset, bm.size);
  const list = bitmapListLoad(c, bm.offset, bm.size, bm.count);
  if (list === undefined) {
    res.corruptions++;
    throw new CheckAbort(EINVAL);
  }
  const cs = BigInt(c.g.clusterSize);
  for (const b of list) {
    incRefcounts(c, res, imrt, b.tableOffset, BigInt(b.tableSize) * 8n);
    const table = pread(c, b.tableOffset, b.tableSize * 8);
    if (table === undefined) {
      res.corruptions++;
      throw new CheckAbort(EIO);
    }
    const offsets: bigint[] = [];
    for (let i = 0; i < b.tableSize; i++) {
      if (isZeroBytes(table, i * 8, 8)) continue;
      const e = decodeBitmapTableEntryFields(table, i * 8);
      const offset = offsetFromParts(e.offsetHi, e.offsetLo);
      // check_table_entry: reserved bits, bit 0 with an offset, unaligned offset.
      if (e.reservedHi !== 0 || e.reservedLo !== 0 || (offset !== 0n && (e.allOnes || (offset & (cs - 1n)) !== 0n))) {
        res.corruptions++;
        throw new CheckAbort(EINVAL);
      }
      if (offset !== 0n) offsets.push(offset);
    }
    for (const offset of offsets) incRefcounts(c, res, imrt, offset, cs);
  }
}

