/**
 * The growable big-endian writer that generated encoders run on: the inverse of ByteReader.
 * Every value is range-checked against its field width; a value that does not fit fails with a
 * Qcow2FormatError (`inconsistent`) naming the structure, the field and the output offset, so an
 * encoder never silently truncates a number.
 */
import { Qcow2FormatError } from './errors.ts';

/** 2^bits - 1 for bits 0..32 (a table: `2 ** bits` with a variable exponent was most of an entry encode). */
const UINT_MAX: readonly number[] = Array.from({ length: 33 }, (_v, bits) => 2 ** bits - 1);

export class ByteWriter {
  private buf: Uint8Array;
  private len = 0;
  private cur = 0;
  private curBits = 0;
  private curLe = false;

  constructor(initialCapacity = 16) {
    this.buf = new Uint8Array(Math.max(16, initialCapacity));
  }

  /** Bytes written so far, counting a partial bit byte as written. */
  get length(): number {
    return this.len + (this.curBits > 0 ? 1 : 0);
  }

  private grow(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + extra) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  private push(byte: number): void {
    this.grow(1);
    this.buf[this.len++] = byte;
  }

  private fail(structure: string, field: string, detail: string): never {
    throw new Qcow2FormatError('inconsistent', { structure, field, offset: this.len }, detail);
  }

  private checkUint(v: unknown, bits: number, structure: string, field: string): number {
    const max = UINT_MAX[bits] ?? 2 ** bits - 1;
    // (v >>> 0) === v: an integer in [0, 2^32), the widths that matter; wider ones take the slow test.
    if (typeof v === 'number' && (v >>> 0) === v && v <= max) return v;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
      this.fail(structure, field, `value ${String(v)} does not fit an unsigned ${bits}-bit field`);
    }
    return v;
  }

  private checkSint(v: unknown, bits: number, structure: string, field: string): number {
    const lim = 2 ** (bits - 1);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < -lim || v >= lim) {
      this.fail(structure, field, `value ${String(v)} does not fit a signed ${bits}-bit field`);
    }
    return v;
  }

  /** Flushes a partial bit byte (unused low bits zero for be, high bits zero for le). */
  alignToByte(): void {
    if (this.curBits === 0) return;
    const byte = this.curLe ? this.cur : this.cur << (8 - this.curBits);
    this.cur = 0;
    this.curBits = 0;
    this.push(byte & 0xff);
  }

  writeU1(v: unknown, structure: string, field: string): void {
    this.alignToByte();
    this.push(this.checkUint(v, 8, structure, field));
  }

  writeU2(v: unknown, structure: string, field: string): void {
    const n = this.checkUint(v, 16, structure, field);
    this.alignToByte();
    this.push(n >>> 8);
    this.push(n & 0xff);
  }

  writeU4(v: unknown, structure: string, field: string): void {
    const n = this.checkUint(v, 32, structure, field);
    this.alignToByte();
    this.push(n >>> 24);
    this.push((n >>> 16) & 0xff);
    this.push((n >>> 8) & 0xff);
    this.push(n & 0xff);
  }

  writeS1(v: unknown, structure: string, field: string): void {
    this.writeU1(this.checkSint(v, 8, structure, field) & 0xff, structure, field);
  }

  writeS2(v: unknown, structure: string, field: string): void {
    this.writeU2(this.checkSint(v, 16, structure, field) & 0xffff, structure, field);
  }

  writeS4(v: unknown, structure: string, field: string): void {
    this.writeU4(this.checkSint(v, 32, structure, field) >>> 0, structure, field);
  }

  /** Writes `bytes`; when `size` is given the array must be exactly that long. */
  writeBytes(bytes: unknown, structure: string, field: string, size?: number): void {
    if (!(bytes instanceof Uint8Array)) this.fail(structure, field, 'expected a Uint8Array');
    if (size !== undefined && bytes.length !== size) {
      this.fail(structure, field, `has ${bytes.length} byte(s) but its size expression says ${size}`);
    }
    this.alignToByte();
    this.grow(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  /** Writes `bytes` padded with `pad` up to `size` (Kaitai `pad-right`). */
  writePadded(bytes: unknown, size: number, pad: number, structure: string, field: string): void {
    if (!(bytes instanceof Uint8Array)) this.fail(structure, field, 'expected a Uint8Array');
    if (bytes.length > size) this.fail(structure, field, `has ${bytes.length} byte(s), more than its size ${size}`);
    const out = new Uint8Array(size).fill(pad);
    out.set(bytes);
    this.writeBytes(out, structure, field);
  }

  /** `n` ≤ 32 bits, most significant first. Booleans are written as 0/1. */
  writeBitsBe(n: number, v: unknown, structure: string, field: string): void {
    const x = this.checkUint(typeof v === 'boolean' ? Number(v) : v, n, structure, field);
    if (this.curBits > 0 && this.curLe) this.alignToByte();
    this.curLe = false;
    // Up to 8 bits at a time (x < 2^32, so `>>>` is exact); the same bits as one at a time.
    let left = n;
    while (left > 0) {
      const take = Math.min(8 - this.curBits, left);
      left -= take;
      this.cur = (this.cur << take) | ((x >>> left) & ((1 << take) - 1));
      this.curBits += take;
      if (this.curBits === 8) {
        this.push(this.cur & 0xff);
        this.cur = 0;
        this.curBits = 0;
      }
    }
  }

  /** `n` ≤ 32 bits, least significant first (sub-byte refcounts). */
  writeBitsLe(n: number, v: unknown, structure: string, field: string): void {
    const x = this.checkUint(typeof v === 'boolean' ? Number(v) : v, n, structure, field);
    if (this.curBits > 0 && !this.curLe) this.alignToByte();
    this.curLe = true;
    let shift = 0;
    while (shift < n) {
      const take = Math.min(8 - this.curBits, n - shift);
      this.cur |= ((x >>> shift) & ((1 << take) - 1)) << this.curBits;
      shift += take;
      this.curBits += take;
      if (this.curBits === 8) {
        this.push(this.cur & 0xff);
        this.cur = 0;
        this.curBits = 0;
      }
    }
  }

  /** The bytes written (a partial bit byte is flushed first). */
  finish(): Uint8Array {
    this.alignToByte();
    return this.buf.slice(0, this.len);
  }
}
