// GENERATED FILE - DO NOT EDIT.
// Produced by src/codegen (npm run generate) from spec/qcow2.ksy (sha256 c7e22bebd2efa3aa799dc0a23e4a6ddc0a1882c6031238bea6469a1ad70795b2).
// Regenerate with `npm run generate`; `npm run generate -- --check` fails when this file is stale.
/* eslint-disable */

/**
 * QEMU copy-on-write disk image, format versions 2 and 3.
 *
 * The on-disk structures of QEMU's qcow2 image format, as defined by QEMU's
 * docs/interop/qcow2.rst (see also docs/format/README.md of this project).
 *
 * Conventions of this description, so that every parser generated from it is exact:
 * * Every 64-bit quantity is split into 32-bit halves: plain integers use the `u64` type
 *   (`hi`, `lo`), bit-packed entries use bit fields of at most 32 bits. Kaitai's JavaScript
 *   target reads `u8` into a double and evaluates `&`/`>>` on 32 bits, so a single 64-bit
 *   field would lose bits above 2^53. The `num` instance of `u64` is a double and is only
 *   used for file positions (a position at or above 2^53 is beyond the end of every file).
 * * `valid:` holds the must-reject rules that belong to one structure. Rules that relate
 *   several structures (overlaps, refcounts, limits against the file size) live in the
 *   validation layer above the generated code, which reports them with QEMU's messages.
 * * Enums named `*_bit` list bit numbers (the feature bits); the generator also emits their masks.
 * * Structures reached through a pointer (L1 and L2 tables, refcount blocks, the snapshot
 *   table, the bitmap directory) are `instances` with `pos`, read on first access.
 */

import { ByteReader, type PagedBytes } from '../src/codec/index.ts';
import { ByteWriter } from '../src/codec/index.ts';
import {
  asciiDecode, asciiEncode, checkCount, checkSize, defineLazy, defineValue, inconsistent, invalidValue,
  kaitaiMod, requireProgress, stripRight,
} from '../src/codec/index.ts';

type NoParams = Record<string, never>;
interface DecodeContext { root: unknown; readonly rootIo: ByteReader; readonly fieldsOnly: boolean }
interface EncodeContext { readonly root: unknown }
// kaitaiMod is referenced only by some expressions.
void kaitaiMod;

/**
 * Values of enum crypt_method.
 */

export const CryptMethod = {
  NONE: 0,
  AES: 1,
  LUKS: 2,
} as const;

/**
 * Names of enum crypt_method by value.
 */

export const CryptMethodNames: Readonly<Record<number, string>> = {
  0: "none",
  1: "aes",
  2: "luks",
};

/**
 * Values of enum compression_type.
 */

export const CompressionType = {
  ZLIB: 0,
  ZSTD: 1,
} as const;

/**
 * Names of enum compression_type by value.
 */

export const CompressionTypeNames: Readonly<Record<number, string>> = {
  0: "zlib",
  1: "zstd",
};

/**
 * Values of enum header_extension_type.
 */

export const HeaderExtensionType = {
  END: 0,
  FULL_DISK_ENCRYPTION: 87539319,
  BITMAPS: 595929205,
  EXTERNAL_DATA_FILE: 1145132097,
  FEATURE_NAME_TABLE: 1745090647,
  BACKING_FILE_FORMAT: 3799591626,
} as const;

/**
 * Names of enum header_extension_type by value.
 */

export const HeaderExtensionTypeNames: Readonly<Record<number, string>> = {
  0: "end",
  87539319: "full_disk_encryption",
  595929205: "bitmaps",
  1145132097: "external_data_file",
  1745090647: "feature_name_table",
  3799591626: "backing_file_format",
};

/**
 * Values of enum feature_type.
 */

export const FeatureType = {
  INCOMPATIBLE: 0,
  COMPATIBLE: 1,
  AUTOCLEAR: 2,
} as const;

/**
 * Names of enum feature_type by value.
 */

export const FeatureTypeNames: Readonly<Record<number, string>> = {
  0: "incompatible",
  1: "compatible",
  2: "autoclear",
};

/**
 * Values of enum incompatible_feature_bit.
 */

export const IncompatibleFeatureBit = {
  DIRTY: 0,
  CORRUPT: 1,
  EXTERNAL_DATA_FILE: 2,
  COMPRESSION_TYPE: 3,
  EXTENDED_L2: 4,
} as const;

/**
 * Names of enum incompatible_feature_bit by value.
 */

export const IncompatibleFeatureBitNames: Readonly<Record<number, string>> = {
  0: "dirty",
  1: "corrupt",
  2: "external_data_file",
  3: "compression_type",
  4: "extended_l2",
};

/**
 * Masks of the bits enum incompatible_feature_bit numbers (label → 1n << bit), exact for bits 0..63.
 */

export const IncompatibleFeatureMask = {
  DIRTY: 0x1n,
  CORRUPT: 0x2n,
  EXTERNAL_DATA_FILE: 0x4n,
  COMPRESSION_TYPE: 0x8n,
  EXTENDED_L2: 0x10n,
} as const;

/**
 * Every bit enum incompatible_feature_bit names, as one mask: the bits this description knows.
 */

export const INCOMPATIBLE_FEATURE_KNOWN_MASK = 0x1fn;

/**
 * Values of enum compatible_feature_bit.
 */

export const CompatibleFeatureBit = {
  LAZY_REFCOUNTS: 0,
} as const;

/**
 * Names of enum compatible_feature_bit by value.
 */

export const CompatibleFeatureBitNames: Readonly<Record<number, string>> = {
  0: "lazy_refcounts",
};

/**
 * Masks of the bits enum compatible_feature_bit numbers (label → 1n << bit), exact for bits 0..63.
 */

export const CompatibleFeatureMask = {
  LAZY_REFCOUNTS: 0x1n,
} as const;

/**
 * Every bit enum compatible_feature_bit names, as one mask: the bits this description knows.
 */

export const COMPATIBLE_FEATURE_KNOWN_MASK = 0x1n;

/**
 * Values of enum autoclear_feature_bit.
 */

export const AutoclearFeatureBit = {
  BITMAPS: 0,
  RAW_EXTERNAL_DATA: 1,
} as const;

/**
 * Names of enum autoclear_feature_bit by value.
 */

export const AutoclearFeatureBitNames: Readonly<Record<number, string>> = {
  0: "bitmaps",
  1: "raw_external_data",
};

/**
 * Masks of the bits enum autoclear_feature_bit numbers (label → 1n << bit), exact for bits 0..63.
 */

export const AutoclearFeatureMask = {
  BITMAPS: 0x1n,
  RAW_EXTERNAL_DATA: 0x2n,
} as const;

/**
 * Every bit enum autoclear_feature_bit names, as one mask: the bits this description knows.
 */

export const AUTOCLEAR_FEATURE_KNOWN_MASK = 0x3n;

/**
 * Values of enum bitmap_type.
 */

export const BitmapType = {
  DIRTY_TRACKING: 1,
} as const;

/**
 * Names of enum bitmap_type by value.
 */

export const BitmapTypeNames: Readonly<Record<number, string>> = {
  1: "dirty_tracking",
};

/**
 * Bytes every u64 starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole u64 when all its fields are).
 */

export const U64_FIXED_SIZE = 8;

/**
 * Where u64's fields are: byte offset and size from the start of a u64, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const U64Layout = {
  /** Bits 32..63. */
  hi: { id: "hi", offset: 0, size: 4 },
  /** Bits 0..31. */
  lo: { id: "lo", offset: 4, size: 4 },
} as const;

/**
 * The bytes header.magic must hold (its contents:).
 */

export const HEADER_MAGIC: readonly number[] = [0x51, 0x46, 0x49, 0xfb];

/**
 * HEADER_MAGIC read as a big-endian u32.
 */

export const HEADER_MAGIC_U32 = 0x514649fb;

/**
 * Bytes every header starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole header when all its fields are).
 */

export const HEADER_FIXED_SIZE = 72;

/**
 * Where header's fields are: byte offset and size from the start of a header, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const HeaderLayout = {
  /** The magic "QFI\xfb". */
  magic: { id: "magic", offset: 0, size: 4 },
  /** Format version, 2 or 3. */
  version: { id: "version", offset: 4, size: 4 },
  /** File offset of the backing file name, or 0 when there is no backing file. */
  backingFileOffset: { id: "backing_file_offset", offset: 8, size: 8 },
  /** Length of the backing file name in bytes (QEMU refuses more than 1023). */
  backingFileSize: { id: "backing_file_size", offset: 16, size: 4 },
  /** log2 of the cluster size; QEMU supports 9 (512 bytes) to 21 (2 MiB). */
  clusterBits: { id: "cluster_bits", offset: 20, size: 4 },
  /** Virtual disk size in bytes. */
  size: { id: "size", offset: 24, size: 8 },
  /** Encryption method, 0 none, 1 AES-CBC (legacy), 2 LUKS. */
  cryptMethod: { id: "crypt_method", offset: 32, size: 4 },
  /** Number of entries in the active L1 table. */
  l1Size: { id: "l1_size", offset: 36, size: 4 },
  /** File offset of the active L1 table (cluster aligned). */
  l1TableOffset: { id: "l1_table_offset", offset: 40, size: 8 },
  /** File offset of the refcount table (cluster aligned). */
  refcountTableOffset: { id: "refcount_table_offset", offset: 48, size: 8 },
  /** Size of the refcount table in clusters. */
  refcountTableClusters: { id: "refcount_table_clusters", offset: 56, size: 4 },
  /** Number of internal snapshots. */
  nbSnapshots: { id: "nb_snapshots", offset: 60, size: 4 },
  /** File offset of the snapshot table (cluster aligned). */
  snapshotsOffset: { id: "snapshots_offset", offset: 64, size: 8 },
  /** Incompatible feature bits; a reader must refuse an image with a bit it does not know. */
  incompatibleFeatures: { id: "incompatible_features", offset: 72, size: 8 },
  /** Compatible feature bits; unknown ones may be ignored. */
  compatibleFeatures: { id: "compatible_features", offset: 80, size: 8 },
  /** Auto-clear feature bits; a writer that does not know a bit must clear it. */
  autoclearFeatures: { id: "autoclear_features", offset: 88, size: 8 },
  /** log2 of the refcount width in bits (0..6, i.e. 1..64 bits); version 2 implies 4. */
  refcountOrder: { id: "refcount_order", offset: 96, size: 4 },
  /** Length of the header in bytes, at least 104 and at most one cluster. */
  headerLength: { id: "header_length", offset: 100, size: 4 },
  /** Compression type of compressed clusters (an additional field, present when header_length > 104). */
  compressionType: { id: "compression_type", offset: 104, size: 1 },
} as const;

/**
 * Bytes every header_extension starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole header_extension when all its fields are).
 */

export const HEADER_EXTENSION_FIXED_SIZE = 8;

/**
 * Where header_extension's fields are: byte offset and size from the start of a header_extension, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const HeaderExtensionLayout = {
  /** Extension type; unknown types are kept as raw bytes. */
  type: { id: "type", offset: 0, size: 4 },
  /** Length of the data in bytes, without padding. */
  lenData: { id: "len_data", offset: 4, size: 4 },
} as const;

/**
 * Bytes every feature_name_entry starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole feature_name_entry when all its fields are).
 */

export const FEATURE_NAME_ENTRY_FIXED_SIZE = 48;

/**
 * Where feature_name_entry's fields are: byte offset and size from the start of a feature_name_entry, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const FeatureNameEntryLayout = {
  /** Which feature field the bit is in - 0 incompatible, 1 compatible, 2 autoclear. */
  featureType: { id: "feature_type", offset: 0, size: 1 },
  /** Bit number within that field (0..63). */
  bit: { id: "bit", offset: 1, size: 1 },
  /** Feature name, NUL-padded (not terminated when it is 46 characters long). */
  name: { id: "name", offset: 2, size: 46 },
} as const;

/**
 * Bytes every bitmaps_extension starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole bitmaps_extension when all its fields are).
 */

export const BITMAPS_EXTENSION_FIXED_SIZE = 24;

/**
 * Where bitmaps_extension's fields are: byte offset and size from the start of a bitmaps_extension, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const BitmapsExtensionLayout = {
  /** Number of bitmaps in the directory (at least 1). */
  nbBitmaps: { id: "nb_bitmaps", offset: 0, size: 4 },
  /** Reserved, must be zero. */
  reserved: { id: "reserved", offset: 4, size: 4 },
  /** Size of the bitmap directory in bytes. */
  bitmapDirectorySize: { id: "bitmap_directory_size", offset: 8, size: 8 },
  /** File offset of the bitmap directory (cluster aligned). */
  bitmapDirectoryOffset: { id: "bitmap_directory_offset", offset: 16, size: 8 },
} as const;

/**
 * Bytes every full_disk_encryption_pointer starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole full_disk_encryption_pointer when all its fields are).
 */

export const FULL_DISK_ENCRYPTION_POINTER_FIXED_SIZE = 16;

/**
 * Where full_disk_encryption_pointer's fields are: byte offset and size from the start of a full_disk_encryption_pointer, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const FullDiskEncryptionPointerLayout = {
  /** File offset of the encryption header (cluster aligned). */
  offset: { id: "offset", offset: 0, size: 8 },
  /** Length of the encryption header and key material in bytes. */
  length: { id: "length", offset: 8, size: 8 },
} as const;

/**
 * Bytes every l1_entry starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole l1_entry when all its fields are).
 */

export const L1_ENTRY_FIXED_SIZE = 8;

/**
 * Where l1_entry's fields are: byte offset and size from the start of a l1_entry, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const L1EntryLayout = {
  /** Bit 63 - the L2 table has refcount exactly 1 (meaningful in the active L1 only). */
  copied: { id: "copied", offset: 0, size: 8, shift: 63, width: 1 },
  /** Bits 56..62, reserved (zero). */
  reservedHi: { id: "reserved_hi", offset: 0, size: 8, shift: 56, width: 7 },
  /** Bits 32..55 of the L2 table offset. */
  l2OffsetHi: { id: "l2_offset_hi", offset: 0, size: 8, shift: 32, width: 24 },
  /** Bits 9..31 of the L2 table offset, i.e. the low word shifted right by 9. */
  l2OffsetLo: { id: "l2_offset_lo", offset: 0, size: 8, shift: 9, width: 23 },
  /** Bits 0..8, reserved (zero). */
  reservedLo: { id: "reserved_lo", offset: 0, size: 8, shift: 0, width: 9 },
} as const;

/**
 * Masks of l1_entry's bit fields within the big-endian word L1EntryLayout gives for each (exact bigints);
 * an `x_hi` / `x_lo` pair in one word is also given as the one mask `x`.
 */

export const L1EntryMasks = {
  /** copied. */
  copied: 0x8000000000000000n,
  /** reserved_hi. */
  reservedHi: 0x7f00000000000000n,
  /** l2_offset_hi. */
  l2OffsetHi: 0x00ffffff00000000n,
  /** l2_offset_lo. */
  l2OffsetLo: 0x00000000fffffe00n,
  /** reserved_lo. */
  reservedLo: 0x00000000000001ffn,
  /** reserved_hi | reserved_lo. */
  reserved: 0x7f000000000001ffn,
  /** l2_offset_hi | l2_offset_lo. */
  l2Offset: 0x00fffffffffffe00n,
} as const;

/**
 * Shifts of l1_entry's bit fields: the word bit each field's lowest bit is (L1EntryLayout's `shift`, as bigint).
 */

export const L1EntryShifts = {
  copied: 63n,
  reservedHi: 56n,
  l2OffsetHi: 32n,
  l2OffsetLo: 9n,
  reservedLo: 0n,
} as const;

/**
 * Where l2_entry's fields are: byte offset and size from the start of a l2_entry, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const L2EntryLayout = {
  /** Bit 63 - the data cluster has refcount exactly 1 (never set for compressed clusters). */
  copied: { id: "copied", offset: 0, size: 8, shift: 63, width: 1 },
  /** Bit 62 - the cluster is compressed; bits 0..61 are then a compressed descriptor. */
  compressed: { id: "compressed", offset: 0, size: 8, shift: 62, width: 1 },
  /** Standard descriptor bits 56..61, reserved (zero). */
  reservedHi: { id: "reserved_hi", offset: 0, size: 8, shift: 56, width: 6 },
  /** Standard descriptor bits 32..55 of the host cluster offset. */
  hostOffsetHi: { id: "host_offset_hi", offset: 0, size: 8, shift: 32, width: 24 },
  /** Standard descriptor bits 9..31 of the host cluster offset (the low word shifted right by 9). */
  hostOffsetLo: { id: "host_offset_lo", offset: 0, size: 8, shift: 9, width: 23 },
  /** Standard descriptor bits 1..8, reserved (zero). */
  reservedLo: { id: "reserved_lo", offset: 0, size: 8, shift: 1, width: 8 },
  /** Standard descriptor bit 0 - the cluster reads as zeros (version 3; ignored with extended L2). */
  zero: { id: "zero", offset: 0, size: 8, shift: 0, width: 1 },
  /** Compressed descriptor bits 32..61 (top bits of the offset and the sector count). */
  compressedHi: { id: "compressed_hi", offset: 0, size: 8, shift: 32, width: 30 },
  /** Compressed descriptor bits 0..31 (low word of the host byte offset). */
  compressedLo: { id: "compressed_lo", offset: 0, size: 8, shift: 0, width: 32 },
  /** Extended word bits 32..63 - bit n set means subcluster n reads as zeros. */
  zeroBitmap: { id: "zero_bitmap", offset: 8, size: 8, shift: 32, width: 32 },
  /** Extended word bits 0..31 - bit n set means subcluster n is allocated. */
  allocBitmap: { id: "alloc_bitmap", offset: 8, size: 8, shift: 0, width: 32 },
} as const;

