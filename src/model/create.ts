/**
 * `qemu-img create -f qcow2` as a pure function: the same option validation (same messages), and
 * byte for byte the image QEMU 7.2 writes (fact sheet §1.4, §1.5, §11.2).
 *
 * QEMU does not compute a layout; it writes a 3-cluster skeleton (header, a 1-cluster refcount
 * table, one empty refcount block), reopens it and lets its ordinary allocator place everything
 * else: the refcounts of the skeleton, the L1 table (truncate → qcow2_grow_l1_table), and with
 * preallocation=metadata every L2 table and data run (preallocate_co → qcow2_alloc_host_offset).
 * Refcount blocks and refcount-table growth happen inside that allocator (alloc_refcount_block,
 * qcow2_refcount_area), so where they land depends on the exact order of allocations. This module
 * therefore replays that process on a private, throw-away allocator state (`Alloc` below) and
 * then writes the resulting structures through the generated encoders. Nothing outside the
 * function is mutated and nothing depends on the environment.
 */
import {
  encodeExternalDataFileName,
  encodeFeatureNameEntry,
  encodeHeaderExtension,
  encodeL1Entry,
  encodeL2Entry,
  encodeRefcountBlock,
  encodeRefcountTable,
  encodeRefcountTableEntry,
  encodeBackingFileFormat,
  FeatureType,
  HeaderExtensionType,
  type FeatureNameEntryFields,
  type HeaderExtensionFields,
  type L2EntryFields,
  type RefcountTableEntryFields,
  type U64Fields,
} from '../../generated/qcow2.ts';
import { asciiEncode } from '../format/codec-support.ts';
import { offsetToParts } from '../format/u64.ts';
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

const MIN_CLUSTER_BITS = 9;
const MAX_CLUSTER_BITS = 21;
/** QCOW_MAX_L1_SIZE: 32 MiB of L1 entries. */
const MAX_L1_ENTRIES = (32 * 1024 * 1024) / 8;
/** QCOW_MAX_REFTABLE_SIZE: 8 MiB. */
const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
/** BDRV_REQUEST_MAX_BYTES = (INT_MAX >> 9) << 9. */
const REQUEST_MAX_BYTES = 0x7ffffe00;
const INT_MAX = 0x7fffffff;
/** Largest image length the block layer accepts (QEMU_ALIGN_DOWN(INT64_MAX, 2^30)... as printed by 7.2). */
const MAX_IMAGE_LENGTH = 9223372035781033984n;
const INT64_MAX = (1n << 63n) - 1n;

/** The feature name table QEMU 7.2 writes (fact sheet §1.5): 8 entries in this order. */
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
 * qcow2_co_create's checks in source order (fact sheet §1.4), then the size limits that
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
  // data-file-raw forces metadata preallocation: the L2 tables must map the data file 1:1 (§7.3).
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
// QEMU's cluster allocator, replayed (block/qcow2-refcount.c, fact sheet §4, §11.1)

/** Result of an allocator step that QEMU may restart with -EAGAIN. */
const AGAIN = 'again' as const;

/**
 * A private replay of BDRVQcow2State's refcount side during one `qemu-img create`. Mutable, but
 * created and discarded inside createImage: it never escapes and never sees caller data.
 * Cluster numbers are plain numbers (exact below 2^53 clusters).
 */
class Alloc {
  readonly cs: number;
  /** refcount_block_size: refcounts per refcount block. */
  readonly rbe: number;
  readonly refcountMax: number;
  /** Reftable entries (refblock cluster numbers, 0 = none); length = refcount_table_size. */
  reftable: number[];
  reftableCluster: number;
  maxReftableIndex: number;
  /** Refcount blocks by their cluster number. */
  readonly blocks = new Map<number, Float64Array>();
  freeClusterIndex = 0;
  /** The host file as written so far by the direct (uncached) writes, in QEMU's order. */
  file: HostFile;
  readonly refcountOrder: number;
  readonly clusterBits: number;

