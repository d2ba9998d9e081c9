/**
 * Page leaves of the host file's page trie (host-file.ts): a 4 KiB page is stored either as a plain
 * page (a Uint8Array of PAGE_SIZE bytes) or as a ChunkedPage — 64-byte chunks over an optional plain
 * base page. Small writes (table entries, refcounts) make chunked pages, so changing 8 bytes of an L2
 * table costs a 64-byte chunk and a short list of chunks instead of a copy of the whole page.
 *
 * Why: V8 keeps typed arrays of at most 64 bytes on the JS heap, where making and freeing them costs
 * about as much as a small object; every larger one has its own off-heap ArrayBuffer (malloc, a
 * zero fill, an extension the GC tracks and sweeps one by one). Copying a 4 KiB page for a 2-byte
 * refcount and an 8-byte L2 entry on every guest write would dominate the write path and its garbage
 * collection (bench/README.md). Chunks must
 * therefore never be viewed with `subarray` or `.buffer` (either moves the chunk off the heap): they
 * are read and copied byte by byte or with `set`/`slice`.
 *
 * A ChunkedPage is immutable once it leaves the function that made it, like every page — except
 * inside a host-file "owned" scope (writeHostOwned), where the one transaction that made it may
 * change it in place before anything else can see it: its mask, chunk list and base, never a chunk
 * (every byte array here — page, base, chunk, flat copy — never changes once made, which is what the
 * model's decode memos rely on). `flat` caches the page as one Uint8Array for readers that need a
 * whole page (hostPage, PageMap.get); it is dropped when an owned page changes and when the bounded
 * set of cached copies is full (FLAT_COPIES), and is made again when asked for.
 */
import { isZeroBytes } from '../codec/index.ts';

/** Bytes per page (the same as host-file.ts's PAGE_SIZE). */
export const LEAF_PAGE_SIZE = 4096;
/** Bytes per chunk: V8's largest on-heap typed array (JSTypedArray::kMaxSizeInHeap). */
export const CHUNK_SIZE = 64;
const CHUNK_BITS = 6;
/** Chunks per page. */
export const CHUNKS_PER_PAGE = LEAF_PAGE_SIZE / CHUNK_SIZE;
/** Writes of at most this many bytes into a page make (or extend) a chunked page; larger ones copy the page. */
export const SMALL_WRITE = 256;
/**
 * A chunked page with more chunks than this is made plain (one page copy): it bounds a page's memory
 * (a chunk costs ~150 bytes with its object header) and the work of reading it whole.
 */
export const MAX_CHUNKS = 16;

/**
 * A page as chunks over a base (see the module comment). The chunks are kept sparse — a 64-bit mask
 * of the chunk indexes present and the present chunks in index order — because most chunked pages
 * (an L2 table page with a few entries set) hold one to three chunks, and the page objects of a
 * large image live long: their size is what the garbage collector copies and marks.
 */
export class ChunkedPage {
  /** The page as one array, once asked for (never modified; dropped when an owned page changes). */
  flat: Uint8Array | undefined = undefined;

  constructor(
    /** Bytes where no chunk is set (undefined: zeros). A plain page, never modified. */
    public base: Uint8Array | undefined,
    /** Bit c of chunk indexes 0..31: chunk c is present. */
    public maskLo: number,
    /** Bit c - 32 of chunk indexes 32..63. */
    public maskHi: number,
    /** The present chunks in ascending index order: chunk c holds bytes [64 c, 64 c + 64) of the page. */
    public chunks: Uint8Array[],
  ) {}

  /** Number of chunks present. */
  get count(): number {
    return this.chunks.length;
  }
}

/** What a trie leaf holds. */
export type PageLeaf = Uint8Array | ChunkedPage;

/** Set bits of a 32-bit value. */
function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

/** Whether chunk `c` is present. */
function hasChunk(p: ChunkedPage, c: number): boolean {
  return c < 32 ? ((p.maskLo >>> c) & 1) !== 0 : ((p.maskHi >>> (c - 32)) & 1) !== 0;
}

