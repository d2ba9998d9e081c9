/**
 * Opening an image as QEMU 7.2 opens it: every check of block/qcow2.c qcow2_do_open (and of what it
 * calls: qcow2_read_extensions, qcow2_validate_table, qcow2_read_snapshots, and the block layer's
 * total-sector refresh after the driver's open), in QEMU's order, each failure a typed OpenError with
 * a stable code, QEMU's message text and the place in the file (docs/format/open-validation.md, docs/format/extensions.md, docs/format/snapshots.md#snapshot-table).
 *
 * Why the header is read here and not only through the generated decoder: decodeHeader enforces the
 * `valid:` rules of spec/qcow2.ksy in the order of the header's fields (magic, version, cluster_bits,
 * crypt_method, refcount_order, header_length, compression_type) and reports a file shorter than its
 * header as 'truncated'. QEMU reads a 112-byte QCowHeader (zeros past the end of the file) and checks
 * in its own order — e.g. header_length against the cluster size before the backing file offset, and
 * crypt_method only after the L1 table. To report QEMU's first failing check, the checks below read the
 * big-endian fields of that zero-padded 112-byte view themselves (docs/format/header.md#header-layout offsets). Only once
 * every QEMU check passed is the image loaded by loadImage, through the generated decoder, whose rules
 * are a subset of QEMU's, so it can then only refuse a file shorter than its header (QEMU reads zeros
 * there; docs/open-validation.md). Feature-name entries and snapshot table entries are decoded by the
 * generated codec (decodeFeatureNameEntry, snapshotTableEntries).
 *
 * Resource bounds (untrusted input): nothing is allocated from a header field before QEMU's limit for
 * it is checked — the extension area is at most one cluster (≤ 2 MiB), extension data is bounded by it,
 * the snapshot table walk stops at 65536 entries and at 64 MiB of table, an entry's extra data is
 * refused above 1 KiB before it is read; L1 and refcount tables are not read at open at all (the model
 * reads them when an operation needs them, after these limits held). Every loop advances by at least
 * 8 bytes or one entry towards one of those bounds.
 */
import {
  AUTOCLEAR_FEATURE_KNOWN_MASK, BITMAPS_EXTENSION_FIXED_SIZE, BitmapsExtensionLayout, decodeFeatureNameEntry,
  FEATURE_NAME_ENTRY_FIXED_SIZE, FeatureNameEntryLayout, FULL_DISK_ENCRYPTION_POINTER_FIXED_SIZE, HEADER_EXTENSION_FIXED_SIZE,
  HEADER_MAGIC_U32, HeaderExtensionLayout, HeaderExtensionType, HeaderLayout, INCOMPATIBLE_FEATURE_KNOWN_MASK,
  L1_ENTRY_FIXED_SIZE, SNAPSHOT_ENTRY_FIXED_SIZE, SnapshotEntryLayout,
} from '../../generated/qcow2.ts';
import {
  BDRV_MAX_LENGTH, INT64_MAX, INT_MAX, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, QCOW2_MAX_BITMAP_DIRECTORY_SIZE,
  QCOW2_MAX_BITMAPS, QCOW_MAX_L1_SIZE, QCOW_MAX_REFTABLE_SIZE, QCOW_MAX_SNAPSHOT_EXTRA_DATA, QCOW_MAX_SNAPSHOTS,
  QCOW_MAX_SNAPSHOTS_SIZE,
} from '../format/index.ts';
import { EIO, strerror } from '../model/index.ts';
import { V2_HEADER_LENGTH, withHeader } from '../model/index.ts';
import { HostReaderError, type HostReader } from '../model/index.ts';
import { PAGE_SIZE } from '../model/index.ts';
import { type HostIO } from '../model/index.ts';
import {
  AUTOCLEAR_BITMAPS,
  AUTOCLEAR_DATA_FILE_RAW,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  type HeaderState,
  type Image,
} from '../model/index.ts';
import { loadImage, type LoadOptions } from '../model/index.ts';
import { repairImage, type RepairResult } from '../check/index.ts';
import { snapshotTableEntries, type SnapshotEntrySizes } from '../model/index.ts';

// ---------------------------------------------------------------------------------------------
// Errors

/**
 * One stable code per check (docs/format/open-validation.md#qemus-order numbers in brackets). New codes may be added; existing
 * ones never change meaning.
 */
