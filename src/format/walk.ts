/**
 * walkImage: a plain, complete description of every on-disk structure of a qcow2 image — header,
 * header extensions, feature name table, backing file name, the active L1 table and every distinct
 * L2 table it reaches, the refcount table and every distinct refcount block, the snapshot table
 * with each snapshot's L1 (and L2 tables, shared with the active ones), and the bitmap directory
 * with its bitmap tables.
 *
 * The image is a Uint8Array or, for a file too large to hold, a ByteSource (positioned reads, e.g. a
 * file reader): the walk then reads only the structures it decodes, through a bounded cache of
 * windows (src/codec/paged-bytes.ts), and gives exactly the walk of the same bytes in memory.
 *
 * Robustness promises (the input may be hostile):
 * * Only a header that cannot be decoded is fatal (the Qcow2FormatError is thrown). Any other
 *   structure that fails to decode is recorded as a WalkError at its place and in `errors`,
 *   and the walk goes on with everything else.
 * * Every table is decoded at most once per distinct offset (an image whose L1 entries all point at
 *   one L2 table costs one L2 decode), every loop is bounded by the file size, and nothing sized by
 *   an untrusted field is allocated before that size has been checked against the file size.
 *
 * The project's other walkers each have a reason to exist: the check walks as QEMU's check does
 * (src/check/refcounts.ts), and the corruption catalog's layoutOf (src/corrupt/layout.ts) skips what
 * it never pokes so it stays fast on large tables.
 */
import {
  CompressionTypeNames,
  CryptMethodNames,
  HeaderExtensionType,
  decodeHeader,
  decodeL1Entry,
  decodeL1EntryFields,
  decodeL2EntryFields,
  decodeQcow2,
  decodeRefcountBlockFields,
  decodeRefcountTableEntry,
  decodeSnapshotEntry,
  type BackingFileFormat,
  type BitmapsExtension,
  type ExternalDataFileName,
  type FeatureNameTable,
  type FullDiskEncryptionPointer,
  type Header,
  type HeaderExtension,
  type L2EntryFields,
  type SnapshotEntry,
} from '../../generated/qcow2.ts';
import {
  classifyL2Entry,
  l1EntryWord,
  l1L2Offset,
  l1ReservedBits,
  l2EntryWords,
  l2ReservedBits,
  refcountBlockOffset,
  refcountValue,
  subclusterStates,
  type L2Context,
  type L2EntryClass,
  type SubclusterState,
} from './entries.ts';
import { PagedBytes, asciiDecode, type ByteSource, type SourceWindow } from '../codec/index.ts';
import { Qcow2FormatError, isQcow2FormatError, type Qcow2ErrorCode } from '../codec/index.ts';
import { decodeFeatureBits, featureFieldOfType, type DecodedFeatures, type FeatureField } from './features.ts';
import { u64ToBigInt } from './u64.ts';

// ---------------------------------------------------------------------------------------------
// Output types

/** A structure that could not be decoded: where in the walk, and the decoder's error. */
export interface WalkError {
  /** Where in the image the walk was, e.g. `active L1[3] -> L2 table at 0x50000`. */
  readonly at: string;
  readonly code: Qcow2ErrorCode;
  readonly structure: string;
  readonly field: string;
  /** Absolute byte offset in the image file. */
  readonly offset: number;
  /** The problem alone (no location prefix). */
  readonly detail: string;
}

/**
 * Where the header puts the image's tables (the active L1 table, the refcount table, the snapshot
 * table) and their sizes, offsets as exact bigint: what HeaderInfo and the model's HeaderState share.
 */
export interface HeaderTables {
  readonly l1Size: number;
  readonly l1TableOffset: bigint;
  readonly refcountTableOffset: bigint;
  readonly refcountTableClusters: number;
  readonly nbSnapshots: number;
  readonly snapshotsOffset: bigint;
}

/** The HeaderTables of a decoded header, in the order of the header's fields. */
export function headerTablesOf(h: Header): HeaderTables {
  return {
    l1Size: h.l1Size,
    l1TableOffset: u64ToBigInt(h.l1TableOffset),
    refcountTableOffset: u64ToBigInt(h.refcountTableOffset),
    refcountTableClusters: h.refcountTableClusters,
    nbSnapshots: h.nbSnapshots,
    snapshotsOffset: u64ToBigInt(h.snapshotsOffset),
  };
}

/** Every header field (64-bit ones as exact bigint) plus the values derived from them. */
export interface HeaderInfo extends HeaderTables {
  readonly version: number;
  readonly backingFileOffset: bigint;
  readonly backingFileSize: number;
  readonly clusterBits: number;
  readonly clusterSize: number;
  /** Virtual disk size in bytes. */
  readonly size: bigint;
  readonly cryptMethod: number;
  readonly cryptMethodName: string;
  /** Feature fields (all zero for version 2). */
  readonly incompatibleFeatures: DecodedFeatures;
  readonly compatibleFeatures: DecodedFeatures;
  readonly autoclearFeatures: DecodedFeatures;
  /** refcount_order in effect (4 for version 2). */
  readonly refcountOrder: number;
  readonly refcountBits: number;
  /** header_length in effect (72 for version 2). */
  readonly headerLength: number;
  /** compression_type in effect (0 = zlib when the field is absent). */
  readonly compressionType: number;
  readonly compressionTypeName: string;
  /** Bytes between offset 112 and header_length (preserved unknown header fields). */
  readonly unknownHeaderFieldsLength: number;
  readonly dirty: boolean;
  readonly corrupt: boolean;
  readonly externalDataFile: boolean;
  readonly extendedL2: boolean;
  readonly lazyRefcounts: boolean;
  readonly bitmapsConsistent: boolean;
  readonly rawExternalData: boolean;
}

