/**
 * The compression codecs of the model: zlib's exact raw deflate (QEMU's qcow2_compress output must be
 * reproduced byte for byte), raw inflate as QEMU's qcow2_zlib_decompress runs it, and libzstd's
 * encoder. The model carries portable ones that work on every platform with nothing installed
 * (portable-codecs.ts: pako, a port of reference zlib, and libzstd 1.5.4 as embedded wasm); a
 * platform or a user may install equivalent ones that are faster there (Node's entry installs
 * node:zlib's inflate: src/io/node-compression.ts). zstd decoding is pure JavaScript (fzstd, in
 * read.ts) and needs no codec.
 */
import { portableCompressionCodecs } from './portable-codecs.ts';

/**
 * What a codec set supplies. Every function is pure: the same input always gives the same bytes,
 * and the bytes are exactly those of the reference implementation named, whatever the platform.
 */
export interface CompressionCodecs {
  /**
   * Raw deflate with zlib's exact output for these parameters (reference zlib, as QEMU links it:
   * QEMU writes deflateInit2(level 6, -12, memLevel 9) streams).
   */
  deflateRaw(data: Uint8Array, options: { readonly level: number; readonly windowBits: number; readonly memLevel: number; readonly strategy: number }): Uint8Array;
  /**
   * Raw inflate as zlib's inflateInit2(-windowBits) and one inflate(Z_FINISH) into a buffer of
   * `limit` bytes (QEMU's qcow2_zlib_decompress: window 12, one cluster): the bytes produced before
   * the buffer is full, the stream ends or `data` runs out (QEMU decompresses a cluster from the
   * sectors that hold it, so a stream need not end within `data`, and bytes past a full buffer are
   * never looked at). Throws when zlib reports an error before that point.
   */
  inflateRaw(data: Uint8Array, options: { readonly windowBits: number; readonly limit: number }): Uint8Array;
  /** One-shot ZSTD_compress at `level` (libzstd 1.5.4's frames, as QEMU 7.2 on Debian 12 writes them). */
  zstdCompress(data: Uint8Array, level: number): Uint8Array;
}

let installed: CompressionCodecs | undefined;

/**
 * Makes every later compressed read or write use `codecs` (undefined: the portable ones again).
 * They must give the same bytes as the portable codecs; only their speed may differ.
 */
export function installCompressionCodecs(codecs: CompressionCodecs | undefined): void {
  installed = codecs;
}

/** The codecs in use: the installed ones, else the portable ones. */
export function compressionCodecs(): CompressionCodecs {
  return installed ?? portableCompressionCodecs;
}
