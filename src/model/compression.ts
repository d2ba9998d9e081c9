/**
 * The compression codecs the model needs but cannot carry itself: zlib's exact deflate (QEMU's
 * qcow2_compress output must be reproduced byte for byte), raw inflate, and libzstd's encoder (wasm).
 * Loading them is platform work — a file read, a wasm instance — so the platform entry installs
 * them (src/io/node-compression.ts for Node), and the model stays free of I/O. zstd decoding needs no
 * installation: it is pure JavaScript (fzstd, in read.ts).
 */
import { ENOTSUP } from './errno.ts';
import { ModelError } from './errors.ts';

/** What a platform supplies. Every function is pure: the same input always gives the same bytes. */
export interface CompressionCodecs {
  /**
   * Raw deflate with zlib's exact output for these parameters (reference zlib, as QEMU links it:
   * QEMU writes deflateInit2(level 6, -12, memLevel 9) streams).
   */
  deflateRaw(data: Uint8Array, options: { readonly level: number; readonly windowBits: number; readonly memLevel: number; readonly strategy: number }): Uint8Array;
  /**
   * Inflates a raw deflate stream as far as the input allows: the bytes produced, whether or not the
   * stream ends within `data` (QEMU decompresses a cluster from a prefix of the sectors that hold it).
   * Throws on data that is not deflate.
   */
  inflateRaw(data: Uint8Array): Uint8Array;
  /** One-shot ZSTD_compress at `level` (libzstd 1.5.4's frames, as QEMU 7.2 on Debian 12 writes them). */
  zstdCompress(data: Uint8Array, level: number): Uint8Array;
}

let installed: CompressionCodecs | undefined;

/** Installs the codecs every later compressed read or write uses (the platform entry does this once). */
export function installCompressionCodecs(codecs: CompressionCodecs): void {
  installed = codecs;
}

/** The installed codecs; a ModelError (ENOTSUP) when no platform entry installed any. */
export function compressionCodecs(): CompressionCodecs {
  if (installed === undefined) {
    throw new ModelError('unsupported', ENOTSUP, 'no compression codecs are installed (import qcow2-ref through its package entry, or call installCompressionCodecs)');
  }
  return installed;
}
