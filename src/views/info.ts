/**
 * `qemu-img info` of QEMU 7.2 as a pure function: an Image (and what `stat` says about its file) in,
 * the ImageInfo QEMU's bdrv_query_image_info builds out — and the same report as the QAPI visitor
 * turns it into a QObject (key names and member order of qapi/block-core.json), which the CLI prints
 * as QEMU prints it (src/cli/info.ts).
 *
 * What each value is, per QEMU 7.2 (block/qapi.c, block/qcow2.c qcow2_get_specific_info):
 * - virtual-size: the header's size rounded down to 512 bytes (bs->total_sectors × 512);
 * - actual-size: st_blocks × 512 of the qcow2 file alone (7.2 does not add the data file);
 * - cluster-size, dirty-flag (incompatible bit 0), encrypted (crypt_method ≠ 0);
 * - format-specific.data: compat "0.10" (version 2: only compat, compression-type, refcount-bits)
 *   or "1.1" with lazy-refcounts, corrupt, extended-l2, bitmaps (when the bitmaps extension lists
 *   any and autoclear bit 0 says they are consistent), data-file (the extension's name, verbatim),
 *   data-file-raw (with incompatible bit 2), encrypt ({format: aes} or LUKS header details);
 * - snapshots: one entry per snapshot table entry; vm-state-size from the 64-bit extra-data field
 *   when present, icount only when the extra data holds one that is not all ones;
 * - backing-filename: the header's name up to its first NUL; full-backing-filename: it taken
 *   relative to the directory of `filename` (QEMU's bdrv_make_absolute_filename, purely textual);
 *   backing-filename-format: the backing-format extension's name.
 * Header strings are bytes; they are decoded as QEMU's JSON writer decodes them (mod_utf8_codepoint:
 * invalid sequences become U+FFFD).
 *
 * Nothing here touches a file: the caller passes the file facts (name as given, allocated bytes).
 */
import { decodeBitmapDirectory } from '../../generated/qcow2.ts';
import { Qcow2FormatError, isQcow2FormatError } from '../codec/index.ts';
import { u64ToBigInt } from '../format/index.ts';
import { headerReferences, headerString, qemuFullBackingFilename, qemuUtf8Decode, type HeaderReferences } from '../model/index.ts';
import { readHost } from '../model/index.ts';
import { snapshotTableEntries } from '../model/index.ts';
import {
  AUTOCLEAR_BITMAPS,
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
  type Image,
} from '../model/index.ts';

// ---------------------------------------------------------------------------------------------
// The report

/** One internal snapshot (QAPI QapiSnapshotInfo); int64 values as QEMU holds them (signed). */
export interface QapiSnapshotInfo {
  readonly id: string;
  readonly name: string;
  readonly vmStateSize: bigint;
  readonly dateSec: bigint;
  readonly dateNsec: bigint;
  readonly vmClockSec: bigint;
  readonly vmClockNsec: bigint;
  /** Absent when the entry has no icount (extra data too short, or all ones). */
  readonly icount?: bigint;
}

/** One persistent bitmap (QAPI Qcow2BitmapInfo). */
export interface Qcow2BitmapInfo {
  readonly name: string;
  readonly granularity: bigint;
  /** 'in-use' and/or 'auto', in that order. */
  readonly flags: readonly ('in-use' | 'auto')[];
}

/** One LUKS key slot (QAPI QCryptoBlockInfoLUKSSlot). */
export interface LuksSlotInfo {
  readonly active: boolean;
  /** Only for active slots. */
  readonly iters?: bigint;
  readonly stripes?: bigint;
  readonly keyOffset: bigint;
}

/** The encryption of a qcow2 image (QAPI ImageInfoSpecificQCow2Encryption). */
export type EncryptInfo =
  | { readonly format: 'aes' }
  | {
      readonly format: 'luks';
      readonly cipherAlg: string;
      readonly cipherMode: string;
      readonly ivgenAlg: string;
      readonly ivgenHashAlg?: string;
      readonly hashAlg: string;
      readonly payloadOffset: bigint;
      readonly masterKeyIters: bigint;
      readonly uuid: string;
      readonly slots: readonly LuksSlotInfo[];
    };

/** QAPI ImageInfoSpecificQCow2. */
export interface Qcow2SpecificInfo {
  readonly compat: '0.10' | '1.1';
  readonly dataFile?: string;
  readonly dataFileRaw?: boolean;
  readonly extendedL2?: boolean;
  readonly lazyRefcounts?: boolean;
  readonly corrupt?: boolean;
  readonly refcountBits: number;
  readonly encrypt?: EncryptInfo;
  readonly bitmaps?: readonly Qcow2BitmapInfo[];
  readonly compressionType: 'zlib' | 'zstd';
}

