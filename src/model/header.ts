/**
 * The image header as model state: HeaderState <-> bytes, always through the generated
 * encodeHeader/decodeHeader (spec/qcow2.ksy `header`). Version 2 headers are 72 bytes; version 3
 * headers are header_length bytes, with the compression_type additional field when header_length
 * > 104, zero padding up to byte 112 and any unknown additional fields (bytes 112..header_length)
 * preserved verbatim (docs/format/header.md#header-length).
 */
import { encodeHeader, HEADER_FIXED_SIZE, HEADER_MAGIC, HeaderLayout, type Header, type HeaderFields } from '../../generated/qcow2.ts';
import { bigIntToU64, u64ToBigInt } from '../format/index.ts';
import { headerTablesOf } from '../format/index.ts';
import { readHost, writeHost } from './host-file.ts';
import { type HostIO } from './host-io.ts';
import type { HeaderState, Image } from './image.ts';

/** Bytes of a version 2 header: the header's unconditional fields (spec/qcow2.ksy). */
export const V2_HEADER_LENGTH = HEADER_FIXED_SIZE;
/** header_length QEMU 7.2 writes for version 3 (docs/format/header.md#header-length). */
export const V3_HEADER_LENGTH = 112;
/** Offset of the first additional field (compression_type). */
const ADDITIONAL_FIELDS_START = HeaderLayout.compressionType.offset;
/** Offset of the padding after compression_type. */
const PADDING_START = HeaderLayout.compressionType.offset + HeaderLayout.compressionType.size;

/** Length in bytes of the header `h` describes (72 for version 2, header_length for version 3). */
export function headerLengthOf(h: HeaderState): number {
  return h.version === 2 ? V2_HEADER_LENGTH : h.headerLength;
}

/**
 * The generated encoder's fields for `h`. `unknownHeaderBytes` are the header bytes past 112 this
 * implementation does not know (needed, and only used, when header_length > 112); when absent they
 * are zeros.
 */
export function headerFieldsOf(h: HeaderState, unknownHeaderBytes?: Uint8Array): HeaderFields {
  const base: HeaderFields = {
    magic: Uint8Array.from(HEADER_MAGIC),
    version: h.version,
    backingFileOffset: bigIntToU64(h.backingFileOffset),
    backingFileSize: h.backingFileSize,
    clusterBits: h.clusterBits,
    size: bigIntToU64(h.size),
    cryptMethod: h.cryptMethod,
    l1Size: h.l1Size,
    l1TableOffset: bigIntToU64(h.l1TableOffset),
    refcountTableOffset: bigIntToU64(h.refcountTableOffset),
    refcountTableClusters: h.refcountTableClusters,
    nbSnapshots: h.nbSnapshots,
    snapshotsOffset: bigIntToU64(h.snapshotsOffset),
  };
  if (h.version === 2) return base;
  const len = h.headerLength;
  const fields: HeaderFields = {
    ...base,
    incompatibleFeatures: bigIntToU64(h.incompatibleFeatures),
    compatibleFeatures: bigIntToU64(h.compatibleFeatures),
    autoclearFeatures: bigIntToU64(h.autoclearFeatures),
    refcountOrder: h.refcountOrder,
    headerLength: len,
  };
  // Additional fields exist only when header_length reaches them (docs/format/header.md#additional-fields).
  if (len > ADDITIONAL_FIELDS_START) fields.compressionType = h.compressionType;
  if (len > PADDING_START) fields.padding = new Uint8Array(Math.min(len, V3_HEADER_LENGTH) - PADDING_START);
  if (len > V3_HEADER_LENGTH) {
    const n = len - V3_HEADER_LENGTH;
    const unknown = new Uint8Array(n);
    if (unknownHeaderBytes !== undefined) unknown.set(unknownHeaderBytes.subarray(0, n));
    fields.unknownHeaderFields = unknown;
  }
  return fields;
}

/**
 * The on-disk bytes of header `h`: 72 bytes for version 2, header_length bytes for version 3
 * (compression_type present when header_length > 104, zero padding to 112, bytes 112.. taken from
 * `unknownHeaderBytes` or zero). Encoded by the generated encodeHeader; throws Qcow2FormatError
 * (`inconsistent`) when a field does not fit.
 */
export function encodeHeaderState(h: HeaderState, unknownHeaderBytes?: Uint8Array): Uint8Array {
  return encodeHeader(headerFieldsOf(h, unknownHeaderBytes));
}

/**
 * The HeaderState of a decoded header: absent version-3 fields take their version-2 meaning
 * (features 0, refcount_order 4, header_length 72), an absent compression_type is 0 (zlib).
 */
export function headerStateFrom(h: Header): HeaderState {
  const v3 = h.version >= 3;
  return {
    version: v3 ? 3 : 2,
    backingFileOffset: u64ToBigInt(h.backingFileOffset),
    backingFileSize: h.backingFileSize,
    clusterBits: h.clusterBits,
    size: u64ToBigInt(h.size),
    cryptMethod: h.cryptMethod,
    ...headerTablesOf(h),
    incompatibleFeatures: v3 && h.incompatibleFeatures !== undefined ? u64ToBigInt(h.incompatibleFeatures) : 0n,
    compatibleFeatures: v3 && h.compatibleFeatures !== undefined ? u64ToBigInt(h.compatibleFeatures) : 0n,
    autoclearFeatures: v3 && h.autoclearFeatures !== undefined ? u64ToBigInt(h.autoclearFeatures) : 0n,
    // The spec's value instances already apply the version-2 and absent-field defaults.
    refcountOrder: h.refcountOrderEffective,
    headerLength: h.lenHeader,
    compressionType: h.compressionTypeEffective,
  };
}

/**
 * `image` with header fields `changes` applied, and the host writes that make the file say so.
 * The unknown additional header bytes (112..header_length) are kept as the file holds them. One
 * write is returned per maximal run of changed bytes (none when nothing changes), in file order;
 * `image` itself is not modified and the new image shares every untouched page with it.
 */
export function withHeader(image: Image, changes: Partial<HeaderState>): { image: Image; io: HostIO[] } {
  const header: HeaderState = { ...image.header, ...changes };
  const oldLen = headerLengthOf(image.header);
  const newLen = headerLengthOf(header);
  const unknown = newLen > V3_HEADER_LENGTH ? readHost(image.file, BigInt(V3_HEADER_LENGTH), newLen - V3_HEADER_LENGTH) : undefined;
  const bytes = encodeHeaderState(header, unknown);
  const old = readHost(image.file, 0n, Math.max(oldLen, newLen));
  const io: HostIO[] = [];
  let file = image.file;
  let i = 0;
  while (i < bytes.length) {
    if (bytes[i] === old[i]) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < bytes.length && bytes[j] !== old[j]) j++;
    const chunk = bytes.slice(i, j);
    io.push({ kind: 'write', offset: BigInt(i), bytes: chunk });
    file = writeHost(file, BigInt(i), chunk);
    i = j;
  }
  return { image: { ...image, file, header }, io };
}