/** The position chunk `c` has (or would have) in `p.chunks`: the number of present chunks below it. */
function rankOf(p: ChunkedPage, c: number): number {
  if (c < 32) return c === 0 ? 0 : popcount32(p.maskLo & (0xffffffff >>> (32 - c)));
  return popcount32(p.maskLo) + (c === 32 ? 0 : popcount32(p.maskHi & (0xffffffff >>> (64 - c))));
}

/** Chunk `c` of the page, or undefined when the base's bytes show there. */
function chunkAt(p: ChunkedPage, c: number): Uint8Array | undefined {
  return hasChunk(p, c) ? p.chunks[rankOf(p, c)] : undefined;
}

/** Sets chunk `c` of `p` (which its caller may change) to `ch`, adding it to the mask when new. */
function putChunk(p: ChunkedPage, c: number, ch: Uint8Array): void {
  const r = rankOf(p, c);
  if (hasChunk(p, c)) {
    p.chunks[r] = ch;
    return;
  }
  p.chunks.splice(r, 0, ch);
  if (c < 32) p.maskLo = (p.maskLo | (1 << c)) >>> 0;
  else p.maskHi = (p.maskHi | (1 << (c - 32))) >>> 0;
}

/**
 * Chunked pages that hold a flat copy, by age: at most FLAT_COPIES do at a time, so scans that ask
 * for whole pages (snapshot.ts over every L2 table) cannot double the memory of a large image. A
 * page whose copy is dropped makes a new one when asked again: a different array, which only costs
 * the caches keyed by page arrays (overlap.ts, refcount.ts) a decode.
 */
const FLAT_COPIES = 2048;
const flatHolders: Array<ChunkedPage | undefined> = new Array<ChunkedPage | undefined>(FLAT_COPIES).fill(undefined);
let flatNext = 0;

/** The leaf as one page (a plain leaf itself; a chunked one's cached flat copy). Never modify it. */
export function flatOf(leaf: PageLeaf): Uint8Array {
  if (!(leaf instanceof ChunkedPage)) return leaf;
  let f = leaf.flat;
  if (f === undefined) {
    f = materialize(leaf);
    const oldest = flatHolders[flatNext];
    if (oldest !== undefined && oldest !== leaf) oldest.flat = undefined;
    flatHolders[flatNext] = leaf;
    flatNext = (flatNext + 1) % FLAT_COPIES;
    leaf.flat = f;
  }
  return f;
}

/** A fresh plain page with the content of `leaf` (the caller may modify it). */
export function copyOfLeaf(leaf: PageLeaf): Uint8Array {
  if (!(leaf instanceof ChunkedPage)) return leaf.slice();
  if (leaf.flat !== undefined) return leaf.flat.slice();
  return materialize(leaf);
}

function materialize(p: ChunkedPage): Uint8Array {
  const out = p.base !== undefined ? p.base.slice() : new Uint8Array(LEAF_PAGE_SIZE);
  let k = 0;
  for (let c = 0; c < CHUNKS_PER_PAGE; c++) if (hasChunk(p, c)) out.set(p.chunks[k++]!, c << CHUNK_BITS);
  return out;
}

/**
 * Visits bytes [from, end) of a chunked page without a flat copy piece by piece, in order: each
 * chunk's part as `onChunk(chunk, i - chunkStart, i, stop)` (the chunk may be an on-heap array:
 * read it by index, never view it with subarray), and each run of chunk-less bytes as one
 * `onBase(base, i, stop)` (`base` undefined: zeros). Stops as soon as a visitor returns false, and
 * returns whether it went through.
 */
function walkPieces(
  leaf: ChunkedPage,
  from: number,
  end: number,
  onChunk: (chunk: Uint8Array, chunkAt: number, i: number, stop: number) => boolean,
  onBase: (base: Uint8Array | undefined, i: number, stop: number) => boolean,
): boolean {
  let i = from;
  while (i < end) {
    const c = i >> CHUNK_BITS;
    const cStart = c << CHUNK_BITS;
    const stop = Math.min(end, cStart + CHUNK_SIZE);
    const ch = chunkAt(leaf, c);
    if (ch !== undefined) {
      if (!onChunk(ch, i - cStart, i, stop)) return false;
      i = stop;
    } else {
      // A run of chunks without their own bytes: one piece of the base.
      let runEnd = stop;
      while (runEnd < end && !hasChunk(leaf, runEnd >> CHUNK_BITS)) runEnd = Math.min(end, runEnd + CHUNK_SIZE);
      if (!onBase(leaf.base, i, runEnd)) return false;
      i = runEnd;
    }
  }
  return true;
}