/** One feature name table entry. */
export interface FeatureTableEntry {
  /** 'incompatible' | 'compatible' | 'autoclear', or `type N` for an unknown type byte. */
  readonly field: FeatureField | `type ${number}`;
  readonly bit: number;
  readonly name: string;
}

/** Fields every header extension has. */
interface ExtensionBase {
  /** File offset of the extension's type field. */
  readonly offset: number;
  readonly typeCode: number;
  /** Data length in bytes (without padding). */
  readonly length: number;
}

/** One header extension, decoded for the known types, raw for the others. */
export type ExtensionInfo =
  | (ExtensionBase & { readonly type: 'end' })
  | (ExtensionBase & { readonly type: 'backing-file-format'; readonly name: string })
  | (ExtensionBase & { readonly type: 'feature-name-table'; readonly entries: readonly FeatureTableEntry[] })
  | (ExtensionBase & {
      readonly type: 'bitmaps';
      readonly nbBitmaps: number;
      readonly reserved: number;
      readonly directorySize: bigint;
      readonly directoryOffset: bigint;
    })
  | (ExtensionBase & { readonly type: 'full-disk-encryption'; readonly headerOffset: bigint; readonly headerLength: bigint })
  | (ExtensionBase & { readonly type: 'external-data-file'; readonly name: string })
  | (ExtensionBase & { readonly type: 'unknown'; readonly data: Uint8Array });

/** A non-zero L1 entry. */
export interface L1EntryInfo {
  readonly index: number;
  /** The whole 64-bit entry. */
  readonly word: bigint;
  /** L2 table offset (0n = no L2 table). */
  readonly l2Offset: bigint;
  readonly copied: boolean;
  /** Set reserved bits (mask 0x7f000000000001ff); 0n when clean. */
  readonly reservedBits: bigint;
}

/** An L1 table (active or a snapshot's). */
export interface L1Info {
  readonly offset: bigint;
  /** Number of entries (l1_size). */
  readonly size: number;
  /** The non-zero entries, in index order (zero entries are unallocated and omitted). */
  readonly entries: readonly L1EntryInfo[];
  /** Set when this exact table (offset and size) was already described: 'active' or `snapshot N`. */
  readonly sameAs?: string;
  readonly error?: WalkError;
}

/** A non-zero L2 entry. */
export interface L2EntryInfo {
  readonly index: number;
  /** Word 0 (the 64-bit descriptor). */
  readonly word: bigint;
  /** Extended L2 only: word 1 (zero bits 63..32, alloc bits 31..0). */
  readonly bitmap?: bigint;
  readonly class: L2EntryClass;
  /** Extended L2 only: the 32 subcluster states. */
  readonly subclusters?: readonly SubclusterState[];
  /** Set reserved bits of a standard descriptor (mask 0x3f000000000001fe); 0n when clean. */
  readonly reservedBits: bigint;
}

/** Who points at an L2 table. */
export interface L2Reference {
  /** 'active' or `snapshot N` (N = index in the snapshot table). */
  readonly l1: string;
  readonly index: number;
}

/** One distinct L2 table. */
export interface L2TableInfo {
  readonly offset: bigint;
  /** Entries per table (cluster_size / 8 or / 16). */
  readonly entryCount: number;
  /** The entries that are not all-zero, in index order (all-zero = unallocated, omitted). */
  readonly entries: readonly L2EntryInfo[];
  readonly references: L2Reference[];
  readonly error?: WalkError;
}

/** A non-zero refcount table entry. */
export interface RefcountTableEntryInfo {
  readonly index: number;
  readonly blockOffset: bigint;
  readonly reservedBits: number;
}

/** A run of equal refcounts inside a refcount block. */
export interface RefcountRun {
  /** Index of the first entry within the block. */
  readonly start: number;
  readonly count: number;
  readonly refcount: bigint;
}

/** One distinct refcount block. */
export interface RefcountBlockInfo {
  readonly offset: bigint;
  /** Refcount-table indexes that point at it. */
  readonly tableIndexes: number[];
  /** Entries per block (cluster_size * 8 / refcount_bits). */
  readonly entryCount: number;
  /** The block's refcounts as runs of equal values covering all entries. */
  readonly runs: readonly RefcountRun[];
  readonly error?: WalkError;
}

/** The refcount table and its blocks. */
export interface RefcountInfo {
  readonly tableOffset: bigint;
  readonly tableClusters: number;
  /** Number of entries in the table. */
  readonly tableSize: number;
  readonly entries: readonly RefcountTableEntryInfo[];
  readonly blocks: readonly RefcountBlockInfo[];
  readonly error?: WalkError;
}

/** One snapshot table entry. */
export interface SnapshotInfo {
  readonly index: number;
  /** File offset of the entry. */
  readonly entryOffset: number;
  readonly id: string;
  readonly name: string;
  readonly l1TableOffset: bigint;
  readonly l1Size: number;
  readonly dateSec: number;
  readonly dateNsec: number;
  readonly vmClockNsec: bigint;
  readonly vmStateSize: number;
  readonly extraDataSize: number;
  readonly vmStateSizeLarge?: bigint;
  readonly diskSize?: bigint;
  readonly icount?: bigint;
  /** Bytes of extra data this implementation does not know. */
  readonly unknownExtraDataLength: number;
  readonly l1: L1Info;
}

/** The snapshot table. */
export interface SnapshotTableInfo {
  readonly offset: bigint;
  readonly count: number;
  /** The entries decoded before an error (all of them when there is none). */
  readonly entries: readonly SnapshotInfo[];
  readonly error?: WalkError;
}

