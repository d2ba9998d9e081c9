/**
 * The host file of an image as a persistent, sparse value: fixed 4 KiB pages in a persistent map
 * (absent page = zeros) plus a length. Writing returns a new HostFile that shares every page it did
 * not touch with the old one — the path copying the model relies on to stay pure and cheap on a
 * multi-terabyte virtual disk. Pages that become all zeros are dropped, so zero-filled clusters
 * cost nothing.
 *
 * The page map is a 32-way radix trie keyed by page index (PageMap, below): page indexes are dense
 * small integers, so digits index arrays directly — no hashing — and a range of pages (a COW zero
 * range, a truncation) is one walk down the trie. A page is stored whole (a Uint8Array) or,
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
import { isZeroBytes } from '../codec/index.ts';
import { WORK } from '../codec/index.ts';
import {
  ChunkedPage, copyFromLeaf, flatOf, isZeroSmall, LEAF_PAGE_SIZE, leafIsZero, leafRangeIsZero, leafSpot, ownLeaf, patchLeaf, SMALL_WRITE,
  writeOwnedLeaf, type PageLeaf,
} from './chunked-page.ts';

import { hostTargetOf, type HostIO, type HostTarget } from './host-io.ts';
import { BasePageCache, HostBase, HostReaderError, basePage, baseVisible, rangesAdd, readExactlyInto, type HostReader } from './host-reader.ts';
import { MAX_KEY, PageMap, PageMapBatch, PAGE_SIZE, TWO_53, pageIndexOf, withinPage, type PageStore } from './page-map.ts';

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
  WORK.hostReads++;
  WORK.hostBytes += length;
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
    if (p !== undefined) {
      WORK.hostReads++;
      WORK.hostBytes += length;
      return p.subarray(within, within + length);
    }
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
  WORK.hostReads++;
  WORK.hostBytes += PAGE_SIZE;
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
  WORK.hostReads++;
  WORK.hostBytes += length;
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
 * returns the new map (PageMap) or `m` itself changed (PageMapBatch). The page is copied, never
 * modified; a whole page of `adopt`ed bytes is kept as a view of them (writeHost).
 */
function putPageChunk<T>(m: PageStore<T> & T, page: number, within: number, bytes: Uint8Array, pos: number, n: number, adopt: boolean): T {
  // Checking the incoming bytes first avoids copying and scanning pages that stay holes, and a
  // non-zero chunk usually proves the page non-zero after a few bytes.
  const zero = n <= SMALL_WRITE ? isZeroSmall(bytes, pos, n) : isZeroBytes(bytes, pos, n);
  if (n === PAGE_SIZE) return zero ? m.delete(page) : m.setLeaf(page, wholePage(bytes, pos, adopt));
  const old = m.leaf(page);
  if (old === undefined && zero) return m; // a hole stays a hole
  // A small write makes a chunked page (chunked-page.ts), a larger one a copy of the page.
  const next = patchLeaf(old, within, bytes, pos, n);
  return zero && leafIsZero(next) ? m.delete(page) : m.setLeaf(page, next);
}

/**
 * A new page holding `bytes[pos, pos + PAGE_SIZE)`. Not `bytes.slice`: allocating the page and
 * copying into it is cheaper in V8, and this is the copy every whole-page guest write makes.
 */
function pageCopy(bytes: Uint8Array, pos: number): Uint8Array {
  const p = new Uint8Array(PAGE_SIZE);
  p.set(bytes.subarray(pos, pos + PAGE_SIZE));
  return p;
}

/** Page `bytes[pos, pos + PAGE_SIZE)`: a view when the bytes are adopted, else a copy. */
function wholePage(bytes: Uint8Array, pos: number, adopt: boolean): Uint8Array {
  return adopt ? bytes.subarray(pos, pos + PAGE_SIZE) : pageCopy(bytes, pos);
}

/**
 * A file with `bytes` written at `offset` (extending the length if needed). `file` is unchanged.
 * With `adopt` the caller hands `bytes` over: nobody changes them any more (they were made for this
 * write), so whole pages become views of them instead of copies — one copy less per byte of a
 * copy-on-write or a guest write. The pages keep the whole buffer alive until they are replaced.
 */
