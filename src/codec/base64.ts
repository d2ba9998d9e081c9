/**
 * Base64 (RFC 4648 §4: standard alphabet, padded) without Node's Buffer or the DOM's atob/btoa, so the
 * core runs unchanged in Node and in browsers. Used by the op-script format (write payloads) and to
 * embed the zstd encoder's wasm (generated/zstd-wasm.ts).
 */

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
/** Char code → 6-bit value, or -1 outside the alphabet. */
const VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) VALUE[ALPHABET.charCodeAt(i)] = i;

/** The padded base64 text of `bytes`. */
export function base64Encode(bytes: Uint8Array): string {
  const parts: string[] = [];
  // Chunks of 3 × 4096 bytes keep String.fromCharCode's argument list short.
  for (let start = 0; start < bytes.length; start += 12288) {
    const end = Math.min(bytes.length, start + 12288);
    const codes: number[] = [];
    let i = start;
    for (; i + 3 <= end; i += 3) {
      const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
      codes.push(ALPHABET.charCodeAt(n >>> 18), ALPHABET.charCodeAt((n >>> 12) & 63), ALPHABET.charCodeAt((n >>> 6) & 63), ALPHABET.charCodeAt(n & 63));
    }
    if (end - i === 1) {
      const n = bytes[i]! << 16;
      codes.push(ALPHABET.charCodeAt(n >>> 18), ALPHABET.charCodeAt((n >>> 12) & 63), 61, 61);
    } else if (end - i === 2) {
      const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
      codes.push(ALPHABET.charCodeAt(n >>> 18), ALPHABET.charCodeAt((n >>> 12) & 63), ALPHABET.charCodeAt((n >>> 6) & 63), 61);
    }
    parts.push(String.fromCharCode(...codes));
  }
  return parts.join('');
}

/**
 * The bytes of canonical padded base64 `text`, or undefined when it is not exactly what
 * base64Encode would write for some bytes: a length that is not a multiple of 4, a character outside
 * the alphabet (whitespace included), misplaced '=' or non-zero pad bits.
 */
export function base64Decode(text: string): Uint8Array | undefined {
  if (text.length % 4 !== 0) return undefined;
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < text.length; i += 4) {
    const last = i + 4 === text.length;
    const a = sextet(text, i);
    const b = sextet(text, i + 1);
    const c = last && pad === 2 ? 0 : sextet(text, i + 2);
    const d = last && pad >= 1 ? 0 : sextet(text, i + 3);
    if ((a | b | c | d) < 0) return undefined;
    const n = (a << 18) | (b << 12) | (c << 6) | d;
    out[o++] = n >>> 16;
    if (o < out.length) out[o++] = (n >>> 8) & 0xff;
    if (o < out.length) out[o++] = n & 0xff;
    // Pad bits (the bits of the last sextet that no output byte holds) must be zero.
    if (last && ((pad === 2 && (b & 15) !== 0) || (pad === 1 && (c & 3) !== 0))) return undefined;
  }
  return out;
}

/** The 6-bit value of the character at `i`, or -1. */
function sextet(text: string, i: number): number {
  const c = text.charCodeAt(i);
  return c < 128 ? VALUE[c]! : -1;
}
