/** The surface of the codec layer (ARCHITECTURE.md): what the other layers may import from it. */
export { base64Decode, base64Encode } from './base64.ts';
export { ByteReader } from './byte-reader.ts';
export { ByteWriter } from './byte-writer.ts';
export { PagedBytes } from './paged-bytes.ts';
export type { ByteSource, SourceWindow } from './paged-bytes.ts';
export { isZeroBytes } from './bytes.ts';
export { asciiDecode, asciiEncode, checkCount, checkSize, defineLazy, defineValue, inconsistent, invalidValue, kaitaiMod, requireProgress, stripRight } from './codec-support.ts';
export { Qcow2FormatError, isQcow2FormatError } from './errors.ts';
export type { Qcow2ErrorCode } from './errors.ts';
export { WORK } from './work-meter.ts';