export type OpenErrorCode =
  /** [1] magic is not "QFI\xfb". */
  | 'bad-magic'
  /** [2] version other than 2 or 3. */
  | 'unsupported-version'
  /** [3] cluster_bits outside 9..21. */
  | 'unsupported-cluster-size'
  /** [4] version 3 with header_length < 104. */
  | 'header-too-short'
  /** [5] header_length > cluster size. */
  | 'header-exceeds-cluster'
  /** [6] backing_file_offset > cluster size. */
  | 'invalid-backing-offset'
  /** [7] compression_type other than 0 (zlib) and 1 (zstd). */
  | 'unknown-compression-type'
  /** [7] compression_type and incompatible bit 3 disagree. */
  | 'compression-bit-mismatch'
  /** [8] an incompatible feature bit QEMU does not know. */
  | 'unsupported-feature'
  /** [9] corrupt bit on a writable (non-check) open. */
  | 'image-corrupt'
  /** [10] extended L2 entries with subclusters below 512 bytes. */
  | 'unsupported-subcluster-size'
  /** [11] refcount_order > 6. */
  | 'refcount-width-too-large'
  /** [13] refcount_table_clusters == 0 (not in check mode). */
  | 'no-refcount-table'
  /** [14] refcount table above 8 MiB. */
  | 'refcount-table-too-large'
  /** [14] refcount table offset unaligned or its end past INT64_MAX. */
  | 'refcount-table-offset-invalid'
  /** [15] more than 65536 snapshots (not in check mode). */
  | 'snapshot-table-too-large'
  /** [15] snapshot table offset unaligned or its end past INT64_MAX (not in check mode). */
  | 'snapshot-table-offset-invalid'
  /** [16] active L1 table above 32 MiB. */
  | 'l1-too-large'
  /** [16] active L1 offset unaligned or its end past INT64_MAX. */
  | 'l1-offset-invalid'
  /** [17] the L1 index of the virtual size's end exceeds INT_MAX. */
  | 'image-too-big'
  /** [17] l1_size smaller than the virtual size needs. */
  | 'l1-too-small'
  /** Reading the active L1 table fails: it ends past the block layer's limit (2^63 - 2^30), -EIO. */
  | 'l1-read-failed'
  /** [18] crypt_method other than 0, 1, 2 (qcow2_update_options). */
  | 'unsupported-encryption-method'
  /** qcow2_refcount_init: reading the refcount table fails (it ends past 2^63 - 2^30), -EIO. */
  | 'refcount-table-read-failed'
  /** [19] an extension's header or data runs past the end of the extension area. */
  | 'extension-too-large'
  /** [19] backing format extension of 16 bytes or more. */
  | 'backing-format-too-long'
  /** [19] full disk encryption extension on an image that is not LUKS-encrypted. */
  | 'crypto-extension-unexpected'
  /** [19] full disk encryption extension whose length is not 16. */
  | 'crypto-extension-size'
  /** [19] encryption header offset not cluster aligned. */
  | 'crypto-header-unaligned'
  /** [19] bitmaps extension whose length is not 24. */
  | 'bitmaps-extension-size'
  /** [19] bitmaps extension with a non-zero reserved field. */
  | 'bitmaps-reserved'
  /** [19] bitmaps extension with more than 65535 bitmaps. */
  | 'too-many-bitmaps'
  /** [19] bitmaps extension with zero bitmaps. */
  | 'no-bitmaps'
  /** [19] bitmap directory offset not cluster aligned. */
  | 'bitmap-directory-offset'
  /** [19] bitmap directory above 1024 × 65535 bytes. */
  | 'bitmap-directory-too-large'
  /** [20] incompatible bit 2 without a data file name, and none given. */
  | 'data-file-required'
  /** [20] a data file given for an image without incompatible bit 2. */
  | 'data-file-not-allowed'
  /** [20] autoclear bit 1 (raw external data) without incompatible bit 2. */
  | 'data-file-raw-without-data-file'
  /** [21] crypt_method 2 (LUKS) without the full disk encryption extension. */
  | 'missing-crypto-header'
  /** [22] backing file name longer than 1023 bytes or than the rest of cluster 0. */
  | 'backing-name-too-long'
  /** [23] a snapshot table entry with more than 1024 bytes of extra data (not in check mode). */
  | 'snapshot-extra-data-too-large'
  /** [23] the snapshot table's entries reach past 64 MiB (not in check mode). */
  | 'snapshot-table-too-big'
  /** [23] reading a snapshot table entry fails (it ends past 2^63 - 2^30), -EIO (not in check mode). */
  | 'snapshot-table-read-failed'
  /** The block layer after the driver's open: the virtual size exceeds 2^63 - 2^30 (bdrv_refresh_total_sectors). */
  | 'virtual-size-too-large'
  /** [25] the automatic `check -r all` of a dirty image on a writable open failed. */
  | 'dirty-repair-failed';

/** An image QEMU 7.2 would refuse to open, with QEMU's reason and where in the file it is. */
export class OpenError extends Error {
  override readonly name = 'OpenError';
  readonly code: OpenErrorCode;
  /** QEMU 7.2's message text exactly (what follows "Could not open 'FILE': "). */
  readonly qemuMessage: string;
  /** The hint QEMU prints on the next line(s), if any (e.g. "You can force-remove ... -r all"). */
  readonly hint?: string;
  /** The spec/qcow2.ksy structure and field the check is about, and the field's offset in the file. */
  readonly structure: string;
  readonly field: string;
  readonly offset: bigint;

  constructor(code: OpenErrorCode, where: { structure: string; field: string; offset: bigint }, qemuMessage: string, hint?: string) {
    super(`${where.structure}.${where.field} at 0x${where.offset.toString(16)}: ${qemuMessage}`);
    this.code = code;
    this.qemuMessage = qemuMessage;
    this.structure = where.structure;
    this.field = where.field;
    this.offset = where.offset;
    if (hint !== undefined) this.hint = hint;
  }
}

/** True when `e` is an OpenError (also across module copies). */
export function isOpenError(e: unknown): e is OpenError {
  return e instanceof OpenError || (e instanceof Error && e.name === 'OpenError');
}

// ---------------------------------------------------------------------------------------------
// Options and results

