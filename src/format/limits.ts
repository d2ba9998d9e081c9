/**
 * QEMU 7.2's limits and metadata-overlap section masks in one place — this project's own qcow2.h.
 * Every constant mirrors one QEMU macro (named in its comment, from block/qcow2.h unless said
 * otherwise) with QEMU's value; 64-bit values are exact bigints. The on-disk format's own positions,
 * masks and feature bits are not here: they come from spec/qcow2.ksy (generated/qcow2.ts).
 * Pure data: no imports.
 */

/** INT_MAX (<limits.h>): the largest C int, 2^31 - 1 (QEMU's int-typed sizes and counts stop there). */
export const INT_MAX = 0x7fffffff;

/** INT64_MAX (<stdint.h>): the largest int64_t, 2^63 - 1 (QEMU's file offsets and lengths are int64_t). */
export const INT64_MAX = (1n << 63n) - 1n;

/**
 * BDRV_MAX_LENGTH (include/block/block_int-common.h): QEMU_ALIGN_DOWN(INT64_MAX, BDRV_MAX_ALIGNMENT =
 * 1 GiB) = 2^63 - 2^30; the block layer fails a request that ends past it with -EIO.
 */
export const BDRV_MAX_LENGTH = INT64_MAX & ~((1n << 30n) - 1n);

/** MIN_CLUSTER_BITS: the smallest cluster QEMU opens, 2^9 = 512 bytes. */
export const MIN_CLUSTER_BITS = 9;

/** MAX_CLUSTER_BITS: the largest cluster QEMU opens, 2^21 = 2 MiB. */
export const MAX_CLUSTER_BITS = 21;

/** QCOW_MAX_REFTABLE_SIZE: the largest refcount table QEMU accepts, 8 MiB (in bytes). */
export const QCOW_MAX_REFTABLE_SIZE = 8 * 1024 * 1024;

/** QCOW_MAX_L1_SIZE: the largest L1 table QEMU accepts, 32 MiB (in bytes). */
export const QCOW_MAX_L1_SIZE = 32 * 1024 * 1024;

/** QCOW_MAX_SNAPSHOTS: the most snapshots QEMU accepts, 65536. */
export const QCOW_MAX_SNAPSHOTS = 65536;

/** QCOW_MAX_SNAPSHOTS_SIZE: the largest snapshot table QEMU reads, 1024 × QCOW_MAX_SNAPSHOTS bytes (64 MiB). */
export const QCOW_MAX_SNAPSHOTS_SIZE = 1024 * QCOW_MAX_SNAPSHOTS;

/** QCOW_MAX_SNAPSHOT_EXTRA_DATA: the most extra data per snapshot table entry QEMU accepts, 1024 bytes. */
export const QCOW_MAX_SNAPSHOT_EXTRA_DATA = 1024;

/** QCOW2_MAX_BITMAPS: the most persistent bitmaps QEMU accepts, 65535. */
export const QCOW2_MAX_BITMAPS = 65535;

/** QCOW2_MAX_BITMAP_DIRECTORY_SIZE: the largest bitmap directory QEMU accepts, 1024 × QCOW2_MAX_BITMAPS bytes. */
export const QCOW2_MAX_BITMAP_DIRECTORY_SIZE = 1024 * QCOW2_MAX_BITMAPS;

/** BME_MAX_TABLE_SIZE (block/qcow2-bitmap.c): the most entries of one bitmap table, 2^27. */
export const BME_MAX_TABLE_SIZE = 0x8000000;

/** BME_MAX_PHYS_SIZE (block/qcow2-bitmap.c): the most bitmap data one bitmap table may map (entries × cluster size), 512 MiB. */
export const BME_MAX_PHYS_SIZE = 0x20000000;

/** BME_MAX_NAME_SIZE (block/qcow2-bitmap.c): the longest bitmap name, 1023 bytes. */
export const BME_MAX_NAME_SIZE = 1023;

/**
 * BME_RESERVED_FLAGS (block/qcow2-bitmap.c): the directory entry flags QEMU refuses, every bit but
 * in_use and auto (QEMU counts extra_data_compatible, bit 2, as reserved too).
 */
export const BME_RESERVED_FLAGS = 0xfffffffc;

// Metadata overlap sections (enum QCow2MetadataOverlap): one bit per kind of metadata the
// overlap check (qcow2_check_metadata_overlap) protects from data writes.

/** QCOW2_OL_MAIN_HEADER: the header cluster (cluster 0). */
export const QCOW2_OL_MAIN_HEADER = 1 << 0;
/** QCOW2_OL_ACTIVE_L1: the active L1 table. */
export const QCOW2_OL_ACTIVE_L1 = 1 << 1;
/** QCOW2_OL_ACTIVE_L2: the L2 tables of the active L1 table. */
export const QCOW2_OL_ACTIVE_L2 = 1 << 2;
/** QCOW2_OL_REFCOUNT_TABLE: the refcount table. */
export const QCOW2_OL_REFCOUNT_TABLE = 1 << 3;
/** QCOW2_OL_REFCOUNT_BLOCK: the refcount blocks. */
export const QCOW2_OL_REFCOUNT_BLOCK = 1 << 4;
/** QCOW2_OL_SNAPSHOT_TABLE: the snapshot table. */
export const QCOW2_OL_SNAPSHOT_TABLE = 1 << 5;
/** QCOW2_OL_INACTIVE_L1: the snapshots' L1 tables. */
export const QCOW2_OL_INACTIVE_L1 = 1 << 6;
/** QCOW2_OL_INACTIVE_L2: the snapshots' L2 tables (checking them reads the file). */
export const QCOW2_OL_INACTIVE_L2 = 1 << 7;
/** QCOW2_OL_BITMAP_DIRECTORY: the persistent bitmap directory. */
export const QCOW2_OL_BITMAP_DIRECTORY = 1 << 8;

/** QCOW2_OL_CONSTANT: the sections checked in constant time (overlap-check=constant). */
export const QCOW2_OL_CONSTANT = QCOW2_OL_MAIN_HEADER | QCOW2_OL_ACTIVE_L1 | QCOW2_OL_REFCOUNT_TABLE
  | QCOW2_OL_SNAPSHOT_TABLE | QCOW2_OL_BITMAP_DIRECTORY;

/** QCOW2_OL_CACHED: the sections checked without reading the file — all but the inactive L2 tables. */
export const QCOW2_OL_CACHED = QCOW2_OL_CONSTANT | QCOW2_OL_ACTIVE_L2 | QCOW2_OL_REFCOUNT_BLOCK | QCOW2_OL_INACTIVE_L1;

/** QCOW2_OL_ALL: every section (overlap-check=all). */
export const QCOW2_OL_ALL = QCOW2_OL_CACHED | QCOW2_OL_INACTIVE_L2;

/**
 * The overlap check QEMU 7.2 applies when no option chooses one: qcow2_update_options_prepare takes
 * overlap-check.template "cached" by default, i.e. QCOW2_OL_CACHED.
 */
export const QCOW2_OL_DEFAULT_TEMPLATE = QCOW2_OL_CACHED;