/** A bitmap table entry that is not all-zero. */
export interface BitmapTableEntryInfo {
  readonly index: number;
  readonly dataOffset: bigint;
  readonly allOnes: boolean;
  readonly reservedBits: bigint;
}

/** One bitmap directory entry with its table. */
export interface BitmapInfo {
  readonly name: string;
  readonly tableOffset: bigint;
  readonly tableSize: number;
  readonly inUse: boolean;
  readonly auto: boolean;
  readonly extraDataCompatible: boolean;
  readonly reservedFlags: number;
  readonly bitmapType: number;
  readonly granularityBits: number;
  readonly extraDataSize: number;
  readonly table: readonly BitmapTableEntryInfo[];
  readonly error?: WalkError;
}

/** The bitmap directory. */
export interface BitmapDirectoryInfo {
  readonly offset: bigint;
  readonly size: bigint;
  readonly bitmaps: readonly BitmapInfo[];
  readonly error?: WalkError;
}

/** Everything walkImage found. */
export interface ImageWalk {
  readonly fileSize: number;
  readonly header: HeaderInfo;
  readonly extensions: readonly ExtensionInfo[];
  /** Set when the header extension area could not be decoded. */
  readonly extensionsError?: WalkError;
  /** Bytes after the end-of-extensions marker up to the end of the area. */
  readonly extensionTrailingBytes: number;
  /** The feature name table (from its extension), empty when absent. */
  readonly featureTable: readonly FeatureTableEntry[];
  readonly backingFile?: { readonly offset: bigint; readonly size: number; readonly name?: string; readonly format?: string; readonly error?: WalkError };
  /** Name from the external data file extension. */
  readonly dataFile?: string;
  readonly activeL1: L1Info;
  /** Every distinct L2 table reachable from the active or a snapshot L1, in discovery order. */
  readonly l2Tables: readonly L2TableInfo[];
  readonly refcounts: RefcountInfo;
  readonly snapshots: SnapshotTableInfo;
  readonly bitmaps?: BitmapDirectoryInfo;
  /** Every error recorded anywhere above, in walk order. */
  readonly errors: readonly WalkError[];
}

// ---------------------------------------------------------------------------------------------
// The walk

/** Upper bound on L1 entries decoded over all snapshot L1 tables, as a multiple of the file's 8-byte words. */
const L1_BUDGET_FACTOR = 4;

/** L1 and refcount table entries are scanned in pieces of this many bytes (bounded memory for any table). */
const TABLE_PIECE = 1 << 20;

/** Options of walkImage. */
export interface WalkOptions {
  /**
   * Keep the entries of the L2 tables (default true). With false every L2TableInfo has `entries: []`
   * (tables are still decoded, and their errors recorded): a walk whose size does not grow with the
   * image's allocated clusters; l2TableEntries gives each table's entries when they are needed.
   */
  readonly l2Entries?: boolean;
}

/**
 * Describes every structure of the qcow2 image `image`: its bytes, or a ByteSource of them (a file
 * reader: only the structures decoded are read). Throws the Qcow2FormatError of the header when the
 * header cannot be decoded; every other failure is recorded (see the module doc). Pure but for the
 * source's reads; an error a source's read throws (an I/O error) propagates unchanged.
 */
