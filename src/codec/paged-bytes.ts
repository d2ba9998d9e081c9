/**
 * Decoding a source too large to hold in memory (an image file of many GiB): the generated decoders
 * take a PagedBytes wherever they take a Uint8Array and read it through a small cache of windows,
 * so a decode reads only the bytes it decodes. Every position — in decoded values, error offsets and
 * error messages — is an offset in the whole source, so decoding a PagedBytes gives exactly what
 * decoding the whole source held in one Uint8Array gives.
 */

/**
 * Positioned reads of a byte source. The shape of the model's HostReader (src/model/host-reader.ts),
 * so a file reader (src/io/file-reader.ts) is one.
 */
export interface ByteSource {
  /** Length in bytes (at most 2^53 - 1). */
  readonly length: bigint;
  /**
   * A copy of the `count` bytes at `offset`, all inside the source. What it throws (an I/O error)
   * reaches the decoder's caller unchanged: it is not a Qcow2FormatError.
   */
  read(offset: bigint, count: number): Uint8Array;
}

/** Bytes of the source: `bytes[i]` is the source's byte at `base + i`. */
export interface SourceWindow {
  readonly bytes: Uint8Array;
  readonly base: number;
}

/** Windows are read in whole pages of this many bytes (aligned), so neighbouring small reads share one. */
export const PAGE_SIZE = 64 * 1024;
/** Default bytes of windows kept. */
const DEFAULT_CACHE_BYTES = 8 * 1024 * 1024;

/**
 * A ByteSource read through a bounded cache of windows (least recently used dropped first). Memory:
 * at most `cacheBytes` of windows, plus one window larger than that while it is used (a structure
 * that large is read uncached).
 */
export class PagedBytes {
  /** Length of the source in bytes. */
  readonly length: number;
  /** Bytes read from the source so far (for tests and cost reports). */
  bytesRead = 0;
  private readonly cacheBytes: number;
  /** Most recently used first. */
  private readonly windows: SourceWindow[] = [];
  private cached = 0;

  constructor(
    readonly source: ByteSource,
    opts: { readonly cacheBytes?: number } = {},
  ) {
    if (!(source.length >= 0n && source.length <= BigInt(Number.MAX_SAFE_INTEGER))) {
      throw new RangeError(`a source of ${source.length} bytes cannot be decoded (at most 2^53 - 1)`);
    }
    this.length = Number(source.length);
    this.cacheBytes = opts.cacheBytes ?? DEFAULT_CACHE_BYTES;
  }

  /**
   * A window holding [pos, pos + count), which must be inside the source (else RangeError: a caller
   * bug, never the input's fault). Served from the cache when a cached window holds the range;
   * otherwise the pages around it are read from the source.
   */
  window(pos: number, count: number): SourceWindow {
    if (!(Number.isSafeInteger(pos) && Number.isSafeInteger(count) && pos >= 0 && count >= 0 && pos + count <= this.length)) {
      throw new RangeError(`[${pos}, +${count}) is not inside a source of ${this.length} bytes`);
    }
    const ws = this.windows;
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i]!;
      if (w.base <= pos && pos + count <= w.base + w.bytes.length) {
        if (i > 0) {
          ws.splice(i, 1);
          ws.unshift(w);
        }
        return w;
      }
    }
    const start = pos - (pos % PAGE_SIZE);
    const end = Math.min(this.length, Math.ceil((pos + count) / PAGE_SIZE) * PAGE_SIZE);
    const bytes = this.source.read(BigInt(start), end - start);
    if (bytes.length !== end - start) throw new RangeError(`the source returned ${bytes.length} byte(s) at ${start}, not ${end - start}`);
    this.bytesRead += bytes.length;
    const w: SourceWindow = { bytes, base: start };
    if (bytes.length > this.cacheBytes) return w;
    ws.unshift(w);
    this.cached += bytes.length;
    while (this.cached > this.cacheBytes && ws.length > 1) this.cached -= ws.pop()!.bytes.length;
    return w;
  }

  /** A copy of [pos, pos + count) of the source (inside it), read directly when no cached window holds it. */
  read(pos: number, count: number): Uint8Array {
    for (const w of this.windows) {
      if (w.base <= pos && pos + count <= w.base + w.bytes.length) return w.bytes.slice(pos - w.base, pos - w.base + count);
    }
    if (!(Number.isSafeInteger(pos) && Number.isSafeInteger(count) && pos >= 0 && count >= 0 && pos + count <= this.length)) {
      throw new RangeError(`[${pos}, +${count}) is not inside a source of ${this.length} bytes`);
    }
    const out = this.source.read(BigInt(pos), count);
    if (out.length !== count) throw new RangeError(`the source returned ${out.length} byte(s) at ${pos}, not ${count}`);
    this.bytesRead += count;
    return out;
  }
}
