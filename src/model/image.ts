/**
 * The model's immutable Image: the host file itself (a persistent sparse HostFile holding every byte
 * of header, tables and data), an optional external data file, a decoded view of the header kept in
 * step with the file's header bytes, and the per-process state QEMU keeps in memory (allocation hint,
 * compressed-packing cursor). Nothing here mutates; every change produces a new Image sharing all
 * untouched pages with the old one.
 */
import { AutoclearFeatureMask, CompatibleFeatureMask, IncompatibleFeatureMask } from '../../generated/qcow2.ts';
import type { HeaderTables } from '../format/index.ts';
import type { HostFile } from './host-file.ts';

/** The decoded header fields the model works with (64-bit values as bigint). */
export interface HeaderState extends HeaderTables {
  readonly version: 2 | 3;
  readonly backingFileOffset: bigint;
  readonly backingFileSize: number;
  readonly clusterBits: number;
  readonly size: bigint;
  readonly cryptMethod: number;
  readonly incompatibleFeatures: bigint;
  readonly compatibleFeatures: bigint;
  readonly autoclearFeatures: bigint;
  readonly refcountOrder: number;
  readonly headerLength: number;
  readonly compressionType: number;
}

/** What QEMU keeps in memory for one open image (docs/format/allocation.md#cluster-allocator, docs/format/compression.md#packing-compressed-clusters): reset by every new open. */
export interface SessionState {
  /** First-fit allocation hint (`free_cluster_index`), a cluster index. */
  readonly freeClusterIndex: bigint;
  /** Where the next compressed blob may be packed (`free_byte_offset`), or 0 for "start a new cluster". */
  readonly freeByteOffset: bigint;
  /** The cluster holding `freeByteOffset` has had its refcount drop to 0 since the cursor was set. */
  readonly cursorClusterFreed: boolean;
  /**
   * How many times the model did NOT follow QEMU 7.2 because QEMU would have packed compressed data at
   * a stale cursor inside a cluster freed and reused since — QEMU's data-corruption bug
   * (docs/layout-differences.md). Layout comparisons with QEMU are meaningless once this is non-zero.
   */
  readonly staleCursorAvoided: number;
  /**
   * This session set the dirty bit (incompatible bit 0) itself: `qcow2_mark_dirty` on the first
   * allocating write of an image with lazy refcounts (src/model/close.ts). Absent/false when the bit
   * is clear, or when it was already set on disk when the image was loaded — a session that crashed
   * with lazy refcounts left it, and QEMU repairs the refcounts on a writable open (docs/format/open-validation.md#qemus-order
   * #25, docs/format/features.md#dirty-bit-and-lazy-refcounts) — openImage with `writable: true` (src/open/open.ts) does; after a plain loadImage the
   * model refuses to write such an image.
   */
  readonly dirtyBySession?: boolean;
  /**
   * The image was opened without BDRV_O_UNMAP (qemu-nbd's default `--discard=ignore`): clusters a
   * guest request frees (a zero write with unmap) keep their bytes in the host file instead of being
   * punched out (qcow2_update_options: discard_passthrough[QCOW2_DISCARD_REQUEST] follows
   * BDRV_O_UNMAP). Absent/false: passed down, as qemu-io and qemu-img open images.
   */
  readonly noDiscardPassthrough?: boolean;
}

/** A read-only backing image: its virtual size and a pure read function (zeros past its end). */
export interface BackingSource {
  readonly size: bigint;
  read(offset: bigint, length: number): Uint8Array;
  /**
   * The extents of `[offset, offset + length)` (inside `size`) as `qemu-img map` of the backing image
   * reports them, depths relative to it (src/model/block-status.ts). Absent: a raw file without holes, which
   * QEMU reports as data at its own offsets.
   */
  map?(offset: bigint, length: bigint): readonly import('./block-status.ts').MapExtent[];
}

export interface Image {
  /** The qcow2 file. */
  readonly file: HostFile;
  /** The external data file, when incompatible bit 2 is set. */
  readonly dataFile?: HostFile;
  /** The header, decoded; always equal to what the file's header bytes say. */
  readonly header: HeaderState;
  readonly session: SessionState;
  /** The backing image, when there is one and the caller supplied it. */
  readonly backing?: BackingSource;
}

