/**
 * `qemu-img create -f qcow2` as a pure function: the same option validation (same messages), and
 * byte for byte the image QEMU 7.2 writes (docs/format/create.md, docs/format/allocation.md#preallocation).
 *
 * QEMU does not compute a layout; it writes a 3-cluster skeleton (header, a 1-cluster refcount
 * table, one empty refcount block), reopens it and lets its ordinary allocator place everything
 * else: the refcounts of the skeleton, the L1 table (truncate → qcow2_grow_l1_table), and with
 * preallocation=metadata every L2 table and data run (preallocate_co → qcow2_alloc_host_offset).
 * Refcount blocks and refcount-table growth happen inside that allocator (alloc_refcount_block,
 * qcow2_refcount_area), so where they land depends on the exact order of allocations. This module
 * therefore builds the skeleton and replays that process in a transaction over it with the model's
 * one allocator (refcount.ts) and mapping code (mapping.ts), the same code guest writes use, then
 * writes the final header and extensions. Nothing outside the function is mutated and nothing
 * depends on the environment.
 */
import {
  encodeBackingFileFormat,
  encodeExternalDataFileName,
  encodeFeatureNameEntry,
  encodeHeaderExtension,
  encodeL2Entry,
  encodeRefcountTableEntry,
  FeatureType,
  HeaderExtensionType,
  L1_ENTRY_FIXED_SIZE,
  type FeatureNameEntryFields,
  type HeaderExtensionFields,
} from '../../generated/qcow2.ts';
import { asciiEncode } from '../codec/index.ts';
import { BDRV_MAX_LENGTH, INT64_MAX, INT_MAX, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, QCOW_MAX_L1_SIZE } from '../format/index.ts';
import { offsetToParts } from '../format/index.ts';
import { emptyHostFile, truncateHost, writeHost, type HostFile } from './host-file.ts';
import { encodeHeaderState, V2_HEADER_LENGTH, V3_HEADER_LENGTH } from './header.ts';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  freshSession,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2,
  type HeaderState,
  type Image,
} from './image.ts';
import { clusterTable, normalEntry } from './mapping.ts';
import { allocClusters, allocClustersAt } from './refcount.ts';
import { beginTx, geo, hostFlush, hostWrite, setHeaderFields } from './tx.ts';

/** `compat=` values qemu-img accepts (0.10 = v2, 1.1 = v3). */
export type CompatLevel = '0.10' | '1.1' | 'v2' | 'v3';

/** The `qemu-img create -f qcow2 -o …` options the model implements. */
export interface CreateOptions {
  /** Virtual size in bytes; rounded up to a multiple of 512 like qemu-img does. */
  readonly size: bigint;
  /** `cluster_size` (default 65536). */
  readonly clusterSize?: number;
  /** `compat` (default 1.1). */
  readonly compat?: CompatLevel | string;
  /** `refcount_bits` (default 16). */
  readonly refcountBits?: number;
  readonly extendedL2?: boolean;
  /** `compression_type` (default zlib). */
  readonly compressionType?: 'zlib' | 'zstd' | string;
  readonly lazyRefcounts?: boolean;
  /** Backing file name, stored verbatim. */
  readonly backingFile?: string;
  /** Backing format name (required with a backing file, like qemu-img 7.2). */
  readonly backingFmt?: string;
  /** External data file name, stored verbatim in the data-file header extension. */
  readonly dataFile?: string;
  readonly dataFileRaw?: boolean;
  /** `preallocation` (default off). falloc/full are not modelled. */
  readonly preallocation?: 'off' | 'metadata' | string;
}