export function walkImage(image: Uint8Array | ByteSource, opts: WalkOptions = {}): ImageWalk {
  const bytes: Uint8Array | PagedBytes = image instanceof Uint8Array ? image : new PagedBytes(image);
  const fileSize = bytes.length;
  const rawHeader = decodeHeader(bytes, 0);
  const header = describeHeader(rawHeader);
  const errors: WalkError[] = [];
  const record = (at: string, e: unknown): WalkError => {
    const w = toWalkError(at, e);
    errors.push(w);
    return w;
  };

  // Header extensions (and the backing file name) come from the generated root decoder.
  let extensions: ExtensionInfo[] = [];
  let extensionsError: WalkError | undefined;
  let extensionTrailingBytes = 0;
  let bitmapsExt: BitmapsExtension | undefined;
  // Cluster 0 as QEMU's bdrv_pread reads it: zeros past the end of a file that ends inside it
  // (qcow2_do_open reads the extension area and the backing file name that way).
  const cluster0 = fileSize >= header.clusterSize ? bytes : zeroPadded(copyOf(bytes, 0, fileSize), header.clusterSize);
  try {
    const root = decodeQcow2(cluster0);
    const list = root.headerExtensions.extensions ?? [];
    let pos = header.headerLength;
    for (const ext of list) {
      extensions.push(describeExtension(ext, pos));
      if (ext.type === HeaderExtensionType.BITMAPS) bitmapsExt ??= ext.data as BitmapsExtension;
      pos += 8 + ext.lenData + ext.padding.length;
    }
    extensionTrailingBytes = root.headerExtensions.trailing.length;
  } catch (e) {
    extensions = [];
    extensionsError = record('header extensions', e);
  }
  const featureTable = extensions.flatMap((e) => (e.type === 'feature-name-table' ? e.entries : []));
  const backingFormat = extensions.find((e) => e.type === 'backing-file-format');
  const dataFileExt = extensions.find((e) => e.type === 'external-data-file');

  let backingFile: ImageWalk['backingFile'];
  if (header.backingFileOffset !== 0n) {
    const base = {
      offset: header.backingFileOffset,
      size: header.backingFileSize,
      ...(backingFormat?.type === 'backing-file-format' ? { format: backingFormat.name } : {}),
    };
    const off = header.backingFileOffset;
    if (off + BigInt(header.backingFileSize) > BigInt(cluster0.length)) {
      const err = new Qcow2FormatError('truncated', { structure: 'qcow2', field: 'backing_file_name', offset: clampOffset(off, cluster0.length) },
        `needs ${header.backingFileSize} byte(s) at 0x${off.toString(16)} but the file ends at 0x${cluster0.length.toString(16)}`);
      backingFile = { ...base, error: record('backing file name', err) };
    } else {
      backingFile = { ...base, name: asciiDecode(copyOf(cluster0, Number(off), header.backingFileSize)) };
    }
  }

  const l1params = { clusterBits: header.clusterBits, extendedL2: header.extendedL2 };
  const keepL2Entries = opts.l2Entries !== false;
  const l2ByOffset = new Map<bigint, L2TableInfo>();

  /** Decodes (once per offset) the L2 tables the L1 table at `l1Offset` points at. */
  const visitL2Tables = (l1Name: string, l1Offset: bigint, info: L1Info): void => {
    visitDistinctL2Tables(l1Name, info.entries, l2ByOffset, (e): L2TableInfo => {
      const at = `${l1Name} L1[${e.index}] -> L2 table at 0x${e.l2Offset.toString(16)}`;
      let table: L2TableInfo;
      try {
        // A table running past the end of the file goes through the table decoder for its error.
        const count = header.clusterSize >> (header.extendedL2 ? 4 : 3);
        const entries = e.l2Offset + BigInt(header.clusterSize) <= BigInt(fileSize)
          ? l2EntriesAt(bytes, header, e.l2Offset)
          : describeL2Entries(decodeL1Entry(bytes, Number(l1Offset) + 8 * e.index, l1params).l2Table!.entries, header);
        if (!keepL2Entries) entries.length = 0;
        table = { offset: e.l2Offset, entryCount: count, entries, references: [{ l1: l1Name, index: e.index }] };
      } catch (err) {
        table = {
          offset: e.l2Offset,
          entryCount: header.clusterSize >> (header.extendedL2 ? 4 : 3),
          entries: [],
          references: [{ l1: l1Name, index: e.index }],
          error: record(at, err),
        };
      }
      return table;
    });
  };

  // Active L1.
  const active = readL1(bytes, header.l1TableOffset, header.l1Size, l1params, 'qcow2', 'l1_table');
  const activeL1: L1Info =
    active.error !== undefined
      ? { offset: header.l1TableOffset, size: header.l1Size, entries: [], error: record('active L1 table', active.error) }
      : { offset: header.l1TableOffset, size: header.l1Size, entries: active.info };
  visitL2Tables('active', header.l1TableOffset, activeL1);

  // Refcount table and blocks.
  const refcounts = walkRefcounts(bytes, header, record);

  // Snapshots and their L1 tables.
  const snapshotEntries: SnapshotInfo[] = [];
  let snapshotsError: WalkError | undefined;
  const l1Seen = new Map<string, string>([[`${header.l1TableOffset}:${header.l1Size}`, 'active']]);
  let l1Budget = Math.floor(fileSize / 8) * L1_BUDGET_FACTOR + 1024;
  if (header.nbSnapshots > 0) {
    if (header.snapshotsOffset + 40n * BigInt(header.nbSnapshots) > BigInt(fileSize)) {
      snapshotsError = record(
        'snapshot table',
        new Qcow2FormatError('too-large', { structure: 'qcow2', field: 'snapshots', offset: clampOffset(header.snapshotsOffset, fileSize) },
          `${header.nbSnapshots} snapshot entries of at least 40 bytes cannot fit at 0x${header.snapshotsOffset.toString(16)} in a file of ${fileSize} bytes`),
      );
    } else {
      let pos = Number(header.snapshotsOffset);
      for (let i = 0; i < header.nbSnapshots; i++) {
        let raw;
        try {
          // QEMU aligns each entry's start, so the last entry has no padding (spec: is_last).
          raw = decodeSnapshotEntry(bytes, pos, { ...l1params, isLast: i + 1 === header.nbSnapshots });
        } catch (e) {
          snapshotsError = record(`snapshot table entry ${i}`, e);
          break;
        }
        const entryOffset = pos;
        pos += 40 + raw.lenExtraData + raw.lenId + raw.lenName + (raw.padding?.length ?? 0);
        const name = `snapshot ${i}`;
        const l1Offset = u64ToBigInt(raw.l1TableOffset);
        const key = `${l1Offset}:${raw.l1Size}`;
        let l1: L1Info;
        const same = l1Seen.get(key);
        if (same !== undefined) {
          l1 = { offset: l1Offset, size: raw.l1Size, entries: [], sameAs: same };
          // Shared table: its L2 tables get this snapshot as an extra reference.
          const original = same === 'active' ? activeL1 : snapshotEntries[Number(same.slice('snapshot '.length))]?.l1;
          for (const e of original?.entries ?? []) l2ByOffset.get(e.l2Offset)?.references.push({ l1: name, index: e.index });
        } else if (raw.l1Size > l1Budget) {
          const err = new Qcow2FormatError('too-large', { structure: 'snapshot_entry', field: 'l1_size', offset: entryOffset + 8 },
            `snapshot L1 tables exceed the decoding budget for a file of ${fileSize} bytes`);
          l1 = { offset: l1Offset, size: raw.l1Size, entries: [], error: record(`${name} L1 table`, err) };
        } else {
          l1Budget -= raw.l1Size;
          l1Seen.set(key, name);
          const r = readL1(bytes, l1Offset, raw.l1Size, l1params, 'snapshot_entry', 'l1_table');
          l1 =
            r.error !== undefined
              ? { offset: l1Offset, size: raw.l1Size, entries: [], error: record(`${name} L1 table`, r.error) }
              : { offset: l1Offset, size: raw.l1Size, entries: r.info };
          visitL2Tables(name, l1Offset, l1);
        }
        const x = raw.extraData;
        snapshotEntries.push({
          index: i,
          entryOffset,
          id: raw.idStr,
          name: raw.name,
          l1TableOffset: l1Offset,
          l1Size: raw.l1Size,
          dateSec: raw.dateSec,
          dateNsec: raw.dateNsec,
          vmClockNsec: u64ToBigInt(raw.vmClockNsec),
          vmStateSize: raw.vmStateSize,
          extraDataSize: raw.lenExtraData,
          ...(x.vmStateSizeLarge !== undefined ? { vmStateSizeLarge: u64ToBigInt(x.vmStateSizeLarge) } : {}),
          ...(x.diskSize !== undefined ? { diskSize: u64ToBigInt(x.diskSize) } : {}),
          ...(x.icount !== undefined ? { icount: u64ToBigInt(x.icount) } : {}),
          unknownExtraDataLength: x.unknown.length,
          l1,
        });
      }
    }
  }
  const snapshots: SnapshotTableInfo = {
    offset: header.snapshotsOffset,
    count: header.nbSnapshots,
    entries: snapshotEntries,
    ...(snapshotsError !== undefined ? { error: snapshotsError } : {}),
  };

  const bitmaps = bitmapsExt !== undefined ? walkBitmaps(bitmapsExt, record) : undefined;

  return {
    fileSize,
    header,
    extensions,
    ...(extensionsError !== undefined ? { extensionsError } : {}),
    extensionTrailingBytes,
    featureTable,
    ...(backingFile !== undefined ? { backingFile } : {}),
    ...(dataFileExt?.type === 'external-data-file' ? { dataFile: dataFileExt.name } : {}),
    activeL1,
    l2Tables: [...l2ByOffset.values()],
    refcounts,
    snapshots,
    ...(bitmaps !== undefined ? { bitmaps } : {}),
    errors,
  };
}

