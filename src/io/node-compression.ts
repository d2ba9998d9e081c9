/**
 * Node's faster raw inflate for the model's codecs (src/model/compression.ts), installed when this
 * module is first imported (the io layer's index imports it, so the Node entry and the CLI run with
 * it). Everything else stays the model's portable codecs: pako's deflate (reference zlib's exact
 * output, which QEMU's files hold; Node's zlib is Chromium's fork and compresses differently) and
 * the embedded libzstd wasm.
 *
 * Why: pako's inflate is 2–3× slower than node:zlib's on compressed clusters (measured on 4 KiB,
 * 64 KiB and 2 MiB clusters of text-like, half-random and sparse data: 100–600 MiB/s against
 * 150–1750 MiB/s), which is most of the time of reading or converting a compressed image.
 *
 * The result is the portable inflate's, byte for byte, for every input: node:zlib inflates the
 * whole input and stops at the stream's end, so when it succeeds within `limit` bytes it produced
 * what zlib's inflate(Z_FINISH) into a `limit`-byte buffer produces. When it fails — more than
 * `limit` bytes (QEMU stops at a full cluster and never sees what follows), or a data error that QEMU
 * may never reach — the portable inflate, which stops exactly where QEMU does, decides.
 */
import { constants as zlibConstants, inflateRawSync } from 'node:zlib';
import { installCompressionCodecs, portableCompressionCodecs, type CompressionCodecs } from '../model/index.ts';

/** node:zlib's raw inflate with the portable inflate's result (see above). */
function inflateRawNode(data: Uint8Array, options: { readonly windowBits: number; readonly limit: number }): Uint8Array {
  let out: Uint8Array;
  try {
    // One output buffer of `limit` bytes, as QEMU inflates (with smaller chunks, a stream that refers
    // back past the window into earlier output would fail here and go to the portable inflate).
    out = inflateRawSync(data, {
      windowBits: options.windowBits,
      finishFlush: zlibConstants.Z_SYNC_FLUSH,
      chunkSize: Math.max(64, options.limit), // node:zlib's smallest chunk is 64 bytes
      maxOutputLength: Math.max(1, options.limit),
    });
  } catch {
    return portableCompressionCodecs.inflateRaw(data, options);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** The codecs the Node entry installs: the portable ones with node:zlib's inflate. */
export const nodeCompressionCodecs: CompressionCodecs = { ...portableCompressionCodecs, inflateRaw: inflateRawNode };

installCompressionCodecs(nodeCompressionCodecs);