  constructor(clusterBits: number, refcountOrder: number, file: HostFile) {
    this.clusterBits = clusterBits;
    this.refcountOrder = refcountOrder;
    this.cs = 1 << clusterBits;
    this.rbe = (this.cs * 8) >> refcountOrder;
    const bits = 1 << refcountOrder;
    this.refcountMax = bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** bits - 1;
    // The skeleton qcow2_co_create writes: reftable at cluster 1 (one cluster), entry 0 → cluster 2.
    this.reftable = new Array<number>(this.cs / 8).fill(0);
    this.reftable[0] = 2;
    this.reftableCluster = 1;
    this.maxReftableIndex = 0;
    this.blocks.set(2, new Float64Array(this.rbe));
    this.file = file;
  }

  getRefcount(c: number): number {
    const ti = Math.floor(c / this.rbe);
    if (ti >= this.reftable.length) return 0;
    const b = this.reftable[ti] ?? 0;
    if (b === 0) return 0;
    return this.blocks.get(b)![c % this.rbe]!;
  }

  /** alloc_clusters_noref: first fit from the hint, the hint moving past everything scanned. */
  allocNoref(n: number): number {
    let run = 0;
    while (run < n) {
      const c = this.freeClusterIndex++;
      run = this.getRefcount(c) !== 0 ? 0 : run + 1;
    }
    return this.freeClusterIndex - n;
  }

  /** update_refcount: with QEMU's undo of the part already done when a refblock had to be made. */
  updateRefcount(start: number, n: number, addend: number): 'ok' | typeof AGAIN {
    if (n === 0) return 'ok';
    let oldTi = -1;
    let block: Float64Array | undefined;
    for (let c = start; c < start + n; c++) {
      const ti = Math.floor(c / this.rbe);
      if (ti !== oldTi) {
        const r = this.allocRefcountBlock(c);
        if (r === AGAIN) {
          // 7.2: "If the caller needs to restart the search for free clusters, try the same ones first".
          if (this.freeClusterIndex > start) this.freeClusterIndex = start;
          if (c > start) this.updateRefcount(start, c - start, -addend);
          return AGAIN;
        }
        block = r;
      }
      oldTi = ti;
      const i = c % this.rbe;
      const v = block![i]! + addend;
      if (v < 0 || v > this.refcountMax) throw new Error(`refcount of cluster ${c} out of range (${v})`);
      if (v === 0 && c < this.freeClusterIndex) this.freeClusterIndex = c;
      block![i] = v;
    }
    return 'ok';
  }

  /** alloc_refcount_block: the block covering cluster `c`, creating it (and a new reftable) if needed. */
  allocRefcountBlock(c: number): Float64Array | typeof AGAIN {
    const ti = Math.floor(c / this.rbe);
    if (ti < this.reftable.length && this.reftable[ti] !== 0) return this.blocks.get(this.reftable[ti]!)!;
    const nb = this.allocNoref(1);
    if (Math.floor(nb / this.rbe) === ti) {
      // Self-describing block (fact sheet §11.1).
      const arr = new Float64Array(this.rbe);
      arr[nb % this.rbe] = 1;
      this.blocks.set(nb, arr);
    } else {
      const r = this.updateRefcount(nb, 1, 1);
      if (r === AGAIN) return AGAIN;
      this.blocks.set(nb, new Float64Array(this.rbe));
    }
    if (ti < this.reftable.length) {
      this.reftable[ti] = nb;
      this.writeReftableEntry(ti, nb);
      this.maxReftableIndex = Math.max(this.maxReftableIndex, ti);
      return AGAIN;
    }
    const blocksUsed = Math.ceil(Math.max(c + 1, nb + 1) / this.rbe);
    this.refcountArea(blocksUsed * this.rbe, 0, false, ti, nb);
    return AGAIN;
  }

