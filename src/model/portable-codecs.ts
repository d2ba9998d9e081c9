/**
 * The compression codecs every platform has (compression.ts): pako's raw deflate and inflate (a port
 * of reference zlib 1.2.x: its deflate output equals the zlib QEMU links against byte for byte, while
 * Node's built-in zlib, Chromium's fork, compresses differently) and libzstd 1.5.4's encoder as
 * embedded wasm (zstd-encoder.ts, compiled on first use).
 */
import { Inflate, deflateRaw, type DeflateFunctionOptions } from 'pako';
import type { CompressionCodecs } from './compression.ts';
import { zstdCompress } from './zstd-encoder.ts';

/** Thrown from pako's onData to stop inflating once the output buffer is full (QEMU stops there). */
const FULL = new Error('inflate output buffer full');

/** pako's inflate state: the output buffer of the call in progress (not in @types/pako). */
interface InflateStream {
  readonly strm?: { readonly output?: Uint8Array; readonly next_out: number };
}

/**
 * zlib's inflate(Z_FINISH) into one buffer of `limit` bytes. pako hands a chunk to onData when its
 * output buffer (chunkSize = limit) is full or the stream ends; either is the result. When the input
 * runs out first, the bytes produced so far are still in pako's buffer.
 */
function inflateRawPortable(data: Uint8Array, options: { readonly windowBits: number; readonly limit: number }): Uint8Array {
  const inflater = new Inflate({ raw: true, windowBits: options.windowBits, chunkSize: Math.max(1, options.limit) });
  let out: Uint8Array | undefined;
  inflater.onData = (chunk) => {
    out = chunk as Uint8Array;
    throw FULL;
  };
  try {
    inflater.push(data, true);
  } catch (e) {
    if (e !== FULL) throw e;
  }
  if (out !== undefined) return out.subarray(0, options.limit);
  if (inflater.err !== 0) throw new Error(`inflate: ${inflater.msg || `zlib error ${inflater.err}`}`);
  const strm = (inflater as unknown as InflateStream).strm;
  return strm?.output !== undefined ? strm.output.subarray(0, strm.next_out) : new Uint8Array(0);
}

/** The codecs the model uses unless others are installed. */
export const portableCompressionCodecs: CompressionCodecs = {
  deflateRaw: (data, options) => deflateRaw(data, options as DeflateFunctionOptions),
  inflateRaw: inflateRawPortable,
  zstdCompress,
};