/** Sizes derived from the header, computed once per use. */
export interface Geometry {
  readonly clusterBits: number;
  readonly clusterSize: number;
  /** 8 for standard L2 entries, 16 for extended ones. */
  readonly l2EntrySize: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  readonly l2Bits: number;
  readonly refcountBits: number;
  /** Refcounts per refcount block. */
  readonly refblockEntries: number;
  readonly extendedL2: boolean;
  /** Subclusters per cluster: 32 with extended L2, else 1. */
  readonly subclusters: number;
  readonly externalDataFile: boolean;
}

// Feature bit masks under QEMU's names (QCOW2_INCOMPAT_*, QCOW2_COMPAT_*, QCOW2_AUTOCLEAR_*), taken
// from the spec's feature-bit enums (generated/qcow2.ts).
/** Incompatible bit 0: the refcounts may be inconsistent (QCOW2_INCOMPAT_DIRTY). */
export const INCOMPAT_DIRTY = IncompatibleFeatureMask.DIRTY;
/** Incompatible bit 1: the metadata may be corrupt (QCOW2_INCOMPAT_CORRUPT). */
export const INCOMPAT_CORRUPT = IncompatibleFeatureMask.CORRUPT;
/** Incompatible bit 2: guest data lives in an external data file (QCOW2_INCOMPAT_DATA_FILE). */
export const INCOMPAT_DATA_FILE = IncompatibleFeatureMask.EXTERNAL_DATA_FILE;
/** Incompatible bit 3: the compression_type field is not zlib (QCOW2_INCOMPAT_COMPRESSION). */
export const INCOMPAT_COMPRESSION = IncompatibleFeatureMask.COMPRESSION_TYPE;
/** Incompatible bit 4: extended L2 entries (QCOW2_INCOMPAT_EXTL2). */
export const INCOMPAT_EXTL2 = IncompatibleFeatureMask.EXTENDED_L2;
/** Compatible bit 0: lazy refcounts (QCOW2_COMPAT_LAZY_REFCOUNTS). */
export const COMPAT_LAZY_REFCOUNTS = CompatibleFeatureMask.LAZY_REFCOUNTS;
/** Autoclear bit 0: the bitmaps extension is consistent (QCOW2_AUTOCLEAR_BITMAPS). */
export const AUTOCLEAR_BITMAPS = AutoclearFeatureMask.BITMAPS;
/** Autoclear bit 1: the external data file is a valid raw image (QCOW2_AUTOCLEAR_DATA_FILE_RAW). */
export const AUTOCLEAR_DATA_FILE_RAW = AutoclearFeatureMask.RAW_EXTERNAL_DATA;

/** Geometry per header object: headers are immutable values, and geometry is asked for on every access. */
const geometryCache = new WeakMap<HeaderState, Geometry>();

/** The geometry of an image with header `h` (the same frozen object for the same header object). */
export function geometryOf(h: HeaderState): Geometry {
  let g = geometryCache.get(h);
  if (g === undefined) {
    g = Object.freeze(computeGeometry(h));
    geometryCache.set(h, g);
  }
  return g;
}

function computeGeometry(h: HeaderState): Geometry {
  const extendedL2 = (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
  const clusterSize = 1 << h.clusterBits;
  const l2EntrySize = extendedL2 ? 16 : 8;
  const l2Entries = clusterSize / l2EntrySize;
  const refcountBits = 1 << h.refcountOrder;
  return {
    clusterBits: h.clusterBits,
    clusterSize,
    l2EntrySize,
    l2Entries,
    l2Bits: Math.log2(l2Entries),
    refcountBits,
    refblockEntries: (clusterSize * 8) / refcountBits,
    extendedL2,
    subclusters: extendedL2 ? 32 : 1,
    externalDataFile: (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n,
  };
}

/** The session state of a freshly opened image (QEMU starts every process with these). */
export function freshSession(): SessionState {
  return { freeClusterIndex: 0n, freeByteOffset: 0n, cursorClusterFreed: false, staleCursorAvoided: 0 };
}