export function writeHost(file: HostFile, offset: bigint, bytes: Uint8Array, adopt = false): HostFile {
  if (bytes.length === 0) return file;
  if (file.base !== undefined) return writeHostOverBase(file, file.base, offset, bytes, adopt);
  const first = pageIndexOf(offset);
  const within0 = withinPage(offset);
  let pages: PageMap;
  if (within0 + bytes.length <= PAGE_SIZE) {
    // One page (refcount, L1/L2 entry updates): a plain persistent set, no transient map.
    pages = putPageChunk(file.pages, first, within0, bytes, 0, bytes.length, adopt);
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
        putPageChunk(m, page, within, bytes, pos, n, adopt);
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
function putChunkOverBase(m: PageMapBatch, base: HostBase, page: number, within: number, bytes: Uint8Array, pos: number, n: number, adopt: boolean): void {
  const zero = n <= SMALL_WRITE ? isZeroSmall(bytes, pos, n) : isZeroBytes(bytes, pos, n);
  const under = baseVisible(base, page);
  if (n === PAGE_SIZE) {
    if (!zero) m.setLeaf(page, wholePage(bytes, pos, adopt));
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
function writeHostOverBase(file: HostFile, base: HostBase, offset: bigint, bytes: Uint8Array, adopt: boolean): HostFile {
  if (bytes.length >= 2 * PAGE_SIZE && isZeroBytes(bytes)) return zeroHost(file, offset, BigInt(bytes.length));
  const pages = file.pages.batch((m) => {
    let page = pageIndexOf(offset);
    let within = withinPage(offset);
    let pos = 0;
    while (pos < bytes.length) {
      const n = Math.min(PAGE_SIZE - within, bytes.length - pos);
      putChunkOverBase(m, base, page, within, bytes, pos, n, adopt);
      pos += n;
      page++;
      within = 0;
    }
  });
  const end = offset + BigInt(bytes.length);
  return { length: end > file.length ? end : file.length, pages, base };
}

/**
 * A file with [offset, offset+length) zeroed (extending the length if needed). `file` is unchanged.
 * Over a base, the whole pages below the base's limit join its hidden ranges (one range per request,
 * whatever its size) and a partial page the base shows is rewritten.
 */
export function zeroHost(file: HostFile, offset: bigint, length: bigint): HostFile {
  if (length <= 0n) return file;
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
  const base = file.base === undefined ? undefined : hideWholePages(file.base, firstWhole, lastWhole);
  // Pages only partly covered keep their other bytes.
  const clearPart = (p: number, from: number, to: number): void => {
    const under = base !== undefined && baseVisible(base, p);
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
  const newLength = end > file.length ? end : file.length;
  if (base !== undefined) return { length: newLength, pages, base };
  // Zeros over holes inside the file (a COW region of a new cluster) change nothing: the same file.
  if (pages === file.pages && end <= file.length) return file;
  return { length: newLength, pages };
}

/** `base` with its pages firstWhole..lastWhole below its limit hidden (read as zeros). */
function hideWholePages(base: HostBase, firstWhole: number, lastWhole: number): HostBase {
  const hideTo = Math.min(lastWhole, base.pageCount - 1);
  return firstWhole <= hideTo ? new HostBase(base.reader, base.limit, rangesAdd(base.hidden, firstWhole, hideTo), base.cache) : base;
}

/** A file with [offset, offset+length) punched out (zeros) without changing its length. */
export function discardHost(file: HostFile, offset: bigint, length: bigint): HostFile {
  const end = offset + length < file.length ? offset + length : file.length;
  if (end <= offset) return file;
  return zeroHost(file, offset, end - offset);
}

/**
 * The file once its base's reader holds writes the file already shows (a driver issued them through
 * the reader's backend without waiting for a write-back): the base's limit rises to the reader's
 * length, the base's memo forgets the pages written, and each whole page of `writes` leaves the
 * overlay where the base now shows it — so memory stays bounded without a rebase. The caller
 * promises that the reader holds exactly the file's bytes in every written range, that between the
 * old limit and the reader's length it holds only those writes and zeros the file shows too (nothing
 * else reached it since the last rebase), and that no other write of the file is pending on those
 * pages. Returns the file unchanged when it has no base or the reader is not its base's.
 */
export function absorbIssuedWrites(file: HostFile, reader: HostReader, writes: readonly { readonly offset: bigint; readonly bytes: Uint8Array }[]): HostFile {
  const base0 = file.base;
  if (base0 === undefined || base0.reader !== reader || writes.length === 0) return file;
  const limit = reader.length < file.length ? reader.length : file.length;
  const base = limit > base0.limit ? new HostBase(reader, limit, base0.hidden, base0.cache) : base0;
  let pages = file.pages;
  for (const w of writes) {
    if (w.bytes.length === 0) continue;
    const first = pageIndexOf(w.offset);
    const last = pageIndexOf(w.offset + BigInt(w.bytes.length) - 1n);
    base.cache.forget(first, last);
    // Whole pages only: a partial page's other bytes may be ones the reader does not hold yet.
    const firstWhole = withinPage(w.offset) === 0 ? first : first + 1;
    const lastWhole = withinPage(w.offset + BigInt(w.bytes.length)) === 0 ? last : last - 1;
    for (let p = firstWhole; p <= lastWhole; p++) if (baseVisible(base, p)) pages = pages.delete(p);
  }
  return { length: file.length, pages, base };
}

/** Bytes of the pages `file` holds in its overlay (not read through its base) among those [offset, offset + length) touches. */
export function overlayBytesIn(file: HostFile, offset: bigint, length: number): number {
  if (length <= 0) return 0;
  const last = pageIndexOf(offset + BigInt(length) - 1n);
  let n = 0;
  for (let p = pageIndexOf(offset); p <= last; p++) if (file.pages.leaf(p) !== undefined) n += PAGE_SIZE;
  return n;
}

/**
 * A file cut (or extended with zeros) to `length`. Bytes cut off read as zeros after a later
 * extension, base bytes included (the base's limit drops to `length`).
 */
export function truncateHost(file: HostFile, length: bigint): HostFile {
  const base0 = file.base;
  if (length >= file.length) return base0 === undefined ? { length, pages: file.pages } : { length, pages: file.pages, base: base0 };
  let pages = file.pages.deleteRange(pageIndexOf(length + BigInt(PAGE_SIZE - 1)), MAX_KEY - 1);
  if (length === 0n) return { length, pages }; // nothing of a base can show again
  // The limit never rises, so it stays at most the file's length.
  const base = base0 === undefined || length >= base0.limit ? base0 : new HostBase(base0.reader, length, base0.hidden, base0.cache);
  const tail = Number(length & BigInt(PAGE_SIZE - 1));
  if (tail !== 0) {
    const idx = pageIndexOf(length);
    const p = pages.leaf(idx);
    if (p !== undefined) {
      const q = patchLeaf(p, tail, undefined, 0, PAGE_SIZE - tail);
      pages = !leafIsZero(q) ? pages.setLeaf(idx, q) : base !== undefined && baseVisible(base, idx) ? pages.setLeaf(idx, ZERO_PAGE) : pages.delete(idx);
    }
  }
  return base === undefined ? { length, pages } : { length, pages, base };
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
