/**
 * The host file of an image as a persistent, sparse value: fixed 4 KiB pages in a persistent map
 * (absent page = zeros) plus a length. Writing returns a new HostFile that shares every page it did
 * not touch with the old one — the path copying the model relies on to stay pure and cheap on a
 * multi-terabyte virtual disk. Pages that become all zeros are dropped, so zero-filled clusters
 * cost nothing.
 *
 * The page map is a 32-way radix trie keyed by page index (PageMap, below): page indexes are dense
 * small integers, so digits index arrays directly — no hashing — and a range of pages (a COW zero
 * range, a truncation) is one walk down the trie. It replaced an immutable.js Map whose hashing
 * lookups were ~15 % of a guest write (bench/README.md). A page is stored whole (a Uint8Array) or,
 * after small writes, as 64-byte chunks over the page it replaced (chunked-page.ts): an 8-byte L2
 * entry or a 2-byte refcount no longer copies 4 KiB. Readers see pages either way (PageMap.get,
 * hostPage); hostSpot reads an entry in place, chunk or page.
 *
 * A HostFile may lie over a read-only base (`HostReader`: e.g. the real file, read with pread), so
 * that an image of any size loads without copying it: the pages in the map override the base, and
 * a page absent from the map reads from the base below the base's limit and as zeros above it.
 * Zeroing a range over the base records the whole pages in a persistent set of hidden page ranges
 * (one entry per request, not per page), and a truncation below the base's length lowers the limit,
 * so every operation keeps its cost independent of the size of the base.
 *
 * `HostIO` is the vocabulary of host operations `step` returns; `applyHostIO` replays them onto a
 * HostFile (what a real-file driver does to a file).
 */
import { isZeroBytes } from '../format/bytes.ts';
import {
  ChunkedPage, copyFromLeaf, flatOf, isZeroSmall, LEAF_PAGE_SIZE, leafIsZero, leafRangeIsZero, leafSpot, ownLeaf, patchLeaf, SMALL_WRITE,
  writeOwnedLeaf, type PageLeaf,
} from './chunked-page.ts';

/** Bytes per page of the sparse store (4096; the page size chunked pages are cut from). */
export const PAGE_SIZE = LEAF_PAGE_SIZE;
const PAGE_BITS = 12;

/**
 * Which file a host operation addresses: the qcow2 file itself (the default, `target` absent) or the
 * image's external data file (`target: 'data'`, incompatible bit 2). A flush is a barrier for both.
 */
export type HostTarget = 'image' | 'data';

/**
 * One host operation, in the order a crash-safe driver must issue them. A write's `bytes` must not
 * be modified: they may be the guest's buffer or an array shared between writes (sharedZeros).
 */
export type HostIO =
  | { readonly kind: 'write'; readonly offset: bigint; readonly bytes: Uint8Array; readonly target?: 'data' }
  /** Zero `length` bytes at `offset` (extending the file like a write; fallocate on a real file). */
  | { readonly kind: 'zero'; readonly offset: bigint; readonly length: bigint; readonly target?: 'data' }
  /** Punch a hole: the range reads as zeros afterwards, the file length does not change. */
  | { readonly kind: 'discard'; readonly offset: bigint; readonly length: bigint; readonly target?: 'data' }
  | { readonly kind: 'flush' }
  | { readonly kind: 'truncate'; readonly length: bigint; readonly target?: 'data' };

/** The file `op` addresses ('image' unless it says 'data'; flushes address both). */
export function hostTargetOf(op: HostIO): HostTarget {
  return op.kind !== 'flush' && op.target === 'data' ? 'data' : 'image';
}

export interface HostFile {
  /** Length of the file in bytes (not necessarily cluster aligned). */
  readonly length: bigint;
  /**
   * Page index → 4 KiB page: the pages written since the file was made (hostFromBytes, writes, or
   * everything after rebaseHostFile). A missing page reads as zeros — or, when the file has a
   * `base`, as the base's bytes where the base is visible. Pages are never mutated.
   *
   * Iterating `pages` therefore visits the file's whole content only when `base` is absent; with a
   * base it visits the overlay only, and an overlay page may be all zeros (it hides a base page).
   */
  readonly pages: PageMap;
  /** The read-only bytes under `pages`, when the file was loaded from a reader (see HostBase). */
  readonly base?: HostBase;
}

/**
 * A synchronous, read-only source of bytes (e.g. `fs.readSync` on a file descriptor,
 * src/cli/file-reader.ts). Its content and length must not change while any HostFile built on it
 * (and any Image holding one) is still used: HostFiles read it lazily, at any later time, and cache
 * what they read.
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
class BasePageCache {
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
}

/** `reader.read`, checked to return the bytes asked for. */
function readExactly(reader: HostReader, offset: bigint, length: number): Uint8Array {
  const b = reader.read(offset, length);
  if (b.length !== length) {
    throw new HostReaderError('short-read', `host reader returned ${b.length} byte(s) at 0x${offset.toString(16)}, not ${length}`);
  }
  return b;
}