/** How the image is opened (QEMU's open flags). */
export interface OpenOptions extends LoadOptions {
  /** BDRV_O_RDWR: refuses the corrupt bit, clears unknown autoclear bits, repairs a dirty image. */
  readonly writable?: boolean;
  /** BDRV_O_CHECK (qemu-img check): no refcount-table-present check, no snapshot table, no repair. */
  readonly checkMode?: boolean;
  /**
   * BDRV_O_NO_IO, as `qemu-img info` opens: the external data file is not looked at (its checks are
   * skipped, docs/format/open-validation.md#qemus-order #20) and LUKS is not opened (#21: a missing encryption header is not an
   * error here; QEMU 7.2's info crashes on it, docs/open-validation.md).
   */
  readonly noIo?: boolean;
}

/** What a writable open changed, besides the Image. */
export interface OpenResult {
  /** The opened image (its file includes `io`). */
  readonly image: Image;
  /** Host writes the open made, in order: unknown autoclear bits cleared, the dirty image repaired. */
  readonly io: readonly HostIO[];
  /** The automatic `check -r all` of a dirty image (writable opens only), as QEMU ran it. */
  readonly repair?: RepairResult;
  /** Warnings QEMU prints while opening (without the program prefix). */
  readonly warnings: readonly string[];
}

// ---------------------------------------------------------------------------------------------
// QEMU's constants: limits from src/format/limits.ts, positions and masks from the spec.

/** sizeof(QCowHeader): what qcow2_do_open reads at offset 0. */
const QCOW_HEADER_SIZE = 112;
/** sizeof(QCowSnapshotHeader): the fixed part of a snapshot table entry. */
const SNAPSHOT_HEADER_SIZE = BigInt(SNAPSHOT_ENTRY_FIXED_SIZE);
const U64_MOD = 1n << 64n;

/**
 * Whether bdrv_pread of [offset, offset + bytes) fails with -EIO in the block layer: BDRV_MAX_LENGTH
 * (2^63 - 2^30) bounds every request (bdrv_check_request), before the file is touched, so a table QEMU
 * must read at open and whose end lies beyond it cannot be read [7.2, measured].
 */
function beyondBlockLimit(offset: bigint, bytes: bigint): boolean {
  return offset > BDRV_MAX_LENGTH || bytes > BDRV_MAX_LENGTH - offset;
}

// ---------------------------------------------------------------------------------------------
// Reading the file as QEMU's bdrv_pread does: zeros past its end

/**
 * The start of the file, read once for all open-time checks (header and extension area: at most
 * one cluster) and then lent to loadImage, so that validating costs no second read of those bytes:
 * a HostReader source is read in whole pages, and `reader()` serves reads inside what was read from
 * memory. Reads past the end of the file give zeros (QEMU's bdrv_pread of a file does the same).
 */
class FilePrefix {
  private bytes: Uint8Array;
  private readonly length: bigint;

  constructor(private readonly source: Uint8Array | HostReader) {
    this.bytes = source instanceof Uint8Array ? source : new Uint8Array(0);
    this.length = source instanceof Uint8Array ? BigInt(source.length) : source.length;
  }

  /** `n` bytes at offset `at` (both small: inside the header cluster), zeros past the end of the file. */
  padded(at: number, n: number): Uint8Array {
    this.ensure(at + n);
    const out = new Uint8Array(n);
    if (at < this.bytes.length) out.set(this.bytes.subarray(at, Math.min(at + n, this.bytes.length)));
    return out;
  }

  /** Makes the first `end` bytes (clipped to the file) available, reading whole pages of a reader. */
  private ensure(end: number): void {
    if (this.source instanceof Uint8Array || end <= this.bytes.length) return;
    const want = BigInt(Math.ceil(end / PAGE_SIZE) * PAGE_SIZE);
    const upTo = Number(want < this.length ? want : this.length);
    if (upTo <= this.bytes.length) return;
    const more = this.source.read(BigInt(this.bytes.length), upTo - this.bytes.length);
    if (more.length !== upTo - this.bytes.length) throw new HostReaderError('short-read', `host reader returned ${more.length} byte(s) at 0x${this.bytes.length.toString(16)}, not ${upTo - this.bytes.length}`);
    const grown = new Uint8Array(upTo);
    grown.set(this.bytes);
    grown.set(more, this.bytes.length);
    this.bytes = grown;
  }

  /** The source for loadImage: a reader answers reads inside the prefix from memory. */
  loadSource(): Uint8Array | HostReader {
    const src = this.source;
    if (src instanceof Uint8Array) return src;
    const prefix = this.bytes;
    const inPrefix = (offset: bigint, n: number): boolean => offset + BigInt(n) <= BigInt(prefix.length);
    const readInto = src.readInto?.bind(src);
    return {
      length: src.length,
      read: (offset: bigint, n: number): Uint8Array =>
        inPrefix(offset, n) ? prefix.slice(Number(offset), Number(offset) + n) : src.read(offset, n),
      // Passed on when the source has it: a streaming driver then reads straight into its buffer.
      ...(readInto !== undefined
        ? {
          readInto: (offset: bigint, target: Uint8Array, pos: number, n: number): void => {
            if (inPrefix(offset, n)) target.set(prefix.subarray(Number(offset), Number(offset) + n), pos);
            else readInto(offset, target, pos, n);
          },
        }
        : {}),
    };
  }
}