/**
 * Masks of l2_entry's bit fields within the big-endian word L2EntryLayout gives for each (exact bigints);
 * an `x_hi` / `x_lo` pair in one word is also given as the one mask `x`.
 */

export const L2EntryMasks = {
  /** copied. */
  copied: 0x8000000000000000n,
  /** compressed. */
  compressed: 0x4000000000000000n,
  /** reserved_hi. */
  reservedHi: 0x3f00000000000000n,
  /** host_offset_hi. */
  hostOffsetHi: 0x00ffffff00000000n,
  /** host_offset_lo. */
  hostOffsetLo: 0x00000000fffffe00n,
  /** reserved_lo. */
  reservedLo: 0x00000000000001fen,
  /** zero. */
  zero: 0x0000000000000001n,
  /** compressed_hi. */
  compressedHi: 0x3fffffff00000000n,
  /** compressed_lo. */
  compressedLo: 0x00000000ffffffffn,
  /** zero_bitmap. */
  zeroBitmap: 0xffffffff00000000n,
  /** alloc_bitmap. */
  allocBitmap: 0x00000000ffffffffn,
  /** reserved_hi | reserved_lo. */
  reserved: 0x3f000000000001fen,
  /** host_offset_hi | host_offset_lo. */
  hostOffset: 0x00fffffffffffe00n,
} as const;

/**
 * Shifts of l2_entry's bit fields: the word bit each field's lowest bit is (L2EntryLayout's `shift`, as bigint).
 */

export const L2EntryShifts = {
  copied: 63n,
  compressed: 62n,
  reservedHi: 56n,
  hostOffsetHi: 32n,
  hostOffsetLo: 9n,
  reservedLo: 1n,
  zero: 0n,
  compressedHi: 32n,
  compressedLo: 0n,
  zeroBitmap: 32n,
  allocBitmap: 0n,
} as const;

function l2EntrySplit_compressedAdditionalSectors(params: Pick<L2EntryParams, "clusterBits">): number {
  const s = (38 - params.clusterBits);
  if (!Number.isInteger(s) || s < 0 || s > 30) throw new RangeError(`l2_entry.compressed_additional_sectors: split ${s} is outside compressed_hi (30 bits)`);
  return s;
}

function l2EntrySplit_compressedOffsetHi(params: Pick<L2EntryParams, "clusterBits">): number {
  const s = (38 - params.clusterBits);
  if (!Number.isInteger(s) || s < 0 || s > 30) throw new RangeError(`l2_entry.compressed_offset_hi: split ${s} is outside compressed_hi (30 bits)`);
  return s;
}

/**
 * Masks of l2_entry's value instances that are part of a bit field split where the params say,
 * within the field's big-endian word (L2EntryLayout):
 * compressed_additional_sectors = compressed_hi >> (38 - cluster_bits);
 * compressed_offset_hi = compressed_hi & ((1 << (38 - cluster_bits)) - 1).
 * Throws RangeError when the params put a split outside its field.
 */

export function l2EntryParamMasks(params: Pick<L2EntryParams, "clusterBits">): { readonly compressedAdditionalSectors: bigint; readonly compressedOffsetHi: bigint } {
  const s0 = l2EntrySplit_compressedAdditionalSectors(params);
  const s1 = l2EntrySplit_compressedOffsetHi(params);
  return {
    compressedAdditionalSectors: ((1n << BigInt(30 - s0)) - 1n) << BigInt(32 + s0),
    compressedOffsetHi: ((1n << BigInt(s1)) - 1n) << 32n,
  };
}

/**
 * Shifts of the instances l2EntryParamMasks masks: the word bit each one's lowest bit is. Same RangeError.
 */

export function l2EntryParamShifts(params: Pick<L2EntryParams, "clusterBits">): { readonly compressedAdditionalSectors: bigint; readonly compressedOffsetHi: bigint } {
  const s0 = l2EntrySplit_compressedAdditionalSectors(params);
  const s1 = l2EntrySplit_compressedOffsetHi(params);
  return {
    compressedAdditionalSectors: BigInt(32 + s0),
    compressedOffsetHi: 32n,
  };
}

/**
 * Bytes every refcount_table_entry starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole refcount_table_entry when all its fields are).
 */

export const REFCOUNT_TABLE_ENTRY_FIXED_SIZE = 8;

/**
 * Where refcount_table_entry's fields are: byte offset and size from the start of a refcount_table_entry, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const RefcountTableEntryLayout = {
  /** Bits 32..63 of the refcount block offset. */
  refblockOffsetHi: { id: "refblock_offset_hi", offset: 0, size: 8, shift: 32, width: 32 },
  /** Bits 9..31 of the refcount block offset (the low word shifted right by 9). */
  refblockOffsetLo: { id: "refblock_offset_lo", offset: 0, size: 8, shift: 9, width: 23 },
  /** Bits 0..8, reserved (zero). */
  reserved: { id: "reserved", offset: 0, size: 8, shift: 0, width: 9 },
} as const;

/**
 * Masks of refcount_table_entry's bit fields within the big-endian word RefcountTableEntryLayout gives for each (exact bigints);
 * an `x_hi` / `x_lo` pair in one word is also given as the one mask `x`.
 */

export const RefcountTableEntryMasks = {
  /** refblock_offset_hi. */
  refblockOffsetHi: 0xffffffff00000000n,
  /** refblock_offset_lo. */
  refblockOffsetLo: 0x00000000fffffe00n,
  /** reserved. */
  reserved: 0x00000000000001ffn,
  /** refblock_offset_hi | refblock_offset_lo. */
  refblockOffset: 0xfffffffffffffe00n,
} as const;

/**
 * Shifts of refcount_table_entry's bit fields: the word bit each field's lowest bit is (RefcountTableEntryLayout's `shift`, as bigint).
 */

export const RefcountTableEntryShifts = {
  refblockOffsetHi: 32n,
  refblockOffsetLo: 9n,
  reserved: 0n,
} as const;

/**
 * Bytes every snapshot_entry starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole snapshot_entry when all its fields are).
 */

export const SNAPSHOT_ENTRY_FIXED_SIZE = 40;

/**
 * Where snapshot_entry's fields are: byte offset and size from the start of a snapshot_entry, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const SnapshotEntryLayout = {
  /** File offset of the snapshot's L1 table (cluster aligned). */
  l1TableOffset: { id: "l1_table_offset", offset: 0, size: 8 },
  /** Number of entries in the snapshot's L1 table. */
  l1Size: { id: "l1_size", offset: 8, size: 4 },
  /** Length of the id string. */
  lenId: { id: "len_id", offset: 12, size: 2 },
  /** Length of the name. */
  lenName: { id: "len_name", offset: 14, size: 2 },
  /** Creation time, seconds since the Unix epoch. */
  dateSec: { id: "date_sec", offset: 16, size: 4 },
  /** Creation time, nanoseconds part. */
  dateNsec: { id: "date_nsec", offset: 20, size: 4 },
  /** Guest run time when the snapshot was taken, in nanoseconds. */
  vmClockNsec: { id: "vm_clock_nsec", offset: 24, size: 8 },
  /** Size of the saved VM state in bytes (0 for disk-only snapshots; see vm_state_size_large). */
  vmStateSize: { id: "vm_state_size", offset: 32, size: 4 },
  /** Size of the extra data in bytes (at least 16 for version 3; QEMU refuses more than 1024). */
  lenExtraData: { id: "len_extra_data", offset: 36, size: 4 },
} as const;

/**
 * Where snapshot_extra_data's fields are: byte offset and size from the start of a snapshot_extra_data, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const SnapshotExtraDataLayout = {
  /** Size of the VM state in bytes (overrides the 32-bit vm_state_size). */
  vmStateSizeLarge: { id: "vm_state_size_large", offset: 0, size: 8 },
  /** Virtual disk size at the time of the snapshot. */
  diskSize: { id: "disk_size", offset: 8, size: 8 },
  /** Instruction count for record/replay, all bits set when unused. */
  icount: { id: "icount", offset: 16, size: 8 },
} as const;

/**
 * Bytes every bitmap_directory_entry starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole bitmap_directory_entry when all its fields are).
 */

export const BITMAP_DIRECTORY_ENTRY_FIXED_SIZE = 24;

/**
 * Where bitmap_directory_entry's fields are: byte offset and size from the start of a bitmap_directory_entry, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const BitmapDirectoryEntryLayout = {
  /** File offset of the bitmap table (cluster aligned). */
  bitmapTableOffset: { id: "bitmap_table_offset", offset: 0, size: 8 },
  /** Number of entries in the bitmap table. */
  bitmapTableSize: { id: "bitmap_table_size", offset: 8, size: 4 },
  /** Flag bits 3..31, reserved (zero). */
  reservedFlags: { id: "reserved_flags", offset: 12, size: 4, shift: 3, width: 29 },
  /** Flag bit 2 - the extra data may be ignored by a reader that does not know it. */
  extraDataCompatible: { id: "extra_data_compatible", offset: 12, size: 4, shift: 2, width: 1 },
  /** Flag bit 1 - the bitmap tracks guest writes. */
  auto: { id: "auto", offset: 12, size: 4, shift: 1, width: 1 },
  /** Flag bit 0 - the bitmap was not saved cleanly and is inconsistent. */
  inUse: { id: "in_use", offset: 12, size: 4, shift: 0, width: 1 },
  /** Bitmap type, 1 for dirty tracking. */
  bitmapType: { id: "bitmap_type", offset: 16, size: 1 },
  /** log2 of the number of guest bytes one bit covers (QEMU 9..31). */
  granularityBits: { id: "granularity_bits", offset: 17, size: 1 },
  /** Length of the name (1..1023). */
  lenName: { id: "len_name", offset: 18, size: 2 },
  /** Size of the extra data in bytes. */
  lenExtraData: { id: "len_extra_data", offset: 20, size: 4 },
} as const;

/**
 * Masks of bitmap_directory_entry's bit fields within the big-endian word BitmapDirectoryEntryLayout gives for each (exact bigints);
 * an `x_hi` / `x_lo` pair in one word is also given as the one mask `x`.
 */

export const BitmapDirectoryEntryMasks = {
  /** reserved_flags. */
  reservedFlags: 0xfffffff8n,
  /** extra_data_compatible. */
  extraDataCompatible: 0x00000004n,
  /** auto. */
  auto: 0x00000002n,
  /** in_use. */
  inUse: 0x00000001n,
} as const;

/**
 * Shifts of bitmap_directory_entry's bit fields: the word bit each field's lowest bit is (BitmapDirectoryEntryLayout's `shift`, as bigint).
 */

export const BitmapDirectoryEntryShifts = {
  reservedFlags: 3n,
  extraDataCompatible: 2n,
  auto: 1n,
  inUse: 0n,
} as const;

/**
 * Bytes every bitmap_table_entry starts with at fixed positions: its leading fields that are unconditional and
 * of static size (the whole bitmap_table_entry when all its fields are).
 */

export const BITMAP_TABLE_ENTRY_FIXED_SIZE = 8;

/**
 * Where bitmap_table_entry's fields are: byte offset and size from the start of a bitmap_table_entry, for every seq field
 * whose place does not depend on the data (a field with an if: condition at its place when present).
 * A bit field's offset and size are those of the big-endian word it is in, `shift` the word bit its
 * lowest bit is, `width` its bits. `id` is the spec's field name.
 */

export const BitmapTableEntryLayout = {
  /** Bits 56..63, reserved (zero). */
  reservedHi: { id: "reserved_hi", offset: 0, size: 8, shift: 56, width: 8 },
  /** Bits 32..55 of the data cluster offset. */
  offsetHi: { id: "offset_hi", offset: 0, size: 8, shift: 32, width: 24 },
  /** Bits 9..31 of the data cluster offset (the low word shifted right by 9). */
  offsetLo: { id: "offset_lo", offset: 0, size: 8, shift: 9, width: 23 },
  /** Bits 1..8, reserved (zero). */
  reservedLo: { id: "reserved_lo", offset: 0, size: 8, shift: 1, width: 8 },
  /** Bit 0 - when the offset is 0, the cluster's bits are all ones (else all zeros). */
  allOnes: { id: "all_ones", offset: 0, size: 8, shift: 0, width: 1 },
} as const;

/**
 * Masks of bitmap_table_entry's bit fields within the big-endian word BitmapTableEntryLayout gives for each (exact bigints);
 * an `x_hi` / `x_lo` pair in one word is also given as the one mask `x`.
 */

export const BitmapTableEntryMasks = {
  /** reserved_hi. */
  reservedHi: 0xff00000000000000n,
  /** offset_hi. */
  offsetHi: 0x00ffffff00000000n,
  /** offset_lo. */
  offsetLo: 0x00000000fffffe00n,
  /** reserved_lo. */
  reservedLo: 0x00000000000001fen,
  /** all_ones. */
  allOnes: 0x0000000000000001n,
  /** reserved_hi | reserved_lo. */
  reserved: 0xff000000000001fen,
  /** offset_hi | offset_lo. */
  offset: 0x00fffffffffffe00n,
} as const;

/**
 * Shifts of bitmap_table_entry's bit fields: the word bit each field's lowest bit is (BitmapTableEntryLayout's `shift`, as bigint).
 */

export const BitmapTableEntryShifts = {
  reservedHi: 56n,
  offsetHi: 32n,
  offsetLo: 9n,
  reservedLo: 1n,
  allOnes: 0n,
} as const;

/**
 * The seq fields of qcow2: what encodeQcow2 needs.
 */

export interface Qcow2Fields {
  /**
   * The image header at offset 0 (72 bytes for version 2, header_length bytes for version 3).
   */
  header: HeaderFields;
  /**
   * Header extensions, from the end of the header to the backing file name or the end of cluster 0.
   */
  headerExtensions: HeaderExtensionAreaFields;
}

/**
 * The on-disk structures of QEMU's qcow2 image format, as defined by QEMU's
 * docs/interop/qcow2.rst (see also docs/format/README.md of this project).
 *
 * Conventions of this description, so that every parser generated from it is exact:
 * * Every 64-bit quantity is split into 32-bit halves: plain integers use the `u64` type
 *   (`hi`, `lo`), bit-packed entries use bit fields of at most 32 bits. Kaitai's JavaScript
 *   target reads `u8` into a double and evaluates `&`/`>>` on 32 bits, so a single 64-bit
 *   field would lose bits above 2^53. The `num` instance of `u64` is a double and is only
 *   used for file positions (a position at or above 2^53 is beyond the end of every file).
 * * `valid:` holds the must-reject rules that belong to one structure. Rules that relate
 *   several structures (overlaps, refcounts, limits against the file size) live in the
 *   validation layer above the generated code, which reports them with QEMU's messages.
 * * Enums named `*_bit` list bit numbers (the feature bits); the generator also emits their masks.
 * * Structures reached through a pointer (L1 and L2 tables, refcount blocks, the snapshot
 *   table, the bitmap directory) are `instances` with `pos`, read on first access.
 */

export interface Qcow2 {
  /**
   * The image header at offset 0 (72 bytes for version 2, header_length bytes for version 3).
   */
  header: Header;
  /**
   * Header extensions, from the end of the header to the backing file name or the end of cluster 0.
   */
  headerExtensions: HeaderExtensionArea;
  /**
   * Where header extensions must end - the backing file name if there is one, else the end of cluster 0.
   * (computed; not enumerable)
   */
  readonly extensionsEnd: number;
  /**
   * Name of the backing file (not NUL-terminated), present when backing_file_offset is non-zero.
   * (read on first access; not enumerable)
   */
  readonly backingFileName?: string;
  /**
   * The active L1 table, l1_size 8-byte entries at l1_table_offset.
   * (read on first access; not enumerable)
   */
  readonly l1Table: Array<L1Entry>;
  /**
   * The refcount table, refcount_table_clusters clusters at refcount_table_offset.
   * (read on first access; not enumerable)
   */
  readonly refcountTable: RefcountTable;
  /**
   * The snapshot table, nb_snapshots variable-length entries at snapshots_offset.
   * (read on first access; not enumerable)
   */
  readonly snapshots: Array<SnapshotEntry>;
}

/**
 * The seq fields of u64: what encodeU64 needs.
 */

export interface U64Fields {
  /**
   * Bits 32..63.
   */
  hi: number;
  /**
   * Bits 0..31.
   */
  lo: number;
}

/**
 * A 64-bit big-endian unsigned integer kept as two exact 32-bit halves.
 */

export interface U64 {
  /**
   * Bits 32..63.
   */
  hi: number;
  /**
   * Bits 0..31.
   */
  lo: number;
  /**
   * The value as a double - exact below 2^53; used only for file positions and sizes.
   * (computed; not enumerable)
   */
  readonly num: number;
}

/**
 * The seq fields of header: what encodeHeader needs.
 */