/**
 * The entries of the L2 table at `offset` as walkImage describes them, for a table of a walk made
 * with `l2Entries: false` that has no error (its table lies inside the image): decoded again from
 * `image`, which must hold the bytes that walk read.
 */
export function l2TableEntries(image: Uint8Array | ByteSource, header: HeaderInfo, offset: bigint): L2EntryInfo[] {
  return l2EntriesAt(image instanceof Uint8Array ? image : new PagedBytes(image), header, offset);
}

/**
 * The non-zero entries of the L2 table at `offset`, which lies inside the image. The entries are read
 * one by one and all-zero ones skipped undecoded (most entries of a sparse image; decoding a whole
 * table made walks of 2 MiB-cluster images slow).
 */
function l2EntriesAt(bytes: Uint8Array | PagedBytes, header: HeaderInfo, offset: bigint): L2EntryInfo[] {
  const params = { clusterBits: header.clusterBits, extendedL2: header.extendedL2 };
  const entrySize = header.extendedL2 ? 16 : 8;
  const count = header.clusterSize / entrySize;
  const base = Number(offset);
  const w = windowOf(bytes, base, header.clusterSize);
  const view = dataView(w.bytes);
  const l2ctx = l2ContextOf(header);
  const entries: L2EntryInfo[] = [];
  for (let i = 0; i < count; i++) {
    const p = base + i * entrySize;
    const q = p - w.base;
    if (view.getUint32(q) === 0 && view.getUint32(q + 4) === 0 && (entrySize === 8 || (view.getUint32(q + 8) === 0 && view.getUint32(q + 12) === 0))) continue;
    const e = describeL2Entry(i, decodeL2EntryFields(bytes, p, params), header, l2ctx);
    if (e !== undefined) entries.push(e);
  }
  return entries;
}

/** The non-zero ones of decoded L2 `entries`, described. */
function describeL2Entries(entries: readonly L2EntryFields[], header: HeaderInfo): L2EntryInfo[] {
  const out: L2EntryInfo[] = [];
  for (let i = 0; i < entries.length; i++) {
    const e = describeL2Entry(i, entries[i]!, header, l2ContextOf(header));
    if (e !== undefined) out.push(e);
  }
  return out;
}

function l2ContextOf(header: HeaderInfo): L2Context {
  return { clusterBits: header.clusterBits, extendedL2: header.extendedL2, externalDataFile: header.externalDataFile };
}

/** L2 entry `index`, described; undefined when it is all zero (unallocated, omitted). */
function describeL2Entry(index: number, ent: L2EntryFields, header: HeaderInfo, l2ctx: L2Context): L2EntryInfo | undefined {
  const { word, bitmap } = l2EntryWords(ent);
  if (word === 0n && (bitmap === undefined || bitmap === 0n)) return undefined;
  return {
    index,
    word,
    ...(bitmap !== undefined ? { bitmap } : {}),
    class: classifyL2Entry(ent, l2ctx),
    ...(header.extendedL2 ? { subclusters: subclusterStates(ent, l2ctx) } : {}),
    reservedBits: l2ReservedBits(ent),
  };
}

/**
 * Visits the L2 tables the `entries` of L1 table `l1Name` point at, each distinct table once across
 * calls sharing `tables`: a table already there gains the reference; a new one is what `read` makes
 * of the first entry pointing at it (with that reference), or left out when `read` gives undefined.
 */