/** Big-endian field readers over a buffer of FilePrefix.padded (offsets inside it). */
function be8(b: Uint8Array, at: number): number {
  return b[at]!;
}
function be32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}
function be64(b: Uint8Array, at: number): bigint {
  return (BigInt(be32(b, at)) << 32n) | BigInt(be32(b, at + 4));
}

/**
 * QEMU's QCowHeader after qcow2_do_open's byte swapping (v2 images get the v3 defaults): the model's
 * HeaderState fields, with the magic and a version not yet checked to be 2 or 3.
 */
interface RawHeader extends Omit<HeaderState, 'version'> {
  readonly magic: number;
  readonly version: number;
}

/** The big-endian value of header field `f` in `b` (32 bits and less as a number). */
function u32At(b: Uint8Array, f: { readonly offset: number; readonly size: 1 | 4 }): number {
  return f.size === 1 ? be8(b, f.offset) : be32(b, f.offset);
}

/** The header fields of `b` (the first 112 bytes of the file, zero-padded), at the spec's HeaderLayout. */
function rawHeader(b: Uint8Array): RawHeader {
  const L = HeaderLayout;
  const version = u32At(b, L.version);
  const v2 = version === 2;
  return {
    magic: u32At(b, L.magic),
    version,
    backingFileOffset: be64(b, L.backingFileOffset.offset),
    backingFileSize: u32At(b, L.backingFileSize),
    clusterBits: u32At(b, L.clusterBits),
    size: be64(b, L.size.offset),
    cryptMethod: u32At(b, L.cryptMethod),
    l1Size: u32At(b, L.l1Size),
    l1TableOffset: be64(b, L.l1TableOffset.offset),
    refcountTableOffset: be64(b, L.refcountTableOffset.offset),
    refcountTableClusters: u32At(b, L.refcountTableClusters),
    nbSnapshots: u32At(b, L.nbSnapshots),
    snapshotsOffset: be64(b, L.snapshotsOffset.offset),
    // qcow2_do_open: "Initialise version 3 header fields" with version 2's implied values.
    incompatibleFeatures: v2 ? 0n : be64(b, L.incompatibleFeatures.offset),
    compatibleFeatures: v2 ? 0n : be64(b, L.compatibleFeatures.offset),
    autoclearFeatures: v2 ? 0n : be64(b, L.autoclearFeatures.offset),
    refcountOrder: v2 ? 4 : u32At(b, L.refcountOrder),
    headerLength: v2 ? V2_HEADER_LENGTH : u32At(b, L.headerLength),
    compressionType: u32At(b, L.compressionType),
  };
}

/** A header field's spec name (what OpenError.field holds). */
type HeaderFieldId = (typeof HeaderLayout)[keyof typeof HeaderLayout]['id'];

/** Offset of each header field by its spec name. */
const HEADER_FIELD_OFFSET: ReadonlyMap<string, number> = new Map(Object.values(HeaderLayout).map((f) => [f.id, f.offset]));

function headerError(code: OpenErrorCode, field: HeaderFieldId, message: string, hint?: string): OpenError {
  return new OpenError(code, { structure: 'header', field, offset: BigInt(HEADER_FIELD_OFFSET.get(field)!) }, message, hint);
}

// ---------------------------------------------------------------------------------------------
// Header extensions (qcow2_read_extensions)

/** What qcow2_read_extensions found before it stopped. */
interface ExtensionScan {
  /** The last feature name table extension's data (QEMU keeps the last one it reads). */
  readonly featureTable?: Uint8Array;
  readonly hasCryptoHeader: boolean;
  readonly dataFileName?: Uint8Array;
  readonly warnings: readonly string[];
  /** Why the scan stopped early (QEMU's return value ≠ 0 with this message). */
  readonly error?: OpenError;
}

/**
 * qcow2_read_extensions over `area` (the file's bytes [0, end), zero-padded) from `start`: stops at
 * the end-of-extensions marker, at `end`, or at the first error. `cryptMethod` is what QEMU knows of
 * the header's crypt_method at the time (0 during the unsupported-feature pass, which runs before it
 * is set). The loop moves at least 8 bytes per extension and `end` is at most one cluster.
 */
