/**
 * The read-only layer under a HostFile: a synchronous reader of the real file (or any byte source),
 * a bounded memo of its pages, and the ranges hidden by zeroing and truncation — so an image of any
 * size loads without being copied.
 */
import { isZeroBytes } from '../codec/index.ts';
import { PAGE_SIZE, pageIndexOf } from './page-map.ts';

/**
 * A synchronous, read-only source of bytes (e.g. `fs.readSync` on a file descriptor,
 * src/io/file-reader.ts). Its content and length must not change while any HostFile built on it
 * (and any Image holding one) is still used: HostFiles read it lazily, at any later time, and cache
 * what they read. (One exception, for the one owner of the files: a write the file already shows
 * may reach the reader when the file absorbs it, host-file.ts absorbIssuedWrites.)
 */
export interface HostReader {
  /** Length of the source in bytes. */
  readonly length: bigint;
  /**
   * Exactly `length` bytes at `offset`, in a fresh array the caller may keep. HostFile only asks
   * for ranges inside [0, this.length). May throw (an I/O error): the error propagates unchanged
   * out of the HostFile function (and out of `step`) that needed the bytes.
   */
  read(offset: bigint, length: number): Uint8Array;
  /**
   * Optional: the same bytes as `read(offset, length)`, stored into `target[pos, pos + length)`
   * instead of a fresh array (a driver streaming gigabytes saves an allocation and a copy per read).
   */
  readInto?(offset: bigint, target: Uint8Array, pos: number, length: number): void;
}

/** Pages of a base read once and kept for hostPage/viewHost (bounded: least recently used go). */
const BASE_CACHE_PAGES = 4096;

/**
 * A memo of whole base pages (null: the page is all zeros). The reader's content is immutable by
 * contract, so caching is invisible; it is shared by every HostFile derived from one base, and
 * keeps page objects stable so the model's per-page decode caches (refcount.ts, overlap.ts) hit.
 */
export class BasePageCache {
  private readonly pages = new Map<number, Uint8Array | null>();

  constructor(private readonly reader: HostReader) {}

  /** Page `index` of the reader (zeros past its end), or null when it is all zeros. */
  get(index: number): Uint8Array | null {
    const hit = this.pages.get(index);
    if (hit !== undefined) {
      // Move to the end: Map iteration order is insertion order, the first key is the oldest.
      this.pages.delete(index);
      this.pages.set(index, hit);
      return hit;
    }
    const start = BigInt(index) * BigInt(PAGE_SIZE);
    const left = this.reader.length - start;
    const n = left < BigInt(PAGE_SIZE) ? Number(left) : PAGE_SIZE;
    let page: Uint8Array | null = readExactly(this.reader, start, n);
    if (n < PAGE_SIZE) {
      const full = new Uint8Array(PAGE_SIZE);
      full.set(page);
      page = full;
    }
    if (isZeroBytes(page)) page = null;
    if (this.pages.size >= BASE_CACHE_PAGES) this.pages.delete(this.pages.keys().next().value!);
    this.pages.set(index, page);
    return page;
  }

  /**
   * Forgets pages first..last: the reader's bytes there changed (a driver wrote through it and
   * absorbed the writes, host-file.ts absorbIssuedWrites). The one exception to the reader's
   * immutability, made by the one owner of the files built on it.
   */
  forget(first: number, last: number): void {
    if (last - first + 1 <= this.pages.size) {
      for (let p = first; p <= last; p++) this.pages.delete(p);
    } else {
      for (const p of [...this.pages.keys()]) if (p >= first && p <= last) this.pages.delete(p);
    }
  }
}

/** `reader.read`, checked to return the bytes asked for. */
export function readExactly(reader: HostReader, offset: bigint, length: number): Uint8Array {
  const b = reader.read(offset, length);
  if (b.length !== length) {
    throw new HostReaderError('short-read', `host reader returned ${b.length} byte(s) at 0x${offset.toString(16)}, not ${length}`);
  }
  return b;
}

/** `reader`'s `length` bytes at `offset` stored at `target[pos]` (readInto when the reader has it). */
export function readExactlyInto(reader: HostReader, offset: bigint, target: Uint8Array, pos: number, length: number): void {
  if (reader.readInto !== undefined) reader.readInto(offset, target, pos, length);
  else target.set(readExactly(reader, offset, length), pos);
}

/** A reader broke its contract (see HostReader), or a driver broke rebaseHostFile's precondition. */
export class HostReaderError extends Error {
  override readonly name = 'HostReaderError';
  constructor(readonly code: 'short-read' | 'length-mismatch' | 'io', message: string) {
    super(message);
  }
}

/**
 * The read-only layer under a HostFile's pages: a reader, the offset from which its bytes are hidden
 * (`limit`: its length, lowered by every truncation below it, so bytes cut off never come back), and
 * the whole pages below the limit hidden by zero/discard requests. Immutable; changes make a new one.
 */
export class HostBase {
  /** @internal Use rebaseHostFile / hostFromReader. */
  constructor(
    /** The source of the bytes. */
    readonly reader: HostReader,
    /** Base bytes at or past this offset read as zeros; at most reader.length and the file's length. */
    readonly limit: bigint,
    /** Hidden page ranges: sorted, disjoint, non-adjacent inclusive pairs [lo0, hi0, lo1, hi1, ...]. */
    readonly hidden: readonly number[],
    /** @internal */
    readonly cache: BasePageCache,
  ) {
    this.pageCount = pageIndexOf(limit + BigInt(PAGE_SIZE - 1));
  }

  /** Number of pages holding base bytes below the limit (pages at or past it read no base bytes). */
  readonly pageCount: number;
}

/** Whether inclusive page ranges `r` (see HostBase.hidden) contain page `p`. */
export function rangesHas(r: readonly number[], p: number): boolean {
  let lo = 0;
  let hi = r.length / 2 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (p < r[2 * mid]!) hi = mid - 1;
    else if (p > r[2 * mid + 1]!) lo = mid + 1;
    else return true;
  }
  return false;
}

/** `r` with pages [a, b] added (merging overlapping and adjacent ranges). O(ranges). */
export function rangesAdd(r: readonly number[], a: number, b: number): readonly number[] {
  const out: number[] = [];
  let i = 0;
  while (i < r.length && r[i + 1]! < a - 1) {
    out.push(r[i]!, r[i + 1]!);
    i += 2;
  }
  let lo = a;
  let hi = b;
  while (i < r.length && r[i]! <= b + 1) {
    lo = Math.min(lo, r[i]!);
    hi = Math.max(hi, r[i + 1]!);
    i += 2;
  }
  out.push(lo, hi);
  for (; i < r.length; i++) out.push(r[i]!);
  return out;
}

/** Whether page `p` shows base bytes (below the limit and not hidden). */
export function baseVisible(base: HostBase, p: number): boolean {
  return p < base.pageCount && (base.hidden.length === 0 || !rangesHas(base.hidden, p));
}

/**
 * What page `p` shows of the base: the page (never to be modified), or undefined when it shows only
 * zeros (hidden, past the limit, or zeros in the reader). The page straddling the limit is a fresh
 * copy with the bytes past the limit zeroed.
 */
export function basePage(base: HostBase, p: number): Uint8Array | undefined {
  if (!baseVisible(base, p)) return undefined;
  const page = base.cache.get(p);
  if (page === null) return undefined;
  const cut = Number(base.limit - BigInt(p) * BigInt(PAGE_SIZE));
  if (cut >= PAGE_SIZE) return page;
  const masked = page.slice();
  masked.fill(0, cut);
  return isZeroBytes(masked) ? undefined : masked;
}