export interface HeaderFields {
  /**
   * The magic "QFI\xfb".
   */
  magic: Uint8Array;
  /**
   * Format version, 2 or 3.
   */
  version: number;
  /**
   * File offset of the backing file name, or 0 when there is no backing file.
   */
  backingFileOffset: U64Fields;
  /**
   * Length of the backing file name in bytes (QEMU refuses more than 1023).
   */
  backingFileSize: number;
  /**
   * log2 of the cluster size; QEMU supports 9 (512 bytes) to 21 (2 MiB).
   */
  clusterBits: number;
  /**
   * Virtual disk size in bytes.
   */
  size: U64Fields;
  /**
   * Encryption method, 0 none, 1 AES-CBC (legacy), 2 LUKS.
   * (enum crypt_method)
   */
  cryptMethod: number;
  /**
   * Number of entries in the active L1 table.
   */
  l1Size: number;
  /**
   * File offset of the active L1 table (cluster aligned).
   */
  l1TableOffset: U64Fields;
  /**
   * File offset of the refcount table (cluster aligned).
   */
  refcountTableOffset: U64Fields;
  /**
   * Size of the refcount table in clusters.
   */
  refcountTableClusters: number;
  /**
   * Number of internal snapshots.
   */
  nbSnapshots: number;
  /**
   * File offset of the snapshot table (cluster aligned).
   */
  snapshotsOffset: U64Fields;
  /**
   * Incompatible feature bits; a reader must refuse an image with a bit it does not know.
   */
  incompatibleFeatures?: U64Fields;
  /**
   * Compatible feature bits; unknown ones may be ignored.
   */
  compatibleFeatures?: U64Fields;
  /**
   * Auto-clear feature bits; a writer that does not know a bit must clear it.
   */
  autoclearFeatures?: U64Fields;
  /**
   * log2 of the refcount width in bits (0..6, i.e. 1..64 bits); version 2 implies 4.
   */
  refcountOrder?: number;
  /**
   * Length of the header in bytes, at least 104 and at most one cluster.
   */
  headerLength?: number;
  /**
   * Compression type of compressed clusters (an additional field, present when header_length > 104).
   * (enum compression_type)
   */
  compressionType?: number;
  /**
   * Padding after compression_type up to byte 112 (zero when written by QEMU).
   */
  padding?: Uint8Array;
  /**
   * Header bytes past 112 this description does not know; preserved verbatim on rewrite.
   */
  unknownHeaderFields?: Uint8Array;
}

/**
 * The qcow2 header (version 2 ends after snapshots_offset; version 3 adds feature bits and more).
 */

export interface Header {
  /**
   * The magic "QFI\xfb".
   */
  magic: Uint8Array;
  /**
   * Format version, 2 or 3.
   */
  version: number;
  /**
   * File offset of the backing file name, or 0 when there is no backing file.
   */
  backingFileOffset: U64;
  /**
   * Length of the backing file name in bytes (QEMU refuses more than 1023).
   */
  backingFileSize: number;
  /**
   * log2 of the cluster size; QEMU supports 9 (512 bytes) to 21 (2 MiB).
   */
  clusterBits: number;
  /**
   * Virtual disk size in bytes.
   */
  size: U64;
  /**
   * Encryption method, 0 none, 1 AES-CBC (legacy), 2 LUKS.
   * (enum crypt_method)
   */
  cryptMethod: number;
  /**
   * Number of entries in the active L1 table.
   */
  l1Size: number;
  /**
   * File offset of the active L1 table (cluster aligned).
   */
  l1TableOffset: U64;
  /**
   * File offset of the refcount table (cluster aligned).
   */
  refcountTableOffset: U64;
  /**
   * Size of the refcount table in clusters.
   */
  refcountTableClusters: number;
  /**
   * Number of internal snapshots.
   */
  nbSnapshots: number;
  /**
   * File offset of the snapshot table (cluster aligned).
   */
  snapshotsOffset: U64;
  /**
   * Incompatible feature bits; a reader must refuse an image with a bit it does not know.
   */
  incompatibleFeatures?: U64;
  /**
   * Compatible feature bits; unknown ones may be ignored.
   */
  compatibleFeatures?: U64;
  /**
   * Auto-clear feature bits; a writer that does not know a bit must clear it.
   */
  autoclearFeatures?: U64;
  /**
   * log2 of the refcount width in bits (0..6, i.e. 1..64 bits); version 2 implies 4.
   */
  refcountOrder?: number;
  /**
   * Length of the header in bytes, at least 104 and at most one cluster.
   */
  headerLength?: number;
  /**
   * Compression type of compressed clusters (an additional field, present when header_length > 104).
   * (enum compression_type)
   */
  compressionType?: number;
  /**
   * Padding after compression_type up to byte 112 (zero when written by QEMU).
   */
  padding?: Uint8Array;
  /**
   * Header bytes past 112 this description does not know; preserved verbatim on rewrite.
   */
  unknownHeaderFields?: Uint8Array;
  /**
   * Header length in bytes (72 for version 2).
   * (computed; not enumerable)
   */
  readonly lenHeader: number;
  /**
   * Cluster size in bytes.
   * (computed; not enumerable)
   */
  readonly clusterSize: number;
  /**
   * refcount_order, with version 2's implied 4 (16-bit refcounts).
   * (computed; not enumerable)
   */
  readonly refcountOrderEffective: number;
  /**
   * The compression type in use, 0 (zlib) when the field is absent.
   * (computed; not enumerable)
   */
  readonly compressionTypeEffective: number;
  /**
   * Incompatible bit 0 - refcounts may be inconsistent (lazy refcounts).
   * (computed; not enumerable)
   */
  readonly isDirty: boolean;
  /**
   * Incompatible bit 1 - metadata may be corrupt; write only to repair.
   * (computed; not enumerable)
   */
  readonly isCorrupt: boolean;
  /**
   * Incompatible bit 2 - guest data lives in an external data file.
   * (computed; not enumerable)
   */
  readonly hasExternalDataFile: boolean;
  /**
   * Incompatible bit 3 - the compression_type field is non-zero.
   * (computed; not enumerable)
   */
  readonly hasCompressionType: boolean;
  /**
   * Incompatible bit 4 - L2 entries are 128 bits with subcluster bitmaps.
   * (computed; not enumerable)
   */
  readonly hasExtendedL2: boolean;
  /**
   * Compatible bit 0 - refcount updates may be postponed.
   * (computed; not enumerable)
   */
  readonly hasLazyRefcounts: boolean;
  /**
   * Autoclear bit 0 - the bitmaps extension is consistent.
   * (computed; not enumerable)
   */
  readonly hasBitmaps: boolean;
  /**
   * Autoclear bit 1 - the external data file is a valid standalone raw image.
   * (computed; not enumerable)
   */
  readonly hasRawExternalData: boolean;
}

/**
 * The seq fields of header_extension_area: what encodeHeaderExtensionArea needs.
 */

export interface HeaderExtensionAreaFields {
  /**
   * The extensions in file order; the last one is normally the end marker.
   */
  extensions?: Array<HeaderExtensionFields>;
  /**
   * Bytes after the end marker up to the end of the area (zero when written by QEMU).
   */
  trailing: Uint8Array;
}

/**
 * The list of header extensions, ended by an end-of-extensions entry or by the end of the area.
 */

export interface HeaderExtensionArea {
  /**
   * The extensions in file order; the last one is normally the end marker.
   */
  extensions?: Array<HeaderExtension>;
  /**
   * Bytes after the end marker up to the end of the area (zero when written by QEMU).
   */
  trailing: Uint8Array;
}

/**
 * The seq fields of header_extension: what encodeHeaderExtension needs.
 */

export interface HeaderExtensionFields {
  /**
   * Extension type; unknown types are kept as raw bytes.
   * (enum header_extension_type)
   */
  type: number;
  /**
   * Length of the data in bytes, without padding.
   */
  lenData: number;
  /**
   * The extension data, decoded for the known types and raw bytes otherwise.
   */
  data: BackingFileFormatFields | FeatureNameTableFields | BitmapsExtensionFields | FullDiskEncryptionPointerFields | ExternalDataFileNameFields | Uint8Array;
  /**
   * Padding of the data to a multiple of 8 bytes.
   */
  padding: Uint8Array;
}

/**
 * One header extension - type, length, data, padding to a multiple of 8 bytes.
 */

export interface HeaderExtension {
  /**
   * Extension type; unknown types are kept as raw bytes.
   * (enum header_extension_type)
   */
  type: number;
  /**
   * Length of the data in bytes, without padding.
   */
  lenData: number;
  /**
   * The extension data, decoded for the known types and raw bytes otherwise.
   */
  data: BackingFileFormat | FeatureNameTable | BitmapsExtension | FullDiskEncryptionPointer | ExternalDataFileName | Uint8Array;
  /**
   * Padding of the data to a multiple of 8 bytes.
   */
  padding: Uint8Array;
}

/**
 * The seq fields of backing_file_format: what encodeBackingFileFormat needs.
 */

export interface BackingFileFormatFields {
  /**
   * The format name, not NUL-terminated (QEMU refuses 16 bytes or more).
   */
  name: string;
}

/**
 * Backing file format name extension (e.g. "qcow2" or "raw").
 */

export interface BackingFileFormat {
  /**
   * The format name, not NUL-terminated (QEMU refuses 16 bytes or more).
   */
  name: string;
}

/**
 * The seq fields of external_data_file_name: what encodeExternalDataFileName needs.
 */

export interface ExternalDataFileNameFields {
  /**
   * The data file name, not NUL-terminated.
   */
  name: string;
}

/**
 * External data file name extension.
 */

export interface ExternalDataFileName {
  /**
   * The data file name, not NUL-terminated.
   */
  name: string;
}

/**
 * The seq fields of feature_name_table: what encodeFeatureNameTable needs.
 */

export interface FeatureNameTableFields {
  /**
   * The 48-byte entries.
   */
  entries: Array<FeatureNameEntryFields>;
}

/**
 * Feature name table extension - human-readable names of feature bits.
 */

export interface FeatureNameTable {
  /**
   * The 48-byte entries.
   */
  entries: Array<FeatureNameEntry>;
}

/**
 * The seq fields of feature_name_entry: what encodeFeatureNameEntry needs.
 */

export interface FeatureNameEntryFields {
  /**
   * Which feature field the bit is in - 0 incompatible, 1 compatible, 2 autoclear.
   * (enum feature_type)
   */
  featureType: number;
  /**
   * Bit number within that field (0..63).
   */
  bit: number;
  /**
   * Feature name, NUL-padded (not terminated when it is 46 characters long).
   */
  name: string;
}

/**
 * One feature name table entry.
 */

export interface FeatureNameEntry {
  /**
   * Which feature field the bit is in - 0 incompatible, 1 compatible, 2 autoclear.
   * (enum feature_type)
   */
  featureType: number;
  /**
   * Bit number within that field (0..63).
   */
  bit: number;
  /**
   * Feature name, NUL-padded (not terminated when it is 46 characters long).
   */
  name: string;
}

/**
 * The seq fields of bitmaps_extension: what encodeBitmapsExtension needs.
 */

export interface BitmapsExtensionFields {
  /**
   * Number of bitmaps in the directory (at least 1).
   */
  nbBitmaps: number;
  /**
   * Reserved, must be zero.
   */
  reserved: number;
  /**
   * Size of the bitmap directory in bytes.
   */
  bitmapDirectorySize: U64Fields;
  /**
   * File offset of the bitmap directory (cluster aligned).
   */
  bitmapDirectoryOffset: U64Fields;
}

/**
 * Bitmaps extension - where the persistent dirty bitmap directory is.
 */

export interface BitmapsExtension {
  /**
   * Number of bitmaps in the directory (at least 1).
   */
  nbBitmaps: number;
  /**
   * Reserved, must be zero.
   */
  reserved: number;
  /**
   * Size of the bitmap directory in bytes.
   */
  bitmapDirectorySize: U64;
  /**
   * File offset of the bitmap directory (cluster aligned).
   */
  bitmapDirectoryOffset: U64;
  /**
   * The bitmap directory.
   * (read on first access; not enumerable)
   */
  readonly bitmapDirectory: BitmapDirectory;
}

/**
 * The seq fields of full_disk_encryption_pointer: what encodeFullDiskEncryptionPointer needs.
 */

export interface FullDiskEncryptionPointerFields {
  /**
   * File offset of the encryption header (cluster aligned).
   */
  offset: U64Fields;
  /**
   * Length of the encryption header and key material in bytes.
   */
  length: U64Fields;
}

/**
 * Full disk encryption header pointer extension (LUKS header location).
 */

export interface FullDiskEncryptionPointer {
  /**
   * File offset of the encryption header (cluster aligned).
   */
  offset: U64;
  /**
   * Length of the encryption header and key material in bytes.
   */
  length: U64;
}

/**
 * Parameters of l1_entry.
 */

export interface L1EntryParams {
  /**
   * log2 of the cluster size, for the size of the L2 table.
   */
  readonly clusterBits: number;
  /**
   * Whether L2 entries are extended (128-bit).
   */
  readonly extendedL2: boolean;
}

/**
 * The seq fields of l1_entry: what encodeL1Entry needs.
 */

export interface L1EntryFields {
  /**
   * Bit 63 - the L2 table has refcount exactly 1 (meaningful in the active L1 only).
   */
  copied: boolean;
  /**
   * Bits 56..62, reserved (zero).
   */
  reservedHi: number;
  /**
   * Bits 32..55 of the L2 table offset.
   */
  l2OffsetHi: number;
  /**
   * Bits 9..31 of the L2 table offset, i.e. the low word shifted right by 9.
   */
  l2OffsetLo: number;
  /**
   * Bits 0..8, reserved (zero).
   */
  reservedLo: number;
}

/**
 * An L1 table entry - the offset of one L2 table.
 */

export interface L1Entry {
  /**
   * Bit 63 - the L2 table has refcount exactly 1 (meaningful in the active L1 only).
   */
  copied: boolean;
  /**
   * Bits 56..62, reserved (zero).
   */
  reservedHi: number;
  /**
   * Bits 32..55 of the L2 table offset.
   */
  l2OffsetHi: number;
  /**
   * Bits 9..31 of the L2 table offset, i.e. the low word shifted right by 9.
   */
  l2OffsetLo: number;
  /**
   * Bits 0..8, reserved (zero).
   */
  reservedLo: number;
  /**
   * Whether the entry points at an L2 table (offset 0 means unallocated).
   * (computed; not enumerable)
   */
  readonly isAllocated: boolean;
  /**
   * The L2 table this entry points at.
   * (read on first access; not enumerable)
   */
  readonly l2Table?: L2Table;
}

/**
 * Parameters of l2_table.
 */

export interface L2TableParams {
  /**
   * log2 of the cluster size.
   */
  readonly clusterBits: number;
  /**
   * Whether entries are extended (128-bit).
   */
  readonly extendedL2: boolean;
}

/**
 * The seq fields of l2_table: what encodeL2Table needs.
 */

export interface L2TableFields {
  /**
   * The entries, one per guest cluster.
   */
  entries: Array<L2EntryFields>;
}

/**
 * An L2 table - one cluster of standard (8-byte) or extended (16-byte) entries.
 */

export interface L2Table {
  /**
   * The entries, one per guest cluster.
   */
  entries: Array<L2Entry>;
}

/**
 * Parameters of l2_entry.
 */

export interface L2EntryParams {
  /**
   * log2 of the cluster size, which decides the compressed descriptor's field split.
   */
  readonly clusterBits: number;
  /**
   * Whether the entry has the 64-bit subcluster bitmap word.
   */
  readonly extendedL2: boolean;
}

/**
 * The seq fields of l2_entry: what encodeL2Entry needs.
 */

export interface L2EntryFields {
  /**
   * Bit 63 - the data cluster has refcount exactly 1 (never set for compressed clusters).
   */
  copied: boolean;
  /**
   * Bit 62 - the cluster is compressed; bits 0..61 are then a compressed descriptor.
   */
  compressed: boolean;
  /**
   * Standard descriptor bits 56..61, reserved (zero).
   */
  reservedHi?: number;
  /**
   * Standard descriptor bits 32..55 of the host cluster offset.
   */
  hostOffsetHi?: number;
  /**
   * Standard descriptor bits 9..31 of the host cluster offset (the low word shifted right by 9).
   */
  hostOffsetLo?: number;
  /**
   * Standard descriptor bits 1..8, reserved (zero).
   */
  reservedLo?: number;
  /**
   * Standard descriptor bit 0 - the cluster reads as zeros (version 3; ignored with extended L2).
   */
  zero?: boolean;
  /**
   * Compressed descriptor bits 32..61 (top bits of the offset and the sector count).
   */
  compressedHi?: number;
  /**
   * Compressed descriptor bits 0..31 (low word of the host byte offset).
   */
  compressedLo?: number;
  /**
   * Extended word bits 32..63 - bit n set means subcluster n reads as zeros.
   */
  zeroBitmap?: number;
  /**
   * Extended word bits 0..31 - bit n set means subcluster n is allocated.
   */
  allocBitmap?: number;
}

/**
 * An L2 table entry. Word 0 is a standard descriptor (bit 62 clear) or a compressed cluster
 * descriptor (bit 62 set); extended L2 entries add a second word with the subcluster bitmaps.
 * The compressed descriptor's split depends on cluster_bits: with x = 62 - (cluster_bits - 8),
 * bits 0..x-1 are the host byte offset and bits x..61 the number of additional 512-byte sectors.
 */

export interface L2Entry {
  /**
   * Bit 63 - the data cluster has refcount exactly 1 (never set for compressed clusters).
   */
  copied: boolean;
  /**
   * Bit 62 - the cluster is compressed; bits 0..61 are then a compressed descriptor.
   */
  compressed: boolean;
  /**
   * Standard descriptor bits 56..61, reserved (zero).
   */
  reservedHi?: number;
  /**
   * Standard descriptor bits 32..55 of the host cluster offset.
   */
  hostOffsetHi?: number;
  /**
   * Standard descriptor bits 9..31 of the host cluster offset (the low word shifted right by 9).
   */
  hostOffsetLo?: number;
  /**
   * Standard descriptor bits 1..8, reserved (zero).
   */
  reservedLo?: number;
  /**
   * Standard descriptor bit 0 - the cluster reads as zeros (version 3; ignored with extended L2).
   */
  zero?: boolean;
  /**
   * Compressed descriptor bits 32..61 (top bits of the offset and the sector count).
   */
  compressedHi?: number;
  /**
   * Compressed descriptor bits 0..31 (low word of the host byte offset).
   */
  compressedLo?: number;
  /**
   * Extended word bits 32..63 - bit n set means subcluster n reads as zeros.
   */
  zeroBitmap?: number;
  /**
   * Extended word bits 0..31 - bit n set means subcluster n is allocated.
   */
  allocBitmap?: number;
  /**
   * Position of the sector count within compressed_hi (x - 32 with x = 70 - cluster_bits).
   * (computed; not enumerable)
   */
  readonly compressedSectorsShift: number;
  /**
   * Number of 512-byte sectors after the one holding the first compressed byte.
   * (computed; not enumerable)
   */
  readonly compressedAdditionalSectors?: number;
  /**
   * Bits 32..x-1 of the compressed data's host byte offset (the low word is compressed_lo).
   * (computed; not enumerable)
   */
  readonly compressedOffsetHi?: number;
}