/**
 * Copies bytes [within, within + n) of `leaf` into `out` at `pos` (all n bytes, zeros included:
 * `out` may be a reused buffer).
 */
export function copyFromLeaf(leaf: PageLeaf, within: number, n: number, out: Uint8Array, pos: number): void {
  if (!(leaf instanceof ChunkedPage) || leaf.flat !== undefined) {
    const p = leaf instanceof ChunkedPage ? leaf.flat! : leaf;
    out.set(n === LEAF_PAGE_SIZE ? p : p.subarray(within, within + n), pos);
    return;
  }
  walkPieces(
    leaf,
    within,
    within + n,
    (ch, at, i, stop) => {
      for (let k = i; k < stop; k++) out[pos + k - within] = ch[at + k - i]!;
      return true;
    },
    (base, i, stop) => {
      if (base !== undefined) out.set(base.subarray(i, stop), pos + i - within);
      else out.fill(0, pos + i - within, pos + stop - within); // `out` may be a reused buffer
      return true;
    },
  );
}

/**
 * Where bytes [within, within + n) of `leaf` can be read in place, when they lie in one piece: the
 * array (a plain page, a flat copy, a chunk or the base) and the position of byte `within` in it; the
 * shared `zeros` (at least a page long) where a chunked page without base has no chunk. Undefined
 * when they span chunks of a chunked page. The array must not be modified, nor viewed with subarray
 * (it may be an on-heap chunk).
 */
export function leafSpot(leaf: PageLeaf, within: number, n: number, zeros: Uint8Array): { bytes: Uint8Array; at: number } | undefined {
  if (!(leaf instanceof ChunkedPage)) return { bytes: leaf, at: within };
  if (leaf.flat !== undefined) return { bytes: leaf.flat, at: within };
  const c = within >> CHUNK_BITS;
  if (((within + n - 1) >> CHUNK_BITS) !== c) return undefined;
  const ch = chunkAt(leaf, c);
  if (ch !== undefined) return { bytes: ch, at: within & (CHUNK_SIZE - 1) };
  return { bytes: leaf.base ?? zeros, at: within };
}

/** Whether bytes [from, from + n) of `b` (any array, possibly an on-heap chunk: read by index, never viewed) are all 0. */
export function isZeroSmall(b: Uint8Array, from = 0, n = b.length - from): boolean {
  for (let i = from; i < from + n; i++) if (b[i] !== 0) return false;
  return true;
}

/** Whether bytes [from, from + n) of the page are all 0. */
export function leafRangeIsZero(leaf: PageLeaf, from: number, n: number): boolean {
  if (!(leaf instanceof ChunkedPage)) return isZeroBytes(leaf, from, n);
  if (leaf.flat !== undefined) return isZeroBytes(leaf.flat, from, n);
  return walkPieces(
    leaf,
    from,
    from + n,
    (ch, at, i, stop) => isZeroSmall(ch, at, stop - i),
    (base, i, stop) => base === undefined || isZeroBytes(base, i, stop - i),
  );
}

/** Whether the whole page is zeros. */
export function leafIsZero(leaf: PageLeaf): boolean {
  return leafRangeIsZero(leaf, 0, LEAF_PAGE_SIZE);
}

/** A fresh chunk holding what chunk `c` of a page with chunk `ch` (or none) over `base` reads. */
function freshChunk(ch: Uint8Array | undefined, base: Uint8Array | undefined, c: number): Uint8Array {
  const out = new Uint8Array(CHUNK_SIZE);
  if (ch !== undefined) out.set(ch);
  else if (base !== undefined) {
    const o = c << CHUNK_BITS;
    for (let k = 0; k < CHUNK_SIZE; k++) out[k] = base[o + k]!;
  }
  return out;
}