/** QAPI ImageInfo as qemu-img 7.2 fills it for a qcow2 or raw file. */
export interface ImageInfo {
  readonly filename: string;
  readonly format: 'qcow2' | 'raw';
  readonly dirtyFlag: boolean;
  /** st_blocks × 512 of the image file (absent only when unknown). */
  readonly actualSize?: bigint;
  readonly virtualSize: bigint;
  readonly clusterSize?: number;
  readonly encrypted?: boolean;
  readonly backingFilename?: string;
  readonly fullBackingFilename?: string;
  readonly backingFilenameFormat?: string;
  readonly snapshots?: readonly QapiSnapshotInfo[];
  readonly formatSpecific?: { readonly type: 'qcow2'; readonly data: Qcow2SpecificInfo };
}

/** An ImageInfo and the warnings QEMU prints on stderr while building it. */
export interface InfoResult {
  readonly info: ImageInfo;
  readonly warnings: readonly string[];
}

/** What the caller knows about the image file. */
export interface FileFacts {
  /** The file name as given (what QEMU calls bs->filename). */
  readonly filename: string;
  /** Bytes allocated on the file system (st_blocks × 512); undefined when unknown. */
  readonly actualSize?: bigint;
}

// ---------------------------------------------------------------------------------------------
// Decoding what info needs

/** `e` re-thrown with its offset moved by `base` (for structures decoded from a window of the file). */
function rebase<T>(base: bigint, what: () => T): T {
  try {
    return what();
  } catch (e) {
    if (isQcow2FormatError(e)) {
      const off = BigInt(e.offset) + base;
      throw new Qcow2FormatError(e.code, { structure: e.structure, field: e.field, offset: Number(off) }, e.detail);
    }
    throw e;
  }
}

/** Throws `truncated` when [offset, offset+length) is not inside the image file. */
function requireInFile(image: Image, offset: bigint, length: bigint, structure: string, field: string): void {
  if (offset + length > image.file.length) {
    const at = offset < image.file.length ? offset : image.file.length;
    throw new Qcow2FormatError('truncated', { structure, field, offset: Number(at) },
      `needs ${length} byte(s) at 0x${offset.toString(16)} but the file ends at 0x${image.file.length.toString(16)}`);
  }
}

const INT64_SIGN = 1n << 63n;
/** A uint64 read as QEMU's int64 (two's complement). */
function asInt64(v: bigint): bigint {
  return v >= INT64_SIGN ? v - (1n << 64n) : v;
}

/**
 * The snapshot table as qcow2_snapshot_list + bdrv_query_snapshot_info_list report it. Entries (or
 * parts of them) past the end of the file read as zeros, as qcow2_read_snapshots' bdrv_pread reads
 * them; the open (src/open/open.ts checkSnapshotTable) already bounded the table's size.
 */
function snapshotInfos(image: Image): QapiSnapshotInfo[] {
  const out: QapiSnapshotInfo[] = [];
  const guard = <T>(pos: bigint, decode: () => T): T => rebase(pos, decode);
  for (const { entry: e } of snapshotTableEntries(image.file, image.header, { guard })) {
    const x = e.extraData;
    const vmClock = u64ToBigInt(e.vmClockNsec);
    const icount = x.icount !== undefined ? u64ToBigInt(x.icount) : (1n << 64n) - 1n;
    out.push({
      id: headerString(e.idStr),
      name: headerString(e.name),
      vmStateSize: asInt64(x.vmStateSizeLarge !== undefined ? u64ToBigInt(x.vmStateSizeLarge) : BigInt(e.vmStateSize >>> 0)),
      dateSec: BigInt(e.dateSec >>> 0),
      dateNsec: BigInt(e.dateNsec >>> 0),
      vmClockSec: vmClock / 1_000_000_000n,
      vmClockNsec: vmClock % 1_000_000_000n,
      ...(icount !== (1n << 64n) - 1n ? { icount: asInt64(icount) } : {}),
    });
  }
  return out;
}

