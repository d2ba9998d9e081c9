/**
 * Small helpers the generated decoders and encoders share: Kaitai's modulo, ASCII strings with a
 * 1:1 byte/char mapping (as Kaitai's JavaScript decodes them), pad-right stripping, lazily read
 * `pos:` instances, and the bound checks that keep every loop finite.
 */
import type { ByteReader } from './byte-reader.ts';
import { Qcow2FormatError } from './errors.ts';

/** Kaitai's modulo: non-negative for a positive divisor. */
export function kaitaiMod(a: number, b: number): number {
  const r = a % b;
  return r < 0 ? r + b : r;
}

/** Bytes to a string, one char per byte (Kaitai's JavaScript `ASCII`), so every byte round-trips. */
export function asciiDecode(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 8192) {
    out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return out;
}

/** The inverse of asciiDecode; a char above 0xff is an `inconsistent` error. */
export function asciiEncode(s: unknown, structure: string, field: string): Uint8Array {
  if (typeof s !== 'string') throw new Qcow2FormatError('inconsistent', { structure, field, offset: 0 }, 'expected a string');
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new Qcow2FormatError('inconsistent', { structure, field, offset: 0 }, `character U+${c.toString(16)} does not fit one byte`);
    out[i] = c;
  }
  return out;
}

/** `bytes` without trailing `pad` bytes (Kaitai `pad-right`). */
export function stripRight(bytes: Uint8Array, pad: number): Uint8Array {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === pad) end--;
  return bytes.subarray(0, end);
}

/** Adds a non-enumerable, memoised property read on first access (a `pos:` instance). */
export function defineLazy(obj: object, name: string, read: () => unknown): void {
  let done = false;
  let value: unknown;
  Object.defineProperty(obj, name, {
    enumerable: false,
    configurable: false,
    get() {
      if (!done) {
        value = read();
        done = true;
      }
      return value;
    },
  });
}

/** Adds a non-enumerable value property (a `value:` instance), so seq fields alone compare equal. */
export function defineValue(obj: object, name: string, value: unknown): void {
  Object.defineProperty(obj, name, { enumerable: false, configurable: false, writable: false, value });
}

/** Throws `invalid-value` for a field that breaks a `valid:` rule. */
export function invalidValue(structure: string, field: string, offset: number, detail: string): never {
  throw new Qcow2FormatError('invalid-value', { structure, field, offset }, detail);
}

/** Throws `inconsistent` (encoders: a value that disagrees with the fields it depends on). */
export function inconsistent(structure: string, field: string, offset: number, detail: string): never {
  throw new Qcow2FormatError('inconsistent', { structure, field, offset }, detail);
}

/**
 * A repeat count whose elements (each at least `minBits` bits, as the generator computed from the
 * spec) could not fit the bytes left is refused before the loop starts, so a hostile count costs
 * nothing.
 */
export function checkCount(io: ByteReader, n: unknown, minBits: number, structure: string, field: string): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0 || n * Math.max(1, minBits) > io.remainingBits()) {
    throw new Qcow2FormatError('too-large', { structure, field, offset: Math.min(io.pos, io.length) },
      `repeat count ${String(n)} of elements of at least ${Math.max(1, minBits)} bit(s) cannot fit the ${Math.max(0, io.end - io.pos)} byte(s) left`);
  }
  return n;
}

/** Refuses a loop iteration that consumed nothing (it would never end). */
export function requireProgress(io: ByteReader, before: number, structure: string, field: string): void {
  if (io.mark() <= before) {
    throw new Qcow2FormatError('too-large', { structure, field, offset: Math.min(io.pos, io.length) },
      'an element consumed no bytes; refusing to loop');
  }
}

/** A size expression must give a non-negative safe integer. */
export function checkSize(n: unknown, structure: string, field: string, offset: number): number {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
    throw new Qcow2FormatError('too-large', { structure, field, offset }, `size ${String(n)} is not a valid byte count`);
  }
  return n;
}
