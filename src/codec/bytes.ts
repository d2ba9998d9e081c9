/**
 * Byte-buffer helpers shared by the model's hot paths: an all-zero test that reads 32-bit words,
 * because zero tests over whole COW buffers are on every guest write's path. Portable on purpose (no
 * Node Buffer: the core runs in browsers): Buffer.compare against a zero buffer is about 5x faster per
 * byte on 60 KiB, but the model benchmark (bench/README.md) showed no difference beyond its run-to-run
 * spread, so one path serves every platform.
 */

/** Below this length a plain byte loop is cheaper than creating a view. */
const SMALL = 64;

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

/** The word loop alone (no byte-loop shortcut for short ranges), exported for tests. */
export const isZeroWordsOnly = (b: Uint8Array, from = 0, length = b.length - from): boolean => isZeroWords(b, from, from + length);
