/** The surface of the format layer (ARCHITECTURE.md): what the other layers may import from it. */
export { classifyL2Entry, compressedDescriptor, l1EntryWord, l1L2Offset, l2EntryWords, l2HostOffset, refcountBlockOffset, refcountValue, subclusterStates } from './entries.ts';
export type { L2Context, L2EntryClass, SubclusterState } from './entries.ts';
export { headerExtensionTypeHex } from './features.ts';
export type { DecodedFeatures } from './features.ts';
export { BDRV_MAX_LENGTH, BME_MAX_NAME_SIZE, BME_MAX_PHYS_SIZE, BME_MAX_TABLE_SIZE, BME_RESERVED_FLAGS, INT64_MAX, INT_MAX, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, QCOW2_MAX_BITMAPS, QCOW2_MAX_BITMAP_DIRECTORY_SIZE, QCOW2_OL_ACTIVE_L1, QCOW2_OL_ACTIVE_L2, QCOW2_OL_BITMAP_DIRECTORY, QCOW2_OL_DEFAULT_TEMPLATE, QCOW2_OL_INACTIVE_L1, QCOW2_OL_INACTIVE_L2, QCOW2_OL_MAIN_HEADER, QCOW2_OL_REFCOUNT_BLOCK, QCOW2_OL_REFCOUNT_TABLE, QCOW2_OL_SNAPSHOT_TABLE, QCOW_MAX_L1_SIZE, QCOW_MAX_REFTABLE_SIZE, QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOTS_SIZE, QCOW_MAX_SNAPSHOT_EXTRA_DATA } from './limits.ts';
export { bigIntToU64, jsonU64, offsetFromParts, offsetToParts, u64ToBigInt } from './u64.ts';
export { describeHeader, headerTablesOf, l2TableEntries, refcountOf, visitDistinctL2Tables, walkImage } from './walk.ts';
export type { HeaderInfo, HeaderTables, ImageWalk, L1Info, L2EntryInfo, L2TableInfo, RefcountBlockInfo, WalkError, WalkOptions } from './walk.ts';