/**
 * Parameters of refcount_table.
 */

export interface RefcountTableParams {
  /**
   * log2 of the cluster size, the size of a refcount block.
   */
  readonly clusterBits: number;
  /**
   * log2 of the refcount width in bits.
   */
  readonly refcountOrder: number;
}

/**
 * The seq fields of refcount_table: what encodeRefcountTable needs.
 */

export interface RefcountTableFields {
  /**
   * The entries, one per refcount block.
   */
  entries: Array<RefcountTableEntryFields>;
}

/**
 * The refcount table - offsets of refcount blocks.
 */

export interface RefcountTable {
  /**
   * The entries, one per refcount block.
   */
  entries: Array<RefcountTableEntry>;
}

/**
 * Parameters of refcount_table_entry.
 */

export interface RefcountTableEntryParams {
  /**
   * log2 of the cluster size.
   */
  readonly clusterBits: number;
  /**
   * log2 of the refcount width in bits.
   */
  readonly refcountOrder: number;
}

/**
 * The seq fields of refcount_table_entry: what encodeRefcountTableEntry needs.
 */

export interface RefcountTableEntryFields {
  /**
   * Bits 32..63 of the refcount block offset.
   */
  refblockOffsetHi: number;
  /**
   * Bits 9..31 of the refcount block offset (the low word shifted right by 9).
   */
  refblockOffsetLo: number;
  /**
   * Bits 0..8, reserved (zero).
   */
  reserved: number;
}

/**
 * A refcount table entry - the offset of one refcount block.
 */

export interface RefcountTableEntry {
  /**
   * Bits 32..63 of the refcount block offset.
   */
  refblockOffsetHi: number;
  /**
   * Bits 9..31 of the refcount block offset (the low word shifted right by 9).
   */
  refblockOffsetLo: number;
  /**
   * Bits 0..8, reserved (zero).
   */
  reserved: number;
  /**
   * Whether a refcount block exists for this range (else all its refcounts are 0).
   * (computed; not enumerable)
   */
  readonly isAllocated: boolean;
  /**
   * The refcount block this entry points at.
   * (read on first access; not enumerable)
   */
  readonly refcountBlock?: RefcountBlock;
}

/**
 * Parameters of refcount_block.
 */

export interface RefcountBlockParams {
  /**
   * log2 of the refcount width in bits (0..6).
   */
  readonly refcountOrder: number;
}

/**
 * The seq fields of refcount_block: what encodeRefcountBlock needs.
 */

export interface RefcountBlockFields {
  /**
   * The refcounts, one per host cluster (64-bit ones as hi/lo halves; 1-bit ones as booleans).
   */
  entries: Array<boolean | number | U64Fields>;
}

/**
 * A refcount block - one cluster of refcounts of 2^refcount_order bits each. Widths below 8
 * bits are packed least significant bit first within each byte; wider ones are big-endian.
 */

export interface RefcountBlock {
  /**
   * The refcounts, one per host cluster (64-bit ones as hi/lo halves; 1-bit ones as booleans).
   */
  entries: Array<boolean | number | U64>;
}

/**
 * Parameters of snapshot_entry.
 */

export interface SnapshotEntryParams {
  /**
   * log2 of the cluster size, for the snapshot's L2 tables.
   */
  readonly clusterBits: number;
  /**
   * Whether L2 entries are extended.
   */
  readonly extendedL2: boolean;
  /**
   * Whether this is the table's last entry, which QEMU writes without trailing padding.
   */
  readonly isLast: boolean;
}

/**
 * The seq fields of snapshot_entry: what encodeSnapshotEntry needs.
 */

export interface SnapshotEntryFields {
  /**
   * File offset of the snapshot's L1 table (cluster aligned).
   */
  l1TableOffset: U64Fields;
  /**
   * Number of entries in the snapshot's L1 table.
   */
  l1Size: number;
  /**
   * Length of the id string.
   */
  lenId: number;
  /**
   * Length of the name.
   */
  lenName: number;
  /**
   * Creation time, seconds since the Unix epoch.
   */
  dateSec: number;
  /**
   * Creation time, nanoseconds part.
   */
  dateNsec: number;
  /**
   * Guest run time when the snapshot was taken, in nanoseconds.
   */
  vmClockNsec: U64Fields;
  /**
   * Size of the saved VM state in bytes (0 for disk-only snapshots; see vm_state_size_large).
   */
  vmStateSize: number;
  /**
   * Size of the extra data in bytes (at least 16 for version 3; QEMU refuses more than 1024).
   */
  lenExtraData: number;
  /**
   * The extra data - known fields, then bytes this description does not know.
   */
  extraData: SnapshotExtraDataFields;
  /**
   * The snapshot id, a decimal number as a string (not NUL-terminated).
   */
  idStr: string;
  /**
   * The snapshot name (not NUL-terminated).
   */
  name: string;
  /**
   * Padding to a multiple of 8 bytes before the next entry (QEMU aligns each entry's start, so the last has none).
   */
  padding?: Uint8Array;
}

/**
 * One snapshot table entry; every entry but the last is padded to a multiple of 8 bytes.
 */

export interface SnapshotEntry {
  /**
   * File offset of the snapshot's L1 table (cluster aligned).
   */
  l1TableOffset: U64;
  /**
   * Number of entries in the snapshot's L1 table.
   */
  l1Size: number;
  /**
   * Length of the id string.
   */
  lenId: number;
  /**
   * Length of the name.
   */
  lenName: number;
  /**
   * Creation time, seconds since the Unix epoch.
   */
  dateSec: number;
  /**
   * Creation time, nanoseconds part.
   */
  dateNsec: number;
  /**
   * Guest run time when the snapshot was taken, in nanoseconds.
   */
  vmClockNsec: U64;
  /**
   * Size of the saved VM state in bytes (0 for disk-only snapshots; see vm_state_size_large).
   */
  vmStateSize: number;
  /**
   * Size of the extra data in bytes (at least 16 for version 3; QEMU refuses more than 1024).
   */
  lenExtraData: number;
  /**
   * The extra data - known fields, then bytes this description does not know.
   */
  extraData: SnapshotExtraData;
  /**
   * The snapshot id, a decimal number as a string (not NUL-terminated).
   */
  idStr: string;
  /**
   * The snapshot name (not NUL-terminated).
   */
  name: string;
  /**
   * Padding to a multiple of 8 bytes before the next entry (QEMU aligns each entry's start, so the last has none).
   */
  padding?: Uint8Array;
  /**
   * The snapshot's L1 table.
   * (read on first access; not enumerable)
   */
  readonly l1Table: Array<L1Entry>;
}

/**
 * Parameters of snapshot_extra_data.
 */

export interface SnapshotExtraDataParams {
  /**
   * Size of the extra data in bytes.
   */
  readonly len: number;
}

/**
 * The seq fields of snapshot_extra_data: what encodeSnapshotExtraData needs.
 */

export interface SnapshotExtraDataFields {
  /**
   * Size of the VM state in bytes (overrides the 32-bit vm_state_size).
   */
  vmStateSizeLarge?: U64Fields;
  /**
   * Virtual disk size at the time of the snapshot.
   */
  diskSize?: U64Fields;
  /**
   * Instruction count for record/replay, all bits set when unused.
   */
  icount?: U64Fields;
  /**
   * Extra data this description does not know (kept verbatim), or the tail of a too-short field.
   */
  unknown: Uint8Array;
}

/**
 * Snapshot extra data; fields are present when the extra data is long enough to hold them.
 */

export interface SnapshotExtraData {
  /**
   * Size of the VM state in bytes (overrides the 32-bit vm_state_size).
   */
  vmStateSizeLarge?: U64;
  /**
   * Virtual disk size at the time of the snapshot.
   */
  diskSize?: U64;
  /**
   * Instruction count for record/replay, all bits set when unused.
   */
  icount?: U64;
  /**
   * Extra data this description does not know (kept verbatim), or the tail of a too-short field.
   */
  unknown: Uint8Array;
}

/**
 * The seq fields of bitmap_directory: what encodeBitmapDirectory needs.
 */

export interface BitmapDirectoryFields {
  /**
   * The directory entries.
   */
  entries: Array<BitmapDirectoryEntryFields>;
}

/**
 * The persistent bitmap directory - variable-length entries, each padded to 8 bytes.
 */

export interface BitmapDirectory {
  /**
   * The directory entries.
   */
  entries: Array<BitmapDirectoryEntry>;
}

/**
 * The seq fields of bitmap_directory_entry: what encodeBitmapDirectoryEntry needs.
 */

export interface BitmapDirectoryEntryFields {
  /**
   * File offset of the bitmap table (cluster aligned).
   */
  bitmapTableOffset: U64Fields;
  /**
   * Number of entries in the bitmap table.
   */
  bitmapTableSize: number;
  /**
   * Flag bits 3..31, reserved (zero).
   */
  reservedFlags: number;
  /**
   * Flag bit 2 - the extra data may be ignored by a reader that does not know it.
   */
  extraDataCompatible: boolean;
  /**
   * Flag bit 1 - the bitmap tracks guest writes.
   */
  auto: boolean;
  /**
   * Flag bit 0 - the bitmap was not saved cleanly and is inconsistent.
   */
  inUse: boolean;
  /**
   * Bitmap type, 1 for dirty tracking.
   * (enum bitmap_type)
   */
  bitmapType: number;
  /**
   * log2 of the number of guest bytes one bit covers (QEMU 9..31).
   */
  granularityBits: number;
  /**
   * Length of the name (1..1023).
   */
  lenName: number;
  /**
   * Size of the extra data in bytes.
   */
  lenExtraData: number;
  /**
   * Extra data, kept verbatim.
   */
  extraData: Uint8Array;
  /**
   * Bitmap name (not NUL-terminated).
   */
  name: string;
  /**
   * Padding to a multiple of 8 bytes.
   */
  padding: Uint8Array;
}

/**
 * One bitmap directory entry.
 */

export interface BitmapDirectoryEntry {
  /**
   * File offset of the bitmap table (cluster aligned).
   */
  bitmapTableOffset: U64;
  /**
   * Number of entries in the bitmap table.
   */
  bitmapTableSize: number;
  /**
   * Flag bits 3..31, reserved (zero).
   */
  reservedFlags: number;
  /**
   * Flag bit 2 - the extra data may be ignored by a reader that does not know it.
   */
  extraDataCompatible: boolean;
  /**
   * Flag bit 1 - the bitmap tracks guest writes.
   */
  auto: boolean;
  /**
   * Flag bit 0 - the bitmap was not saved cleanly and is inconsistent.
   */
  inUse: boolean;
  /**
   * Bitmap type, 1 for dirty tracking.
   * (enum bitmap_type)
   */
  bitmapType: number;
  /**
   * log2 of the number of guest bytes one bit covers (QEMU 9..31).
   */
  granularityBits: number;
  /**
   * Length of the name (1..1023).
   */
  lenName: number;
  /**
   * Size of the extra data in bytes.
   */
  lenExtraData: number;
  /**
   * Extra data, kept verbatim.
   */
  extraData: Uint8Array;
  /**
   * Bitmap name (not NUL-terminated).
   */
  name: string;
  /**
   * Padding to a multiple of 8 bytes.
   */
  padding: Uint8Array;
  /**
   * The bitmap table.
   * (read on first access; not enumerable)
   */
  readonly bitmapTable: Array<BitmapTableEntry>;
}

/**
 * The seq fields of bitmap_table_entry: what encodeBitmapTableEntry needs.
 */

export interface BitmapTableEntryFields {
  /**
   * Bits 56..63, reserved (zero).
   */
  reservedHi: number;
  /**
   * Bits 32..55 of the data cluster offset.
   */
  offsetHi: number;
  /**
   * Bits 9..31 of the data cluster offset (the low word shifted right by 9).
   */
  offsetLo: number;
  /**
   * Bits 1..8, reserved (zero).
   */
  reservedLo: number;
  /**
   * Bit 0 - when the offset is 0, the cluster's bits are all ones (else all zeros).
   */
  allOnes: boolean;
}

/**
 * A bitmap table entry - the offset of one bitmap data cluster, or all-zeros/all-ones.
 */

export interface BitmapTableEntry {
  /**
   * Bits 56..63, reserved (zero).
   */
  reservedHi: number;
  /**
   * Bits 32..55 of the data cluster offset.
   */
  offsetHi: number;
  /**
   * Bits 9..31 of the data cluster offset (the low word shifted right by 9).
   */
  offsetLo: number;
  /**
   * Bits 1..8, reserved (zero).
   */
  reservedLo: number;
  /**
   * Bit 0 - when the offset is 0, the cluster's bits are all ones (else all zeros).
   */
  allOnes: boolean;
}

function instQcow2_extensionsEnd(s: any, p: NoParams, c: { root: unknown }): number {
  return ((instU64_num(s.header.backingFileOffset, {}, c) !== 0) ? instU64_num(s.header.backingFileOffset, {}, c) : instHeader_clusterSize(s.header, {}, c));
}

function readQcow2(io: ByteReader, c: DecodeContext, p: NoParams): Qcow2 {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.header = (io.alignToByte(), readHeader(io, c, {  }));
  }
  {
    s.headerExtensions = readHeaderExtensionArea(io.substream(checkSize((instQcow2_extensionsEnd(s, p, c) - instHeader_lenHeader(s.header, {}, c)), "qcow2", "header_extensions", io.pos), "qcow2", "header_extensions"), c, {  });
  }
  if (!c.fieldsOnly) {
    defineValue(s, "extensionsEnd", instQcow2_extensionsEnd(s, p, c));
    defineLazy(s, "backingFileName", () => {
      if (!((instU64_num(s.header.backingFileOffset, {}, c) !== 0))) return undefined;
      const r = io.at(instU64_num(s.header.backingFileOffset, {}, c), "qcow2", "backing_file_name");
      let out: unknown;
      {
        out = asciiDecode(r.readBytes(checkSize(s.header.backingFileSize, "qcow2", "backing_file_name", r.pos), "qcow2", "backing_file_name"));
      }
      return out;
    });
    defineLazy(s, "l1Table", () => {
      const r = io.at(instU64_num(s.header.l1TableOffset, {}, c), "qcow2", "l1_table");
      let out: unknown;
      {
        const n = checkCount(r, s.header.l1Size, 64, "qcow2", "l1_table");
        const arr: unknown[] = [];
        for (let i = 0; i < n; i++) {
          const before = r.mark();
          arr.push((r.alignToByte(), readL1Entry(r, c, { clusterBits: s.header.clusterBits, extendedL2: instHeader_hasExtendedL2(s.header, {}, c) })));
          requireProgress(r, before, "qcow2", "l1_table");
        }
        out = arr;
      }
      return out;
    });
    defineLazy(s, "refcountTable", () => {
      const r = io.at(instU64_num(s.header.refcountTableOffset, {}, c), "qcow2", "refcount_table");
      let out: unknown;
      {
        out = readRefcountTable(r.substream(checkSize((s.header.refcountTableClusters * instHeader_clusterSize(s.header, {}, c)), "qcow2", "refcount_table", r.pos), "qcow2", "refcount_table"), c, { clusterBits: s.header.clusterBits, refcountOrder: instHeader_refcountOrderEffective(s.header, {}, c) });
      }
      return out;
    });
    defineLazy(s, "snapshots", () => {
      const r = io.at(instU64_num(s.header.snapshotsOffset, {}, c), "qcow2", "snapshots");
      let out: unknown;
      {
        const n = checkCount(r, s.header.nbSnapshots, 320, "qcow2", "snapshots");
        const arr: unknown[] = [];
        for (let i = 0; i < n; i++) {
          const before = r.mark();
          arr.push((r.alignToByte(), readSnapshotEntry(r, c, { clusterBits: s.header.clusterBits, extendedL2: instHeader_hasExtendedL2(s.header, {}, c), isLast: ((i + 1) === s.header.nbSnapshots) })));
          requireProgress(r, before, "qcow2", "snapshots");
        }
        out = arr;
      }
      return out;
    });
  }
  return s as Qcow2;
}

