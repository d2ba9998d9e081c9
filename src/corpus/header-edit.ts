/**
 * Rewriting cluster 0 of a qcow2 file — header fields, the header extension list, the backing file
 * name — for corpus cases that the model's ops cannot make (unknown extensions, header_length 104,
 * unknown feature bits, bitmaps) and for the invalid families' pokes. Everything is encoded with the
 * generated encoders (spec/qcow2.ksy); the layout is QEMU's (docs/format/create.md#header-extensions-written, docs/format/extensions.md): the header, the
 * extensions from header_length on (each padded to 8 bytes), the end marker, then the backing file
 * name, then zeros to the end of the cluster.
 */
import { decodeHeader, decodeHeaderExtensionFields, HeaderExtensionType, HeaderLayout } from '../../generated/qcow2.ts';
import { encodeHeaderState, headerLengthOf, headerStateFrom } from '../model/index.ts';
import type { HeaderState } from '../model/index.ts';

/** One header extension as raw bytes (type, data without padding). */
export interface RawExtension {
  readonly type: number;
  readonly data: Uint8Array;
}

/** What cluster 0 holds besides the header fields. */
export interface HeaderCluster {
  readonly header: HeaderState;
  /** Header bytes 112..header_length (unknown additional fields), when header_length > 112. */
  readonly unknownHeaderBytes?: Uint8Array;
  /** The extensions in file order, without the end marker. */
  readonly extensions: readonly RawExtension[];
  /** The backing file name bytes, when backing_file_offset is not 0. */
  readonly backingName?: Uint8Array;
}

/**
 * Reads cluster 0 of `bytes` (a decodable image written by the model or QEMU): the header, the
 * extension list up to the end marker, and the backing file name. Throws on an image whose
 * extension area does not parse (the corpus only edits images it made).
 */
export function readHeaderCluster(bytes: Uint8Array): HeaderCluster {
  const header = headerStateFrom(decodeHeader(bytes));
  const len = headerLengthOf(header);
  const end = header.backingFileOffset !== 0n ? Number(header.backingFileOffset) : 1 << header.clusterBits;
  const extensions: RawExtension[] = [];
  let pos = len;
  while (pos + 8 <= end) {
    const ext = decodeHeaderExtensionFields(bytes.subarray(0, end), pos);
    if (ext.type === HeaderExtensionType.END) break;
    const data = bytes.slice(pos + 8, pos + 8 + ext.lenData);
    extensions.push({ type: ext.type, data });
    pos += 8 + ext.lenData + ext.padding.length;
  }
  const backingName = header.backingFileOffset !== 0n
    ? bytes.slice(Number(header.backingFileOffset), Number(header.backingFileOffset) + header.backingFileSize)
    : undefined;
  return {
    header,
    ...(len > 112 ? { unknownHeaderBytes: bytes.slice(112, len) } : {}),
    extensions,
    ...(backingName !== undefined ? { backingName } : {}),
  };
}

/**
 * `bytes` with the header fields `change` makes of the current ones rewritten, and the rest of
 * cluster 0 (extensions, backing file name) kept (readHeaderCluster, then writeHeaderCluster).
 */
export function editHeaderFields(bytes: Uint8Array, change: (h: HeaderState) => Partial<HeaderState>): Uint8Array {
  const c = readHeaderCluster(bytes);
  return writeHeaderCluster(bytes, { ...c, header: { ...c.header, ...change(c.header) } });
}

/** The bytes of one extension: type, length, data, zero padding to 8. */
export function encodeRawExtension(e: RawExtension): Uint8Array {
  // Written by hand, not with encodeHeaderExtension: that encoder wants decoded data for the known
  // types, and here every extension (known or not) is carried as its raw bytes.
  const out = new Uint8Array(8 + e.data.length + ((8 - (e.data.length % 8)) % 8));
  const view = new DataView(out.buffer);
  view.setUint32(0, e.type >>> 0);
  view.setUint32(4, e.data.length);
  out.set(e.data, 8);
  return out;
}

/**
 * `bytes` with cluster 0 rewritten from `c`: header (backing_file_offset/size set to where the name
 * lands), extensions, end marker, backing name, zeros. Returns a new array (same length, or longer
 * when the file was shorter than the new cluster-0 content). Throws RangeError when it does not fit
 * in cluster 0.
 */
export function writeHeaderCluster(bytes: Uint8Array, c: HeaderCluster): Uint8Array {
  const cs = 1 << c.header.clusterBits;
  const parts: Uint8Array[] = [];
  const exts = [...c.extensions.map(encodeRawExtension), encodeRawExtension({ type: HeaderExtensionType.END, data: new Uint8Array(0) })];
  const headerLen = headerLengthOf(c.header);
  const extLen = exts.reduce((n, e) => n + e.length, 0);
  const header: HeaderState = {
    ...c.header,
    backingFileOffset: c.backingName !== undefined ? BigInt(headerLen + extLen) : 0n,
    backingFileSize: c.backingName?.length ?? 0,
  };
  parts.push(encodeHeaderState(header, c.unknownHeaderBytes), ...exts);
  if (c.backingName !== undefined) parts.push(c.backingName);
  const total = parts.reduce((n, p) => n + p.length, 0);
  if (total > cs) throw new RangeError(`header cluster content of ${total} bytes does not fit in a ${cs}-byte cluster`);
  const out = new Uint8Array(Math.max(bytes.length, cs));
  out.set(bytes);
  out.fill(0, 0, cs);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out.length === bytes.length ? out : out.subarray(0, Math.max(bytes.length, total));
}

/** Big-endian write of `value` into `width` bytes at `offset` of a copy of `bytes` (the copy is returned). */
export function poke(bytes: Uint8Array, offset: number, width: 1 | 2 | 4 | 8, value: bigint): Uint8Array {
  const out = bytes.slice();
  let v = value;
  for (let i = width - 1; i >= 0; i--) {
    out[offset + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** Big-endian read of `width` bytes at `offset`. */
export function peek(bytes: Uint8Array, offset: number, width: 1 | 2 | 4 | 8): bigint {
  let v = 0n;
  for (let i = 0; i < width; i++) v = (v << 8n) | BigInt(bytes[offset + i] ?? 0);
  return v;
}

/** Header field byte positions and sizes (the spec's HeaderLayout). */
export const HEADER_FIELD = HeaderLayout;

/** A copy of `bytes` with header field `field` set to `value` (raw poke: no other field changes). */
export function pokeHeader(bytes: Uint8Array, field: keyof typeof HEADER_FIELD, value: bigint): Uint8Array {
  const { offset, size } = HEADER_FIELD[field];
  return poke(bytes, offset, size, value);
}