  /**
   * qcow2_refcount_area: new self-covering refblocks and a new reftable (50 % headroom unless
   * exact) at `startCluster`, the old reftable freed (fact sheet §11.1). Returns the cluster
   * after the new structures.
   */
  refcountArea(startCluster: number, additional: number, exact: boolean, newIndex: number, newBlock: number): number {
    const total = refcountMetadataBlocks(startCluster + additional, this.cs, this.refcountOrder, !exact);
    if (total > MAX_REFTABLE_BYTES) throw new Error('refcount table too large');
    const areaIndex = Math.floor(startCluster / this.rbe);
    const perCluster = this.cs / 8;
    let tableSize = exact ? total : total + Math.ceil(total / 2);
    tableSize = Math.ceil(tableSize / perCluster) * perCluster;
    const tableClusters = tableSize / perCluster;
    const table = new Array<number>(tableSize).fill(0);
    const keep = tableSize > this.maxReftableIndex ? this.maxReftableIndex + 1 : tableSize;
    for (let i = 0; i < keep && i < this.reftable.length; i++) table[i] = this.reftable[i]!;
    if (newBlock !== 0) table[newIndex] = newBlock;
    let additionalBlocks = 0;
    for (let i = areaIndex; i < total; i++) if (table[i] === 0) additionalBlocks++;
    const tableCluster = startCluster + additionalBlocks;
    const end = tableCluster + tableClusters;
    let blockCluster = startCluster;
    for (let i = areaIndex; i < total; i++) {
      let block: Float64Array;
      if (table[i] !== 0) {
        block = this.blocks.get(table[i]!)!;
      } else {
        block = new Float64Array(this.rbe);
        this.blocks.set(blockCluster, block);
        table[i] = blockCluster;
        blockCluster++;
      }
      const first = i * this.rbe;
      if (first < end) {
        let j = first < startCluster ? startCluster - first : 0;
        const endIndex = Math.min(end - first, this.rbe);
        for (; j < endIndex; j++) block[j] = 1;
      }
    }
    // The new reftable is written whole (table_size entries), then switched in.
    this.file = writeHost(this.file, BigInt(tableCluster) * BigInt(this.cs), encodeReftable(table, this.clusterBits, this.refcountOrder));
    const oldCluster = this.reftableCluster;
    const oldClusters = (this.reftable.length * 8) / this.cs;
    this.reftable = table;
    this.reftableCluster = tableCluster;
    let max = 0;
    for (let i = 0; i < table.length; i++) if (table[i] !== 0) max = i;
    this.maxReftableIndex = max;
    // The old table is freed: refcount 0, hint moved back, bytes left as they are (no discard).
    this.updateRefcount(oldCluster, oldClusters, -1);
    return end;
  }

  /** The 8-byte in-place hook-up write of a new refblock into the reftable. */
  writeReftableEntry(index: number, block: number): void {
    const off = BigInt(this.reftableCluster) * BigInt(this.cs) + BigInt(index * 8);
    this.file = writeHost(this.file, off, encodeRefcountTableEntry(reftableEntry(block, this.cs), { clusterBits: this.clusterBits, refcountOrder: this.refcountOrder }));
  }

  /** qcow2_alloc_clusters: `n` contiguous clusters with refcount 1. */
  allocClusters(n: number): number {
    for (;;) {
      const c = this.allocNoref(n);
      if (this.updateRefcount(c, n, 1) === 'ok') return c;
    }
  }

  /** qcow2_alloc_clusters_at: up to `n` clusters starting exactly at `start`; returns how many. */
  allocClustersAt(start: number, n: number): number {
    if (n === 0) return 0;
    for (;;) {
      let i = 0;
      while (i < n && this.getRefcount(start + i) === 0) i++;
      if (this.updateRefcount(start, i, 1) === 'ok') return i;
    }
  }
}