/**
 * Decodes a qcow2 at `offset` of `bytes`. The on-disk structures of QEMU's qcow2 image format, as defined by QEMU's
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeQcow2(bytes: Uint8Array | PagedBytes, offset = 0): Qcow2 {
  const rootIo = new ByteReader(bytes);
  return readQcow2(rootIo.at(offset, "qcow2", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a qcow2 at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeQcow2 without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeQcow2Fields(bytes: Uint8Array | PagedBytes, offset = 0): Qcow2Fields {
  const rootIo = new ByteReader(bytes);
  return readQcow2(rootIo.at(offset, "qcow2", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeQcow2(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("qcow2", '(value)', w.length, 'expected an object');
  w.alignToByte(); writeHeader(w, s.header, c, {  });
  {
    const sub = new ByteWriter();
    writeHeaderExtensionArea(sub, s.headerExtensions, c, {  });
    w.writeBytes(sub.finish(), "qcow2", "header_extensions", checkSize((instQcow2_extensionsEnd(s, p, c) - instHeader_lenHeader(s.header, {}, c)), "qcow2", "header_extensions", w.length));
  }
}

/**
 * Encodes a qcow2 from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeQcow2(value: Qcow2Fields): Uint8Array {
  const w = new ByteWriter();
  writeQcow2(w, value, { root: value }, {});
  return w.finish();
}

function instU64_num(s: any, p: NoParams, c: { root: unknown }): number {
  return ((s.hi * 4294967296) + s.lo);
}

function readU64(io: ByteReader, c: DecodeContext, p: NoParams): U64 {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.hi = io.readU4("u64", "hi");
  }
  {
    s.lo = io.readU4("u64", "lo");
  }
  if (!c.fieldsOnly) {
    defineValue(s, "num", instU64_num(s, p, c));
  }
  return s as U64;
}

/**
 * Decodes a u64 at `offset` of `bytes`. A 64-bit big-endian unsigned integer kept as two exact 32-bit halves.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeU64(bytes: Uint8Array | PagedBytes, offset = 0): U64 {
  const rootIo = new ByteReader(bytes);
  return readU64(rootIo.at(offset, "u64", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a u64 at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeU64 without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeU64Fields(bytes: Uint8Array | PagedBytes, offset = 0): U64Fields {
  const rootIo = new ByteReader(bytes);
  return readU64(rootIo.at(offset, "u64", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeU64(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("u64", '(value)', w.length, 'expected an object');
  w.writeU4(s.hi, "u64", "hi");
  w.writeU4(s.lo, "u64", "lo");
}

/**
 * Encodes a u64 from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeU64(value: U64Fields): Uint8Array {
  const w = new ByteWriter();
  writeU64(w, value, { root: value }, {});
  return w.finish();
}

function instHeader_lenHeader(s: any, p: NoParams, c: { root: unknown }): number {
  return ((s.version >= 3) ? s.headerLength : 72);
}

function instHeader_clusterSize(s: any, p: NoParams, c: { root: unknown }): number {
  return (1 << s.clusterBits);
}

function instHeader_refcountOrderEffective(s: any, p: NoParams, c: { root: unknown }): number {
  return ((s.version >= 3) ? s.refcountOrder : 4);
}

function instHeader_compressionTypeEffective(s: any, p: NoParams, c: { root: unknown }): number {
  return (((s.version >= 3) && (s.headerLength > 104)) ? s.compressionType : 0);
}

function instHeader_isDirty(s: any, p: NoParams, c: { root: unknown }): boolean {
  return ((s.version >= 3) ? ((s.incompatibleFeatures.lo & (1 << IncompatibleFeatureBit.DIRTY)) !== 0) : false);
}

function instHeader_isCorrupt(s: any, p: NoParams, c: { root: unknown }): boolean {
  return ((s.version >= 3) ? ((s.incompatibleFeatures.lo & (1 << IncompatibleFeatureBit.CORRUPT)) !== 0) : false);
}

function instHeader_hasExternalDataFile(s: any, p: NoParams, c: { root: unknown }): boolean {
  return ((s.version >= 3) ? ((s.incompatibleFeatures.lo & (1 << IncompatibleFeatureBit.EXTERNAL_DATA_FILE)) !== 0) : false);
}

function instHeader_hasCompressionType(s: any, p: NoParams, c: { root: unknown }): boolean {
  return ((s.version >= 3) ? ((s.incompatibleFeatures.lo & (1 << IncompatibleFeatureBit.COMPRESSION_TYPE)) !== 0) : false);
}

function instHeader_hasExtendedL2(s: any, p: NoParams, c: { root: unknown }): boolean {
  return ((s.version >= 3) ? ((s.incompatibleFeatures.lo & (1 << IncompatibleFeatureBit.EXTENDED_L2)) !== 0) : false);
}

function instHeader_hasLazyRefcounts(s: any, p: NoParams, c: { root: unknown }): boolean {
  return ((s.version >= 3) ? ((s.compatibleFeatures.lo & (1 << CompatibleFeatureBit.LAZY_REFCOUNTS)) !== 0) : false);
}

function instHeader_hasBitmaps(s: any, p: NoParams, c: { root: unknown }): boolean {
  return ((s.version >= 3) ? ((s.autoclearFeatures.lo & (1 << AutoclearFeatureBit.BITMAPS)) !== 0) : false);
}

function instHeader_hasRawExternalData(s: any, p: NoParams, c: { root: unknown }): boolean {
  return ((s.version >= 3) ? ((s.autoclearFeatures.lo & (1 << AutoclearFeatureBit.RAW_EXTERNAL_DATA)) !== 0) : false);
}

function readHeader(io: ByteReader, c: DecodeContext, p: NoParams): Header {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    const at = io.pos;
    const v = io.readBytes(4, "header", "magic");
    if (!v.every((b, i) => b === [81, 70, 73, 251][i])) invalidValue("header", "magic", at, `must be bytes [81, 70, 73, 251], is [${Array.from(v).join(', ')}]`);
    s.magic = v;
  }
  {
    const at = io.pos;
    const v = io.readU4("header", "version");
    if (!(v === 2 || v === 3)) invalidValue("header", "version", at, `must be one of ${[2, 3].join(', ')}, is ${String(v)}`);
    s.version = v;
  }
  {
    s.backingFileOffset = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    s.backingFileSize = io.readU4("header", "backing_file_size");
  }
  {
    const at = io.pos;
    const v = io.readU4("header", "cluster_bits");
    if (v < 9) invalidValue("header", "cluster_bits", at, `must be at least ${9}, is ${String(v)}`);
    if (v > 21) invalidValue("header", "cluster_bits", at, `must be at most ${21}, is ${String(v)}`);
    s.clusterBits = v;
  }
  {
    s.size = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    const at = io.pos;
    const v = io.readU4("header", "crypt_method");
    if (!(v === CryptMethod.NONE || v === CryptMethod.AES || v === CryptMethod.LUKS)) invalidValue("header", "crypt_method", at, `must be one of ${[CryptMethod.NONE, CryptMethod.AES, CryptMethod.LUKS].join(', ')}, is ${String(v)}`);
    s.cryptMethod = v;
  }
  {
    s.l1Size = io.readU4("header", "l1_size");
  }
  {
    s.l1TableOffset = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    s.refcountTableOffset = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    s.refcountTableClusters = io.readU4("header", "refcount_table_clusters");
  }
  {
    s.nbSnapshots = io.readU4("header", "nb_snapshots");
  }
  {
    s.snapshotsOffset = (io.alignToByte(), readU64(io, c, {  }));
  }
  if ((s.version >= 3)) {
    s.incompatibleFeatures = (io.alignToByte(), readU64(io, c, {  }));
  }
  if ((s.version >= 3)) {
    s.compatibleFeatures = (io.alignToByte(), readU64(io, c, {  }));
  }
  if ((s.version >= 3)) {
    s.autoclearFeatures = (io.alignToByte(), readU64(io, c, {  }));
  }
  if ((s.version >= 3)) {
    const at = io.pos;
    const v = io.readU4("header", "refcount_order");
    if (v > 6) invalidValue("header", "refcount_order", at, `must be at most ${6}, is ${String(v)}`);
    s.refcountOrder = v;
  }
  if ((s.version >= 3)) {
    const at = io.pos;
    const v = io.readU4("header", "header_length");
    if (v < 104) invalidValue("header", "header_length", at, `must be at least ${104}, is ${String(v)}`);
    if (v > instHeader_clusterSize(s, p, c)) invalidValue("header", "header_length", at, `must be at most ${instHeader_clusterSize(s, p, c)}, is ${String(v)}`);
    s.headerLength = v;
  }
  if (((s.version >= 3) && (s.headerLength > 104))) {
    const at = io.pos;
    const v = io.readU1("header", "compression_type");
    if (!(v === CompressionType.ZLIB || v === CompressionType.ZSTD)) invalidValue("header", "compression_type", at, `must be one of ${[CompressionType.ZLIB, CompressionType.ZSTD].join(', ')}, is ${String(v)}`);
    s.compressionType = v;
  }
  if (((s.version >= 3) && (s.headerLength > 105))) {
    s.padding = io.readBytes(checkSize((((s.headerLength < 112) ? s.headerLength : 112) - 105), "header", "padding", io.pos), "header", "padding");
  }
  if (((s.version >= 3) && (s.headerLength > 112))) {
    s.unknownHeaderFields = io.readBytes(checkSize((s.headerLength - 112), "header", "unknown_header_fields", io.pos), "header", "unknown_header_fields");
  }
  if (!c.fieldsOnly) {
    defineValue(s, "lenHeader", instHeader_lenHeader(s, p, c));
    defineValue(s, "clusterSize", instHeader_clusterSize(s, p, c));
    defineValue(s, "refcountOrderEffective", instHeader_refcountOrderEffective(s, p, c));
    defineValue(s, "compressionTypeEffective", instHeader_compressionTypeEffective(s, p, c));
    defineValue(s, "isDirty", instHeader_isDirty(s, p, c));
    defineValue(s, "isCorrupt", instHeader_isCorrupt(s, p, c));
    defineValue(s, "hasExternalDataFile", instHeader_hasExternalDataFile(s, p, c));
    defineValue(s, "hasCompressionType", instHeader_hasCompressionType(s, p, c));
    defineValue(s, "hasExtendedL2", instHeader_hasExtendedL2(s, p, c));
    defineValue(s, "hasLazyRefcounts", instHeader_hasLazyRefcounts(s, p, c));
    defineValue(s, "hasBitmaps", instHeader_hasBitmaps(s, p, c));
    defineValue(s, "hasRawExternalData", instHeader_hasRawExternalData(s, p, c));
  }
  return s as Header;
}

/**
 * Decodes a header at `offset` of `bytes`. The qcow2 header (version 2 ends after snapshots_offset; version 3 adds feature bits and more).
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeHeader(bytes: Uint8Array | PagedBytes, offset = 0): Header {
  const rootIo = new ByteReader(bytes);
  return readHeader(rootIo.at(offset, "header", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a header at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeHeader without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeHeaderFields(bytes: Uint8Array | PagedBytes, offset = 0): HeaderFields {
  const rootIo = new ByteReader(bytes);
  return readHeader(rootIo.at(offset, "header", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeHeader(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("header", '(value)', w.length, 'expected an object');
  w.writeBytes(new Uint8Array([81, 70, 73, 251]), "header", "magic");
  w.writeU4(s.version, "header", "version");
  w.alignToByte(); writeU64(w, s.backingFileOffset, c, {  });
  w.writeU4(s.backingFileSize, "header", "backing_file_size");
  w.writeU4(s.clusterBits, "header", "cluster_bits");
  w.alignToByte(); writeU64(w, s.size, c, {  });
  w.writeU4(s.cryptMethod, "header", "crypt_method");
  w.writeU4(s.l1Size, "header", "l1_size");
  w.alignToByte(); writeU64(w, s.l1TableOffset, c, {  });
  w.alignToByte(); writeU64(w, s.refcountTableOffset, c, {  });
  w.writeU4(s.refcountTableClusters, "header", "refcount_table_clusters");
  w.writeU4(s.nbSnapshots, "header", "nb_snapshots");
  w.alignToByte(); writeU64(w, s.snapshotsOffset, c, {  });
  if ((s.version >= 3)) {
    if (s.incompatibleFeatures === undefined) inconsistent("header", "incompatible_features", w.length, 'is required by its if: condition but missing');
    w.alignToByte(); writeU64(w, s.incompatibleFeatures, c, {  });
  } else if (s.incompatibleFeatures !== undefined) inconsistent("header", "incompatible_features", w.length, 'must be absent: its if: condition is false');
  if ((s.version >= 3)) {
    if (s.compatibleFeatures === undefined) inconsistent("header", "compatible_features", w.length, 'is required by its if: condition but missing');
    w.alignToByte(); writeU64(w, s.compatibleFeatures, c, {  });
  } else if (s.compatibleFeatures !== undefined) inconsistent("header", "compatible_features", w.length, 'must be absent: its if: condition is false');
  if ((s.version >= 3)) {
    if (s.autoclearFeatures === undefined) inconsistent("header", "autoclear_features", w.length, 'is required by its if: condition but missing');
    w.alignToByte(); writeU64(w, s.autoclearFeatures, c, {  });
  } else if (s.autoclearFeatures !== undefined) inconsistent("header", "autoclear_features", w.length, 'must be absent: its if: condition is false');
  if ((s.version >= 3)) {
    if (s.refcountOrder === undefined) inconsistent("header", "refcount_order", w.length, 'is required by its if: condition but missing');
    w.writeU4(s.refcountOrder, "header", "refcount_order");
  } else if (s.refcountOrder !== undefined) inconsistent("header", "refcount_order", w.length, 'must be absent: its if: condition is false');
  if ((s.version >= 3)) {
    if (s.headerLength === undefined) inconsistent("header", "header_length", w.length, 'is required by its if: condition but missing');
    w.writeU4(s.headerLength, "header", "header_length");
  } else if (s.headerLength !== undefined) inconsistent("header", "header_length", w.length, 'must be absent: its if: condition is false');
  if (((s.version >= 3) && (s.headerLength > 104))) {
    if (s.compressionType === undefined) inconsistent("header", "compression_type", w.length, 'is required by its if: condition but missing');
    w.writeU1(s.compressionType, "header", "compression_type");
  } else if (s.compressionType !== undefined) inconsistent("header", "compression_type", w.length, 'must be absent: its if: condition is false');
  if (((s.version >= 3) && (s.headerLength > 105))) {
    if (s.padding === undefined) inconsistent("header", "padding", w.length, 'is required by its if: condition but missing');
    w.writeBytes(s.padding, "header", "padding", checkSize((((s.headerLength < 112) ? s.headerLength : 112) - 105), "header", "padding", w.length));
  } else if (s.padding !== undefined) inconsistent("header", "padding", w.length, 'must be absent: its if: condition is false');
  if (((s.version >= 3) && (s.headerLength > 112))) {
    if (s.unknownHeaderFields === undefined) inconsistent("header", "unknown_header_fields", w.length, 'is required by its if: condition but missing');
    w.writeBytes(s.unknownHeaderFields, "header", "unknown_header_fields", checkSize((s.headerLength - 112), "header", "unknown_header_fields", w.length));
  } else if (s.unknownHeaderFields !== undefined) inconsistent("header", "unknown_header_fields", w.length, 'must be absent: its if: condition is false');
}

/**
 * Encodes a header from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeHeader(value: HeaderFields): Uint8Array {
  const w = new ByteWriter();
  writeHeader(w, value, { root: value }, {});
  return w.finish();
}

function readHeaderExtensionArea(io: ByteReader, c: DecodeContext, p: NoParams): HeaderExtensionArea {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  if ((!io.isEof())) {
    const arr: unknown[] = [];
    for (let i = 0; ; i++) {
      const before = io.mark();
      const _: any = (io.alignToByte(), readHeaderExtension(io, c, {  }));
      arr.push(_);
      requireProgress(io, before, "header_extension_area", "extensions");
      if (((_.type === HeaderExtensionType.END) || io.isEof())) break;
    }
    s.extensions = arr;
  }
  {
    s.trailing = io.readBytesToEnd();
  }
  return s as HeaderExtensionArea;
}

/**
 * Decodes a header_extension_area at `offset` of `bytes`. The list of header extensions, ended by an end-of-extensions entry or by the end of the area.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeHeaderExtensionArea(bytes: Uint8Array | PagedBytes, offset = 0): HeaderExtensionArea {
  const rootIo = new ByteReader(bytes);
  return readHeaderExtensionArea(rootIo.at(offset, "header_extension_area", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a header_extension_area at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeHeaderExtensionArea without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeHeaderExtensionAreaFields(bytes: Uint8Array | PagedBytes, offset = 0): HeaderExtensionAreaFields {
  const rootIo = new ByteReader(bytes);
  return readHeaderExtensionArea(rootIo.at(offset, "header_extension_area", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeHeaderExtensionArea(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("header_extension_area", '(value)', w.length, 'expected an object');
  if (s.extensions !== undefined) {
    if (!Array.isArray(s.extensions)) inconsistent("header_extension_area", "extensions", w.length, 'expected an array');
    for (let i = 0; i < s.extensions.length; i++) {
      const el = s.extensions[i];
      w.alignToByte(); writeHeaderExtension(w, el, c, {  });
    }
  }
  w.writeBytes(s.trailing, "header_extension_area", "trailing");
}

/**
 * Encodes a header_extension_area from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeHeaderExtensionArea(value: HeaderExtensionAreaFields): Uint8Array {
  const w = new ByteWriter();
  writeHeaderExtensionArea(w, value, { root: value }, {});
  return w.finish();
}

function readHeaderExtension(io: ByteReader, c: DecodeContext, p: NoParams): HeaderExtension {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.type = io.readU4("header_extension", "type");
  }
  {
    s.lenData = io.readU4("header_extension", "len_data");
  }
  {
    s.data = (() => {
      const on = s.type;
      const sub = io.substream(checkSize(s.lenData, "header_extension", "data", io.pos), "header_extension", "data");
      if (on === HeaderExtensionType.BACKING_FILE_FORMAT) return readBackingFileFormat(sub, c, {  });
      if (on === HeaderExtensionType.FEATURE_NAME_TABLE) return readFeatureNameTable(sub, c, {  });
      if (on === HeaderExtensionType.BITMAPS) return readBitmapsExtension(sub, c, {  });
      if (on === HeaderExtensionType.FULL_DISK_ENCRYPTION) return readFullDiskEncryptionPointer(sub, c, {  });
      if (on === HeaderExtensionType.EXTERNAL_DATA_FILE) return readExternalDataFileName(sub, c, {  });
      return sub.readBytesToEnd();
    })();
  }
  {
    s.padding = io.readBytes(checkSize(kaitaiMod((8 - kaitaiMod(s.lenData, 8)), 8), "header_extension", "padding", io.pos), "header_extension", "padding");
  }
  return s as HeaderExtension;
}

/**
 * Decodes a header_extension at `offset` of `bytes`. One header extension - type, length, data, padding to a multiple of 8 bytes.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeHeaderExtension(bytes: Uint8Array | PagedBytes, offset = 0): HeaderExtension {
  const rootIo = new ByteReader(bytes);
  return readHeaderExtension(rootIo.at(offset, "header_extension", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a header_extension at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeHeaderExtension without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeHeaderExtensionFields(bytes: Uint8Array | PagedBytes, offset = 0): HeaderExtensionFields {
  const rootIo = new ByteReader(bytes);
  return readHeaderExtension(rootIo.at(offset, "header_extension", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeHeaderExtension(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("header_extension", '(value)', w.length, 'expected an object');
  w.writeU4(s.type, "header_extension", "type");
  w.writeU4(s.lenData, "header_extension", "len_data");
  {
    const on = s.type;
    const sub = new ByteWriter();
    if (on === HeaderExtensionType.BACKING_FILE_FORMAT) { writeBackingFileFormat(sub, s.data, c, {  }); }
    else if (on === HeaderExtensionType.FEATURE_NAME_TABLE) { writeFeatureNameTable(sub, s.data, c, {  }); }
    else if (on === HeaderExtensionType.BITMAPS) { writeBitmapsExtension(sub, s.data, c, {  }); }
    else if (on === HeaderExtensionType.FULL_DISK_ENCRYPTION) { writeFullDiskEncryptionPointer(sub, s.data, c, {  }); }
    else if (on === HeaderExtensionType.EXTERNAL_DATA_FILE) { writeExternalDataFileName(sub, s.data, c, {  }); }
    else sub.writeBytes(s.data, "header_extension", "data");
    w.writeBytes(sub.finish(), "header_extension", "data", checkSize(s.lenData, "header_extension", "data", w.length));
  }
  w.writeBytes(s.padding, "header_extension", "padding", checkSize(kaitaiMod((8 - kaitaiMod(s.lenData, 8)), 8), "header_extension", "padding", w.length));
}

/**
 * Encodes a header_extension from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeHeaderExtension(value: HeaderExtensionFields): Uint8Array {
  const w = new ByteWriter();
  writeHeaderExtension(w, value, { root: value }, {});
  return w.finish();
}

function readBackingFileFormat(io: ByteReader, c: DecodeContext, p: NoParams): BackingFileFormat {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.name = asciiDecode(io.readBytesToEnd());
  }
  return s as BackingFileFormat;
}

/**
 * Decodes a backing_file_format at `offset` of `bytes`. Backing file format name extension (e.g. "qcow2" or "raw").
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeBackingFileFormat(bytes: Uint8Array | PagedBytes, offset = 0): BackingFileFormat {
  const rootIo = new ByteReader(bytes);
  return readBackingFileFormat(rootIo.at(offset, "backing_file_format", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a backing_file_format at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeBackingFileFormat without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeBackingFileFormatFields(bytes: Uint8Array | PagedBytes, offset = 0): BackingFileFormatFields {
  const rootIo = new ByteReader(bytes);
  return readBackingFileFormat(rootIo.at(offset, "backing_file_format", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeBackingFileFormat(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("backing_file_format", '(value)', w.length, 'expected an object');
  w.writeBytes(asciiEncode(s.name, "backing_file_format", "name"), "backing_file_format", "name");
}

/**
 * Encodes a backing_file_format from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeBackingFileFormat(value: BackingFileFormatFields): Uint8Array {
  const w = new ByteWriter();
  writeBackingFileFormat(w, value, { root: value }, {});
  return w.finish();
}

function readExternalDataFileName(io: ByteReader, c: DecodeContext, p: NoParams): ExternalDataFileName {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.name = asciiDecode(io.readBytesToEnd());
  }
  return s as ExternalDataFileName;
}

/**
 * Decodes a external_data_file_name at `offset` of `bytes`. External data file name extension.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeExternalDataFileName(bytes: Uint8Array | PagedBytes, offset = 0): ExternalDataFileName {
  const rootIo = new ByteReader(bytes);
  return readExternalDataFileName(rootIo.at(offset, "external_data_file_name", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a external_data_file_name at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeExternalDataFileName without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeExternalDataFileNameFields(bytes: Uint8Array | PagedBytes, offset = 0): ExternalDataFileNameFields {
  const rootIo = new ByteReader(bytes);
  return readExternalDataFileName(rootIo.at(offset, "external_data_file_name", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeExternalDataFileName(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("external_data_file_name", '(value)', w.length, 'expected an object');
  w.writeBytes(asciiEncode(s.name, "external_data_file_name", "name"), "external_data_file_name", "name");
}

/**
 * Encodes a external_data_file_name from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeExternalDataFileName(value: ExternalDataFileNameFields): Uint8Array {
  const w = new ByteWriter();
  writeExternalDataFileName(w, value, { root: value }, {});
  return w.finish();
}

function readFeatureNameTable(io: ByteReader, c: DecodeContext, p: NoParams): FeatureNameTable {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    const arr: unknown[] = [];
    for (let i = 0; !io.isEof(); i++) {
      const before = io.mark();
      arr.push((io.alignToByte(), readFeatureNameEntry(io, c, {  })));
      requireProgress(io, before, "feature_name_table", "entries");
    }
    s.entries = arr;
  }
  return s as FeatureNameTable;
}

/**
 * Decodes a feature_name_table at `offset` of `bytes`. Feature name table extension - human-readable names of feature bits.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeFeatureNameTable(bytes: Uint8Array | PagedBytes, offset = 0): FeatureNameTable {
  const rootIo = new ByteReader(bytes);
  return readFeatureNameTable(rootIo.at(offset, "feature_name_table", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a feature_name_table at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeFeatureNameTable without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeFeatureNameTableFields(bytes: Uint8Array | PagedBytes, offset = 0): FeatureNameTableFields {
  const rootIo = new ByteReader(bytes);
  return readFeatureNameTable(rootIo.at(offset, "feature_name_table", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeFeatureNameTable(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("feature_name_table", '(value)', w.length, 'expected an object');
  if (!Array.isArray(s.entries)) inconsistent("feature_name_table", "entries", w.length, 'expected an array');
  for (let i = 0; i < s.entries.length; i++) {
    const el = s.entries[i];
    w.alignToByte(); writeFeatureNameEntry(w, el, c, {  });
  }
}

/**
 * Encodes a feature_name_table from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeFeatureNameTable(value: FeatureNameTableFields): Uint8Array {
  const w = new ByteWriter();
  writeFeatureNameTable(w, value, { root: value }, {});
  return w.finish();
}

function readFeatureNameEntry(io: ByteReader, c: DecodeContext, p: NoParams): FeatureNameEntry {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.featureType = io.readU1("feature_name_entry", "feature_type");
  }
  {
    s.bit = io.readU1("feature_name_entry", "bit");
  }
  {
    s.name = asciiDecode(stripRight(io.readBytes(checkSize(46, "feature_name_entry", "name", io.pos), "feature_name_entry", "name"), 0));
  }
  return s as FeatureNameEntry;
}

/**
 * Decodes a feature_name_entry at `offset` of `bytes`. One feature name table entry.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeFeatureNameEntry(bytes: Uint8Array | PagedBytes, offset = 0): FeatureNameEntry {
  const rootIo = new ByteReader(bytes);
  return readFeatureNameEntry(rootIo.at(offset, "feature_name_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a feature_name_entry at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeFeatureNameEntry without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeFeatureNameEntryFields(bytes: Uint8Array | PagedBytes, offset = 0): FeatureNameEntryFields {
  const rootIo = new ByteReader(bytes);
  return readFeatureNameEntry(rootIo.at(offset, "feature_name_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeFeatureNameEntry(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("feature_name_entry", '(value)', w.length, 'expected an object');
  w.writeU1(s.featureType, "feature_name_entry", "feature_type");
  w.writeU1(s.bit, "feature_name_entry", "bit");
  w.writePadded(asciiEncode(s.name, "feature_name_entry", "name"), checkSize(46, "feature_name_entry", "name", w.length), 0, "feature_name_entry", "name");
}

/**
 * Encodes a feature_name_entry from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeFeatureNameEntry(value: FeatureNameEntryFields): Uint8Array {
  const w = new ByteWriter();
  writeFeatureNameEntry(w, value, { root: value }, {});
  return w.finish();
}

function readBitmapsExtension(io: ByteReader, c: DecodeContext, p: NoParams): BitmapsExtension {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.nbBitmaps = io.readU4("bitmaps_extension", "nb_bitmaps");
  }
  {
    const at = io.pos;
    const v = io.readU4("bitmaps_extension", "reserved");
    if (!(v === 0)) invalidValue("bitmaps_extension", "reserved", at, `must be ${0}, is ${String(v)}`);
    s.reserved = v;
  }
  {
    s.bitmapDirectorySize = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    s.bitmapDirectoryOffset = (io.alignToByte(), readU64(io, c, {  }));
  }
  if (!c.fieldsOnly) {
    defineLazy(s, "bitmapDirectory", () => {
      const r = c.rootIo.at(instU64_num(s.bitmapDirectoryOffset, {}, c), "bitmaps_extension", "bitmap_directory");
      let out: unknown;
      {
        out = readBitmapDirectory(r.substream(checkSize(instU64_num(s.bitmapDirectorySize, {}, c), "bitmaps_extension", "bitmap_directory", r.pos), "bitmaps_extension", "bitmap_directory"), c, {  });
      }
      return out;
    });
  }
  return s as BitmapsExtension;
}

/**
 * Decodes a bitmaps_extension at `offset` of `bytes`. Bitmaps extension - where the persistent dirty bitmap directory is.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeBitmapsExtension(bytes: Uint8Array | PagedBytes, offset = 0): BitmapsExtension {
  const rootIo = new ByteReader(bytes);
  return readBitmapsExtension(rootIo.at(offset, "bitmaps_extension", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a bitmaps_extension at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeBitmapsExtension without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeBitmapsExtensionFields(bytes: Uint8Array | PagedBytes, offset = 0): BitmapsExtensionFields {
  const rootIo = new ByteReader(bytes);
  return readBitmapsExtension(rootIo.at(offset, "bitmaps_extension", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeBitmapsExtension(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("bitmaps_extension", '(value)', w.length, 'expected an object');
  w.writeU4(s.nbBitmaps, "bitmaps_extension", "nb_bitmaps");
  w.writeU4(s.reserved, "bitmaps_extension", "reserved");
  w.alignToByte(); writeU64(w, s.bitmapDirectorySize, c, {  });
  w.alignToByte(); writeU64(w, s.bitmapDirectoryOffset, c, {  });
}

/**
 * Encodes a bitmaps_extension from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeBitmapsExtension(value: BitmapsExtensionFields): Uint8Array {
  const w = new ByteWriter();
  writeBitmapsExtension(w, value, { root: value }, {});
  return w.finish();
}

function readFullDiskEncryptionPointer(io: ByteReader, c: DecodeContext, p: NoParams): FullDiskEncryptionPointer {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.offset = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    s.length = (io.alignToByte(), readU64(io, c, {  }));
  }
  return s as FullDiskEncryptionPointer;
}

/**
 * Decodes a full_disk_encryption_pointer at `offset` of `bytes`. Full disk encryption header pointer extension (LUKS header location).
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeFullDiskEncryptionPointer(bytes: Uint8Array | PagedBytes, offset = 0): FullDiskEncryptionPointer {
  const rootIo = new ByteReader(bytes);
  return readFullDiskEncryptionPointer(rootIo.at(offset, "full_disk_encryption_pointer", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a full_disk_encryption_pointer at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeFullDiskEncryptionPointer without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeFullDiskEncryptionPointerFields(bytes: Uint8Array | PagedBytes, offset = 0): FullDiskEncryptionPointerFields {
  const rootIo = new ByteReader(bytes);
  return readFullDiskEncryptionPointer(rootIo.at(offset, "full_disk_encryption_pointer", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeFullDiskEncryptionPointer(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("full_disk_encryption_pointer", '(value)', w.length, 'expected an object');
  w.alignToByte(); writeU64(w, s.offset, c, {  });
  w.alignToByte(); writeU64(w, s.length, c, {  });
}

/**
 * Encodes a full_disk_encryption_pointer from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeFullDiskEncryptionPointer(value: FullDiskEncryptionPointerFields): Uint8Array {
  const w = new ByteWriter();
  writeFullDiskEncryptionPointer(w, value, { root: value }, {});
  return w.finish();
}

function instL1Entry_isAllocated(s: any, p: L1EntryParams, c: { root: unknown }): boolean {
  return ((s.l2OffsetHi !== 0) || (s.l2OffsetLo !== 0));
}

function readL1Entry(io: ByteReader, c: DecodeContext, p: L1EntryParams): L1Entry {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.copied = (io.readBitsBe(1, "l1_entry", "copied") !== 0);
  }
  {
    s.reservedHi = io.readBitsBe(7, "l1_entry", "reserved_hi");
  }
  {
    s.l2OffsetHi = io.readBitsBe(24, "l1_entry", "l2_offset_hi");
  }
  {
    s.l2OffsetLo = io.readBitsBe(23, "l1_entry", "l2_offset_lo");
  }
  {
    s.reservedLo = io.readBitsBe(9, "l1_entry", "reserved_lo");
  }
  if (!c.fieldsOnly) {
    defineValue(s, "isAllocated", instL1Entry_isAllocated(s, p, c));
    defineLazy(s, "l2Table", () => {
      if (!(instL1Entry_isAllocated(s, p, c))) return undefined;
      const r = c.rootIo.at(((s.l2OffsetHi * 4294967296) + (s.l2OffsetLo * 512)), "l1_entry", "l2_table");
      let out: unknown;
      {
        out = readL2Table(r.substream(checkSize((1 << p.clusterBits), "l1_entry", "l2_table", r.pos), "l1_entry", "l2_table"), c, { clusterBits: p.clusterBits, extendedL2: p.extendedL2 });
      }
      return out;
    });
  }
  return s as L1Entry;
}

/**
 * Decodes a l1_entry at `offset` of `bytes`. An L1 table entry - the offset of one L2 table.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeL1Entry(bytes: Uint8Array | PagedBytes, offset = 0, params: L1EntryParams): L1Entry {
  const rootIo = new ByteReader(bytes);
  return readL1Entry(rootIo.at(offset, "l1_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, params);
}

/**
 * Decodes only the seq fields of a l1_entry at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeL1Entry without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeL1EntryFields(bytes: Uint8Array | PagedBytes, offset = 0, params: L1EntryParams): L1EntryFields {
  const rootIo = new ByteReader(bytes);
  return readL1Entry(rootIo.at(offset, "l1_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, params);
}

function writeL1Entry(w: ByteWriter, s: any, c: EncodeContext, p: L1EntryParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("l1_entry", '(value)', w.length, 'expected an object');
  w.writeBitsBe(1, s.copied, "l1_entry", "copied");
  w.writeBitsBe(7, s.reservedHi, "l1_entry", "reserved_hi");
  w.writeBitsBe(24, s.l2OffsetHi, "l1_entry", "l2_offset_hi");
  w.writeBitsBe(23, s.l2OffsetLo, "l1_entry", "l2_offset_lo");
  w.writeBitsBe(9, s.reservedLo, "l1_entry", "reserved_lo");
}

/**
 * Encodes a l1_entry from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeL1Entry(value: L1EntryFields, params: L1EntryParams): Uint8Array {
  const w = new ByteWriter();
  writeL1Entry(w, value, { root: value }, params);
  return w.finish();
}

function readL2Table(io: ByteReader, c: DecodeContext, p: L2TableParams): L2Table {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    const n = checkCount(io, ((1 << p.clusterBits) >>> (p.extendedL2 ? 4 : 3)), 2, "l2_table", "entries");
    const arr: unknown[] = [];
    for (let i = 0; i < n; i++) {
      const before = io.mark();
      arr.push((io.alignToByte(), readL2Entry(io, c, { clusterBits: p.clusterBits, extendedL2: p.extendedL2 })));
      requireProgress(io, before, "l2_table", "entries");
    }
    s.entries = arr;
  }
  return s as L2Table;
}

/**
 * Decodes a l2_table at `offset` of `bytes`. An L2 table - one cluster of standard (8-byte) or extended (16-byte) entries.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeL2Table(bytes: Uint8Array | PagedBytes, offset = 0, params: L2TableParams): L2Table {
  const rootIo = new ByteReader(bytes);
  return readL2Table(rootIo.at(offset, "l2_table", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, params);
}

/**
 * Decodes only the seq fields of a l2_table at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeL2Table without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeL2TableFields(bytes: Uint8Array | PagedBytes, offset = 0, params: L2TableParams): L2TableFields {
  const rootIo = new ByteReader(bytes);
  return readL2Table(rootIo.at(offset, "l2_table", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, params);
}

function writeL2Table(w: ByteWriter, s: any, c: EncodeContext, p: L2TableParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("l2_table", '(value)', w.length, 'expected an object');
  if (!Array.isArray(s.entries)) inconsistent("l2_table", "entries", w.length, 'expected an array');
  if (s.entries.length !== ((1 << p.clusterBits) >>> (p.extendedL2 ? 4 : 3))) inconsistent("l2_table", "entries", w.length, `has ${s.entries.length} element(s) but its count expression says ${((1 << p.clusterBits) >>> (p.extendedL2 ? 4 : 3))}`);
  for (let i = 0; i < s.entries.length; i++) {
    const el = s.entries[i];
    w.alignToByte(); writeL2Entry(w, el, c, { clusterBits: p.clusterBits, extendedL2: p.extendedL2 });
  }
}

/**
 * Encodes a l2_table from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeL2Table(value: L2TableFields, params: L2TableParams): Uint8Array {
  const w = new ByteWriter();
  writeL2Table(w, value, { root: value }, params);
  return w.finish();
}

function instL2Entry_compressedSectorsShift(s: any, p: L2EntryParams, c: { root: unknown }): number {
  return (38 - p.clusterBits);
}

function instL2Entry_compressedAdditionalSectors(s: any, p: L2EntryParams, c: { root: unknown }): number | undefined {
  return s.compressed ? (s.compressedHi >>> instL2Entry_compressedSectorsShift(s, p, c)) : undefined;
}

function instL2Entry_compressedOffsetHi(s: any, p: L2EntryParams, c: { root: unknown }): number | undefined {
  return s.compressed ? (s.compressedHi & ((1 << instL2Entry_compressedSectorsShift(s, p, c)) - 1)) : undefined;
}

function readL2Entry(io: ByteReader, c: DecodeContext, p: L2EntryParams): L2Entry {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.copied = (io.readBitsBe(1, "l2_entry", "copied") !== 0);
  }
  {
    s.compressed = (io.readBitsBe(1, "l2_entry", "compressed") !== 0);
  }
  if ((!s.compressed)) {
    s.reservedHi = io.readBitsBe(6, "l2_entry", "reserved_hi");
  }
  if ((!s.compressed)) {
    s.hostOffsetHi = io.readBitsBe(24, "l2_entry", "host_offset_hi");
  }
  if ((!s.compressed)) {
    s.hostOffsetLo = io.readBitsBe(23, "l2_entry", "host_offset_lo");
  }
  if ((!s.compressed)) {
    s.reservedLo = io.readBitsBe(8, "l2_entry", "reserved_lo");
  }
  if ((!s.compressed)) {
    s.zero = (io.readBitsBe(1, "l2_entry", "zero") !== 0);
  }
  if (s.compressed) {
    s.compressedHi = io.readBitsBe(30, "l2_entry", "compressed_hi");
  }
  if (s.compressed) {
    s.compressedLo = io.readBitsBe(32, "l2_entry", "compressed_lo");
  }
  if (p.extendedL2) {
    s.zeroBitmap = io.readBitsBe(32, "l2_entry", "zero_bitmap");
  }
  if (p.extendedL2) {
    s.allocBitmap = io.readBitsBe(32, "l2_entry", "alloc_bitmap");
  }
  if (!c.fieldsOnly) {
    defineValue(s, "compressedSectorsShift", instL2Entry_compressedSectorsShift(s, p, c));
    defineValue(s, "compressedAdditionalSectors", instL2Entry_compressedAdditionalSectors(s, p, c));
    defineValue(s, "compressedOffsetHi", instL2Entry_compressedOffsetHi(s, p, c));
  }
  return s as L2Entry;
}

/**
 * Decodes a l2_entry at `offset` of `bytes`. An L2 table entry. Word 0 is a standard descriptor (bit 62 clear) or a compressed cluster
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeL2Entry(bytes: Uint8Array | PagedBytes, offset = 0, params: L2EntryParams): L2Entry {
  const rootIo = new ByteReader(bytes);
  return readL2Entry(rootIo.at(offset, "l2_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, params);
}

/**
 * Decodes only the seq fields of a l2_entry at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeL2Entry without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeL2EntryFields(bytes: Uint8Array | PagedBytes, offset = 0, params: L2EntryParams): L2EntryFields {
  const rootIo = new ByteReader(bytes);
  return readL2Entry(rootIo.at(offset, "l2_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, params);
}

function writeL2Entry(w: ByteWriter, s: any, c: EncodeContext, p: L2EntryParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("l2_entry", '(value)', w.length, 'expected an object');
  w.writeBitsBe(1, s.copied, "l2_entry", "copied");
  w.writeBitsBe(1, s.compressed, "l2_entry", "compressed");
  if ((!s.compressed)) {
    if (s.reservedHi === undefined) inconsistent("l2_entry", "reserved_hi", w.length, 'is required by its if: condition but missing');
    w.writeBitsBe(6, s.reservedHi, "l2_entry", "reserved_hi");
  } else if (s.reservedHi !== undefined) inconsistent("l2_entry", "reserved_hi", w.length, 'must be absent: its if: condition is false');
  if ((!s.compressed)) {
    if (s.hostOffsetHi === undefined) inconsistent("l2_entry", "host_offset_hi", w.length, 'is required by its if: condition but missing');
    w.writeBitsBe(24, s.hostOffsetHi, "l2_entry", "host_offset_hi");
  } else if (s.hostOffsetHi !== undefined) inconsistent("l2_entry", "host_offset_hi", w.length, 'must be absent: its if: condition is false');
  if ((!s.compressed)) {
    if (s.hostOffsetLo === undefined) inconsistent("l2_entry", "host_offset_lo", w.length, 'is required by its if: condition but missing');
    w.writeBitsBe(23, s.hostOffsetLo, "l2_entry", "host_offset_lo");
  } else if (s.hostOffsetLo !== undefined) inconsistent("l2_entry", "host_offset_lo", w.length, 'must be absent: its if: condition is false');
  if ((!s.compressed)) {
    if (s.reservedLo === undefined) inconsistent("l2_entry", "reserved_lo", w.length, 'is required by its if: condition but missing');
    w.writeBitsBe(8, s.reservedLo, "l2_entry", "reserved_lo");
  } else if (s.reservedLo !== undefined) inconsistent("l2_entry", "reserved_lo", w.length, 'must be absent: its if: condition is false');
  if ((!s.compressed)) {
    if (s.zero === undefined) inconsistent("l2_entry", "zero", w.length, 'is required by its if: condition but missing');
    w.writeBitsBe(1, s.zero, "l2_entry", "zero");
  } else if (s.zero !== undefined) inconsistent("l2_entry", "zero", w.length, 'must be absent: its if: condition is false');
  if (s.compressed) {
    if (s.compressedHi === undefined) inconsistent("l2_entry", "compressed_hi", w.length, 'is required by its if: condition but missing');
    w.writeBitsBe(30, s.compressedHi, "l2_entry", "compressed_hi");
  } else if (s.compressedHi !== undefined) inconsistent("l2_entry", "compressed_hi", w.length, 'must be absent: its if: condition is false');
  if (s.compressed) {
    if (s.compressedLo === undefined) inconsistent("l2_entry", "compressed_lo", w.length, 'is required by its if: condition but missing');
    w.writeBitsBe(32, s.compressedLo, "l2_entry", "compressed_lo");
  } else if (s.compressedLo !== undefined) inconsistent("l2_entry", "compressed_lo", w.length, 'must be absent: its if: condition is false');
  if (p.extendedL2) {
    if (s.zeroBitmap === undefined) inconsistent("l2_entry", "zero_bitmap", w.length, 'is required by its if: condition but missing');
    w.writeBitsBe(32, s.zeroBitmap, "l2_entry", "zero_bitmap");
  } else if (s.zeroBitmap !== undefined) inconsistent("l2_entry", "zero_bitmap", w.length, 'must be absent: its if: condition is false');
  if (p.extendedL2) {
    if (s.allocBitmap === undefined) inconsistent("l2_entry", "alloc_bitmap", w.length, 'is required by its if: condition but missing');
    w.writeBitsBe(32, s.allocBitmap, "l2_entry", "alloc_bitmap");
  } else if (s.allocBitmap !== undefined) inconsistent("l2_entry", "alloc_bitmap", w.length, 'must be absent: its if: condition is false');
}

/**
 * Encodes a l2_entry from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeL2Entry(value: L2EntryFields, params: L2EntryParams): Uint8Array {
  const w = new ByteWriter();
  writeL2Entry(w, value, { root: value }, params);
  return w.finish();
}

function readRefcountTable(io: ByteReader, c: DecodeContext, p: RefcountTableParams): RefcountTable {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    const arr: unknown[] = [];
    for (let i = 0; !io.isEof(); i++) {
      const before = io.mark();
      arr.push((io.alignToByte(), readRefcountTableEntry(io, c, { clusterBits: p.clusterBits, refcountOrder: p.refcountOrder })));
      requireProgress(io, before, "refcount_table", "entries");
    }
    s.entries = arr;
  }
  return s as RefcountTable;
}

/**
 * Decodes a refcount_table at `offset` of `bytes`. The refcount table - offsets of refcount blocks.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeRefcountTable(bytes: Uint8Array | PagedBytes, offset = 0, params: RefcountTableParams): RefcountTable {
  const rootIo = new ByteReader(bytes);
  return readRefcountTable(rootIo.at(offset, "refcount_table", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, params);
}

/**
 * Decodes only the seq fields of a refcount_table at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeRefcountTable without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeRefcountTableFields(bytes: Uint8Array | PagedBytes, offset = 0, params: RefcountTableParams): RefcountTableFields {
  const rootIo = new ByteReader(bytes);
  return readRefcountTable(rootIo.at(offset, "refcount_table", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, params);
}

function writeRefcountTable(w: ByteWriter, s: any, c: EncodeContext, p: RefcountTableParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("refcount_table", '(value)', w.length, 'expected an object');
  if (!Array.isArray(s.entries)) inconsistent("refcount_table", "entries", w.length, 'expected an array');
  for (let i = 0; i < s.entries.length; i++) {
    const el = s.entries[i];
    w.alignToByte(); writeRefcountTableEntry(w, el, c, { clusterBits: p.clusterBits, refcountOrder: p.refcountOrder });
  }
}

/**
 * Encodes a refcount_table from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeRefcountTable(value: RefcountTableFields, params: RefcountTableParams): Uint8Array {
  const w = new ByteWriter();
  writeRefcountTable(w, value, { root: value }, params);
  return w.finish();
}

function instRefcountTableEntry_isAllocated(s: any, p: RefcountTableEntryParams, c: { root: unknown }): boolean {
  return ((s.refblockOffsetHi !== 0) || (s.refblockOffsetLo !== 0));
}

function readRefcountTableEntry(io: ByteReader, c: DecodeContext, p: RefcountTableEntryParams): RefcountTableEntry {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.refblockOffsetHi = io.readBitsBe(32, "refcount_table_entry", "refblock_offset_hi");
  }
  {
    s.refblockOffsetLo = io.readBitsBe(23, "refcount_table_entry", "refblock_offset_lo");
  }
  {
    s.reserved = io.readBitsBe(9, "refcount_table_entry", "reserved");
  }
  if (!c.fieldsOnly) {
    defineValue(s, "isAllocated", instRefcountTableEntry_isAllocated(s, p, c));
    defineLazy(s, "refcountBlock", () => {
      if (!(instRefcountTableEntry_isAllocated(s, p, c))) return undefined;
      const r = c.rootIo.at(((s.refblockOffsetHi * 4294967296) + (s.refblockOffsetLo * 512)), "refcount_table_entry", "refcount_block");
      let out: unknown;
      {
        out = readRefcountBlock(r.substream(checkSize((1 << p.clusterBits), "refcount_table_entry", "refcount_block", r.pos), "refcount_table_entry", "refcount_block"), c, { refcountOrder: p.refcountOrder });
      }
      return out;
    });
  }
  return s as RefcountTableEntry;
}

/**
 * Decodes a refcount_table_entry at `offset` of `bytes`. A refcount table entry - the offset of one refcount block.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeRefcountTableEntry(bytes: Uint8Array | PagedBytes, offset = 0, params: RefcountTableEntryParams): RefcountTableEntry {
  const rootIo = new ByteReader(bytes);
  return readRefcountTableEntry(rootIo.at(offset, "refcount_table_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, params);
}

/**
 * Decodes only the seq fields of a refcount_table_entry at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeRefcountTableEntry without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeRefcountTableEntryFields(bytes: Uint8Array | PagedBytes, offset = 0, params: RefcountTableEntryParams): RefcountTableEntryFields {
  const rootIo = new ByteReader(bytes);
  return readRefcountTableEntry(rootIo.at(offset, "refcount_table_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, params);
}

function writeRefcountTableEntry(w: ByteWriter, s: any, c: EncodeContext, p: RefcountTableEntryParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("refcount_table_entry", '(value)', w.length, 'expected an object');
  w.writeBitsBe(32, s.refblockOffsetHi, "refcount_table_entry", "refblock_offset_hi");
  w.writeBitsBe(23, s.refblockOffsetLo, "refcount_table_entry", "refblock_offset_lo");
  w.writeBitsBe(9, s.reserved, "refcount_table_entry", "reserved");
}

/**
 * Encodes a refcount_table_entry from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeRefcountTableEntry(value: RefcountTableEntryFields, params: RefcountTableEntryParams): Uint8Array {
  const w = new ByteWriter();
  writeRefcountTableEntry(w, value, { root: value }, params);
  return w.finish();
}

function readRefcountBlock(io: ByteReader, c: DecodeContext, p: RefcountBlockParams): RefcountBlock {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    const arr: unknown[] = [];
    for (let i = 0; !io.isEof(); i++) {
      const before = io.mark();
      arr.push((() => {
      const on = p.refcountOrder;
      const sub = io;
      if (on === 0) return (sub.readBitsLe(1, "refcount_block", "entries") !== 0);
      if (on === 1) return sub.readBitsLe(2, "refcount_block", "entries");
      if (on === 2) return sub.readBitsLe(4, "refcount_block", "entries");
      if (on === 3) return sub.readU1("refcount_block", "entries");
      if (on === 4) return sub.readU2("refcount_block", "entries");
      if (on === 5) return sub.readU4("refcount_block", "entries");
      if (on === 6) return (sub.alignToByte(), readU64(sub, c, {  }));
      return undefined;
    })());
      requireProgress(io, before, "refcount_block", "entries");
    }
    s.entries = arr;
  }
  return s as RefcountBlock;
}

/**
 * Decodes a refcount_block at `offset` of `bytes`. A refcount block - one cluster of refcounts of 2^refcount_order bits each. Widths below 8
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeRefcountBlock(bytes: Uint8Array | PagedBytes, offset = 0, params: RefcountBlockParams): RefcountBlock {
  const rootIo = new ByteReader(bytes);
  return readRefcountBlock(rootIo.at(offset, "refcount_block", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, params);
}

/**
 * Decodes only the seq fields of a refcount_block at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeRefcountBlock without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeRefcountBlockFields(bytes: Uint8Array | PagedBytes, offset = 0, params: RefcountBlockParams): RefcountBlockFields {
  const rootIo = new ByteReader(bytes);
  return readRefcountBlock(rootIo.at(offset, "refcount_block", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, params);
}

function writeRefcountBlock(w: ByteWriter, s: any, c: EncodeContext, p: RefcountBlockParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("refcount_block", '(value)', w.length, 'expected an object');
  if (!Array.isArray(s.entries)) inconsistent("refcount_block", "entries", w.length, 'expected an array');
  for (let i = 0; i < s.entries.length; i++) {
    const el = s.entries[i];
    {
      const on = p.refcountOrder;
      const sub = w;
      if (on === 0) { sub.writeBitsLe(1, el, "refcount_block", "entries"); }
      else if (on === 1) { sub.writeBitsLe(2, el, "refcount_block", "entries"); }
      else if (on === 2) { sub.writeBitsLe(4, el, "refcount_block", "entries"); }
      else if (on === 3) { sub.writeU1(el, "refcount_block", "entries"); }
      else if (on === 4) { sub.writeU2(el, "refcount_block", "entries"); }
      else if (on === 5) { sub.writeU4(el, "refcount_block", "entries"); }
      else if (on === 6) { sub.alignToByte(); writeU64(sub, el, c, {  }); }
      else if (el !== undefined) inconsistent("refcount_block", "entries", w.length, `no case of the switch matches ${String(on)}`);
    }
  }
}

/**
 * Encodes a refcount_block from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeRefcountBlock(value: RefcountBlockFields, params: RefcountBlockParams): Uint8Array {
  const w = new ByteWriter();
  writeRefcountBlock(w, value, { root: value }, params);
  return w.finish();
}

function readSnapshotEntry(io: ByteReader, c: DecodeContext, p: SnapshotEntryParams): SnapshotEntry {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.l1TableOffset = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    s.l1Size = io.readU4("snapshot_entry", "l1_size");
  }
  {
    s.lenId = io.readU2("snapshot_entry", "len_id");
  }
  {
    s.lenName = io.readU2("snapshot_entry", "len_name");
  }
  {
    s.dateSec = io.readU4("snapshot_entry", "date_sec");
  }
  {
    s.dateNsec = io.readU4("snapshot_entry", "date_nsec");
  }
  {
    s.vmClockNsec = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    s.vmStateSize = io.readU4("snapshot_entry", "vm_state_size");
  }
  {
    s.lenExtraData = io.readU4("snapshot_entry", "len_extra_data");
  }
  {
    s.extraData = readSnapshotExtraData(io.substream(checkSize(s.lenExtraData, "snapshot_entry", "extra_data", io.pos), "snapshot_entry", "extra_data"), c, { len: s.lenExtraData });
  }
  {
    s.idStr = asciiDecode(io.readBytes(checkSize(s.lenId, "snapshot_entry", "id_str", io.pos), "snapshot_entry", "id_str"));
  }
  {
    s.name = asciiDecode(io.readBytes(checkSize(s.lenName, "snapshot_entry", "name", io.pos), "snapshot_entry", "name"));
  }
  if ((!p.isLast)) {
    s.padding = io.readBytes(checkSize(kaitaiMod((8 - kaitaiMod((((40 + s.lenExtraData) + s.lenId) + s.lenName), 8)), 8), "snapshot_entry", "padding", io.pos), "snapshot_entry", "padding");
  }
  if (!c.fieldsOnly) {
    defineLazy(s, "l1Table", () => {
      const r = c.rootIo.at(instU64_num(s.l1TableOffset, {}, c), "snapshot_entry", "l1_table");
      let out: unknown;
      {
        const n = checkCount(r, s.l1Size, 64, "snapshot_entry", "l1_table");
        const arr: unknown[] = [];
        for (let i = 0; i < n; i++) {
          const before = r.mark();
          arr.push((r.alignToByte(), readL1Entry(r, c, { clusterBits: p.clusterBits, extendedL2: p.extendedL2 })));
          requireProgress(r, before, "snapshot_entry", "l1_table");
        }
        out = arr;
      }
      return out;
    });
  }
  return s as SnapshotEntry;
}

/**
 * Decodes a snapshot_entry at `offset` of `bytes`. One snapshot table entry; every entry but the last is padded to a multiple of 8 bytes.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeSnapshotEntry(bytes: Uint8Array | PagedBytes, offset = 0, params: SnapshotEntryParams): SnapshotEntry {
  const rootIo = new ByteReader(bytes);
  return readSnapshotEntry(rootIo.at(offset, "snapshot_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, params);
}

/**
 * Decodes only the seq fields of a snapshot_entry at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeSnapshotEntry without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeSnapshotEntryFields(bytes: Uint8Array | PagedBytes, offset = 0, params: SnapshotEntryParams): SnapshotEntryFields {
  const rootIo = new ByteReader(bytes);
  return readSnapshotEntry(rootIo.at(offset, "snapshot_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, params);
}

function writeSnapshotEntry(w: ByteWriter, s: any, c: EncodeContext, p: SnapshotEntryParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("snapshot_entry", '(value)', w.length, 'expected an object');
  w.alignToByte(); writeU64(w, s.l1TableOffset, c, {  });
  w.writeU4(s.l1Size, "snapshot_entry", "l1_size");
  w.writeU2(s.lenId, "snapshot_entry", "len_id");
  w.writeU2(s.lenName, "snapshot_entry", "len_name");
  w.writeU4(s.dateSec, "snapshot_entry", "date_sec");
  w.writeU4(s.dateNsec, "snapshot_entry", "date_nsec");
  w.alignToByte(); writeU64(w, s.vmClockNsec, c, {  });
  w.writeU4(s.vmStateSize, "snapshot_entry", "vm_state_size");
  w.writeU4(s.lenExtraData, "snapshot_entry", "len_extra_data");
  {
    const sub = new ByteWriter();
    writeSnapshotExtraData(sub, s.extraData, c, { len: s.lenExtraData });
    w.writeBytes(sub.finish(), "snapshot_entry", "extra_data", checkSize(s.lenExtraData, "snapshot_entry", "extra_data", w.length));
  }
  w.writeBytes(asciiEncode(s.idStr, "snapshot_entry", "id_str"), "snapshot_entry", "id_str", checkSize(s.lenId, "snapshot_entry", "id_str", w.length));
  w.writeBytes(asciiEncode(s.name, "snapshot_entry", "name"), "snapshot_entry", "name", checkSize(s.lenName, "snapshot_entry", "name", w.length));
  if ((!p.isLast)) {
    if (s.padding === undefined) inconsistent("snapshot_entry", "padding", w.length, 'is required by its if: condition but missing');
    w.writeBytes(s.padding, "snapshot_entry", "padding", checkSize(kaitaiMod((8 - kaitaiMod((((40 + s.lenExtraData) + s.lenId) + s.lenName), 8)), 8), "snapshot_entry", "padding", w.length));
  } else if (s.padding !== undefined) inconsistent("snapshot_entry", "padding", w.length, 'must be absent: its if: condition is false');
}

/**
 * Encodes a snapshot_entry from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeSnapshotEntry(value: SnapshotEntryFields, params: SnapshotEntryParams): Uint8Array {
  const w = new ByteWriter();
  writeSnapshotEntry(w, value, { root: value }, params);
  return w.finish();
}

function readSnapshotExtraData(io: ByteReader, c: DecodeContext, p: SnapshotExtraDataParams): SnapshotExtraData {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  if ((p.len >= 8)) {
    s.vmStateSizeLarge = (io.alignToByte(), readU64(io, c, {  }));
  }
  if ((p.len >= 16)) {
    s.diskSize = (io.alignToByte(), readU64(io, c, {  }));
  }
  if ((p.len >= 24)) {
    s.icount = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    s.unknown = io.readBytes(checkSize((p.len - ((p.len >= 24) ? 24 : ((p.len >= 16) ? 16 : ((p.len >= 8) ? 8 : 0)))), "snapshot_extra_data", "unknown", io.pos), "snapshot_extra_data", "unknown");
  }
  return s as SnapshotExtraData;
}

/**
 * Decodes a snapshot_extra_data at `offset` of `bytes`. Snapshot extra data; fields are present when the extra data is long enough to hold them.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeSnapshotExtraData(bytes: Uint8Array | PagedBytes, offset = 0, params: SnapshotExtraDataParams): SnapshotExtraData {
  const rootIo = new ByteReader(bytes);
  return readSnapshotExtraData(rootIo.at(offset, "snapshot_extra_data", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, params);
}

/**
 * Decodes only the seq fields of a snapshot_extra_data at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeSnapshotExtraData without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeSnapshotExtraDataFields(bytes: Uint8Array | PagedBytes, offset = 0, params: SnapshotExtraDataParams): SnapshotExtraDataFields {
  const rootIo = new ByteReader(bytes);
  return readSnapshotExtraData(rootIo.at(offset, "snapshot_extra_data", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, params);
}

function writeSnapshotExtraData(w: ByteWriter, s: any, c: EncodeContext, p: SnapshotExtraDataParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("snapshot_extra_data", '(value)', w.length, 'expected an object');
  if ((p.len >= 8)) {
    if (s.vmStateSizeLarge === undefined) inconsistent("snapshot_extra_data", "vm_state_size_large", w.length, 'is required by its if: condition but missing');
    w.alignToByte(); writeU64(w, s.vmStateSizeLarge, c, {  });
  } else if (s.vmStateSizeLarge !== undefined) inconsistent("snapshot_extra_data", "vm_state_size_large", w.length, 'must be absent: its if: condition is false');
  if ((p.len >= 16)) {
    if (s.diskSize === undefined) inconsistent("snapshot_extra_data", "disk_size", w.length, 'is required by its if: condition but missing');
    w.alignToByte(); writeU64(w, s.diskSize, c, {  });
  } else if (s.diskSize !== undefined) inconsistent("snapshot_extra_data", "disk_size", w.length, 'must be absent: its if: condition is false');
  if ((p.len >= 24)) {
    if (s.icount === undefined) inconsistent("snapshot_extra_data", "icount", w.length, 'is required by its if: condition but missing');
    w.alignToByte(); writeU64(w, s.icount, c, {  });
  } else if (s.icount !== undefined) inconsistent("snapshot_extra_data", "icount", w.length, 'must be absent: its if: condition is false');
  w.writeBytes(s.unknown, "snapshot_extra_data", "unknown", checkSize((p.len - ((p.len >= 24) ? 24 : ((p.len >= 16) ? 16 : ((p.len >= 8) ? 8 : 0)))), "snapshot_extra_data", "unknown", w.length));
}

/**
 * Encodes a snapshot_extra_data from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeSnapshotExtraData(value: SnapshotExtraDataFields, params: SnapshotExtraDataParams): Uint8Array {
  const w = new ByteWriter();
  writeSnapshotExtraData(w, value, { root: value }, params);
  return w.finish();
}

function readBitmapDirectory(io: ByteReader, c: DecodeContext, p: NoParams): BitmapDirectory {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    const arr: unknown[] = [];
    for (let i = 0; !io.isEof(); i++) {
      const before = io.mark();
      arr.push((io.alignToByte(), readBitmapDirectoryEntry(io, c, {  })));
      requireProgress(io, before, "bitmap_directory", "entries");
    }
    s.entries = arr;
  }
  return s as BitmapDirectory;
}

/**
 * Decodes a bitmap_directory at `offset` of `bytes`. The persistent bitmap directory - variable-length entries, each padded to 8 bytes.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeBitmapDirectory(bytes: Uint8Array | PagedBytes, offset = 0): BitmapDirectory {
  const rootIo = new ByteReader(bytes);
  return readBitmapDirectory(rootIo.at(offset, "bitmap_directory", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a bitmap_directory at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeBitmapDirectory without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeBitmapDirectoryFields(bytes: Uint8Array | PagedBytes, offset = 0): BitmapDirectoryFields {
  const rootIo = new ByteReader(bytes);
  return readBitmapDirectory(rootIo.at(offset, "bitmap_directory", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeBitmapDirectory(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("bitmap_directory", '(value)', w.length, 'expected an object');
  if (!Array.isArray(s.entries)) inconsistent("bitmap_directory", "entries", w.length, 'expected an array');
  for (let i = 0; i < s.entries.length; i++) {
    const el = s.entries[i];
    w.alignToByte(); writeBitmapDirectoryEntry(w, el, c, {  });
  }
}

/**
 * Encodes a bitmap_directory from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeBitmapDirectory(value: BitmapDirectoryFields): Uint8Array {
  const w = new ByteWriter();
  writeBitmapDirectory(w, value, { root: value }, {});
  return w.finish();
}

function readBitmapDirectoryEntry(io: ByteReader, c: DecodeContext, p: NoParams): BitmapDirectoryEntry {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.bitmapTableOffset = (io.alignToByte(), readU64(io, c, {  }));
  }
  {
    s.bitmapTableSize = io.readU4("bitmap_directory_entry", "bitmap_table_size");
  }
  {
    s.reservedFlags = io.readBitsBe(29, "bitmap_directory_entry", "reserved_flags");
  }
  {
    s.extraDataCompatible = (io.readBitsBe(1, "bitmap_directory_entry", "extra_data_compatible") !== 0);
  }
  {
    s.auto = (io.readBitsBe(1, "bitmap_directory_entry", "auto") !== 0);
  }
  {
    s.inUse = (io.readBitsBe(1, "bitmap_directory_entry", "in_use") !== 0);
  }
  {
    s.bitmapType = io.readU1("bitmap_directory_entry", "bitmap_type");
  }
  {
    s.granularityBits = io.readU1("bitmap_directory_entry", "granularity_bits");
  }
  {
    s.lenName = io.readU2("bitmap_directory_entry", "len_name");
  }
  {
    s.lenExtraData = io.readU4("bitmap_directory_entry", "len_extra_data");
  }
  {
    s.extraData = io.readBytes(checkSize(s.lenExtraData, "bitmap_directory_entry", "extra_data", io.pos), "bitmap_directory_entry", "extra_data");
  }
  {
    s.name = asciiDecode(io.readBytes(checkSize(s.lenName, "bitmap_directory_entry", "name", io.pos), "bitmap_directory_entry", "name"));
  }
  {
    s.padding = io.readBytes(checkSize(kaitaiMod((8 - kaitaiMod(((24 + s.lenExtraData) + s.lenName), 8)), 8), "bitmap_directory_entry", "padding", io.pos), "bitmap_directory_entry", "padding");
  }
  if (!c.fieldsOnly) {
    defineLazy(s, "bitmapTable", () => {
      const r = c.rootIo.at(instU64_num(s.bitmapTableOffset, {}, c), "bitmap_directory_entry", "bitmap_table");
      let out: unknown;
      {
        const n = checkCount(r, s.bitmapTableSize, 64, "bitmap_directory_entry", "bitmap_table");
        const arr: unknown[] = [];
        for (let i = 0; i < n; i++) {
          const before = r.mark();
          arr.push((r.alignToByte(), readBitmapTableEntry(r, c, {  })));
          requireProgress(r, before, "bitmap_directory_entry", "bitmap_table");
        }
        out = arr;
      }
      return out;
    });
  }
  return s as BitmapDirectoryEntry;
}

/**
 * Decodes a bitmap_directory_entry at `offset` of `bytes`. One bitmap directory entry.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeBitmapDirectoryEntry(bytes: Uint8Array | PagedBytes, offset = 0): BitmapDirectoryEntry {
  const rootIo = new ByteReader(bytes);
  return readBitmapDirectoryEntry(rootIo.at(offset, "bitmap_directory_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a bitmap_directory_entry at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeBitmapDirectoryEntry without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeBitmapDirectoryEntryFields(bytes: Uint8Array | PagedBytes, offset = 0): BitmapDirectoryEntryFields {
  const rootIo = new ByteReader(bytes);
  return readBitmapDirectoryEntry(rootIo.at(offset, "bitmap_directory_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeBitmapDirectoryEntry(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("bitmap_directory_entry", '(value)', w.length, 'expected an object');
  w.alignToByte(); writeU64(w, s.bitmapTableOffset, c, {  });
  w.writeU4(s.bitmapTableSize, "bitmap_directory_entry", "bitmap_table_size");
  w.writeBitsBe(29, s.reservedFlags, "bitmap_directory_entry", "reserved_flags");
  w.writeBitsBe(1, s.extraDataCompatible, "bitmap_directory_entry", "extra_data_compatible");
  w.writeBitsBe(1, s.auto, "bitmap_directory_entry", "auto");
  w.writeBitsBe(1, s.inUse, "bitmap_directory_entry", "in_use");
  w.writeU1(s.bitmapType, "bitmap_directory_entry", "bitmap_type");
  w.writeU1(s.granularityBits, "bitmap_directory_entry", "granularity_bits");
  w.writeU2(s.lenName, "bitmap_directory_entry", "len_name");
  w.writeU4(s.lenExtraData, "bitmap_directory_entry", "len_extra_data");
  w.writeBytes(s.extraData, "bitmap_directory_entry", "extra_data", checkSize(s.lenExtraData, "bitmap_directory_entry", "extra_data", w.length));
  w.writeBytes(asciiEncode(s.name, "bitmap_directory_entry", "name"), "bitmap_directory_entry", "name", checkSize(s.lenName, "bitmap_directory_entry", "name", w.length));
  w.writeBytes(s.padding, "bitmap_directory_entry", "padding", checkSize(kaitaiMod((8 - kaitaiMod(((24 + s.lenExtraData) + s.lenName), 8)), 8), "bitmap_directory_entry", "padding", w.length));
}

/**
 * Encodes a bitmap_directory_entry from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeBitmapDirectoryEntry(value: BitmapDirectoryEntryFields): Uint8Array {
  const w = new ByteWriter();
  writeBitmapDirectoryEntry(w, value, { root: value }, {});
  return w.finish();
}

function readBitmapTableEntry(io: ByteReader, c: DecodeContext, p: NoParams): BitmapTableEntry {
  const s: any = {};
  if (c.root === undefined) c.root = s;
  {
    s.reservedHi = io.readBitsBe(8, "bitmap_table_entry", "reserved_hi");
  }
  {
    s.offsetHi = io.readBitsBe(24, "bitmap_table_entry", "offset_hi");
  }
  {
    s.offsetLo = io.readBitsBe(23, "bitmap_table_entry", "offset_lo");
  }
  {
    s.reservedLo = io.readBitsBe(8, "bitmap_table_entry", "reserved_lo");
  }
  {
    s.allOnes = (io.readBitsBe(1, "bitmap_table_entry", "all_ones") !== 0);
  }
  return s as BitmapTableEntry;
}

/**
 * Decodes a bitmap_table_entry at `offset` of `bytes`. A bitmap table entry - the offset of one bitmap data cluster, or all-zeros/all-ones.
 * Reads only inside `bytes` (a buffer, or a PagedBytes source read as needed, whose own read errors pass through);
 * pointer instances are read on first access. Throws Qcow2FormatError only.
 */

