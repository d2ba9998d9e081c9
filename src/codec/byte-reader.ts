/**
 * The bounded big-endian reader that generated decoders run on. It mirrors the semantics of the
 * Kaitai Struct runtime (KaitaiStream) for the subset spec/qcow2.ksy uses — windows (substreams),
 * u1/u2/u4/s1/s2/s4, big- and little-endian bit fields of at most 32 bits, byte alignment, eof —
 * so that our decoder and kaitai-struct-compiler's agree field by field. Every read is checked
 * against the window and fails with a Qcow2FormatError naming structure, field and absolute offset.
 *
 * The bytes are a Uint8Array, or a PagedBytes (a source too large to hold, src/codec/paged-bytes.ts):
 * then the reader holds one window of the source and moves it when a read falls outside it, and
 * positions stay offsets in the whole source, so values and errors are those of a whole-buffer decode.
 */
import { Qcow2FormatError } from './errors.ts';
import { PAGE_SIZE, PagedBytes } from './paged-bytes.ts';
import { WORK } from './work-meter.ts';

const EMPTY = new Uint8Array(0);

export class ByteReader {
  /** Length of the whole buffer or source; offsets in errors are positions in it. */
  readonly length: number;
  /** First byte of this window (absolute). */
  readonly start: number;
  /** One past the last byte of this window (absolute). */
  readonly end: number;
  /** Next byte to read (absolute). */
  pos: number;
  private bits = 0;
  private bitsLeft = 0;
  /** The bytes held: the whole buffer, or the current window of `paged`. */
  private buf: Uint8Array;
  /** Absolute position of buf[0] (0 for a whole buffer). */
  private base: number;
  /** The source a window is read from; undefined for a whole buffer. */
  private readonly paged: PagedBytes | undefined;

  /**
   * A reader over `bytes[start, end)` (absolute positions; `end` defaults to its length). Throws
   * `truncated` if the window is not inside the buffer or source.
   */
  constructor(bytes: Uint8Array | PagedBytes, start = 0, end = bytes.length) {
    if (!(start >= 0 && end >= start && end <= bytes.length && Number.isSafeInteger(start) && Number.isSafeInteger(end))) {
      throw new Qcow2FormatError('truncated', { structure: 'stream', field: 'window', offset: Math.max(0, Math.min(start, bytes.length)) },
        `window [${start}, ${end}) is not inside a buffer of ${bytes.length} bytes`);
    }
    this.length = bytes.length;
    if (bytes instanceof PagedBytes) {
      this.paged = bytes;
      this.buf = EMPTY;
      this.base = 0;
    } else {
      this.paged = undefined;
      this.buf = bytes;
      this.base = 0;
    }
    this.start = start;
    this.end = end;
    this.pos = start;
    // No DataView: integers are assembled from bytes (creating a view per reader dominated the
    // cost of decoding one 8-byte table entry).
  }

  /** A reader of [start, end) of the same buffer or source, sharing the window held now. */
  private derive(start: number, end: number): ByteReader {
    const r = new ByteReader(this.paged ?? this.buf, start, end);
    r.buf = this.buf;
    r.base = this.base;
    return r;
  }

  /** Size of the window in bytes (Kaitai `_io.size`). */
  get size(): number {
    return this.end - this.start;
  }

  /** Position relative to the window start (Kaitai `_io.pos`). */
  get relativePos(): number {
    return this.pos - this.start;
  }

  /** Kaitai `_io.eof`: no whole byte and no buffered bit left. */
  isEof(): boolean {
    return this.pos >= this.end && this.bitsLeft === 0;
  }

  /** Moves to `relative` bytes from the window start (Kaitai `seek`); past the end fails on the next read. */
  seek(relative: number): void {
    this.alignToByte();
    this.pos = this.start + relative;
  }

  /** Drops buffered bits so the next read starts at a byte boundary. */
  alignToByte(): void {
    this.bits = 0;
    this.bitsLeft = 0;
  }

  /** Throws `truncated` unless `n` bytes can be read at the current position. */
  ensure(n: number, structure: string, field: string): void {
    this.check(n, structure, field);
    if (n > 0 && (this.pos < this.base || this.pos + n > this.base + this.buf.length)) this.hold(this.pos, n);
  }

  /** ensure's checks, without moving the window. */
  private check(n: number, structure: string, field: string): void {
    WORK.decodedFields++;
    if (!(Number.isSafeInteger(n) && n >= 0)) {
      throw new Qcow2FormatError('too-large', { structure, field, offset: this.clampedPos() }, `size ${n} is not a valid byte count`);
    }
    if (this.pos < this.start || this.pos + n > this.end) {
      throw new Qcow2FormatError('truncated', { structure, field, offset: this.clampedPos() },
        `needs ${n} byte(s) at 0x${this.pos.toString(16)} but the enclosing region ends at 0x${this.end.toString(16)}`);
    }
  }

  /** Moves the window of a paged source so it holds [pos, pos + n) (inside the source: checked by the caller). */
  private hold(pos: number, n: number): void {
    if (this.paged === undefined) throw new RangeError(`[${pos}, +${n}) is outside the buffer`);
    const w = this.paged.window(pos, n);
    this.buf = w.bytes;
    this.base = w.base;
  }

  private clampedPos(): number {
    return Math.max(0, Math.min(this.pos, this.length));
  }

  /** A window of `n` bytes at the current position; advances past it (Kaitai `size:` substream). */
  substream(n: number, structure: string, field: string): ByteReader {
    this.ensure(n, structure, field);
    const sub = this.derive(this.pos, this.pos + n);
    this.pos += n;
    return sub;
  }