/** qcow2_refcount_metadata_size's refblock count: the fixed point covering `clusters` and itself. */
function refcountMetadataBlocks(clusters: number, cs: number, order: number, generous: boolean): number {
  const perTableCluster = cs / 8;
  const perBlock = (cs * 8) >> order;
  let table = 0;
  let blocks = 0;
  let n = 0;
  let last: number;
  let c = clusters;
  let g = generous;
  do {
    last = n;
    blocks = Math.ceil((c + table + blocks) / perBlock);
    table = Math.ceil(blocks / perTableCluster);
    n = c + blocks + table;
    if (n === last && g) {
      c += Math.ceil(table / 2);
      n = 0;
      g = false;
    }
  } while (n !== last);
  return blocks;
}

function reftableEntry(blockCluster: number, cs: number): RefcountTableEntryFields {
  const p = offsetToParts(BigInt(blockCluster) * BigInt(cs), 32);
  return { refblockOffsetHi: p.hi, refblockOffsetLo: p.lo9, reserved: 0 };
}

function encodeReftable(table: readonly number[], clusterBits: number, refcountOrder: number): Uint8Array {
  const cs = 1 << clusterBits;
  return encodeRefcountTable(
    { entries: table.map((b) => (b === 0 ? { refblockOffsetHi: 0, refblockOffsetLo: 0, reserved: 0 } : reftableEntry(b, cs))) },
    { clusterBits, refcountOrder },
  );
}

/**
 * The bytes of a refcount block up to its last non-zero refcount (rounded up to a whole byte);
 * the rest of the cluster is zeros. Encoded by the generated encodeRefcountBlock.
 */
function encodeRefblockPrefix(block: Float64Array, refcountOrder: number): Uint8Array {
  let last = -1;
  for (let i = block.length - 1; i >= 0; i--) {
    if (block[i] !== 0) {
      last = i;
      break;
    }
  }
  const bits = 1 << refcountOrder;
  const perByte = bits < 8 ? 8 / bits : 1;
  const count = Math.ceil((last + 1) / perByte) * perByte;
  const entries: Array<boolean | number | U64Fields> = new Array(count);
  for (let i = 0; i < count; i++) {
    const v = block[i]!;
    entries[i] = refcountOrder === 0 ? v !== 0 : refcountOrder === 6 ? { hi: Math.floor(v / 2 ** 32), lo: v % 2 ** 32 } : v;
  }
  return encodeRefcountBlock({ entries }, { refcountOrder });
}

/** Writes `prefix` at cluster `c` and makes sure the file covers the whole cluster (a full-cluster write in QEMU). */
function writeWholeCluster(file: HostFile, c: number, cs: number, prefix: Uint8Array): HostFile {
  const off = BigInt(c) * BigInt(cs);
  let f = writeHost(file, off, prefix);
  if (f.length < off + BigInt(cs)) f = truncateHost(f, off + BigInt(cs));
  return f;
}

// ---------------------------------------------------------------------------------------------
// Header extensions (qcow2_update_header order, fact sheet §1.5 and §2)

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
  // QEMU 7.2 omits the feature name table for cluster sizes ≤ 4 KiB (fact sheet §1.5, §13.13).
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
 * preallocation=metadata (forced by data_file_raw) every L2 table and data cluster, placed by a
 * replay of QEMU's allocator. The file is not padded to a cluster boundary. Throws CreateError with
 * qemu-img's message for a refused combination. Pure: the result depends only on `opts`.
 */
