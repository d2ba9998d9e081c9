/**
 * What a qcow2 header refers to outside itself — the backing file and its format, the external data
 * file, the bitmap directory, the LUKS header — decoded from cluster 0 through the generated decoder,
 * and the header strings as QEMU shows them. The model, open, check and the views all need them.
 */
import {
  HeaderExtensionType,
  decodeQcow2,
  type BackingFileFormat,
  type BitmapsExtension,
  type ExternalDataFileName,
  type FullDiskEncryptionPointer,
  type HeaderExtension,
} from '../../generated/qcow2.ts';
import { u64ToBigInt } from '../format/index.ts';
import { readHost } from './host-file.ts';
import type { Image } from './image.ts';

/** The references of a qcow2 header to other files, decoded from cluster 0. */
export interface HeaderReferences {
  /** The backing file name up to its first NUL (QEMU's bs->backing_file), if any. */
  readonly backingFile?: string;
  /** The backing-format extension's name up to its first NUL, if any and not empty. */
  readonly backingFormat?: string;
  /** The external-data-file extension's name, verbatim (up to its first NUL), if present. */
  readonly dataFile?: string;
  /** Where the bitmaps extension says the bitmap directory is (and how many bitmaps it holds). */
  readonly bitmaps?: { readonly count: number; readonly directoryOffset: bigint; readonly directorySize: bigint };
  /** Where the full-disk-encryption extension says the LUKS header is. */
  readonly fde?: { readonly offset: bigint; readonly length: bigint };
}
// ---------------------------------------------------------------------------------------------
// Strings as QEMU sees them

/** The bytes of a decoder string (one char per byte) up to the first NUL, as C string functions see them. */
function cBytes(s: string): Uint8Array {
  const nul = s.indexOf('\0');
  const t = nul < 0 ? s : s.slice(0, nul);
  const out = new Uint8Array(t.length);
  for (let i = 0; i < t.length; i++) out[i] = t.charCodeAt(i) & 0xff;
  return out;
}

/**
 * `bytes` decoded the way QEMU's JSON writer walks a C string (util/unicode.c mod_utf8_codepoint):
 * valid UTF-8 to its code points; an invalid or overlong sequence, a surrogate, a noncharacter or a
 * code point past U+10FFFF to U+FFFD (one per failed sequence); `C0 80` to U+0000. Stops at a NUL.
 */
export function qemuUtf8Decode(bytes: Uint8Array): string {
  const MIN_CP = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];
  let out = '';
  let i = 0;
  while (i < bytes.length && bytes[i] !== 0) {
    const b0 = bytes[i++]!;
    let cp: number;
    if (b0 < 0x80) cp = b0;
    else if (b0 >= 0xfe || (b0 & 0x40) === 0) cp = -1;
    else {
      let len = 0;
      let mask = 0x80;
      for (; b0 & mask; mask >>= 1) len++;
      cp = b0 & (mask - 1);
      let ok = true;
      for (let k = 1; k < len; k++) {
        const b = i < bytes.length ? bytes[i]! : 0;
        if ((b & 0xc0) !== 0x80) {
          ok = false;
          break;
        }
        i++;
        cp = cp * 64 + (b & 0x3f);
      }
      if (!ok) cp = -1;
      else if (cp > 0x10ffff) cp = -1;
      else if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) cp = -1;
      else if (cp >= 0xd800 && cp <= 0xdfff) cp = -1;
      else if (cp < MIN_CP[len - 2]! && !(cp === 0 && len === 2)) cp = -1;
    }
    out += String.fromCodePoint(cp < 0 ? 0xfffd : cp);
  }
  return out;
}

/** A decoder string (one char per byte) as QEMU shows it: up to the first NUL, UTF-8 decoded. */
export function headerString(s: string): string {
  return qemuUtf8Decode(cBytes(s));
}

/** QEMU's path_has_protocol: a ':' before the first '/'. */
export function pathHasProtocol(path: string): boolean {
  const m = /[:/]/.exec(path);
  return m !== null && m[0] === ':';
}

/**
 * The full backing file name QEMU 7.2 reports for backing name `backing` of the image opened as
 * `filename` (bdrv_make_absolute_filename): `backing` itself when it is empty, absolute or has a
 * protocol prefix, else the directory part of `filename` (up to and including its last '/')
 * followed by `backing`. Purely textual: nothing is normalised or resolved.
 */
export function qemuFullBackingFilename(filename: string, backing: string): string {
  if (backing === '' || backing.startsWith('/') || pathHasProtocol(backing)) return backing;
  const slash = filename.lastIndexOf('/');
  return `${slash < 0 ? '' : filename.slice(0, slash + 1)}${backing}`;
}


/**
 * The header's references to other files and metadata areas, decoded from cluster 0 of `image`
 * through the generated decoder. Cluster 0 is read whole, zeros past the end of a shorter file, as
 * qcow2_do_open's bdrv_pread of the extension area and the backing file name reads it: a file that
 * ends inside its first cluster, after its header, opens in QEMU. Throws Qcow2FormatError (absolute
 * offsets) when the extension area or the backing file name cannot be decoded.
 */
export function headerReferences(image: Image): HeaderReferences {
  const cluster0 = readHost(image.file, 0n, 1 << image.header.clusterBits);
  const root = decodeQcow2(cluster0);
  const exts: readonly HeaderExtension[] = root.headerExtensions.extensions ?? [];
  const find = (t: number): HeaderExtension | undefined => exts.find((e) => e.type === t);
  const out: {
    backingFile?: string;
    backingFormat?: string;
    dataFile?: string;
    bitmaps?: HeaderReferences['bitmaps'];
    fde?: HeaderReferences['fde'];
  } = {};
  if (image.header.backingFileOffset !== 0n) {
    const name = root.backingFileName;
    if (name !== undefined) {
      const s = headerString(name);
      if (s !== '') out.backingFile = s;
    }
  }
  const fmt = find(HeaderExtensionType.BACKING_FILE_FORMAT);
  if (fmt !== undefined) {
    const s = headerString((fmt.data as BackingFileFormat).name);
    if (s !== '') out.backingFormat = s;
  }
  const df = find(HeaderExtensionType.EXTERNAL_DATA_FILE);
  if (df !== undefined) out.dataFile = headerString((df.data as ExternalDataFileName).name);
  const bm = find(HeaderExtensionType.BITMAPS);
  if (bm !== undefined) {
    const b = bm.data as BitmapsExtension;
    out.bitmaps = { count: b.nbBitmaps, directoryOffset: u64ToBigInt(b.bitmapDirectoryOffset), directorySize: u64ToBigInt(b.bitmapDirectorySize) };
  }
  const fde = find(HeaderExtensionType.FULL_DISK_ENCRYPTION);
  if (fde !== undefined) {
    const f = fde.data as FullDiskEncryptionPointer;
    out.fde = { offset: u64ToBigInt(f.offset), length: u64ToBigInt(f.length) };
  }
  return out;
}