export function visitDistinctL2Tables<T extends { readonly references: L2Reference[] }>(
  l1Name: string,
  entries: readonly { readonly index: number; readonly l2Offset: bigint }[],
  tables: Map<bigint, T>,
  read: (e: { readonly index: number; readonly l2Offset: bigint }) => T | undefined,
): void {
  for (const e of entries) {
    if (e.l2Offset === 0n) continue;
    const known = tables.get(e.l2Offset);
    if (known !== undefined) {
      known.references.push({ l1: l1Name, index: e.index });
      continue;
    }
    const table = read(e);
    if (table !== undefined) tables.set(e.l2Offset, table);
  }
}

/** The header of an image as HeaderInfo (exact 64-bit values, effective v2 defaults). */
export function describeHeader(h: Header): HeaderInfo {
  const zero = { hi: 0, lo: 0 };
  const refcountOrder = h.refcountOrderEffective;
  return {
    version: h.version,
    backingFileOffset: u64ToBigInt(h.backingFileOffset),
    backingFileSize: h.backingFileSize,
    clusterBits: h.clusterBits,
    clusterSize: h.clusterSize,
    size: u64ToBigInt(h.size),
    cryptMethod: h.cryptMethod,
    cryptMethodName: CryptMethodNames[h.cryptMethod] ?? `unknown (${h.cryptMethod})`,
    ...headerTablesOf(h),
    incompatibleFeatures: decodeFeatureBits('incompatible', h.incompatibleFeatures ?? zero),
    compatibleFeatures: decodeFeatureBits('compatible', h.compatibleFeatures ?? zero),
    autoclearFeatures: decodeFeatureBits('autoclear', h.autoclearFeatures ?? zero),
    refcountOrder,
    refcountBits: 2 ** refcountOrder,
    headerLength: h.lenHeader,
    compressionType: h.compressionTypeEffective,
    compressionTypeName: CompressionTypeNames[h.compressionTypeEffective] ?? `unknown (${h.compressionTypeEffective})`,
    unknownHeaderFieldsLength: h.unknownHeaderFields?.length ?? 0,
    dirty: h.isDirty,
    corrupt: h.isCorrupt,
    externalDataFile: h.hasExternalDataFile,
    extendedL2: h.hasExtendedL2,
    lazyRefcounts: h.hasLazyRefcounts,
    bitmapsConsistent: h.hasBitmaps,
    rawExternalData: h.hasRawExternalData,
  };
}

/**
 * The active mapping: for every non-zero L2 entry reachable from `l1` (default: the active L1),
 * its guest offset (exact) and the entry. Entries of L2 tables that failed to decode are absent.
 */
export function* guestClusters(walk: ImageWalk, l1: L1Info = walk.activeL1): Generator<{ guestOffset: bigint; l1Index: number; entry: L2EntryInfo }> {
  const byOffset = new Map(walk.l2Tables.map((t) => [t.offset, t] as const));
  const entriesPerL2 = BigInt(walk.header.clusterSize >> (walk.header.extendedL2 ? 4 : 3));
  const cluster = BigInt(walk.header.clusterSize);
  for (const e of l1.entries) {
    const t = byOffset.get(e.l2Offset);
    if (t === undefined) continue;
    for (const entry of t.entries) {
      yield { guestOffset: (BigInt(e.index) * entriesPerL2 + BigInt(entry.index)) * cluster, l1Index: e.index, entry };
    }
  }
}

/**
 * The refcount of host cluster number `cluster` as recorded in the decoded refcount blocks: 0n when
 * its refcount-table entry is 0 (no block), undefined when the cluster is beyond the refcount table
 * or its table/block could not be decoded.
 */