function scanExtensions(area: Uint8Array, start: number, end: number, h: RawHeader, cryptMethod: number): ExtensionScan {
  const clusterSize = 1 << h.clusterBits;
  const warnings: string[] = [];
  let featureTable: Uint8Array | undefined;
  let hasCryptoHeader = false;
  let dataFileName: Uint8Array | undefined;
  const result = (error?: OpenError): ExtensionScan => ({
    ...(featureTable !== undefined ? { featureTable } : {}),
    hasCryptoHeader,
    ...(dataFileName !== undefined ? { dataFileName } : {}),
    warnings,
    ...(error !== undefined ? { error } : {}),
  });
  const extError = (code: OpenErrorCode, field: string, at: number, message: string): ExtensionScan =>
    result(new OpenError(code, { structure: 'header_extension', field, offset: BigInt(at) }, message));
  const X = HeaderExtensionLayout;
  let offset = start;
  while (offset < end) {
    const at = offset;
    const lenAt = at + X.lenData.offset;
    // Both fields are read before the check; past `end` they are not needed (the check fails).
    const type = at + HEADER_EXTENSION_FIXED_SIZE <= end ? be32(area, at + X.type.offset) : 0;
    const len = at + HEADER_EXTENSION_FIXED_SIZE <= end ? be32(area, lenAt) : 0;
    offset += HEADER_EXTENSION_FIXED_SIZE;
    if (offset > end || len > end - offset) return extError('extension-too-large', 'len_data', lenAt, 'Header extension too large');
    const data = offset;
    switch (type) {
      case HeaderExtensionType.END:
        return result();
      case HeaderExtensionType.BACKING_FILE_FORMAT:
        // sizeof(bs->backing_format) is 16: the name and its NUL must fit.
        if (len >= 16) return extError('backing-format-too-long', 'len_data', lenAt, `ERROR: ext_backing_format: len=${len} too large (>=16)`);
        break;
      case HeaderExtensionType.FEATURE_NAME_TABLE:
        featureTable = area.slice(data, data + len);
        break;
      case HeaderExtensionType.FULL_DISK_ENCRYPTION: {
        if (cryptMethod !== 2) return extError('crypto-extension-unexpected', 'type', at, 'CRYPTO header extension only expected with LUKS encryption method');
        // sizeof(Qcow2CryptoHeaderExtension)
        if (len !== FULL_DISK_ENCRYPTION_POINTER_FIXED_SIZE) {
          return extError('crypto-extension-size', 'len_data', lenAt, `CRYPTO header extension size ${len}, but expected size ${FULL_DISK_ENCRYPTION_POINTER_FIXED_SIZE}`);
        }
        const cryptoOffset = be64(area, data);
        if (cryptoOffset % BigInt(clusterSize) !== 0n) {
          return result(new OpenError('crypto-header-unaligned', { structure: 'full_disk_encryption_pointer', field: 'offset', offset: BigInt(data) },
            `Encryption header offset '${cryptoOffset}' is not a multiple of cluster size '${clusterSize}'`));
        }
        // qcrypto_block_open (LUKS header, key) is not modelled: docs/open-validation.md.
        hasCryptoHeader = true;
        break;
      }
      case HeaderExtensionType.BITMAPS: {
        // sizeof(Qcow2BitmapHeaderExt)
        if (len !== BITMAPS_EXTENSION_FIXED_SIZE) return extError('bitmaps-extension-size', 'len_data', lenAt, 'bitmaps_ext: Invalid extension length');
        if ((h.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0n) {
          // Only a warning: the bitmaps are inconsistent and ignored (docs/format/extensions.md#extension-errors).
          warnings.push(h.version < 3
            ? 'This qcow2 v2 image contains bitmaps, but they may have been modified by a program without persistent bitmap support; so now they must all be considered inconsistent'
            : 'a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent');
          break;
        }
        const B = BitmapsExtensionLayout;
        const bm = (f: { readonly id: string; readonly offset: number }, code: OpenErrorCode, message: string): ExtensionScan =>
          result(new OpenError(code, { structure: 'bitmaps_extension', field: f.id, offset: BigInt(data + f.offset) }, message));
        if (be32(area, data + B.reserved.offset) !== 0) return bm(B.reserved, 'bitmaps-reserved', 'bitmaps_ext: Reserved field is not zero');
        const nb = be32(area, data + B.nbBitmaps.offset);
        if (nb > QCOW2_MAX_BITMAPS) {
          return bm(B.nbBitmaps, 'too-many-bitmaps', `bitmaps_ext: Image has ${nb} bitmaps, exceeding the QEMU supported maximum of ${QCOW2_MAX_BITMAPS}`);
        }
        if (nb === 0) return bm(B.nbBitmaps, 'no-bitmaps', 'found bitmaps extension with zero bitmaps');
        if (be64(area, data + B.bitmapDirectoryOffset.offset) % BigInt(clusterSize) !== 0n) {
          return bm(B.bitmapDirectoryOffset, 'bitmap-directory-offset', 'bitmaps_ext: invalid bitmap directory offset');
        }
        const dirSize = be64(area, data + B.bitmapDirectorySize.offset);
        if (dirSize > BigInt(QCOW2_MAX_BITMAP_DIRECTORY_SIZE)) {
          return bm(B.bitmapDirectorySize, 'bitmap-directory-too-large',
            `bitmaps_ext: bitmap directory size (${dirSize}) exceeds the maximum supported size (${QCOW2_MAX_BITMAP_DIRECTORY_SIZE})`);
        }
        break;
      }
      case HeaderExtensionType.EXTERNAL_DATA_FILE:
        dataFileName = area.slice(data, data + len);
        break;
      default:
        // Unknown: kept by QEMU for header rewrites, nothing to check.
        break;
    }
    offset = data + ((len + 7) & ~7);
  }
  return result();
}

/** Bytes of one feature name table entry (sizeof(Qcow2Feature), docs/format/extensions.md#feature-name-table). */
const FEATURE_ENTRY_SIZE = FEATURE_NAME_ENTRY_FIXED_SIZE;

/**
 * report_unsupported_feature: the names of the feature table's incompatible entries whose bit is in
 * `mask` (table order, each bit named once), then `Unknown incompatible feature: <hex>` for the rest.
 * Like QEMU, the table ends at the first entry with an empty name (the data is followed by zeros), and
 * a bit number is taken modulo 64 (x86-64 shift semantics of QEMU's `1ULL << bit`).
 */
function unsupportedFeatureMessage(table: Uint8Array | undefined, mask: bigint): string {
  const names: string[] = [];
  if (table !== undefined) {
    // QEMU reads the extension into a buffer of len + 2 × 48 zero bytes.
    const padded = new Uint8Array(table.length + 2 * FEATURE_ENTRY_SIZE);
    padded.set(table);
    for (let at = 0; at + FEATURE_ENTRY_SIZE <= padded.length; at += FEATURE_ENTRY_SIZE) {
      const e = decodeFeatureNameEntry(padded, at);
      const raw = padded.subarray(at + FeatureNameEntryLayout.name.offset, at + FEATURE_ENTRY_SIZE);
      if (raw[0] === 0) break;
      if (e.featureType !== 0) continue;
      const bit = 1n << BigInt(e.bit & 63);
      if ((mask & bit) === 0n) continue;
      const nul = raw.indexOf(0);
      names.push(new TextDecoder().decode(nul < 0 ? raw : raw.subarray(0, nul)));
      mask &= ~bit;
    }
  }
  if (mask !== 0n) names.push(`Unknown incompatible feature: ${mask.toString(16)}`);
  return `Unsupported qcow2 feature(s): ${names.join(', ')}`;
}

// ---------------------------------------------------------------------------------------------
// Tables (qcow2_validate_table)

/** qcow2_validate_table: 'too-large' when entries × entryLen > max, 'offset' when unaligned or past INT64_MAX. */
function validateTable(offset: bigint, entries: bigint, entryLen: bigint, max: bigint, clusterSize: bigint): 'too-large' | 'offset' | undefined {
  if (entries > max / entryLen) return 'too-large';
  if (INT64_MAX - entries * entryLen < offset || offset % clusterSize !== 0n) return 'offset';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The open

/**
 * loadImage + QEMU 7.2's open-time validation in qcow2_do_open order (see the module comment):
 * throws the OpenError of QEMU's first failing check, or Qcow2FormatError only where QEMU has no check
 * (a file shorter than its own header). A writable open (not in check mode) refuses the corrupt bit,
 * clears unknown autoclear bits and, for a dirty image, runs repairImage(image, 'all') as QEMU runs
 * `check -r all` (docs/format/open-validation.md#qemus-order #25): the returned Image's file then holds those changes — a caller
 * that writes the file back must use openImageWithIo's `io`. May throw what the source's reader throws.
 */
export function openImage(source: Uint8Array | HostReader, opts: OpenOptions = {}): Image {
  return openImageWithIo(source, opts).image;
}

/**
 * openImage, with the host writes a writable open made (to issue before any later writes), the
 * automatic repair's result and QEMU's warnings. Same errors as openImage.
 */
export function openImageWithIo(source: Uint8Array | HostReader, opts: OpenOptions = {}): OpenResult {
  const writable = opts.writable === true;
  const checkMode = opts.checkMode === true;
  const prefix = new FilePrefix(source);
  const h = rawHeader(prefix.padded(0, QCOW_HEADER_SIZE));

  // [1]-[3]
  if (h.magic !== HEADER_MAGIC_U32) throw headerError('bad-magic', 'magic', 'Image is not in qcow2 format');
  if (h.version < 2 || h.version > 3) throw headerError('unsupported-version', 'version', `Unsupported qcow2 version ${h.version}`);
  if (h.clusterBits < MIN_CLUSTER_BITS || h.clusterBits > MAX_CLUSTER_BITS) {
    throw headerError('unsupported-cluster-size', 'cluster_bits', `Unsupported cluster size: 2^${h.clusterBits}`);
  }
  const clusterSize = 1 << h.clusterBits;
  const clusterSizeN = BigInt(clusterSize);
  // [4]-[6]
  if (h.version === 3 && h.headerLength < 104) throw headerError('header-too-short', 'header_length', 'qcow2 header too short');
  if (h.headerLength > clusterSize) throw headerError('header-exceeds-cluster', 'header_length', 'qcow2 header exceeds cluster size');
  if (h.backingFileOffset > clusterSizeN) throw headerError('invalid-backing-offset', 'backing_file_offset', 'Invalid backing file offset');
  const extEnd = h.backingFileOffset !== 0n ? Number(h.backingFileOffset) : clusterSize;
  // Cluster 0 up to the end of the extension area: at most one cluster (2 MiB).
  const area = prefix.padded(0, extEnd);

  // [7] validate_compression_type: the field counts only when header_length reaches past it.
  const compressionType = h.headerLength > HeaderLayout.compressionType.offset ? h.compressionType : 0;
  if (compressionType !== 0 && compressionType !== 1) {
    throw headerError('unknown-compression-type', 'compression_type', `qcow2: unknown compression type: ${compressionType}`);
  }
  if (compressionType === 0 && (h.incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n) {
    throw headerError('compression-bit-mismatch', 'incompatible_features', 'qcow2: Compression type incompatible feature bit must not be set');
  }
  if (compressionType !== 0 && (h.incompatibleFeatures & INCOMPAT_COMPRESSION) === 0n) {
    throw headerError('compression-bit-mismatch', 'incompatible_features', 'qcow2: Compression type incompatible feature bit must be set');
  }
  // [8] The names come from a first extension pass whose errors are ignored (errp NULL in QEMU).
  const unknown = h.incompatibleFeatures & ~INCOMPATIBLE_FEATURE_KNOWN_MASK;
  if (unknown !== 0n) {
    const table = scanExtensions(area, h.headerLength, extEnd, h, 0).featureTable;
    throw headerError('unsupported-feature', 'incompatible_features', unsupportedFeatureMessage(table, unknown));
  }
  // [9]
  if ((h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n && writable && !checkMode) {
    throw headerError('image-corrupt', 'incompatible_features', 'qcow2: Image is corrupt; cannot be opened read/write');
  }
  // [10] Extended L2: 32 subclusters per cluster, each at least 512 bytes.
  const extendedL2 = (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
  const subclusterSize = extendedL2 ? clusterSize / 32 : clusterSize;
  if (subclusterSize < 1 << MIN_CLUSTER_BITS) {
    throw headerError('unsupported-subcluster-size', 'incompatible_features', `Unsupported subcluster size: ${subclusterSize}`);
  }
  // [11]
  if (h.refcountOrder > 6) throw headerError('refcount-width-too-large', 'refcount_order', 'Reference count entry width too large; may not exceed 64 bits');
  // [13]-[14]
  if (h.refcountTableClusters === 0 && !checkMode) {
    throw headerError('no-refcount-table', 'refcount_table_clusters', 'Image does not contain a reference count table');
  }
  const reftable = validateTable(h.refcountTableOffset, BigInt(h.refcountTableClusters), clusterSizeN, BigInt(QCOW_MAX_REFTABLE_SIZE), clusterSizeN);
  if (reftable === 'too-large') throw headerError('refcount-table-too-large', 'refcount_table_clusters', 'Reference count table too large');
  if (reftable === 'offset') throw headerError('refcount-table-offset-invalid', 'refcount_table_offset', 'Reference count table offset invalid');
  // [15]
  if (!checkMode) {
    const snap = validateTable(h.snapshotsOffset, BigInt(h.nbSnapshots), SNAPSHOT_HEADER_SIZE, SNAPSHOT_HEADER_SIZE * BigInt(QCOW_MAX_SNAPSHOTS), clusterSizeN);
    if (snap === 'too-large') throw headerError('snapshot-table-too-large', 'nb_snapshots', 'Snapshot table too large');
    if (snap === 'offset') throw headerError('snapshot-table-offset-invalid', 'snapshots_offset', 'Snapshot table offset invalid');
  }
  // [16]
  const l1 = validateTable(h.l1TableOffset, BigInt(h.l1Size), BigInt(L1_ENTRY_FIXED_SIZE), BigInt(QCOW_MAX_L1_SIZE), clusterSizeN);
  if (l1 === 'too-large') throw headerError('l1-too-large', 'l1_size', 'Active L1 table too large');
  if (l1 === 'offset') throw headerError('l1-offset-invalid', 'l1_table_offset', 'Active L1 table offset invalid');
  // [17] size_to_l1 in uint64 arithmetic: (size + 2^shift - 1) wraps modulo 2^64 (a size close to
  // 2^64 gives index 0; the block layer refuses it below).
  const l2Bits = h.clusterBits - (extendedL2 ? 4 : 3);
  const shift = BigInt(h.clusterBits + l2Bits);
  const l1Needed = ((h.size + (1n << shift) - 1n) % U64_MOD) >> shift;
  if (l1Needed > BigInt(INT_MAX)) throw headerError('image-too-big', 'size', 'Image is too big');
  if (BigInt(h.l1Size) < l1Needed) throw headerError('l1-too-small', 'l1_size', 'L1 table is too small');
  // The active L1 table is read now (the model reads it later; only the read's failure is QEMU's).
  if (h.l1Size > 0 && beyondBlockLimit(h.l1TableOffset, BigInt(h.l1Size) * BigInt(L1_ENTRY_FIXED_SIZE))) {
    throw headerError('l1-read-failed', 'l1_table_offset', 'Could not read L1 table: Input/output error');
  }
  // [18] qcow2_update_options: the encryption method (printed as a signed int).
  if (h.cryptMethod > 2) throw headerError('unsupported-encryption-method', 'crypt_method', `Unsupported encryption method ${h.cryptMethod | 0}`);
  // qcow2_refcount_init reads the refcount table.
  if (h.refcountTableClusters > 0 && beyondBlockLimit(h.refcountTableOffset, BigInt(h.refcountTableClusters) * clusterSizeN)) {
    throw headerError('refcount-table-read-failed', 'refcount_table_offset', 'Could not initialize refcount handling: Input/output error');
  }

  // [19] Header extensions.
  const exts = scanExtensions(area, h.headerLength, extEnd, h, h.cryptMethod);
  if (exts.error !== undefined) throw exts.error;

  // [20] External data file (not looked at by a no-I/O open: qemu-img info).
  if (!opts.noIo) {
    if ((h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n) {
      // With a name, the caller opens that file (or fails to, with its own error); without one it must give one.
      if (opts.dataFile === undefined && exts.dataFileName === undefined) {
        throw headerError('data-file-required', 'incompatible_features', "'data-file' is required for this image");
      }
    } else {
      if (opts.dataFile !== undefined) {
        throw headerError('data-file-not-allowed', 'incompatible_features', "'data-file' can only be set for images with an external data file");
      }
      if ((h.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n) {
        throw headerError('data-file-raw-without-data-file', 'autoclear_features', 'data-file-raw requires a data file');
      }
    }
  }
  // [21]
  if (h.cryptMethod === 2 && !exts.hasCryptoHeader && !opts.noIo) {
    throw headerError('missing-crypto-header', 'crypt_method', 'Missing CRYPTO header for crypt method 2');
  }
  // [22] The name must fit in 1023 bytes and in cluster 0.
  if (h.backingFileOffset !== 0n) {
    const len = BigInt(h.backingFileSize);
    const room = clusterSizeN - h.backingFileOffset;
    if (len > (room < 1023n ? room : 1023n) || len >= 1024n) {
      throw headerError('backing-name-too-long', 'backing_file_size', 'Backing file name too long');
    }
  }

  // Every check on the header passed: decode it (the generated decoder's rules are a subset).
  let image = loadImage(prefix.loadSource(), opts);

  // [23] qcow2_read_snapshots (skipped in check mode).
  if (!checkMode) checkSnapshotTable(image);

  // bdrv_open_driver → bdrv_refresh_total_sectors, after the driver's open. Checked before the
  // writable steps below so that a refused image is never changed (QEMU would have repaired it first).
  if ((h.size / 512n) * 512n > BDRV_MAX_LENGTH) {
    throw headerError('virtual-size-too-large', 'size', 'Could not refresh total sector count: File too large');
  }

  const io: HostIO[] = [];
  let repair: RepairResult | undefined;
  if (writable) {
    // [24] Unknown autoclear bits are cleared (qcow2_update_header; the model writes the field only).
    const autoclear = image.header.autoclearFeatures & AUTOCLEAR_FEATURE_KNOWN_MASK;
    if (image.header.version === 3 && autoclear !== image.header.autoclearFeatures) {
      const r = withHeader(image, { autoclearFeatures: autoclear });
      image = r.image;
      io.push(...r.io);
    }
    // [25] A dirty image is repaired as `qemu-img check -r all` repairs it.
    if (!checkMode && (image.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) {
      repair = repairDirty(image);
      image = repair.image;
      io.push(...repair.io);
    }
  }
  return { image, io, ...(repair !== undefined ? { repair } : {}), warnings: exts.warnings };
}

/**
 * qcow2_read_snapshots' limits: an entry's extra data at most 1 KiB (checked before it is read), and
 * the table (entries 8-byte aligned) at most 64 MiB; an entry ending past the block layer's limit
 * cannot be read (-EIO). Entries past the end of the file read as zeros,
 * as QEMU reads them. At most 65536 entries (checked before) and 64 MiB + one entry are read.
 */
function checkSnapshotTable(image: Image): void {
  const h = image.header;
  const readFailed = (pos: bigint): OpenError =>
    new OpenError('snapshot-table-read-failed', { structure: 'snapshot_entry', field: '(start)', offset: pos }, 'Failed to read snapshot table: Input/output error');
  const guard = <T>(pos: bigint, decode: () => T, sizes: SnapshotEntrySizes): T => {
    // The fixed part is read first, then the extra data is checked, then the rest is read.
    if (beyondBlockLimit(pos, SNAPSHOT_HEADER_SIZE)) throw readFailed(pos);
    if (sizes.extraData > QCOW_MAX_SNAPSHOT_EXTRA_DATA) {
      throw new OpenError('snapshot-extra-data-too-large', { structure: 'snapshot_entry', field: SnapshotEntryLayout.lenExtraData.id, offset: pos + BigInt(SnapshotEntryLayout.lenExtraData.offset) },
        `Too much extra metadata in snapshot table entry ${sizes.index}`, 'You can force-remove this extra metadata with qemu-img check -r all');
    }
    if (beyondBlockLimit(pos, sizes.size)) throw readFailed(pos);
    // table_length, and offset - snapshots_offset ≤ INT_MAX (implied: 64 MiB is less).
    if (pos + sizes.size - h.snapshotsOffset > BigInt(QCOW_MAX_SNAPSHOTS_SIZE)) {
      throw new OpenError('snapshot-table-too-big', { structure: 'snapshot_entry', field: '(start)', offset: pos }, 'Snapshot table is too big',
        `You can force-remove all ${h.nbSnapshots - sizes.index} overhanging snapshots with qemu-img check -r all`);
    }
    return decode();
  };
  for (const _ of snapshotTableEntries(image.file, h, { guard })) {
    // Nothing else is checked at open (snapshot L1 tables are checked when used, docs/format/open-validation.md#not-checked-at-open).
  }
}

/**
 * The automatic repair of a dirty image on a writable open: qcow2_do_open runs the check with both
 * fix flags once (qcow2_co_check_locked) and keeps the image open (no close, so the dirty bit is
 * cleared only if the check cleared it). A check that failed, or left check errors, fails the open:
 * `Could not repair dirty image: <strerror>` (-EIO for check errors).
 */
function repairDirty(image: Image): RepairResult {
  const r = repairImage(image, 'all', { close: false });
  const failure = r.first.failure ?? (r.first.checkErrors > 0 ? strerror(EIO) : undefined);
  if (failure !== undefined) {
    throw headerError('dirty-repair-failed', 'incompatible_features', `Could not repair dirty image: ${failure}`);
  }
  return r;
}