/** `reader`'s `length` bytes at `offset` stored at `target[pos]` (readInto when the reader has it). */
function readExactlyInto(reader: HostReader, offset: bigint, target: Uint8Array, pos: number, length: number): void {
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
function rangesHas(r: readonly number[], p: number): boolean {
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
function rangesAdd(r: readonly number[], a: number, b: number): readonly number[] {
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
function baseVisible(base: HostBase, p: number): boolean {
  return p < base.pageCount && (base.hidden.length === 0 || !rangesHas(base.hidden, p));
}

/**
 * What page `p` shows of the base: the page (never to be modified), or undefined when it shows only
 * zeros (hidden, past the limit, or zeros in the reader). The page straddling the limit is a fresh
 * copy with the bytes past the limit zeroed.
 */
function basePage(base: HostBase, p: number): Uint8Array | undefined {
  if (!baseVisible(base, p)) return undefined;
  const page = base.cache.get(p);
  if (page === null) return undefined;
  const cut = Number(base.limit - BigInt(p) * BigInt(PAGE_SIZE));
  if (cut >= PAGE_SIZE) return page;
  const masked = page.slice();
  masked.fill(0, cut);
  return isZeroBytes(masked) ? undefined : masked;
}

/**
 * The all-zero page an overlay holds where a base page must read as zeros (a page written or cut
 * to zeros over visible base bytes: deleting it would uncover the base). Shared; never modified.
 */
const ZERO_PAGE = new Uint8Array(PAGE_SIZE);

/** Shared all-zero arrays by length (sharedZeros). */
const zeroArrays = new Map<number, Uint8Array>();

/**
 * An all-zero array of `length` bytes for a write of zeros (a new table's content), shared by every
 * caller asking for that length; it must not be modified. Checked to be still all zeros before it is
 * handed out again — a fresh one replaces it if not — so a misbehaving consumer of HostIO cannot make
 * a later write wrong. Saves allocating (and page-faulting) a cluster of zeros per new L2 table.
 */
export function sharedZeros(length: number): Uint8Array {
  let z = zeroArrays.get(length);
  if (z === undefined || !isZeroBytes(z)) {
    z = new Uint8Array(length);
    zeroArrays.set(length, z);
  }
  return z;
}

/** An empty host file. */
export function emptyHostFile(): HostFile {
  return { length: 0n, pages: PageMap.EMPTY };
}

const PAGE_MASK = BigInt(PAGE_SIZE - 1);
const PAGE_SHIFT = BigInt(PAGE_BITS);
const TWO_53 = 2 ** 53;

/** The page index of `offset` (exact: offsets below 2^64 give indexes below 2^52). */
function pageIndexOf(offset: bigint): number {
  // Below 2^53 the offset converts exactly, and number arithmetic allocates no bigint.
  const o = Number(offset);
  return o < TWO_53 ? Math.floor(o / PAGE_SIZE) : Number(offset >> PAGE_SHIFT);
}

/** The position of `offset` inside its page. */
function withinPage(offset: bigint): number {
  const o = Number(offset);
  return o < TWO_53 ? o % PAGE_SIZE : Number(offset & PAGE_MASK);
}

/** `length` bytes at `offset`; bytes past the end of the file (or in holes) read as zeros. */
export function readHost(file: HostFile, offset: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  readHostTo(file, offset, length, out, 0, true);
  return out;
}

/**
 * readHost into `target[pos, pos + length)` instead of a fresh array: the same bytes, holes and
 * bytes past the end of the file stored as zeros. Only `target` changes. For drivers that stream
 * data through one reused buffer (convert).
 */
export function readHostInto(file: HostFile, offset: bigint, length: number, target: Uint8Array, pos: number): void {
  readHostTo(file, offset, length, target, pos, false);
}

/**
 * readHost/readHostInto: stores the bytes at `out[at, at + length)`. When `outIsZero` the range
 * already holds zeros (a fresh array), so holes are skipped instead of filled.
 */
function readHostTo(file: HostFile, offset: bigint, length: number, out: Uint8Array, at: number, outIsZero: boolean): void {
  if (file.base !== undefined) {
    readHostOverBase(file, file.base, offset, length, out, at, outIsZero);
    return;
  }
  // Page index and position once, then plain numbers page by page.
  let page = pageIndexOf(offset);
  let within = withinPage(offset);
  let pos = 0;
  while (pos < length) {
    const n = Math.min(PAGE_SIZE - within, length - pos);
    const p = file.pages.leaf(page);
    if (p !== undefined) copyFromLeaf(p, within, n, out, at + pos);
    else if (!outIsZero) out.fill(0, at + pos, at + pos + n);
    pos += n;
    page++;
    within = 0;
  }
}

/** readHostTo of a file with a base: overlay pages, then runs of visible base pages read in one call each. */
function readHostOverBase(file: HostFile, base: HostBase, offset: bigint, length: number, out: Uint8Array, at: number, outIsZero: boolean): void {
  let page = pageIndexOf(offset);
  let within = withinPage(offset);
  let pos = 0;
  // A pending run of base bytes: out[at+runPos, +runLen) = base[runAt, runAt+runLen) (zeros past the limit).
  let runPos = 0;
  let runLen = 0;
  let runAt = 0n;
  const flushRun = (): void => {
    if (runLen === 0) return;
    const end = runAt + BigInt(runLen) < base.limit ? runAt + BigInt(runLen) : base.limit;
    const n = end > runAt ? Number(end - runAt) : 0;
    if (n > 0) readExactlyInto(base.reader, runAt, out, at + runPos, n);
    if (!outIsZero && n < runLen) out.fill(0, at + runPos + n, at + runPos + runLen);
    runLen = 0;
  };
  while (pos < length) {
    const n = Math.min(PAGE_SIZE - within, length - pos);
    const p = file.pages.leaf(page);
    if (p !== undefined) {
      flushRun();
      copyFromLeaf(p, within, n, out, at + pos);
    } else if (baseVisible(base, page)) {
      if (runLen === 0) {
        runPos = pos;
        runAt = offset + BigInt(pos);
      }
      runLen += n;
    } else {
      flushRun();
      if (!outIsZero) out.fill(0, at + pos, at + pos + n);
    }
    pos += n;
    page++;
    within = 0;
  }
  flushRun();
}

/**
 * The bytes at `offset` without copying when they lie inside one stored or base page (a view of
 * that page), else a fresh copy as readHost makes. The result must NOT be modified: it may share
 * memory with the file's immutable pages. For read-only scans of metadata (refcounts, table entries).
 */
export function viewHost(file: HostFile, offset: bigint, length: number): Uint8Array {
  const within = withinPage(offset);
  if (within + length <= PAGE_SIZE) {
    const index = pageIndexOf(offset);
    const leaf = file.pages.leaf(index);
    // A chunked page is copied (readHost): its chunks must not be viewed (chunked-page.ts).
    const p = leaf !== undefined ? (leaf instanceof ChunkedPage ? leaf.flat : leaf)
      : file.base !== undefined ? basePage(file.base, index) : undefined;
    if (p !== undefined) return p.subarray(within, within + length);
  }
  return readHost(file, offset, length);
}

/**
 * The content of page `index` (bytes [index*4096, index*4096+4096)): a stored page, or with a base
 * the base's page where it is visible; undefined when the page reads as zeros (a hole) — though an
 * all-zero page may also be returned. The page must NOT be modified. Pages are immutable values, so
 * a page object can key a cache of what was decoded from it (see overlap.ts, refcount.ts); base
 * pages and the whole-page copies of chunked pages come from bounded caches, so the same page is
 * usually, not always, the same object.
 */
export function hostPage(file: HostFile, index: number): Uint8Array | undefined {
  const p = file.pages.leaf(index);
  if (p !== undefined) return flatOf(p);
  if (file.base === undefined) return undefined;
  return basePage(file.base, index);
}

/**
 * Where the `length` bytes at `offset` can be decoded in place, when they lie inside one page and,
 * for a page kept in chunks (chunked-page.ts), inside one 64-byte chunk — always the case for an
 * aligned table entry or refcount: an array and the position of the first byte in it (a hole reads
 * from a shared page of zeros). Undefined otherwise: read a copy (readHost). The array must NOT be
 * modified nor viewed with `subarray` (it may be an on-heap chunk); no copy, no allocation of bytes.
 */
export function hostSpot(file: HostFile, offset: bigint, length: number): { bytes: Uint8Array; at: number } | undefined {
  const o = Number(offset);
  return o < TWO_53 ? hostSpotAt(file, o, length) : undefined;
}

/** hostSpot for an offset given as a number: an exact non-negative integer below 2^53. */
export function hostSpotAt(file: HostFile, o: number, length: number): { bytes: Uint8Array; at: number } | undefined {
  const index = Math.floor(o / PAGE_SIZE);
  const within = o - index * PAGE_SIZE;
  if (within + length > PAGE_SIZE) return undefined;
  const leaf = file.pages.leaf(index) ?? (file.base !== undefined ? basePage(file.base, index) : undefined);
  if (leaf === undefined) return { bytes: ZERO_PAGE, at: within };
  return leafSpot(leaf, within, length, ZERO_PAGE);
}

/**
 * writeHost of a small write (at most SMALL_WRITE bytes, inside one page, not extending the file, not
 * all zeros) by a transaction that owns the pages it made in `owned` (tx.ts, withOwnedPages): the
 * first such write to a page stores an owned chunked copy of it (chunked-page.ts), later ones change
 * that copy in place while the file still holds it — no page copy per write. Returns the file (the
 * same object when it changed in place), or undefined when the write does not qualify and nothing was
 * done (use writeHost). The result reads exactly as writeHost's would. Only the transaction that
 * owns `owned` may call this, and no Image holding an owned page may outlive its scope.
 */
export function writeHostOwned(file: HostFile, offset: bigint, bytes: Uint8Array, owned: Map<number, ChunkedPage>): HostFile | undefined {
  const n = bytes.length;
  if (n === 0 || n > SMALL_WRITE) return undefined;
  const o = Number(offset);
  if (!(o + n < TWO_53)) return undefined;
  const index = Math.floor(o / PAGE_SIZE);
  const within = o - index * PAGE_SIZE;
  // Number(file.length) is exact below 2^53 and at least 2^53 above it, where o + n is smaller.
  if (within + n > PAGE_SIZE || o + n > Number(file.length)) return undefined;
  // A zero write may turn the page into a hole, which writeHost decides.
  if (isZeroSmall(bytes)) return undefined;
  const cur = file.pages.leaf(index) ?? (file.base !== undefined ? basePage(file.base, index) : undefined);
  const mine = owned.get(index);
  // The working file may have been replaced since (zeroHost, a rollback): the owned copy is changed
  // in place only while the file still holds that very object.
  if (mine !== undefined && mine === cur) {
    writeOwnedLeaf(mine, within, bytes, 0, n);
    return file;
  }
  const fresh = ownLeaf(cur);
  writeOwnedLeaf(fresh, within, bytes, 0, n);
  owned.set(index, fresh);
  const pages = file.pages.setLeaf(index, fresh);
  return file.base !== undefined ? { length: file.length, pages, base: file.base } : { length: file.length, pages };
}

/**
 * Writes `bytes[pos, pos+n)` (n ≤ one page, starting `within` the page) into page `page` of `m`:
 * returns the new map (PageMap) or `m` itself changed (PageMapBatch). The page is copied, never modified.
 */
function putPageChunk<T>(m: PageStore<T> & T, page: number, within: number, bytes: Uint8Array, pos: number, n: number): T {
  // Checking the incoming bytes first avoids copying and scanning pages that stay holes, and a
  // non-zero chunk usually proves the page non-zero after a few bytes.
  const zero = n <= SMALL_WRITE ? isZeroSmall(bytes, pos, n) : isZeroBytes(bytes, pos, n);
  if (n === PAGE_SIZE) return zero ? m.delete(page) : m.setLeaf(page, pageCopy(bytes, pos));
  const old = m.leaf(page);
  if (old === undefined && zero) return m; // a hole stays a hole
  // A small write makes a chunked page (chunked-page.ts), a larger one a copy of the page.
  const next = patchLeaf(old, within, bytes, pos, n);
  return zero && leafIsZero(next) ? m.delete(page) : m.setLeaf(page, next);
}

/**
 * A new page holding `bytes[pos, pos + PAGE_SIZE)`. Not `bytes.slice`: allocating the page and
 * copying into it was about twice as fast in V8 (Node 20), and this is the copy every whole-page
 * guest write makes (bench/README.md).
 */
function pageCopy(bytes: Uint8Array, pos: number): Uint8Array {
  const p = new Uint8Array(PAGE_SIZE);
  p.set(bytes.subarray(pos, pos + PAGE_SIZE));
  return p;
}

/** A file with `bytes` written at `offset` (extending the length if needed). `file` is unchanged. */
export function writeHost(file: HostFile, offset: bigint, bytes: Uint8Array): HostFile {
  if (bytes.length === 0) return file;
  if (file.base !== undefined) return writeHostOverBase(file, file.base, offset, bytes);
  const first = pageIndexOf(offset);
  const within0 = withinPage(offset);
  let pages: PageMap;
  if (within0 + bytes.length <= PAGE_SIZE) {
    // One page (refcount, L1/L2 entry updates): a plain persistent set, no transient map.
    pages = putPageChunk(file.pages, first, within0, bytes, 0, bytes.length);
  } else if (bytes.length >= 2 * PAGE_SIZE && isZeroBytes(bytes)) {
    // A buffer of zeros spanning pages (a new L2 table or refcount block): the same as zeroing.
    return zeroHost(file, offset, BigInt(bytes.length));
  } else {
    pages = file.pages.batch((m) => {
      let page = first;
      let within = within0;
      let pos = 0;
      while (pos < bytes.length) {
        const n = Math.min(PAGE_SIZE - within, bytes.length - pos);
        putPageChunk(m, page, within, bytes, pos, n);
        pos += n;
        page++;
        within = 0;
      }
    });
  }
  const end = offset + BigInt(bytes.length);
  return { length: end > file.length ? end : file.length, pages };
}

/**
 * putPageChunk over a base: a partial page starts from what the page shows (overlay or base), and a
 * page that ends up all zeros is ZERO_PAGE where the base is visible (deleting it would uncover the
 * base), else deleted.
 */
function putChunkOverBase(m: PageMapBatch, base: HostBase, page: number, within: number, bytes: Uint8Array, pos: number, n: number): void {
  const zero = n <= SMALL_WRITE ? isZeroSmall(bytes, pos, n) : isZeroBytes(bytes, pos, n);
  const under = baseVisible(base, page);
  if (n === PAGE_SIZE) {
    if (!zero) m.setLeaf(page, pageCopy(bytes, pos));
    else if (under) m.setLeaf(page, ZERO_PAGE);
    else m.delete(page);
    return;
  }
  const old = m.leaf(page) ?? (under ? basePage(base, page) : undefined);
  if (old === undefined && zero) return; // zeros stay zeros
  const next = patchLeaf(old, within, bytes, pos, n);
  if (!zero || !leafIsZero(next)) m.setLeaf(page, next);
  else if (under) m.setLeaf(page, ZERO_PAGE);
  else m.delete(page);
}

/** writeHost of a file with a base. */
function writeHostOverBase(file: HostFile, base: HostBase, offset: bigint, bytes: Uint8Array): HostFile {
  if (bytes.length >= 2 * PAGE_SIZE && isZeroBytes(bytes)) return zeroHost(file, offset, BigInt(bytes.length));
  const pages = file.pages.batch((m) => {
    let page = pageIndexOf(offset);
    let within = withinPage(offset);
    let pos = 0;
    while (pos < bytes.length) {
      const n = Math.min(PAGE_SIZE - within, bytes.length - pos);
      putChunkOverBase(m, base, page, within, bytes, pos, n);
      pos += n;
      page++;
      within = 0;
    }
  });
  const end = offset + BigInt(bytes.length);
  return { length: end > file.length ? end : file.length, pages, base };
}

/** A file with [offset, offset+length) zeroed (extending the length if needed). `file` is unchanged. */
export function zeroHost(file: HostFile, offset: bigint, length: bigint): HostFile {
  if (length <= 0n) return file;
  if (file.base !== undefined) return zeroHostOverBase(file, file.base, offset, length);
  const end = offset + length;
  // Page indexes are exact numbers (offsets below 2^64).
  const firstPage = pageIndexOf(offset);
  const lastPage = pageIndexOf(end - 1n);
  const headWithin = withinPage(offset);
  const tailEnd = withinPage(end - 1n) + 1;
  const partial = (p: number): boolean => (p === firstPage && headWithin !== 0) || (p === lastPage && tailEnd !== PAGE_SIZE);
  // Whole pages drop out of the map (absent = zeros): one walk over the trie nodes of the range.
  const firstWhole = partial(firstPage) ? firstPage + 1 : firstPage;
  const lastWhole = partial(lastPage) ? lastPage - 1 : lastPage;
  let pages = file.pages.deleteRange(firstWhole, lastWhole);
  // Pages only partly covered keep their other bytes.
  const clearPart = (p: number, from: number, to: number): void => {
    const old = pages.leaf(p);
    if (old === undefined || leafRangeIsZero(old, from, to - from)) return;
    const next = patchLeaf(old, from, undefined, 0, to - from);
    pages = leafIsZero(next) ? pages.delete(p) : pages.setLeaf(p, next);
  };
  if (firstPage === lastPage) {
    if (partial(firstPage)) clearPart(firstPage, headWithin, tailEnd);
  } else {
    if (partial(firstPage)) clearPart(firstPage, headWithin, PAGE_SIZE);
    if (partial(lastPage)) clearPart(lastPage, 0, tailEnd);
  }
  // Zeros over holes inside the file (a COW region of a new cluster) change nothing: the same file.
  if (pages === file.pages && end <= file.length) return file;
  return { length: end > file.length ? end : file.length, pages };
}

/**
 * zeroHost of a file with a base: whole pages leave the overlay and, below the limit, join the
 * hidden ranges (one range per request, whatever its size); partial pages are rewritten.
 */
function zeroHostOverBase(file: HostFile, base0: HostBase, offset: bigint, length: bigint): HostFile {
  const end = offset + length;
  const firstPage = pageIndexOf(offset);
  const lastPage = pageIndexOf(end - 1n);
  const headWithin = withinPage(offset);
  const tailEnd = withinPage(end - 1n) + 1;
  const partial = (p: number): boolean => (p === firstPage && headWithin !== 0) || (p === lastPage && tailEnd !== PAGE_SIZE);
  const firstWhole = partial(firstPage) ? firstPage + 1 : firstPage;
  const lastWhole = partial(lastPage) ? lastPage - 1 : lastPage;
  let pages = file.pages.deleteRange(firstWhole, lastWhole);
  let base = base0;
  const hideTo = Math.min(lastWhole, base.pageCount - 1);
  if (firstWhole <= hideTo) base = new HostBase(base.reader, base.limit, rangesAdd(base.hidden, firstWhole, hideTo), base.cache);
  const clearPart = (p: number, from: number, to: number): void => {
    const under = baseVisible(base, p);
    const old = pages.leaf(p) ?? (under ? basePage(base, p) : undefined);
    if (old === undefined || leafRangeIsZero(old, from, to - from)) return;
    const next = patchLeaf(old, from, undefined, 0, to - from);
    pages = !leafIsZero(next) ? pages.setLeaf(p, next) : under ? pages.setLeaf(p, ZERO_PAGE) : pages.delete(p);
  };
  if (firstPage === lastPage) {
    if (partial(firstPage)) clearPart(firstPage, headWithin, tailEnd);
  } else {
    if (partial(firstPage)) clearPart(firstPage, headWithin, PAGE_SIZE);
    if (partial(lastPage)) clearPart(lastPage, 0, tailEnd);
  }
  return { length: end > file.length ? end : file.length, pages, base };
}

/** A file with [offset, offset+length) punched out (zeros) without changing its length. */
export function discardHost(file: HostFile, offset: bigint, length: bigint): HostFile {
  const end = offset + length < file.length ? offset + length : file.length;
  if (end <= offset) return file;
  return zeroHost(file, offset, end - offset);
}

/**
 * A file cut (or extended with zeros) to `length`. Bytes cut off read as zeros after a later
 * extension, base bytes included (the base's limit drops to `length`).
 */
export function truncateHost(file: HostFile, length: bigint): HostFile {
  if (file.base !== undefined) return truncateHostOverBase(file, file.base, length);
  if (length >= file.length) return { length, pages: file.pages };
  const lastPage = pageIndexOf(length + BigInt(PAGE_SIZE - 1));
  let pages = file.pages.deleteRange(lastPage, MAX_KEY - 1);
  const tail = Number(length & BigInt(PAGE_SIZE - 1));
  if (tail !== 0) {
    const idx = pageIndexOf(length);
    const p = pages.leaf(idx);
    if (p !== undefined) {
      const q = patchLeaf(p, tail, undefined, 0, PAGE_SIZE - tail);
      pages = leafIsZero(q) ? pages.delete(idx) : pages.setLeaf(idx, q);
    }
  }
  return { length, pages };
}

/** truncateHost of a file with a base. */
function truncateHostOverBase(file: HostFile, base0: HostBase, length: bigint): HostFile {
  if (length >= file.length) return { length, pages: file.pages, base: base0 };
  let pages = file.pages.deleteRange(pageIndexOf(length + BigInt(PAGE_SIZE - 1)), MAX_KEY - 1);
  if (length === 0n) return { length, pages }; // nothing of the base can show again
  // The limit never rises, so it stays at most the file's length.
  const base = length < base0.limit ? new HostBase(base0.reader, length, base0.hidden, base0.cache) : base0;
  const tail = Number(length & BigInt(PAGE_SIZE - 1));
  if (tail !== 0) {
    const idx = pageIndexOf(length);
    const p = pages.leaf(idx);
    if (p !== undefined) {
      const q = patchLeaf(p, tail, undefined, 0, PAGE_SIZE - tail);
      pages = !leafIsZero(q) ? pages.setLeaf(idx, q) : baseVisible(base, idx) ? pages.setLeaf(idx, ZERO_PAGE) : pages.delete(idx);
    }
  }
  return { length, pages, base };
}

/**
 * Replays the host operations addressed to `target` (default: the qcow2 file) onto `file`; the others
 * are skipped, and flushes are no-ops for an in-memory file.
 */
export function applyHostIO(file: HostFile, io: readonly HostIO[], target: HostTarget = 'image'): HostFile {
  let f = file;
  for (const op of io) {
    if (op.kind === 'flush' || hostTargetOf(op) !== target) continue;
    if (op.kind === 'write') f = writeHost(f, op.offset, op.bytes);
    else if (op.kind === 'zero') f = zeroHost(f, op.offset, op.length);
    else if (op.kind === 'discard') f = discardHost(f, op.offset, op.length);
    else if (op.kind === 'truncate') f = truncateHost(f, op.length);
  }
  return f;
}

/** The whole file as bytes (holes as zeros). Throws a RangeError-free error for files over 2 GiB. */
export function hostBytes(file: HostFile): Uint8Array {
  if (file.length > 0x7fffffffn) throw new Error(`host file of ${file.length} bytes is too large to materialise in memory`);
  return readHost(file, 0n, Number(file.length));
}

/** A host file holding `bytes` (copied: later changes to `bytes` do not show). */
export function hostFromBytes(bytes: Uint8Array): HostFile {
  const f = writeHost(emptyHostFile(), 0n, bytes);
  return { length: BigInt(bytes.length), pages: f.pages };
}

/**
 * A host file showing `reader`'s content, `reader.length` bytes, with no pages in memory: bytes are
 * read from `reader` when needed (see HostReader for what the reader must guarantee).
 */
export function hostFromReader(reader: HostReader): HostFile {
  return rebaseHostFile({ length: reader.length, pages: PageMap.EMPTY }, reader);
}

/**
 * A host file with the same content as `file` whose base is `reader` and whose overlay is empty:
 * what a driver uses after writing `file`'s pending host I/O to the real file, to drop the written
 * pages from memory. Precondition: `reader` shows exactly `file`'s content (same length, same
 * bytes) — this is checked for the length only (HostReaderError 'length-mismatch'); other bytes are
 * trusted. `file` is unchanged.
 */
export function rebaseHostFile(file: HostFile, reader: HostReader): HostFile {
  if (reader.length !== file.length) {
    throw new HostReaderError('length-mismatch', `host reader has ${reader.length} byte(s), the file ${file.length}`);
  }
  if (reader.length === 0n) return emptyHostFile();
  return { length: file.length, pages: PageMap.EMPTY, base: new HostBase(reader, reader.length, [], new BasePageCache(reader)) };
}

// ---------------------------------------------------------------------------------------------
// PageMap: a persistent sparse map page index → page

/** A trie node: 32 slots, each a child node (inner levels) or a page leaf (level 0), or undefined. */
type TrieNode = Array<TrieNode | PageLeaf | undefined>;

/** log2 of the trie's fanout. */
const DIGIT_BITS = 5;
const FANOUT = 1 << DIGIT_BITS;
/** Keys (page indexes) are below 2^55: byte offsets below 2^67, more than any 64-bit offset needs. */
const MAX_KEY = 2 ** 55;
/** FANOUT^level for every level a key below MAX_KEY needs. */
const POW32: readonly number[] = Array.from({ length: Math.ceil(55 / DIGIT_BITS) + 1 }, (_v, i) => FANOUT ** i);
const EMPTY_NODE: TrieNode = Array.from({ length: FANOUT }, () => undefined);

/** Digit `level` (0 = least significant) of key `k` in base 32. */
function digit(k: number, level: number): number {
  if (k < 0x40000000) return level * DIGIT_BITS < 30 ? (k >>> (level * DIGIT_BITS)) & (FANOUT - 1) : 0;
  return Math.floor(k / POW32[level]!) % FANOUT;
}

function checkKey(k: number): void {
  if (!(Number.isSafeInteger(k) && k >= 0 && k < MAX_KEY)) throw new RangeError(`page index ${k} is not a non-negative integer below 2^55`);
}

/** Pages under `node` (a subtree of `level`+1 levels). */
function countPages(node: TrieNode, level: number): number {
  let n = 0;
  for (let d = 0; d < FANOUT; d++) {
    const c = node[d];
    if (c !== undefined) n += level === 0 ? 1 : countPages(c as TrieNode, level - 1);
  }
  return n;
}

function isEmptyNode(node: TrieNode): boolean {
  for (let d = 0; d < FANOUT; d++) if (node[d] !== undefined) return false;
  return true;
}

/** The trie without needless top levels (only slot 0 used): a map's shape depends only on its keys. */
function shrink(root: TrieNode | undefined, depth: number): [TrieNode | undefined, number] {
  if (root === undefined) return [undefined, 1];
  while (depth > 1) {
    let onlyFirst = true;
    for (let d = 1; d < FANOUT && onlyFirst; d++) onlyFirst = root[d] === undefined;
    if (!onlyFirst) break;
    root = root[0] as TrieNode;
    depth--;
  }
  return [root, depth];
}

/** Mutable state of a batch: nodes created during it may be changed in place. */
interface Owner {
  readonly nodes: Set<TrieNode>;
}

function editable(node: TrieNode | undefined, owner: Owner | undefined): TrieNode {
  if (node !== undefined && owner?.nodes.has(node)) return node;
  const copy = (node ?? EMPTY_NODE).slice();
  owner?.nodes.add(copy);
  return copy;
}

/** The page at key `k` of the trie `root` of `depth` levels, or undefined. */
function trieGet(root: TrieNode | undefined, depth: number, k: number): PageLeaf | undefined {
  let n = root;
  if (n === undefined || !(k < POW32[depth]!) || !(k >= 0)) return undefined;
  for (let level = depth - 1; level > 0; level--) {
    n = n[digit(k, level)] as TrieNode | undefined;
    if (n === undefined) return undefined;
  }
  return n[digit(k, 0)] as PageLeaf | undefined;
}

/** The trie `root` of `depth` levels grown (new roots above it) until key `k` fits. */
function growTo(root: TrieNode | undefined, depth: number, k: number, owner: Owner | undefined): [TrieNode | undefined, number] {
  while (k >= POW32[depth]!) {
    if (root !== undefined) {
      const up = editable(undefined, owner);
      up[0] = root;
      root = up;
    }
    depth++;
  }
  return [root, depth];
}

/** `node` with key `k` set to `v` (undefined: removed); the same node when nothing changes. `delta` counts pages. */
function updateNode(node: TrieNode | undefined, level: number, k: number, v: PageLeaf | undefined, owner: Owner | undefined, delta: { n: number }): TrieNode | undefined {
  const d = digit(k, level);
  const old = node?.[d];
  let next: TrieNode | PageLeaf | undefined;
  if (level === 0) {
    if (old === v) return node;
    delta.n += (old === undefined ? 1 : 0) - (v === undefined ? 1 : 0);
    next = v;
  } else {
    next = updateNode(old as TrieNode | undefined, level - 1, k, v, owner, delta);
    if (next === old) return node;
  }
  if (next === undefined && node !== undefined) {
    let others = false;
    for (let i = 0; i < FANOUT && !others; i++) others = i !== d && node[i] !== undefined;
    if (!others) return undefined; // prune empty nodes: an emptied map is the empty trie again
  }
  const out = editable(node, owner);
  out[d] = next;
  return out;
}

/** `node` (keys base..base+32^(level+1)-1) without the keys in [lo, hi]; the same node when none were there. */
function deleteRangeNode(node: TrieNode, level: number, base: number, lo: number, hi: number, owner: Owner | undefined, delta: { n: number }): TrieNode | undefined {
  const span = POW32[level]!;
  let out: TrieNode | undefined;
  // Only the slots whose key ranges meet [lo, hi].
  const dFirst = lo > base ? Math.floor((lo - base) / span) : 0;
  const dLast = Math.min(FANOUT - 1, Math.floor((hi - base) / span));
  for (let d = dFirst; d <= dLast; d++) {
    const c = node[d];
    if (c === undefined) continue;
    const from = base + d * span;
    const to = from + span - 1;
    if (to < lo || from > hi) continue;
    let next: TrieNode | undefined;
    if (from >= lo && to <= hi) {
      delta.n -= level === 0 ? 1 : countPages(c as TrieNode, level - 1);
      next = undefined;
    } else {
      next = deleteRangeNode(c as TrieNode, level - 1, from, lo, hi, owner, delta);
      if (next === c) continue;
    }
    out ??= editable(node, owner);
    out[d] = next;
  }
  if (out === undefined) return node;
  return isEmptyNode(out) ? undefined : out;
}

function* leavesOf(node: TrieNode, level: number, base: number): Generator<[number, PageLeaf]> {
  const span = POW32[level]!;
  for (let d = 0; d < FANOUT; d++) {
    const c = node[d];
    if (c === undefined) continue;
    if (level === 0) yield [base + d, c as PageLeaf];
    else yield* leavesOf(c as TrieNode, level - 1, base + d * span);
  }
}

/** What writeHost/zeroHost need from a page map, persistent (PageMap) or in a batch (PageMapBatch). */
interface PageStore<T> {
  leaf(k: number): PageLeaf | undefined;
  setLeaf(k: number, v: PageLeaf): T;
  delete(k: number): T;
}

/**
 * A persistent map from page index (an integer in [0, 2^55)) to page: every change returns a new
 * map sharing all untouched nodes, and the same map when nothing changed. Iterates in ascending
 * key order. Offers the read API of a JavaScript Map (get, has, size, keys, values, entries,
 * forEach, iteration).
 */
export class PageMap implements PageStore<PageMap> {
  /** Number of pages. */
  readonly size: number;
  private readonly root: TrieNode | undefined;
  /** Levels of the trie: every key is below 32^depth. */
  private readonly depth: number;

  private constructor(root: TrieNode | undefined, depth: number, size: number) {
    this.root = root;
    this.depth = depth;
    this.size = size;
  }

  /** The empty map. */
  static readonly EMPTY = new PageMap(undefined, 1, 0);

  /** The page at index `k`, or undefined for a hole. */
  get(k: number): Uint8Array | undefined {
    const leaf = trieGet(this.root, this.depth, k);
    return leaf === undefined ? undefined : flatOf(leaf);
  }

  /** Whether page `k` is stored. */
  has(k: number): boolean {
    return trieGet(this.root, this.depth, k) !== undefined;
  }

  /** A map with page `k` set to `v`. */
  set(k: number, v: Uint8Array): PageMap {
    return this.change(k, v);
  }

  /** @internal The leaf stored for page `k` (a page or a chunked page, chunked-page.ts), or undefined. */
  leaf(k: number): PageLeaf | undefined {
    return trieGet(this.root, this.depth, k);
  }

  /** @internal A map with page `k` set to the leaf `v`. */
  setLeaf(k: number, v: PageLeaf): PageMap {
    return this.change(k, v);
  }

  /** A map without page `k`. */
  delete(k: number): PageMap {
    if (!this.has(k)) return this;
    return this.change(k, undefined);
  }

  /** A map without any page in [lo, hi] (inclusive); proportional to the pages removed, not the range. */
  deleteRange(lo: number, hi: number): PageMap {
    if (this.root === undefined || hi < lo) return this;
    const delta = { n: 0 };
    const root = deleteRangeNode(this.root, this.depth - 1, 0, lo, hi, undefined, delta);
    return root === this.root ? this : new PageMap(...shrink(root, this.depth), this.size + delta.n);
  }

  /**
   * Applies the changes `fn` makes to a batch view and returns the resulting map (this map when
   * the batch set nothing and deleted only absent pages). Nodes created by the batch are updated in place, so a run of pages costs one
   * path copy per node, not per page; this map is never modified.
   */
  batch(fn: (b: PageMapBatch) => void): PageMap {
    const b = new PageMapBatch(this.root, this.depth, this.size);
    fn(b);
    const [root, depth] = shrink(b.root, b.depth);
    return root === this.root ? this : new PageMap(root, depth, b.size);
  }

  private change(k: number, v: PageLeaf | undefined): PageMap {
    checkKey(k);
    let root = this.root;
    let depth = this.depth;
    if (!(k < POW32[depth]!)) [root, depth] = growTo(root, depth, k, undefined);
    const delta = { n: 0 };
    const next = updateNode(root, depth - 1, k, v, undefined, delta);
    if (next === this.root && depth === this.depth) return this;
    if (v !== undefined) return new PageMap(next, depth, this.size + delta.n);
    const [r, dp] = shrink(next, depth);
    return new PageMap(r, dp, this.size + delta.n);
  }

  /** [index, page] pairs in ascending index order. */
  *entries(): IterableIterator<[number, Uint8Array]> {
    for (const [k, leaf] of this.leaves()) yield [k, flatOf(leaf)];
  }

  /**
   * @internal [index, leaf] pairs in ascending index order: the stored pages and chunked pages
   * (chunked-page.ts) themselves, without making whole-page copies. A leaf never changes once an
   * operation has returned, so a purity check can key what it saw by leaf (reading the bytes with
   * readHost, which reads a chunked page's chunks).
   */
  *leaves(): IterableIterator<[number, PageLeaf]> {
    if (this.root !== undefined) yield* leavesOf(this.root, this.depth - 1, 0);
  }

  /** Page indexes in ascending order. */
  *keys(): IterableIterator<number> {
    for (const [k] of this.entries()) yield k;
  }

  /** Pages in ascending index order. */
  *values(): IterableIterator<Uint8Array> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): IterableIterator<[number, Uint8Array]> {
    return this.entries();
  }

  /** Calls `fn(page, index)` for every page in ascending index order. */
  forEach(fn: (page: Uint8Array, index: number) => void): void {
    for (const [k, v] of this.entries()) fn(v, k);
  }
}

/** The mutable view PageMap.batch hands out; only valid inside the batch callback. */
export class PageMapBatch implements PageStore<PageMapBatch> {
  private readonly owner: Owner = { nodes: new Set() };

  /** @internal */
  constructor(public root: TrieNode | undefined, public depth: number, public size: number) {}

  /** The page at index `k`, or undefined. */
  get(k: number): Uint8Array | undefined {
    const leaf = trieGet(this.root, this.depth, k);
    return leaf === undefined ? undefined : flatOf(leaf);
  }

  /** Whether page `k` is stored. */
  has(k: number): boolean {
    return trieGet(this.root, this.depth, k) !== undefined;
  }

  /** Sets page `k` to `v`. */
  set(k: number, v: Uint8Array): PageMapBatch {
    return this.setLeaf(k, v);
  }

  /** @internal The leaf stored for page `k`, or undefined. */
  leaf(k: number): PageLeaf | undefined {
    return trieGet(this.root, this.depth, k);
  }

  /** @internal Sets page `k` to the leaf `v`. */
  setLeaf(k: number, v: PageLeaf): PageMapBatch {
    checkKey(k);
    [this.root, this.depth] = growTo(this.root, this.depth, k, this.owner);
    const delta = { n: 0 };
    this.root = updateNode(this.root, this.depth - 1, k, v, this.owner, delta);
    this.size += delta.n;
    return this;
  }

  /** Removes page `k`. */
  delete(k: number): PageMapBatch {
    if (!this.has(k)) return this;
    const delta = { n: 0 };
    this.root = updateNode(this.root, this.depth - 1, k, undefined, this.owner, delta);
    [this.root, this.depth] = shrink(this.root, this.depth);
    this.size += delta.n;
    return this;
  }
}