/** The bitmap directory as qcow2_get_bitmap_info_list reports it. */
function bitmapInfos(image: Image, ext: NonNullable<HeaderReferences['bitmaps']>): Qcow2BitmapInfo[] {
  requireInFile(image, ext.directoryOffset, ext.directorySize, 'bitmap_directory', '(start)');
  const window = readHost(image.file, ext.directoryOffset, Number(ext.directorySize));
  const dir = rebase(ext.directoryOffset, () => decodeBitmapDirectory(window, 0));
  if (dir.entries.length !== ext.count) {
    throw new Qcow2FormatError('inconsistent', { structure: 'bitmaps_extension', field: 'nb_bitmaps', offset: Number(ext.directoryOffset) },
      `the extension says ${ext.count} bitmap(s) but the directory holds ${dir.entries.length}`);
  }
  return dir.entries.map((b) => ({
    name: headerString(b.name),
    granularity: 1n << BigInt(b.granularityBits),
    flags: [...(b.inUse ? (['in-use'] as const) : []), ...(b.auto ? (['auto'] as const) : [])],
  }));
}

// ---------------------------------------------------------------------------------------------
// LUKS header (what qcrypto_block_luks_get_info reports)

const LUKS_MAGIC = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];
const LUKS_HEADER_SIZE = 592;
const LUKS_KEY_SLOT_ENABLED = 0x00ac71f3;

function luksString(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return qemuUtf8Decode(nul < 0 ? b : b.subarray(0, nul));
}

/** The LUKS1 header at `offset` (the FDE extension's pointer) as QEMU's info reports it. */
function luksInfo(image: Image, fde: NonNullable<HeaderReferences['fde']>): EncryptInfo {
  const at = fde.offset;
  // Zeros past the end of the file, as qcrypto_block_luks_open's read reads them.
  const b = readHost(image.file, at, LUKS_HEADER_SIZE);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fail = (field: string, rel: number, detail: string): never => {
    throw new Qcow2FormatError('invalid-value', { structure: 'luks_header', field, offset: Number(at) + rel }, detail);
  };
  if (!LUKS_MAGIC.every((m, i) => b[i] === m)) fail('magic', 0, 'Volume is not in LUKS format');
  const version = dv.getUint16(6);
  if (version !== 1) fail('version', 6, `LUKS version ${version} is not supported`);
  const cipherName = luksString(b.subarray(8, 40));
  const cipherModeSpec = luksString(b.subarray(40, 72));
  const hashSpec = luksString(b.subarray(72, 104));
  const payloadSector = BigInt(dv.getUint32(104));
  let keyBytes = dv.getUint32(108);
  const mkIters = BigInt(dv.getUint32(164));
  const uuid = luksString(b.subarray(168, 208));

  // cipher_mode is "MODE-IVGEN[:IVHASH]" (e.g. xts-plain64, cbc-essiv:sha256).
  const dash = cipherModeSpec.indexOf('-');
  const mode = dash < 0 ? cipherModeSpec : cipherModeSpec.slice(0, dash);
  const ivgenSpec = dash < 0 ? '' : cipherModeSpec.slice(dash + 1);
  if (!['ecb', 'cbc', 'xts', 'ctr'].includes(mode)) fail('cipher_mode', 40, `Unsupported LUKS cipher mode ${mode}`);
  const colon = ivgenSpec.indexOf(':');
  const ivgen = colon < 0 ? ivgenSpec : ivgenSpec.slice(0, colon);
  const ivHash = colon < 0 ? undefined : ivgenSpec.slice(colon + 1);
  if (!['plain', 'plain64', 'essiv'].includes(ivgen)) fail('cipher_mode', 40, `Unsupported LUKS ivgen algorithm ${ivgen}`);
  if (mode === 'xts') keyBytes /= 2;
  const sizes: Record<string, readonly number[]> = { aes: [16, 24, 32], serpent: [16, 24, 32], twofish: [16, 24, 32], cast5: [16], sm4: [16] };
  const allowed = sizes[cipherName];
  if (allowed === undefined || !allowed.includes(keyBytes)) {
    fail('cipher_name', 8, `Unsupported LUKS cipher ${cipherName} with ${keyBytes}-byte keys`);
  }
  const cipherAlg = cipherName === 'sm4' ? 'sm4' : `${cipherName}-${keyBytes * 8}`;
  const hashes = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512', 'ripemd160'];
  if (!hashes.includes(hashSpec)) fail('hash_spec', 72, `Unsupported LUKS hash ${hashSpec}`);
  if (ivHash !== undefined && !hashes.includes(ivHash)) fail('cipher_mode', 40, `Unsupported LUKS ivgen hash ${ivHash}`);
  const slots: LuksSlotInfo[] = [];
  for (let i = 0; i < 8; i++) {
    const s = 208 + i * 48;
    const active = dv.getUint32(s) === LUKS_KEY_SLOT_ENABLED;
    slots.push({
      active,
      ...(active ? { iters: BigInt(dv.getUint32(s + 4)), stripes: BigInt(dv.getUint32(s + 44)) } : {}),
      keyOffset: BigInt(dv.getUint32(s + 40)) * 512n,
    });
  }
  return {
    format: 'luks',
    cipherAlg,
    cipherMode: mode,
    ivgenAlg: ivgen,
    ...(ivgen === 'essiv' && ivHash !== undefined ? { ivgenHashAlg: ivHash } : {}),
    hashAlg: hashSpec,
    payloadOffset: payloadSector * 512n,
    masterKeyIters: mkIters,
    uuid,
    slots,
  };
}