export function createImage(opts: CreateOptions): CreateResult {
  const r = resolveOptions(opts);
  const cb = r.clusterBits;
  const cs = 1 << cb;
  const l2EntrySize = r.extendedL2 ? 16 : 8;
  const l2Entries = cs / l2EntrySize;
  const hasDataFile = r.dataFile !== undefined;

  // The skeleton: header cluster, reftable cluster (entry 0 → cluster 2), empty refblock cluster.
  let file = truncateHost(emptyHostFile(), BigInt(3 * cs));
  const alloc = new Alloc(cb, r.refcountOrder, file);
  alloc.writeReftableEntry(0, 2);

  // Reopen: the skeleton's own refcounts (qcow2_alloc_clusters(3 clusters) must return 0).
  if (alloc.allocClusters(3) !== 0) throw new Error('first cluster of a new image is in use');

  // Truncate: qcow2_grow_l1_table with the exact size (fact sheet §1.5).
  const l1Size = Number(ceilDiv(r.size, BigInt(cs) * BigInt(l2Entries)));
  let l1Cluster = 0;
  if (l1Size > 0) {
    if (l1Size > INT_MAX / 8) throw new CreateError('image-too-large', "The image size is too large for file format 'qcow2' (try using a larger cluster size)");
    l1Cluster = alloc.allocClusters(Math.ceil((l1Size * 8) / cs));
    // The new L1 is written with exactly l1_size * 8 bytes (why the file ends mid-cluster).
    alloc.file = writeHost(alloc.file, BigInt(l1Cluster) * BigInt(cs), new Uint8Array(l1Size * 8));
  }

  // preallocate_co: L2 tables and data runs in QEMU's order (fact sheet §11.2).
  /** L1 index → L2 table cluster. */
  const l2Tables = new Map<number, number>();
  /** Guest cluster → host cluster + 1 (0 = unallocated). */
  const mapping = r.prealloc ? new Float64Array(Math.ceil(Number(r.size) / cs)) : new Float64Array(0);
  let dataEnd = 0n;
  if (r.prealloc && r.size > 0n) {
    const guestClusters = mapping.length;
    const maxRun = Math.floor(REQUEST_MAX_BYTES / cs);
    const chunkClusters = Math.floor(INT_MAX / cs);
    const getL2 = (l1Index: number): void => {
      if (!l2Tables.has(l1Index)) l2Tables.set(l1Index, alloc.allocClusters(1));
    };
    let g = 0;
    while (g < guestClusters) {
      // One qcow2_alloc_host_offset call: at most INT_MAX aligned down to a cluster.
      const callEnd = Math.min(guestClusters, g + chunkClusters);
      let expected = -1;
      let runStart = -1;
      let pos = g;
      while (pos < callEnd) {
        const l1Index = Math.floor(pos / l2Entries);
        getL2(l1Index); // handle_copied → get_cluster_table → l2_allocate
        let n = Math.min(callEnd - pos, l2Entries - (pos % l2Entries), maxRun);
        let host: number;
        if (hasDataFile) {
          host = pos; // external data file: host offset == guest offset, nothing refcounted (§7.3)
        } else if (expected < 0) {
          host = alloc.allocClusters(n);
        } else {
          n = alloc.allocClustersAt(expected, n);
          host = expected;
          if (n === 0) break; // cannot extend the contiguous run
        }
        if (runStart < 0) runStart = host;
        for (let i = 0; i < n; i++) mapping[pos + i] = host + i + 1;
        pos += n;
        expected = host + n;
      }
      // Measured on 7.2: the file is extended to the end of the last data *subcluster*, even when
      // the virtual size ends mid-cluster (64 KiB clusters: 1 MiB + 512 → 1441792 bytes, not
      // 1376768 + 512; extended L2 with 2 KiB subclusters: 3589632 → 3590144).
      const sc = BigInt(r.extendedL2 ? cs / 32 : cs);
      const bytes = pos === guestClusters ? ((r.size - BigInt(g) * BigInt(cs) + sc - 1n) / sc) * sc : BigInt(pos - g) * BigInt(cs);
      dataEnd = BigInt(runStart) * BigInt(cs) + bytes;
      g = pos;
    }
  }
  file = alloc.file;

  // Cached metadata reaches the disk as whole clusters: refcount blocks and L2 tables.
  for (const [c, block] of alloc.blocks) file = writeWholeCluster(file, c, cs, encodeRefblockPrefix(block, r.refcountOrder));
  for (const [l1Index, c] of l2Tables) {
    const parts: Uint8Array[] = [];
    const first = l1Index * l2Entries;
    for (let i = 0; i < l2Entries && first + i < mapping.length; i++) {
      const h = mapping[first + i]!;
      parts.push(encodeL2Entry(l2EntryFields(h === 0 ? undefined : BigInt(h - 1) * BigInt(cs), r.extendedL2), { clusterBits: cb, extendedL2: r.extendedL2 }));
    }
    file = writeWholeCluster(file, c, cs, concat(parts));
  }
  // The L1 entries (COPIED | L2 offset).
  if (l1Size > 0) {
    const parts: Uint8Array[] = [];
    for (let i = 0; i < l1Size; i++) {
      const c = l2Tables.get(i);
      const p = c === undefined ? { hi: 0, lo9: 0 } : offsetToParts(BigInt(c) * BigInt(cs), 24);
      parts.push(encodeL1Entry({ copied: c !== undefined, reservedHi: 0, l2OffsetHi: p.hi, l2OffsetLo: p.lo9, reservedLo: 0 }, { clusterBits: cb, extendedL2: r.extendedL2 }));
    }
    file = writeHost(file, BigInt(l1Cluster) * BigInt(cs), concat(parts));
  }
  // preallocate_co extends the (data) file to the end of the last data run.
  if (!hasDataFile && file.length < dataEnd) file = truncateHost(file, dataEnd);

  // The final header (qcow2_update_header rewrites the whole of cluster 0).
  let incompat = 0n;
  if (hasDataFile) incompat |= INCOMPAT_DATA_FILE;
  if (r.zstd) incompat |= INCOMPAT_COMPRESSION;
  if (r.extendedL2) incompat |= INCOMPAT_EXTL2;
  const exts = headerExtensions(r);
  const headerLength = r.version === 3 ? V3_HEADER_LENGTH : V2_HEADER_LENGTH;
  const extBytes = exts.reduce((n, e) => n + e.length, 0);
  const backingName = r.backingFile !== undefined ? asciiEncode(r.backingFile, 'qcow2', 'backing_file_name') : undefined;
  if (headerLength + extBytes + (backingName?.length ?? 0) > cs) {
    // qcow2_update_header: header_ext_add / backing name → -ENOSPC.
    throw new CreateError('backing-name-too-long', `Could not assign backing file '${r.backingFile}' with format '${r.backingFmt}': No space left on device`);
  }
  const header: HeaderState = {
    version: r.version,
    backingFileOffset: backingName !== undefined ? BigInt(headerLength + extBytes) : 0n,
    backingFileSize: backingName?.length ?? 0,
    clusterBits: cb,
    size: r.size,
    cryptMethod: 0,
    l1Size,
    l1TableOffset: BigInt(l1Cluster) * BigInt(cs),
    refcountTableOffset: BigInt(alloc.reftableCluster) * BigInt(cs),
    refcountTableClusters: (alloc.reftable.length * 8) / cs,
    nbSnapshots: 0,
    snapshotsOffset: 0n,
    incompatibleFeatures: r.version === 3 ? incompat : 0n,
    compatibleFeatures: r.version === 3 && r.lazy ? COMPAT_LAZY_REFCOUNTS : 0n,
    autoclearFeatures: r.version === 3 && r.dataFileRaw ? AUTOCLEAR_DATA_FILE_RAW : 0n,
    refcountOrder: r.version === 3 ? r.refcountOrder : 4,
    headerLength,
    compressionType: r.zstd ? 1 : 0,
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

function l2EntryFields(host: bigint | undefined, extendedL2: boolean): L2EntryFields {
  const p = host === undefined ? { hi: 0, lo9: 0 } : offsetToParts(host, 24);
  const e: L2EntryFields = {
    copied: host !== undefined,
    compressed: false,
    reservedHi: 0,
    hostOffsetHi: p.hi,
    hostOffsetLo: p.lo9,
    reservedLo: 0,
    zero: false,
  };
  // Preallocation leaves extended-L2 bitmaps 0: every subcluster UNALLOCATED_ALLOC (fact sheet §11.2).
  return extendedL2 ? { ...e, zeroBitmap: 0, allocBitmap: 0 } : e;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
