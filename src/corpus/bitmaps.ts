/**
 * Persistent dirty bitmaps for corpus images (docs/format/features.md#persistent-bitmaps). The model has no bitmap operations,
 * so the structures are written here with the generated encoders (spec/qcow2.ksy bitmap_directory_entry,
 * bitmap_table_entry, bitmaps_extension) into clusters taken from the model's own allocator, so every
 * cluster is refcounted exactly once and `qemu-img check` finds nothing to complain about.
 *
 * The rules QEMU 7.2 applies when it loads bitmaps at open (block/qcow2-bitmap.c check_dir_entry,
 * check_table_entry, load_bitmap_data) are followed: type 1, granularity bits 9..31, no extra data,
 * no reserved flags, a table of exactly ceil(ceil(size / granularity) / 8 / cluster_size) entries,
 * each entry 0 (all zeros), 1 (all ones) or the offset of a cluster-aligned data cluster; the bitmaps
 * extension after the feature name table; autoclear bit 0 set. Bits past the end of the disk are 0.
 */
import { encodeBitmapDirectoryEntry, encodeBitmapTableEntry, encodeBitmapsExtension, HeaderExtensionType } from '../../generated/qcow2.ts';
import { bigIntToU64 } from '../format/index.ts';
import { AUTOCLEAR_BITMAPS, type Image } from '../model/index.ts';
import { allocClusters } from '../model/index.ts';
import { beginTx, hostWrite } from '../model/index.ts';
import { hostBytes } from '../model/index.ts';
import { readHeaderCluster, writeHeaderCluster, type RawExtension } from './header-edit.ts';
import type { Prng } from './prng.ts';

/** What was added, for the case's features. */
export interface BitmapSummary {
  readonly name: string;
  readonly granularityBits: number;
  readonly tableSize: number;
  /** How many table entries are all-zeros, all-ones and data clusters. */
  readonly zeros: number;
  readonly ones: number;
  readonly data: number;
  readonly auto: boolean;
}

/** Header extension types QEMU writes before the bitmaps extension (docs/format/create.md#header-extensions-written). */
const BEFORE_BITMAPS: readonly number[] = [
  HeaderExtensionType.BACKING_FILE_FORMAT,
  HeaderExtensionType.EXTERNAL_DATA_FILE,
  HeaderExtensionType.FULL_DISK_ENCRYPTION,
  HeaderExtensionType.FEATURE_NAME_TABLE,
];

/**
 * `image` (a clean, closed version 3 image without bitmaps) with `count` persistent bitmaps added:
 * the file bytes, and what each bitmap holds. Deterministic in `prng`. Throws RangeError for a
 * version 2 image (bitmaps need version 3).
 */
export function addBitmaps(image: Image, prng: Prng, count: number): { bytes: Uint8Array; bitmaps: BitmapSummary[] } {
  if (image.header.version !== 3) throw new RangeError('persistent bitmaps need a version 3 image');
  const cs = 1 << image.header.clusterBits;
  const diskBytes = image.header.size & ~511n;
  const tx = beginTx(image);
  const summaries: BitmapSummary[] = [];
  const entries: Uint8Array[] = [];
  for (let b = 0; b < count; b++) {
    // Granularity: at least 512 bytes, at most what still needs several bits (QEMU allows up to 2^31).
    const granularityBits = prng.int(9, 20);
    const gran = 1n << BigInt(granularityBits);
    const bits = (diskBytes + gran - 1n) / gran;
    const bytes = (bits + 7n) / 8n;
    const tableSize = Math.max(1, Number((bytes + BigInt(cs) - 1n) / BigInt(cs)));
    const table = new Uint8Array(tableSize * 8);
    let zeros = 0;
    let ones = 0;
    let data = 0;
    for (let i = 0; i < tableSize; i++) {
      // Bits of the disk this table entry's cluster covers (the last one is partial).
      const firstBit = BigInt(i) * BigInt(cs) * 8n;
      const coveredBits = bits - firstBit < BigInt(cs) * 8n ? Number(bits - firstBit) : cs * 8;
      const last = coveredBits < cs * 8;
      const kind = prng.pick(last ? (['zeros', 'data'] as const) : (['zeros', 'ones', 'data'] as const));
      let offset = 0n;
      let allOnes = false;
      if (kind === 'ones') {
        allOnes = true;
        ones++;
      } else if (kind === 'data') {
        offset = allocClusters(tx, BigInt(cs));
        const content = prng.bytes(cs);
        clearBitsFrom(content, coveredBits);
        hostWrite(tx, offset, content);
        data++;
      } else {
        zeros++;
      }
      table.set(encodeBitmapTableEntry({
        reservedHi: 0,
        offsetHi: Number(offset >> 32n),
        offsetLo: Number((offset & 0xffffffffn) >> 9n),
        reservedLo: 0,
        allOnes,
      }), i * 8);
    }
    const tableOffset = allocClusters(tx, BigInt(table.length));
    hostWrite(tx, tableOffset, table);
    const name = `bitmap-${b}-${prng.int(0, 0xffff).toString(16)}`;
    const auto = prng.chance(0.5);
    const fixed = 24 + name.length;
    entries.push(encodeBitmapDirectoryEntry({
      bitmapTableOffset: bigIntToU64(tableOffset),
      bitmapTableSize: tableSize,
      reservedFlags: 0,
      extraDataCompatible: false,
      auto,
      inUse: false,
      bitmapType: 1,
      granularityBits,
      lenName: name.length,
      lenExtraData: 0,
      extraData: new Uint8Array(0),
      name,
      padding: new Uint8Array((8 - (fixed % 8)) % 8),
    }));
    summaries.push({ name, granularityBits, tableSize, zeros, ones, data, auto });
  }
  const dirSize = entries.reduce((n, e) => n + e.length, 0);
  const directory = new Uint8Array(dirSize);
  let at = 0;
  for (const e of entries) {
    directory.set(e, at);
    at += e.length;
  }
  const dirOffset = allocClusters(tx, BigInt(dirSize));
  hostWrite(tx, dirOffset, directory);
  const ext: RawExtension = {
    type: HeaderExtensionType.BITMAPS,
    data: encodeBitmapsExtension({
      nbBitmaps: count,
      reserved: 0,
      bitmapDirectorySize: bigIntToU64(BigInt(dirSize)),
      bitmapDirectoryOffset: bigIntToU64(dirOffset),
    }),
  };
  const file = hostBytes(tx.img.file);
  const c = readHeaderCluster(file);
  const before = c.extensions.filter((e) => BEFORE_BITMAPS.includes(e.type));
  const after = c.extensions.filter((e) => !BEFORE_BITMAPS.includes(e.type));
  const header = { ...c.header, autoclearFeatures: c.header.autoclearFeatures | AUTOCLEAR_BITMAPS };
  return { bytes: writeHeaderCluster(file, { ...c, header, extensions: [...before, ext, ...after] }), bitmaps: summaries };
}

/** Clears every bit from bit index `from` on (LSB-first within bytes, as QEMU serializes bitmaps). */
function clearBitsFrom(bytes: Uint8Array, from: number): void {
  if (from >= bytes.length * 8) return;
  const byte = Math.floor(from / 8);
  bytes[byte]! &= (1 << (from % 8)) - 1;
  bytes.fill(0, byte + 1);
}