export function refcountOf(walk: ImageWalk, cluster: bigint): bigint | undefined {
  const r = walk.refcounts;
  if (r.error !== undefined) return undefined;
  const perBlock = BigInt((walk.header.clusterSize * 8) / walk.header.refcountBits);
  const tableIndex = cluster / perBlock;
  if (tableIndex >= BigInt(r.tableSize)) return undefined;
  const te = r.entries.find((e) => BigInt(e.index) === tableIndex);
  if (te === undefined || te.blockOffset === 0n) return 0n;
  const block = r.blocks.find((b) => b.offset === te.blockOffset);
  if (block === undefined || block.error !== undefined) return undefined;
  const i = Number(cluster % perBlock);
  let lo = 0;
  let hi = block.runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const run = block.runs[mid]!;
    if (i < run.start) hi = mid - 1;
    else if (i >= run.start + run.count) lo = mid + 1;
    else return run.refcount;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Pieces

function toWalkError(at: string, e: unknown): WalkError {
  if (isQcow2FormatError(e)) {
    return { at, code: e.code, structure: e.structure, field: e.field, offset: e.offset, detail: e.detail };
  }
  // Decoders throw only Qcow2FormatError; anything else is a bug and must not be hidden.
  throw e;
}

/** `bytes` followed by zeros up to `length` bytes (a copy; `length` is at most one cluster, 2 MiB). */
function zeroPadded(bytes: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  out.set(bytes);
  return out;
}

function clampOffset(v: bigint, fileSize: number): number {
  return v > BigInt(fileSize) ? fileSize : Number(v);
}


/**
 * Reads l1Size L1 entries at `offset`, refusing (before allocating) a table that runs past the file,
 * in pieces of TABLE_PIECE bytes. All-zero entries (most of a sparse image's) are skipped undecoded:
 * decoding each made walks of images with large L1 tables and a few snapshots spend most of their
 * time allocating and collecting them.
 */
function readL1(
  bytes: Uint8Array | PagedBytes,
  offset: bigint,
  size: number,
  params: { clusterBits: number; extendedL2: boolean },
  structure: string,
  field: string,
): { info: L1EntryInfo[]; error?: unknown } {
  if (size === 0) return { info: [] };
  const end = offset + 8n * BigInt(size);
  if (end > BigInt(bytes.length)) {
    return {
      info: [],
      error: new Qcow2FormatError('truncated', { structure, field, offset: clampOffset(offset, bytes.length) },
        `${size} entries need ${8 * size} byte(s) at 0x${offset.toString(16)} but the file ends at 0x${bytes.length.toString(16)}`),
    };
  }
  const info: L1EntryInfo[] = [];
  const base = Number(offset);
  const perPiece = TABLE_PIECE / 8;
  try {
    for (let first = 0; first < size; first += perPiece) {
      const last = Math.min(size, first + perPiece);
      const w = windowOf(bytes, base + 8 * first, 8 * (last - first));
      const view = dataView(w.bytes);
      for (let i = first; i < last; i++) {
        const at = base + 8 * i;
        if (view.getUint32(at - w.base) === 0 && view.getUint32(at - w.base + 4) === 0) continue;
        const e = decodeL1EntryFields(bytes, at, params);
        const word = l1EntryWord(e);
        if (word !== 0n) info.push({ index: i, word, l2Offset: l1L2Offset(e), copied: e.copied, reservedBits: l1ReservedBits(e) });
      }
    }
  } catch (e) {
    return { info: [], error: e };
  }
  return { info };
}

/** Bytes [pos, pos + count) of the image (inside it): the whole array, or a window of the source. */
function windowOf(bytes: Uint8Array | PagedBytes, pos: number, count: number): SourceWindow {
  return bytes instanceof Uint8Array ? { bytes, base: 0 } : bytes.window(pos, count);
}

/** A copy (of a source) or a view (of an array) of [pos, pos + count), inside the image. */
function copyOf(bytes: Uint8Array | PagedBytes, pos: number, count: number): Uint8Array {
  return bytes instanceof Uint8Array ? bytes.subarray(pos, pos + count) : bytes.read(pos, count);
}

function dataView(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Runs of equal values of `values`. */
function refcountRunsOf(values: readonly bigint[]): RefcountRun[] {
  const runs: RefcountRun[] = [];
  let cur: { start: number; count: number; refcount: bigint } | undefined;
  for (let j = 0; j < values.length; j++) {
    const v = values[j]!;
    if (cur !== undefined && cur.refcount === v) cur.count++;
    else {
      if (cur !== undefined) runs.push(cur);
      cur = { start: j, count: 1, refcount: v };
    }
  }
  if (cur !== undefined) runs.push(cur);
  return runs;
}

/**
 * The refcount block of `size` bytes at `offset` (inside `bytes`) as runs of equal refcounts: 64-byte
 * chunks that are all zero count as zeros without decoding (most of a block), the others are decoded
 * with the block's fields decoder (so the bit order of narrow refcounts is the spec's).
 */
function refcountRuns(bytes: Uint8Array, offset: number, size: number, refcountOrder: number): RefcountRun[] {
  const CHUNK = 64;
  const perChunk = (CHUNK * 8) >> refcountOrder;
  const runs: RefcountRun[] = [];
  let cur: { start: number; count: number; refcount: bigint } | undefined;
  const add = (start: number, count: number, v: bigint): void => {
    if (cur !== undefined && cur.refcount === v) cur.count += count;
    else {
      if (cur !== undefined) runs.push(cur);
      cur = { start, count, refcount: v };
    }
  };
  for (let c = 0; c * CHUNK < size; c++) {
    const at = offset + c * CHUNK;
    let zero = true;
    for (let k = 0; k < CHUNK && zero; k++) zero = bytes[at + k] === 0;
    if (zero) {
      add(c * perChunk, perChunk, 0n);
      continue;
    }
    const entries = decodeRefcountBlockFields(bytes.subarray(at, at + CHUNK), 0, { refcountOrder }).entries;
    for (let j = 0; j < entries.length; j++) add(c * perChunk + j, 1, refcountValue(entries[j]!));
  }
  if (cur !== undefined) runs.push(cur);
  return runs;
}

function describeExtension(ext: HeaderExtension, offset: number): ExtensionInfo {
  const base = { offset, typeCode: ext.type >>> 0, length: ext.lenData };
  switch (ext.type >>> 0) {
    case HeaderExtensionType.END:
      return { ...base, type: 'end' };
    case HeaderExtensionType.BACKING_FILE_FORMAT:
      return { ...base, type: 'backing-file-format', name: (ext.data as BackingFileFormat).name };
    case HeaderExtensionType.FEATURE_NAME_TABLE:
      return {
        ...base,
        type: 'feature-name-table',
        entries: (ext.data as FeatureNameTable).entries.map((f) => ({
          field: featureFieldOfType(f.featureType) ?? (`type ${f.featureType}` as const),
          bit: f.bit,
          name: f.name,
        })),
      };
    case HeaderExtensionType.BITMAPS: {
      const b = ext.data as BitmapsExtension;
      return {
        ...base,
        type: 'bitmaps',
        nbBitmaps: b.nbBitmaps,
        reserved: b.reserved,
        directorySize: u64ToBigInt(b.bitmapDirectorySize),
        directoryOffset: u64ToBigInt(b.bitmapDirectoryOffset),
      };
    }
    case HeaderExtensionType.FULL_DISK_ENCRYPTION: {
      const f = ext.data as FullDiskEncryptionPointer;
      return { ...base, type: 'full-disk-encryption', headerOffset: u64ToBigInt(f.offset), headerLength: u64ToBigInt(f.length) };
    }
    case HeaderExtensionType.EXTERNAL_DATA_FILE:
      return { ...base, type: 'external-data-file', name: (ext.data as ExternalDataFileName).name };
    default:
      return { ...base, type: 'unknown', data: ext.data as Uint8Array };
  }
}

function walkRefcounts(bytes: Uint8Array | PagedBytes, header: HeaderInfo, record: (at: string, e: unknown) => WalkError): RefcountInfo {
  const tableBytes = BigInt(header.refcountTableClusters) * BigInt(header.clusterSize);
  const tableSize = Number(tableBytes / 8n);
  const base = { tableOffset: header.refcountTableOffset, tableClusters: header.refcountTableClusters, tableSize };
  if (header.refcountTableOffset + tableBytes > BigInt(bytes.length)) {
    const err = new Qcow2FormatError('truncated', { structure: 'qcow2', field: 'refcount_table', offset: clampOffset(header.refcountTableOffset, bytes.length) },
      `${header.refcountTableClusters} cluster(s) at 0x${header.refcountTableOffset.toString(16)} run past the end of the file (0x${bytes.length.toString(16)})`);
    return { ...base, entries: [], blocks: [], error: record('refcount table', err) };
  }
  const params = { clusterBits: header.clusterBits, refcountOrder: header.refcountOrder };
  const entries: RefcountTableEntryInfo[] = [];
  const blocks: RefcountBlockInfo[] = [];
  const byOffset = new Map<bigint, RefcountBlockInfo>();
  const entryCount = (header.clusterSize * 8) / header.refcountBits;
  const start = Number(header.refcountTableOffset);
  const perPiece = TABLE_PIECE / 8;
  let w: SourceWindow | undefined;
  let view: DataView | undefined;
  for (let i = 0; i < tableSize; i++) {
    if (i % perPiece === 0) {
      w = windowOf(bytes, start + 8 * i, 8 * Math.min(perPiece, tableSize - i));
      view = dataView(w.bytes);
    }
    // An all-zero entry (most of a table: 256 Ki entries per cluster of 2 MiB) has no block and no
    // reserved bits: skipped undecoded, as readL1 skips zero L1 entries.
    const q = start + 8 * i - w!.base;
    if (view!.getUint32(q) === 0 && view!.getUint32(q + 4) === 0) continue;
    let e;
    try {
      e = decodeRefcountTableEntry(bytes, start + 8 * i, params);
    } catch (err) {
      return { ...base, entries, blocks, error: record('refcount table', err) };
    }
    const blockOffset = refcountBlockOffset(e);
    if (blockOffset === 0n && e.reserved === 0) continue;
    entries.push({ index: i, blockOffset, reservedBits: e.reserved });
    if (blockOffset === 0n) continue;
    const known = byOffset.get(blockOffset);
    if (known !== undefined) {
      known.tableIndexes.push(i);
      continue;
    }
    let block: RefcountBlockInfo;
    try {
      // Inside the file: runs straight from the bytes; past its end: the block decoder's error.
      let runs: RefcountRun[];
      if (blockOffset + BigInt(header.clusterSize) <= BigInt(bytes.length)) {
        const b = windowOf(bytes, Number(blockOffset), header.clusterSize);
        runs = refcountRuns(b.bytes, Number(blockOffset) - b.base, header.clusterSize, header.refcountOrder);
      } else {
        runs = refcountRunsOf(e.refcountBlock!.entries.map(refcountValue));
      }
      block = { offset: blockOffset, tableIndexes: [i], entryCount, runs };
    } catch (err) {
      block = { offset: blockOffset, tableIndexes: [i], entryCount, runs: [], error: record(`refcount table[${i}] -> refcount block at 0x${blockOffset.toString(16)}`, err) };
    }
    byOffset.set(blockOffset, block);
    blocks.push(block);
  }
  return { ...base, entries, blocks };
}

function walkBitmaps(ext: BitmapsExtension, record: (at: string, e: unknown) => WalkError): BitmapDirectoryInfo {
  const offset = u64ToBigInt(ext.bitmapDirectoryOffset);
  const size = u64ToBigInt(ext.bitmapDirectorySize);
  let dir;
  try {
    dir = ext.bitmapDirectory;
  } catch (e) {
    return { offset, size, bitmaps: [], error: record('bitmap directory', e) };
  }
  const bitmaps: BitmapInfo[] = [];
  for (const b of dir.entries) {
    const base = {
      name: b.name,
      tableOffset: u64ToBigInt(b.bitmapTableOffset),
      tableSize: b.bitmapTableSize,
      inUse: b.inUse,
      auto: b.auto,
      extraDataCompatible: b.extraDataCompatible,
      reservedFlags: b.reservedFlags,
      bitmapType: b.bitmapType,
      granularityBits: b.granularityBits,
      extraDataSize: b.lenExtraData,
    };
    try {
      const table: BitmapTableEntryInfo[] = [];
      const t = b.bitmapTable;
      for (let i = 0; i < t.length; i++) {
        const e = t[i]!;
        const dataOffset = (BigInt(e.offsetHi >>> 0) << 32n) | (BigInt(e.offsetLo >>> 0) << 9n);
        const reservedBits = (BigInt(e.reservedHi >>> 0) << 56n) | (BigInt(e.reservedLo >>> 0) << 1n);
        if (dataOffset === 0n && !e.allOnes && reservedBits === 0n) continue;
        table.push({ index: i, dataOffset, allOnes: e.allOnes, reservedBits });
      }
      bitmaps.push({ ...base, table });
    } catch (e) {
      bitmaps.push({ ...base, table: [], error: record(`bitmap '${b.name}' table`, e) });
    }
  }
  return { offset, size, bitmaps };
}