/** Writes src[pos, pos + (to - from)) (zeros when `src` is undefined) into chunk `ch` at bytes [from, to) of chunk `c`'s range. */
function putInChunk(ch: Uint8Array, cStart: number, from: number, to: number, src: Uint8Array | undefined, srcAt: number): void {
  if (src === undefined) {
    ch.fill(0, from - cStart, to - cStart);
    return;
  }
  for (let k = from; k < to; k++) ch[k - cStart] = src[srcAt + k - from]!;
}

/**
 * Gives `page` (owned: nobody else sees it yet) new chunks over bytes [within, within + n) holding
 * `src[pos, pos + n)` — zeros when `src` is undefined — and the page's other bytes of those chunks.
 */
function putChunks(page: ChunkedPage, within: number, src: Uint8Array | undefined, pos: number, n: number): void {
  const first = within >> CHUNK_BITS;
  const last = (within + n - 1) >> CHUNK_BITS;
  for (let c = first; c <= last; c++) {
    const cStart = c << CHUNK_BITS;
    const from = Math.max(within, cStart);
    const to = Math.min(within + n, cStart + CHUNK_SIZE);
    // A chunk written whole needs no copy of what it held.
    const ch = from === cStart && to === cStart + CHUNK_SIZE ? new Uint8Array(CHUNK_SIZE) : freshChunk(chunkAt(page, c), page.base, c);
    putInChunk(ch, cStart, from, to, src, pos + from - within);
    putChunk(page, c, ch);
  }
}

/**
 * A new leaf: `old` (undefined: a page of zeros) with bytes [within, within + n) replaced by
 * `src[pos, pos + n)` — zeros when `src` is undefined. `old` is not changed. Small writes give a
 * chunked page sharing `old`'s untouched chunks and base; others (and a chunked page that would get
 * too many chunks) a plain page.
 */
export function patchLeaf(old: PageLeaf | undefined, within: number, src: Uint8Array | undefined, pos: number, n: number): PageLeaf {
  if (n <= SMALL_WRITE) {
    const first = within >> CHUNK_BITS;
    const last = (within + n - 1) >> CHUNK_BITS;
    const page = ownLeaf(old);
    let added = 0;
    for (let c = first; c <= last; c++) if (!hasChunk(page, c)) added++;
    if (page.count + added <= MAX_CHUNKS) {
      putChunks(page, within, src, pos, n);
      return page;
    }
  }
  const next = old === undefined ? new Uint8Array(LEAF_PAGE_SIZE) : copyOfLeaf(old);
  if (src === undefined) next.fill(0, within, within + n);
  else if (n <= SMALL_WRITE) for (let k = 0; k < n; k++) next[within + k] = src[pos + k]!;
  else next.set(src.subarray(pos, pos + n), within);
  return next;
}

/** An owned copy of `old` (undefined: zeros): a chunked page with no chunk of its own yet. */
export function ownLeaf(old: PageLeaf | undefined): ChunkedPage {
  if (old === undefined) return new ChunkedPage(undefined, 0, 0, []);
  if (old instanceof ChunkedPage) return new ChunkedPage(old.base, old.maskLo, old.maskHi, old.chunks.slice());
  return new ChunkedPage(old, 0, 0, []);
}

/**
 * Writes `src[pos, pos + n)` at bytes [within, within + n) of an owned chunked page (ownLeaf), in
 * place: nobody else can see the page yet. Only the page object changes (its mask, chunk list,
 * base and flat copy); every touched chunk is replaced by a new one, so a chunk, once made, never
 * changes (its bytes may key a decode cache). Past MAX_CHUNKS the page is made plain again in place
 * (its base becomes a fresh flat copy, with no chunks).
 */
export function writeOwnedLeaf(leaf: ChunkedPage, within: number, src: Uint8Array, pos: number, n: number): void {
  leaf.flat = undefined;
  putChunks(leaf, within, src, pos, n);
  if (leaf.count > MAX_CHUNKS) {
    leaf.base = materialize(leaf);
    leaf.maskLo = 0;
    leaf.maskHi = 0;
    leaf.chunks = [];
  }
}
