/**
 * Pages of a host file and the persistent sparse map that holds them: page-index arithmetic and a
 * 32-way radix trie whose updates share every untouched node (path copying), so the model stays pure
 * and cheap on a multi-terabyte virtual disk.
 */
import { flatOf, LEAF_PAGE_SIZE, type PageLeaf } from './chunked-page.ts';

/** Bytes per page of the sparse store (4096; the page size chunked pages are cut from). */
export const PAGE_SIZE = LEAF_PAGE_SIZE;
const PAGE_BITS = 12;

const PAGE_MASK = BigInt(PAGE_SIZE - 1);
const PAGE_SHIFT = BigInt(PAGE_BITS);
export const TWO_53 = 2 ** 53;

/** The page index of `offset` (exact: offsets below 2^64 give indexes below 2^52). */
export function pageIndexOf(offset: bigint): number {
  // Below 2^53 the offset converts exactly, and number arithmetic allocates no bigint.
  const o = Number(offset);
  return o < TWO_53 ? Math.floor(o / PAGE_SIZE) : Number(offset >> PAGE_SHIFT);
}

/** The position of `offset` inside its page. */
export function withinPage(offset: bigint): number {
  const o = Number(offset);
  return o < TWO_53 ? o % PAGE_SIZE : Number(offset & PAGE_MASK);
}

// ---------------------------------------------------------------------------------------------
// PageMap: a persistent sparse map page index → page

/** A trie node: 32 slots, each a child node (inner levels) or a page leaf (level 0), or undefined. */
type TrieNode = Array<TrieNode | PageLeaf | undefined>;

/** log2 of the trie's fanout. */
const DIGIT_BITS = 5;
const FANOUT = 1 << DIGIT_BITS;
/** Keys (page indexes) are below 2^55: byte offsets below 2^67, more than any 64-bit offset needs. */
export const MAX_KEY = 2 ** 55;
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
export interface PageStore<T> {
  leaf(k: number): PageLeaf | undefined;
  setLeaf(k: number, v: PageLeaf): T;
  delete(k: number): T;
}

/** The reads a page map and its batch view share: both are a trie `root` of `depth` levels. */
abstract class PageReads {
  protected abstract readonly root: TrieNode | undefined;
  /** Levels of the trie: every key is below 32^depth. */
  protected abstract readonly depth: number;

  /** The page at index `k`, or undefined for a hole. */
  get(k: number): Uint8Array | undefined {
    const leaf = trieGet(this.root, this.depth, k);
    return leaf === undefined ? undefined : flatOf(leaf);
  }

  /** Whether page `k` is stored. */
  has(k: number): boolean {
    return trieGet(this.root, this.depth, k) !== undefined;
  }

  /** @internal The leaf stored for page `k` (a page or a chunked page, chunked-page.ts), or undefined. */
  leaf(k: number): PageLeaf | undefined {
    return trieGet(this.root, this.depth, k);
  }
}

/**
 * A persistent map from page index (an integer in [0, 2^55)) to page: every change returns a new
 * map sharing all untouched nodes, and the same map when nothing changed. Iterates in ascending
 * key order. Offers the read API of a JavaScript Map (get, has, size, keys, values, entries,
 * forEach, iteration).
 */
export class PageMap extends PageReads implements PageStore<PageMap> {
  /** Number of pages. */
  readonly size: number;
  protected readonly root: TrieNode | undefined;
  protected readonly depth: number;

  private constructor(root: TrieNode | undefined, depth: number, size: number) {
    super();
    this.root = root;
    this.depth = depth;
    this.size = size;
  }

  /** The empty map. */
  static readonly EMPTY = new PageMap(undefined, 1, 0);

  /** A map with page `k` set to `v`. */
  set(k: number, v: Uint8Array): PageMap {
    return this.change(k, v);
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
export class PageMapBatch extends PageReads implements PageStore<PageMapBatch> {
  private readonly owner: Owner = { nodes: new Set() };

  /** @internal */
  constructor(public root: TrieNode | undefined, public depth: number, public size: number) {
    super();
  }

  /** Sets page `k` to `v`. */
  set(k: number, v: Uint8Array): PageMapBatch {
    return this.setLeaf(k, v);
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