export function decodeBitmapTableEntry(bytes: Uint8Array | PagedBytes, offset = 0): BitmapTableEntry {
  const rootIo = new ByteReader(bytes);
  return readBitmapTableEntry(rootIo.at(offset, "bitmap_table_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: false }, {});
}

/**
 * Decodes only the seq fields of a bitmap_table_entry at `offset` of `bytes` (nested structures too): the same
 * values and errors as decodeBitmapTableEntry without its instances, which are neither computed nor defined. For hot
 * paths that read single table entries. Throws Qcow2FormatError only.
 */

export function decodeBitmapTableEntryFields(bytes: Uint8Array | PagedBytes, offset = 0): BitmapTableEntryFields {
  const rootIo = new ByteReader(bytes);
  return readBitmapTableEntry(rootIo.at(offset, "bitmap_table_entry", '(start)'), { root: undefined, rootIo, fieldsOnly: true }, {});
}

function writeBitmapTableEntry(w: ByteWriter, s: any, c: EncodeContext, p: NoParams): void {
  if (typeof s !== 'object' || s === null) inconsistent("bitmap_table_entry", '(value)', w.length, 'expected an object');
  w.writeBitsBe(8, s.reservedHi, "bitmap_table_entry", "reserved_hi");
  w.writeBitsBe(24, s.offsetHi, "bitmap_table_entry", "offset_hi");
  w.writeBitsBe(23, s.offsetLo, "bitmap_table_entry", "offset_lo");
  w.writeBitsBe(8, s.reservedLo, "bitmap_table_entry", "reserved_lo");
  w.writeBitsBe(1, s.allOnes, "bitmap_table_entry", "all_ones");
}

/**
 * Encodes a bitmap_table_entry from its seq fields (instances are ignored). Checks every value fits its
 * field and agrees with the sizes, counts and conditions that depend on it; does not enforce valid:.
 */

export function encodeBitmapTableEntry(value: BitmapTableEntryFields): Uint8Array {
  const w = new ByteWriter();
  writeBitmapTableEntry(w, value, { root: value }, {});
  return w.finish();
}