/** Why createImage refused the options; each code has one qemu-img 7.2 message. */
export type CreateErrorCode =
  | 'invalid-size'
  | 'backing-fmt-required'
  | 'invalid-compat'
  | 'invalid-compression-type'
  | 'invalid-preallocation'
  | 'unsupported-preallocation'
  | 'extended-l2-compat'
  | 'cluster-size'
  | 'extended-l2-cluster-size'
  | 'backing-preallocation'
  | 'backing-fmt-without-backing'
  | 'lazy-refcounts-compat'
  | 'refcount-width'
  | 'refcount-width-compat'
  | 'data-file-raw-without-data-file'
  | 'backing-data-file-raw'
  | 'data-file-compat'
  | 'compression-type-compat'
  | 'size-exceeds-maximum'
  | 'image-too-large'
  | 'backing-name-too-long';

/**
 * A refused option combination. `message` is qemu-img's text after the `qemu-img: FILE: ` prefix
 * (for `invalid-size`, qemu-img prints it after `qemu-img: ` alone; for `backing-fmt-required`
 * qemu-img adds a second line naming the probed format, which the model cannot know).
 */
export class CreateError extends Error {
  override readonly name = 'CreateError';
  readonly code: CreateErrorCode;
  constructor(code: CreateErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** What createImage returns: the image, and the external data file when one was asked for. */
export interface CreateResult {
  readonly image: Image;
  readonly dataFile?: HostFile;
}

// ---------------------------------------------------------------------------------------------
// Constants of QEMU 7.2 (block/qcow2.h, include/block/block_int-common.h)

/** QCOW_MAX_L1_SIZE in L1 entries (4 Mi). */
const MAX_L1_ENTRIES = QCOW_MAX_L1_SIZE / L1_ENTRY_FIXED_SIZE;
/** BDRV_REQUEST_MAX_BYTES = (INT_MAX >> 9) << 9. */
const REQUEST_MAX_BYTES = 0x7ffffe00;
/** Largest image length the block layer accepts: BDRV_MAX_LENGTH, printed by 7.2 as 9223372035781033984. */
const MAX_IMAGE_LENGTH = BDRV_MAX_LENGTH;

/** The feature name table QEMU 7.2 writes (docs/format/create.md#feature-name-table-written): 8 entries in this order. */
const FEATURE_TABLE: readonly FeatureNameEntryFields[] = [
  { featureType: FeatureType.INCOMPATIBLE, bit: 0, name: 'dirty bit' },
  { featureType: FeatureType.INCOMPATIBLE, bit: 1, name: 'corrupt bit' },
  { featureType: FeatureType.INCOMPATIBLE, bit: 2, name: 'external data file' },
  { featureType: FeatureType.INCOMPATIBLE, bit: 3, name: 'compression type' },
  { featureType: FeatureType.INCOMPATIBLE, bit: 4, name: 'extended L2 entries' },
  { featureType: FeatureType.COMPATIBLE, bit: 0, name: 'lazy refcounts' },
  { featureType: FeatureType.AUTOCLEAR, bit: 0, name: 'bitmaps' },
  { featureType: FeatureType.AUTOCLEAR, bit: 1, name: 'raw external data' },
];

// ---------------------------------------------------------------------------------------------
// Option validation

interface Resolved {
  readonly size: bigint;
  readonly version: 2 | 3;
  readonly clusterBits: number;
  readonly refcountOrder: number;
  readonly extendedL2: boolean;
  readonly zstd: boolean;
  readonly lazy: boolean;
  readonly backingFile?: string;
  readonly backingFmt?: string;
  readonly dataFile?: string;
  readonly dataFileRaw: boolean;
  readonly prealloc: boolean;
}

function fail(code: CreateErrorCode, message: string): never {
  throw new CreateError(code, message);
}

const V3_ONLY = 'compatibility level 1.1 and above (use version=v3 or greater)';

/**
 * The options after qemu-img's checks, in qemu-img 7.2's order: size parsing, backing format
 * presence (bdrv_img_create), QAPI enum parsing (version, compression-type, preallocation), then
 * qcow2_co_create's checks in source order (docs/format/create.md#refusals), then the size limits that
 * truncate reports.
 */
function resolveOptions(o: CreateOptions): Resolved {
  if (o.size < 0n || o.size > INT64_MAX) fail('invalid-size', 'Invalid image size specified. Must be between 0 and 9223372036854775807.');
  if (o.backingFile !== undefined && o.backingFmt === undefined) fail('backing-fmt-required', 'Backing file specified without backing format');

  let version: 2 | 3 = 3;
  if (o.compat !== undefined) {
    if (o.compat === '0.10' || o.compat === 'v2') version = 2;
    else if (o.compat === '1.1' || o.compat === 'v3') version = 3;
    else fail('invalid-compat', `Parameter 'version' does not accept value '${o.compat}'`);
  }
  const ct = o.compressionType ?? 'zlib';
  if (ct !== 'zlib' && ct !== 'zstd') fail('invalid-compression-type', `Parameter 'compression-type' does not accept value '${ct}'`);
  const pa = o.preallocation ?? 'off';
  if (pa !== 'off' && pa !== 'metadata' && pa !== 'falloc' && pa !== 'full') {
    fail('invalid-preallocation', `Parameter 'preallocation' does not accept value '${pa}'`);
  }
  // qemu-img's "Silently round up size" happens before qcow2_co_create.
  const size = (o.size + 511n) & ~511n;

  const extendedL2 = o.extendedL2 ?? false;
  if (extendedL2 && version < 3) fail('extended-l2-compat', `Extended L2 entries are only supported with ${V3_ONLY}`);
  const cs = o.clusterSize ?? 65536;
  const clusterBits = Number.isInteger(cs) && cs > 0 ? Math.log2(cs) : NaN;
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    fail('cluster-size', 'Cluster size must be a power of two between 512 and 2048k');
  }
  if (extendedL2 && cs < 512 * 32) fail('extended-l2-cluster-size', 'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');

  let prealloc = pa !== 'off';
  if (o.backingFile !== undefined && prealloc && !extendedL2) {
    fail('backing-preallocation', 'Backing file and preallocation can only be used at the same time if extended_l2 is on');
  }
  if (o.backingFmt !== undefined && o.backingFile === undefined) fail('backing-fmt-without-backing', 'Backing format cannot be used without backing file');
  const lazy = o.lazyRefcounts ?? false;
  if (version < 3 && lazy) fail('lazy-refcounts-compat', `Lazy refcounts only supported with ${V3_ONLY}`);
  const rb = o.refcountBits ?? 16;
  if (!Number.isInteger(rb) || rb <= 0 || rb > 64 || (rb & (rb - 1)) !== 0) {
    fail('refcount-width', 'Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && rb !== 16) {
    fail('refcount-width-compat', 'Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)');
  }
  const dataFileRaw = o.dataFileRaw ?? false;
  if (dataFileRaw && o.dataFile === undefined) fail('data-file-raw-without-data-file', 'data-file-raw requires data-file');
  if (dataFileRaw && o.backingFile !== undefined) fail('backing-data-file-raw', 'Backing file and data-file-raw cannot be used at the same time');
  // data-file-raw forces metadata preallocation: the L2 tables must map the data file 1:1 (docs/format/features.md#raw-external-data).
  if (dataFileRaw) prealloc = true;
  if (o.dataFile !== undefined && version < 3) fail('data-file-compat', `External data files are only supported with ${V3_ONLY}`);
  if (ct !== 'zlib' && version < 3) fail('compression-type-compat', `Non-zlib compression type is only supported with ${V3_ONLY}`);
  if (pa === 'falloc' || pa === 'full') fail('unsupported-preallocation', `preallocation=${pa} is not modelled`);

  // blk_truncate refuses lengths above the block layer maximum before qcow2 sees them.
  if (size > MAX_IMAGE_LENGTH) fail('size-exceeds-maximum', `Could not resize image: offset(${size}) exceeds maximum(${MAX_IMAGE_LENGTH})`);
  const l2Entries = (1 << clusterBits) / (extendedL2 ? 16 : 8);
  const l1Entries = ceilDiv(size, BigInt(1 << clusterBits) * BigInt(l2Entries));
  if (l1Entries > BigInt(MAX_L1_ENTRIES)) {
    fail('image-too-large', "The image size is too large for file format 'qcow2' (try using a larger cluster size)");
  }
  if (o.backingFile !== undefined && o.backingFile.length > 1023) {
    fail('backing-name-too-long', `Could not assign backing file '${o.backingFile}' with format '${o.backingFmt}': Invalid argument`);
  }
  return {
    size,
    version,
    clusterBits,
    refcountOrder: Math.log2(rb),
    extendedL2,
    zstd: ct === 'zstd',
    lazy,
    ...(o.backingFile !== undefined ? { backingFile: o.backingFile } : {}),
    ...(o.backingFmt !== undefined ? { backingFmt: o.backingFmt } : {}),
    ...(o.dataFile !== undefined ? { dataFile: o.dataFile } : {}),
    dataFileRaw,
    prealloc,
  };
}

function ceilDiv(a: bigint, b: bigint): bigint {
  return (a + b - 1n) / b;
}

// ---------------------------------------------------------------------------------------------
// Header extensions (qcow2_update_header order, docs/format/create.md#header-extensions-written and docs/format/extensions.md)

function extension(type: number, data: HeaderExtensionFields['data'], len: number): Uint8Array {
  return encodeHeaderExtension({ type, lenData: len, data, padding: new Uint8Array((8 - (len % 8)) % 8) });
}

function headerExtensions(r: Resolved): Uint8Array[] {
  const out: Uint8Array[] = [];
  if (r.backingFmt !== undefined) {
    const len = encodeBackingFileFormat({ name: r.backingFmt }).length;
    out.push(extension(HeaderExtensionType.BACKING_FILE_FORMAT, { name: r.backingFmt }, len));
  }
  if (r.dataFile !== undefined) {
    const len = encodeExternalDataFileName({ name: r.dataFile }).length;
    out.push(extension(HeaderExtensionType.EXTERNAL_DATA_FILE, { name: r.dataFile }, len));
  }
  // QEMU 7.2 omits the feature name table for cluster sizes ≤ 4 KiB (docs/format/create.md#header-extensions-written, docs/format/surprises.md#13-no-feature-names-with-small-clusters).
  if (r.version === 3 && r.clusterBits > 12) {
    const len = FEATURE_TABLE.reduce((n, e) => n + encodeFeatureNameEntry(e).length, 0);
    out.push(extension(HeaderExtensionType.FEATURE_NAME_TABLE, { entries: [...FEATURE_TABLE] }, len));
  }
  out.push(extension(HeaderExtensionType.END, new Uint8Array(0), 0));
  return out;
}

// ---------------------------------------------------------------------------------------------
// createImage
/**
 * The image (and external data file) `qemu-img create -f qcow2` 7.2 writes for `opts`, byte for
 * byte: header and extensions, refcount table and blocks, L1 table, and with
 * preallocation=metadata (forced by data_file_raw) every L2 table and data cluster, placed by the
 * model's own allocator (refcount.ts) exactly as QEMU's places them. The file is not padded to a
 * cluster boundary. Throws CreateError with qemu-img's message for a refused combination. Pure:
 * the result depends only on `opts`.
 */
export function createImage(opts: CreateOptions): CreateResult {
  const r = resolveOptions(opts);
  const cb = r.clusterBits;
  const cs = 1 << cb;
  const csn = BigInt(cs);
  const l2Entries = cs / (r.extendedL2 ? 16 : 8);
  const hasDataFile = r.dataFile !== undefined;

  let incompat = 0n;
  if (hasDataFile) incompat |= INCOMPAT_DATA_FILE;
  if (r.zstd) incompat |= INCOMPAT_COMPRESSION;
  if (r.extendedL2) incompat |= INCOMPAT_EXTL2;
  const headerLength = r.version === 3 ? V3_HEADER_LENGTH : V2_HEADER_LENGTH;

  // qcow2_co_create's skeleton: a header whose refcount table is cluster 1 (one cluster), reftable
  // entry 0 → cluster 2, an empty refcount block there; nothing refcounted yet, no L1 table.
  const skeleton: HeaderState = {
    version: r.version,
    backingFileOffset: 0n,
    backingFileSize: 0,
    clusterBits: cb,
    size: 0n,
    cryptMethod: 0,
    l1Size: 0,
    l1TableOffset: 0n,
    refcountTableOffset: csn,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0n,
    incompatibleFeatures: r.version === 3 ? incompat : 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: r.version === 3 ? r.refcountOrder : 4,
    headerLength,
    compressionType: r.zstd ? 1 : 0,
  };
  let skeletonFile = truncateHost(emptyHostFile(), 3n * csn);
  skeletonFile = writeHost(skeletonFile, 0n, encodeHeaderState(skeleton));
  const entry0 = offsetToParts(2n * csn, 32);
  skeletonFile = writeHost(skeletonFile, csn, encodeRefcountTableEntry(
    { refblockOffsetHi: entry0.hi, refblockOffsetLo: entry0.lo9, reserved: 0 },
    { clusterBits: cb, refcountOrder: skeleton.refcountOrder },
  ));
  // Reopen (a fresh session: allocation hint 0) and let the ordinary allocator do the rest.
  const tx = beginTx({ file: skeletonFile, header: skeleton, session: freshSession() });

  // The skeleton's own refcounts: qcow2_alloc_clusters(3 clusters) must return 0.
  if (allocClusters(tx, 3n * csn) !== 0n) throw new Error('first cluster of a new image is in use');

  // Truncate: qcow2_grow_l1_table with the exact size (docs/format/create.md#fresh-image-layout).
  const l1Size = Number(ceilDiv(r.size, csn * BigInt(l2Entries)));
  if (l1Size > 0) {
    if (l1Size > INT_MAX / 8) throw new CreateError('image-too-large', "The image size is too large for file format 'qcow2' (try using a larger cluster size)");
    const l1Offset = allocClusters(tx, BigInt(l1Size * 8));
    // The new L1 is written with exactly l1_size * 8 bytes (why the file ends mid-cluster), then
    // the header's l1_size and l1_table_offset (one 12-byte write).
    hostWrite(tx, l1Offset, new Uint8Array(l1Size * 8));
    hostFlush(tx);
    setHeaderFields(tx, { l1Size, l1TableOffset: l1Offset });
  }

  // preallocate_co: L2 tables and data runs in QEMU's order (docs/format/allocation.md#preallocation).
  let dataEnd = 0n;
  if (r.prealloc && r.size > 0n) {
    const guestClusters = Number(ceilDiv(r.size, csn));
    const maxRun = Math.floor(REQUEST_MAX_BYTES / cs);
    const chunkClusters = Math.floor(INT_MAX / cs);
    const g = geo(tx);
    let start = 0;
    while (start < guestClusters) {
      // One qcow2_alloc_host_offset call: at most INT_MAX aligned down to a cluster.
      const callEnd = Math.min(guestClusters, start + chunkClusters);
      let expected = -1n;
      let runStart = -1n;
      let pos = start;
      while (pos < callEnd) {
        const l2Offset = clusterTable(tx, BigInt(pos) * csn); // handle_copied → get_cluster_table → l2_allocate
        let n = Math.min(callEnd - pos, l2Entries - (pos % l2Entries), maxRun);
        let host: bigint;
        if (hasDataFile) {
          host = BigInt(pos) * csn; // external data file: host offset == guest offset, nothing refcounted (docs/format/features.md#external-data-file)
        } else if (expected < 0n) {
          host = allocClusters(tx, BigInt(n) * csn);
        } else {
          n = allocClustersAt(tx, expected, n);
          host = expected;
          if (n === 0) break; // cannot extend the contiguous run
        }
        if (runStart < 0n) runStart = host;
        // qcow2_alloc_cluster_link_l2: COPIED | host offset (extended-L2 bitmaps stay 0: every
        // subcluster UNALLOCATED_ALLOC, docs/format/allocation.md#preallocation), one write for the run's entries.
        const entries = new Uint8Array(n * g.l2EntrySize);
        for (let i = 0; i < n; i++) {
          entries.set(encodeL2Entry(normalEntry(tx, host + BigInt(i) * csn, true, false), { clusterBits: cb, extendedL2: r.extendedL2 }), i * g.l2EntrySize);
        }
        hostWrite(tx, l2Offset + BigInt((pos % l2Entries) * g.l2EntrySize), entries);
        pos += n;
        expected = host + BigInt(n) * csn;
      }
      // Measured on 7.2: the file is extended to the end of the last data *subcluster*, even when
      // the virtual size ends mid-cluster (64 KiB clusters: 1 MiB + 512 → 1441792 bytes, not
      // 1376768 + 512; extended L2 with 2 KiB subclusters: 3589632 → 3590144).
      const sc = BigInt(r.extendedL2 ? cs / 32 : cs);
      const bytes = pos === guestClusters ? ((r.size - BigInt(start) * csn + sc - 1n) / sc) * sc : BigInt(pos - start) * csn;
      dataEnd = runStart + bytes;
      start = pos;
    }
  }

  // preallocate_co extends the (data) file to the end of the last data run.
  let file = tx.img.file;
  if (!hasDataFile && file.length < dataEnd) file = truncateHost(file, dataEnd);

  // The final header (qcow2_update_header rewrites the whole of cluster 0).
  const exts = headerExtensions(r);
  const extBytes = exts.reduce((n, e) => n + e.length, 0);
  const backingName = r.backingFile !== undefined ? asciiEncode(r.backingFile, 'qcow2', 'backing_file_name') : undefined;
  if (headerLength + extBytes + (backingName?.length ?? 0) > cs) {
    // qcow2_update_header: header_ext_add / backing name → -ENOSPC.
    throw new CreateError('backing-name-too-long', `Could not assign backing file '${r.backingFile}' with format '${r.backingFmt}': No space left on device`);
  }
  const header: HeaderState = {
    ...skeleton,
    backingFileOffset: backingName !== undefined ? BigInt(headerLength + extBytes) : 0n,
    backingFileSize: backingName?.length ?? 0,
    size: r.size,
    l1Size: tx.img.header.l1Size,
    l1TableOffset: tx.img.header.l1TableOffset,
    refcountTableOffset: tx.img.header.refcountTableOffset,
    refcountTableClusters: tx.img.header.refcountTableClusters,
    compatibleFeatures: r.version === 3 && r.lazy ? COMPAT_LAZY_REFCOUNTS : 0n,
    autoclearFeatures: r.version === 3 && r.dataFileRaw ? AUTOCLEAR_DATA_FILE_RAW : 0n,
  };
  const cluster0 = new Uint8Array(cs);
  let at = 0;
  for (const part of [encodeHeaderState(header), ...exts, ...(backingName !== undefined ? [backingName] : [])]) {
    cluster0.set(part, at);
    at += part.length;
  }
  file = writeHost(file, 0n, cluster0);

  const image: Image = { file, header, session: freshSession() };
  if (!hasDataFile) return { image };
  // The data file: created with the (rounded) virtual size, all zeros (sparse).
  // With preallocation the data file, like the qcow2 file without one, is extended to the end of
  // the last data subcluster (measured on 7.2: 1049000 bytes → 1114112 with 64 KiB clusters).
  const dataFile = truncateHost(emptyHostFile(), dataEnd > r.size ? dataEnd : r.size);
  return { image: { ...image, dataFile }, dataFile };
}
