/**
 * Byte-buffer helpers shared by the model's hot paths: an all-zero test that compares against a
 * zero buffer with the runtime's native memcmp (Node's Buffer) where there is one, else reads 32-bit
 * words, because zero tests over whole COW buffers are on every guest write's path (figures in
 * bench/README.md).
 */

/** Below this length a plain byte loop is cheaper than creating a view. */
const SMALL = 64;
/** Length of the shared zero buffer compared against (longer ranges go in chunks). */
const ZERO_CHUNK = 65536;

interface NativeBuffer extends Uint8Array {
  compare(target: Uint8Array, targetStart: number, targetEnd: number, sourceStart: number, sourceEnd: number): number;
}
interface NativeBufferCtor {
  from(buffer: ArrayBufferLike, byteOffset: number, length: number): NativeBuffer;
  alloc(size: number): NativeBuffer;
}
const NativeBuffer = (globalThis as { Buffer?: NativeBufferCtor }).Buffer;
const ZEROS: NativeBuffer | undefined = NativeBuffer?.alloc(ZERO_CHUNK);

/**
 * Whether every byte of `b[from, from+length)` is 0 (default: all of `b`). Exact for any alignment,
 * length and runtime; `b` is only read.
 */
export function isZeroBytes(b: Uint8Array, from = 0, length = b.length - from): boolean {
  const end = from + length;
  if (length < SMALL) {
    for (let i = from; i < end; i++) if (b[i] !== 0) return false;
    return true;
  }
  // Cheap probes first: data that is not zero usually shows it at either end.
  if (b[from] !== 0 || b[end - 1] !== 0) return false;
  if (NativeBuffer !== undefined && ZEROS !== undefined) {
    const view = NativeBuffer.from(b.buffer, b.byteOffset, b.byteLength);
    for (let i = from; i < end; i += ZERO_CHUNK) {
      const n = Math.min(ZERO_CHUNK, end - i);
      if (ZEROS.compare(view, i, i + n, 0, n) !== 0) return false;
    }
    return true;
  }
  return isZeroWords(b, from, end);
}

/** The portable path: bytes up to a 4-byte aligned address, then 32-bit words, then the tail. */
function isZeroWords(b: Uint8Array, from: number, end: number): boolean {
  let i = from;
  while (i < end && ((b.byteOffset + i) & 3) !== 0) if (b[i++] !== 0) return false;
  const words = i < end ? (end - i) >> 2 : 0;
  if (words === 0) {
    for (; i < end; i++) if (b[i] !== 0) return false;
    return true;
  }
  const w = new Int32Array(b.buffer, b.byteOffset + i, words);
  // OR-accumulate 8 words at a time: one branch per 32 bytes.
  let k = 0;
  for (; k + 8 <= words; k += 8) {
    if ((w[k]! | w[k + 1]! | w[k + 2]! | w[k + 3]! | w[k + 4]! | w[k + 5]! | w[k + 6]! | w[k + 7]!) !== 0) return false;
  }
  for (; k < words; k++) if (w[k] !== 0) return false;
  for (i += words << 2; i < end; i++) if (b[i] !== 0) return false;
  return true;
}

/** The portable word loop, exported for tests (isZeroBytes uses it where there is no native Buffer). */
export const isZeroBytesPortable = (b: Uint8Array, from = 0, length = b.length - from): boolean => isZeroWords(b, from, from + length);