  /** A window from the current position to the end of this window; consumes it (Kaitai `size-eos`). */
  rest(): ByteReader {
    const from = Math.min(Math.max(this.pos, this.start), this.end);
    const sub = this.derive(from, this.end);
    this.pos = this.end;
    return sub;
  }

  /** A reader over the same window positioned `relative` bytes from its start (for `pos:` instances). */
  at(relative: number, structure: string, field: string): ByteReader {
    if (!Number.isSafeInteger(relative) || relative < 0 || this.start + relative > this.end) {
      throw new Qcow2FormatError('truncated', { structure, field, offset: Math.min(this.end, this.length) },
        `position ${relative} is outside the ${this.size}-byte region it points into`);
    }
    const r = this.derive(this.start, this.end);
    r.pos = this.start + relative;
    return r;
  }

  /** A copy of every byte left in the window; consumes them (Kaitai `size-eos` byte arrays). */
  readBytesToEnd(): Uint8Array {
    this.alignToByte();
    const from = Math.min(Math.max(this.pos, this.start), this.end);
    this.pos = this.end;
    if (from === this.end) return new Uint8Array(0);
    if (this.paged !== undefined && (from < this.base || this.end > this.base + this.buf.length)) return this.paged.read(from, this.end - from);
    return this.buf.slice(from - this.base, this.end - this.base);
  }

  /** Bits consumed so far, counting buffered bits (to prove a loop iteration made progress). */
  mark(): number {
    return this.pos * 8 - this.bitsLeft;
  }

  /** Bits that can still be read from the window. */
  remainingBits(): number {
    return Math.max(0, this.end - this.pos) * 8 + this.bitsLeft;
  }

  /** A copy of `n` bytes at the current position. */
  readBytes(n: number, structure: string, field: string): Uint8Array {
    if (this.paged !== undefined && n > PAGE_SIZE && (this.pos < this.base || this.pos + n > this.base + this.buf.length)) {
      // A long field (unknown extension data) is copied from the source, not held as the window.
      this.check(n, structure, field);
      const out = this.paged.read(this.pos, n);
      this.pos += n;
      return out;
    }
    this.ensure(n, structure, field);
    const out = this.buf.slice(this.pos - this.base, this.pos - this.base + n);
    this.pos += n;
    return out;
  }

  readU1(structure: string, field: string): number {
    this.ensure(1, structure, field);
    return this.buf[this.pos++ - this.base]!;
  }

  readU2(structure: string, field: string): number {
    this.ensure(2, structure, field);
    const b = this.buf;
    const p = this.pos - this.base;
    this.pos += 2;
    return (b[p]! << 8) | b[p + 1]!;
  }

  readU4(structure: string, field: string): number {
    this.ensure(4, structure, field);
    const b = this.buf;
    const p = this.pos - this.base;
    this.pos += 4;
    return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
  }

  readS1(structure: string, field: string): number {
    this.ensure(1, structure, field);
    return (this.buf[this.pos++ - this.base]! << 24) >> 24;
  }

  readS2(structure: string, field: string): number {
    this.ensure(2, structure, field);
    const b = this.buf;
    const p = this.pos - this.base;
    this.pos += 2;
    return (((b[p]! << 8) | b[p + 1]!) << 16) >> 16;
  }

  readS4(structure: string, field: string): number {
    this.ensure(4, structure, field);
    const b = this.buf;
    const p = this.pos - this.base;
    this.pos += 4;
    return (b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!;
  }

  /** `n` ≤ 32 bits, most significant first (Kaitai `bN` with bit-endian be). Unsigned result. */
  readBitsBe(n: number, structure: string, field: string): number {
    let res = 0;
    const bitsNeeded = n - this.bitsLeft;
    this.bitsLeft = -bitsNeeded & 7;
    if (bitsNeeded > 0) {
      const bytesNeeded = ((bitsNeeded - 1) >> 3) + 1;
      this.ensure(bytesNeeded, structure, field);
      for (let i = 0; i < bytesNeeded; i++) res = (res << 8) | this.buf[this.pos - this.base + i]!;
      this.pos += bytesNeeded;
      const newBits = res;
      res = (res >>> this.bitsLeft) | (this.bits << bitsNeeded);
      this.bits = newBits;
    } else {
      res = this.bits >>> -bitsNeeded;
    }
    this.bits &= (1 << this.bitsLeft) - 1;
    return res >>> 0;
  }

  /** `n` ≤ 32 bits, least significant first (Kaitai `bNle`): sub-byte refcounts are packed this way. */
  readBitsLe(n: number, structure: string, field: string): number {
    let res = 0;
    const bitsNeeded = n - this.bitsLeft;
    if (bitsNeeded > 0) {
      const bytesNeeded = ((bitsNeeded - 1) >> 3) + 1;
      this.ensure(bytesNeeded, structure, field);
      for (let i = 0; i < bytesNeeded; i++) res |= this.buf[this.pos - this.base + i]! << (i * 8);
      this.pos += bytesNeeded;
      const newBits = bitsNeeded < 32 ? res >>> bitsNeeded : 0;
      res = (res << this.bitsLeft) | this.bits;
      this.bits = newBits;
    } else {
      res = this.bits;
      this.bits >>>= n;
    }
    this.bitsLeft = -bitsNeeded & 7;
    return n < 32 ? res & ((1 << n) - 1) : res >>> 0;
  }
}