// ---------------------------------------------------------------------------------------------
// The info

/**
 * `qemu-img info` of the qcow2 image `image` whose file is `facts.filename` (QEMU 7.2, opened
 * without its backing file): see the top of this file for each value. Reads only the qcow2 file
 * (cluster 0, the snapshot table, the bitmap directory, the LUKS header). Throws Qcow2FormatError
 * (absolute file offsets) when one of those cannot be decoded; `warnings` holds what QEMU would
 * print on stderr (bitmaps ignored because autoclear bit 0 is clear).
 */
export function qcow2ImageInfo(image: Image, facts: FileFacts): InfoResult {
  const h = image.header;
  const refs = headerReferences(image);
  const warnings: string[] = [];
  let encrypt: EncryptInfo | undefined;
  if (h.cryptMethod === 1) encrypt = { format: 'aes' };
  else if (h.cryptMethod === 2) {
    if (refs.fde === undefined) {
      throw new Qcow2FormatError('invalid-value', { structure: 'header', field: 'crypt_method', offset: 32 }, 'Missing CRYPTO header for crypt method 2');
    }
    encrypt = luksInfo(image, refs.fde);
  }
  let data: Qcow2SpecificInfo;
  const compressionType = h.compressionType === 1 ? 'zstd' : 'zlib';
  if (h.version === 2) {
    data = { compat: '0.10', refcountBits: 1 << h.refcountOrder, ...(encrypt !== undefined ? { encrypt } : {}), compressionType };
  } else {
    let bitmaps: Qcow2BitmapInfo[] | undefined;
    if (refs.bitmaps !== undefined) {
      if ((h.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0n) {
        warnings.push('a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent');
      } else {
        const list = bitmapInfos(image, refs.bitmaps);
        if (list.length > 0) bitmaps = list;
      }
    }
    const hasDataFile = (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
    data = {
      compat: '1.1',
      ...(refs.dataFile !== undefined ? { dataFile: refs.dataFile } : {}),
      ...(hasDataFile ? { dataFileRaw: (h.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n } : {}),
      extendedL2: (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n,
      lazyRefcounts: (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
      corrupt: (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
      refcountBits: 1 << h.refcountOrder,
      ...(encrypt !== undefined ? { encrypt } : {}),
      ...(bitmaps !== undefined ? { bitmaps } : {}),
      compressionType,
    };
  }
  const snapshots = snapshotInfos(image);
  const info: ImageInfo = {
    filename: facts.filename,
    format: 'qcow2',
    dirtyFlag: h.version === 3 && (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
    ...(facts.actualSize !== undefined ? { actualSize: facts.actualSize } : {}),
    virtualSize: h.size & ~511n,
    clusterSize: 1 << h.clusterBits,
    ...(h.cryptMethod !== 0 ? { encrypted: true } : {}),
    ...(refs.backingFile !== undefined
      ? {
          backingFilename: refs.backingFile,
          fullBackingFilename: qemuFullBackingFilename(facts.filename, refs.backingFile),
          ...(refs.backingFormat !== undefined ? { backingFilenameFormat: refs.backingFormat } : {}),
        }
      : {}),
    ...(snapshots.length > 0 ? { snapshots } : {}),
    formatSpecific: { type: 'qcow2', data },
  };
  return { info, warnings };
}

/**
 * `qemu-img info` of a raw file of `length` bytes: virtual-size is the length rounded up to 512
 * (bdrv_getlength counts whole sectors), no cluster size, no format-specific data, dirty-flag false.
 */
export function rawImageInfo(facts: FileFacts & { readonly length: bigint }): ImageInfo {
  return {
    filename: facts.filename,
    format: 'raw',
    dirtyFlag: false,
    ...(facts.actualSize !== undefined ? { actualSize: facts.actualSize } : {}),
    virtualSize: (facts.length + 511n) & ~511n,
  };
}

// ---------------------------------------------------------------------------------------------
// As a QObject

/** A QEMU QObject: what the QAPI output visitor builds and qemu-img prints. */
export type QObject =
  | { readonly kind: 'dict'; readonly entries: readonly (readonly [string, QObject])[] }
  | { readonly kind: 'list'; readonly items: readonly QObject[] }
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'int'; readonly value: bigint }
  | { readonly kind: 'bool'; readonly value: boolean };

const qs = (value: string): QObject => ({ kind: 'string', value });
const qi = (value: bigint | number): QObject => ({ kind: 'int', value: BigInt(value) });
const qb = (value: boolean): QObject => ({ kind: 'bool', value });
const ql = (items: readonly QObject[]): QObject => ({ kind: 'list', items });

/** A dict from [key, value] pairs in visit order; undefined values are left out (absent optional members). */
function qd(entries: readonly (readonly [string, QObject | undefined])[]): QObject {
  return { kind: 'dict', entries: entries.filter((e): e is readonly [string, QObject] => e[1] !== undefined) };
}

function opt<T>(v: T | undefined, f: (v: T) => QObject): QObject | undefined {
  return v === undefined ? undefined : f(v);
}

function encryptQObject(e: EncryptInfo): QObject {
  if (e.format === 'aes') return qd([['format', qs('aes')]]);
  return qd([
    ['format', qs('luks')],
    ['cipher-alg', qs(e.cipherAlg)],
    ['cipher-mode', qs(e.cipherMode)],
    ['ivgen-alg', qs(e.ivgenAlg)],
    ['ivgen-hash-alg', opt(e.ivgenHashAlg, qs)],
    ['hash-alg', qs(e.hashAlg)],
    ['payload-offset', qi(e.payloadOffset)],
    ['master-key-iters', qi(e.masterKeyIters)],
    ['uuid', qs(e.uuid)],
    ['slots', ql(e.slots.map((s) => qd([['active', qb(s.active)], ['iters', opt(s.iters, qi)], ['stripes', opt(s.stripes, qi)], ['key-offset', qi(s.keyOffset)]])))],
  ]);
}

/**
 * `info` as the QAPI output visitor builds it: QEMU's key names, members visited in the order of
 * their declaration in qapi/block-core.json (7.2), optional members absent when unset. The printed
 * key order is the QDict's (src/cli/info.ts), which depends on this order only for keys that hash
 * to the same bucket.
 */
export function imageInfoQObject(info: ImageInfo): QObject {
  const fs = info.formatSpecific;
  const d = fs?.data;
  return qd([
    ['filename', qs(info.filename)],
    ['format', qs(info.format)],
    ['dirty-flag', qb(info.dirtyFlag)],
    ['actual-size', opt(info.actualSize, qi)],
    ['virtual-size', qi(info.virtualSize)],
    ['cluster-size', opt(info.clusterSize, qi)],
    ['encrypted', opt(info.encrypted, qb)],
    ['backing-filename', opt(info.backingFilename, qs)],
    ['full-backing-filename', opt(info.fullBackingFilename, qs)],
    ['backing-filename-format', opt(info.backingFilenameFormat, qs)],
    [
      'snapshots',
      opt(info.snapshots, (list) =>
        ql(list.map((s) => qd([
          ['id', qs(s.id)],
          ['name', qs(s.name)],
          ['vm-state-size', qi(s.vmStateSize)],
          ['date-sec', qi(s.dateSec)],
          ['date-nsec', qi(s.dateNsec)],
          ['vm-clock-sec', qi(s.vmClockSec)],
          ['vm-clock-nsec', qi(s.vmClockNsec)],
          ['icount', opt(s.icount, qi)],
        ]))),
      ),
    ],
    [
      'format-specific',
      d === undefined
        ? undefined
        : qd([
            ['type', qs('qcow2')],
            [
              'data',
              qd([
                ['compat', qs(d.compat)],
                ['data-file', opt(d.dataFile, qs)],
                ['data-file-raw', opt(d.dataFileRaw, qb)],
                ['extended-l2', opt(d.extendedL2, qb)],
                ['lazy-refcounts', opt(d.lazyRefcounts, qb)],
                ['corrupt', opt(d.corrupt, qb)],
                ['refcount-bits', qi(d.refcountBits)],
                ['encrypt', opt(d.encrypt, encryptQObject)],
                ['bitmaps', opt(d.bitmaps, (bs) => ql(bs.map((b) => qd([['name', qs(b.name)], ['granularity', qi(b.granularity)], ['flags', ql(b.flags.map(qs))]]))))],
                ['compression-type', qs(d.compressionType)],
              ]),
            ],
          ]),
    ],
  ]);
}
