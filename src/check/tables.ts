/**
 * The refcount table and the active L1 table as QEMU holds them in memory while `qemu-img check`
 * runs (s->refcount_table, s->l1_table): decoded once from the file through the generated decoders
 * and kept until a host operation of the check touches the bytes they were read from, or the header
 * moves or resizes them. QEMU reads both tables at open and then only changes them together with
 * the file, so a copy that follows the file is what QEMU sees.
 *
 * Why: the check asks for reftable entries and the active L2 offsets again and again — every
 * refcount it reads, every repair write's metadata overlap check — and decoding the tables each time
 * made `-r all` quadratic in the number of repairs.
 *
 * Staleness: a view remembers the HostFile and the length of the transaction's operation log it was
 * made from. When either has changed since, the operations appended to the log since are scanned
 * once: none touching the table's bytes (or cutting the file below its end) means the view still
 * holds. Every change of the working file is in the log (tx.ts), so this holds even for a file
 * changed in place. The log only ever shrinks by the rollback of a failed refcount update
 * (check-refcounts.ts setRefcount), which never runs between making a view and using it — a shorter
 * log than remembered drops the view anyway.
 *
 * A few entries written since (the repair of an L1 entry's COPIED flag, check_oflag_copied) are
 * patched into the view in place when they change only an entry's flag bits — not whether it is
 * zero, not the offset it points at — so the view, and what overlap.ts derived from its offsets,
 * stays valid: a repair costs a binary search, not a new reading of a table of up to 4 Mi entries
 * (a hostile L1 table over random bytes makes one repair per entry).
 */
import { decodeL1EntryFields, decodeRefcountTableEntryFields, L1EntryMasks, RefcountTableEntryMasks } from '../../generated/qcow2.ts';
import { l1EntryWord, refcountBlockOffset } from '../format/index.ts';
import { readHost, type HostFile } from '../model/index.ts';
import { INCOMPAT_EXTL2, type HeaderState } from '../model/index.ts';
import type { Tx } from '../model/index.ts';

/** Where a view was read from, to tell whether it still holds. */
interface Provenance {
  file: HostFile;
  ioLength: number;
  /** The header fields that place the table (compared by value when the header object changed). */
  header: HeaderState;
  readonly from: bigint;
  readonly length: bigint;
}

/** The non-zero entries of a table of 64-bit words, in index order, with their exact words. */
export interface TableView {
  /** Entries of the table (its size, inside the file or not). */
  readonly size: number;
  /** Indexes of the non-zero entries inside the file, ascending. */
  readonly indexes: Int32Array;
  /** words[k] is the exact word of entry indexes[k]. */
  readonly words: BigUint64Array;
}

/** The smallest index of ascending `a` whose value is ≥ `v` (`a.length` when there is none). */
export function lowerBound(a: ArrayLike<number>, v: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The word of entry `i` of `view` (0 when it is zero, past the file or past the table). */
export function viewWord(view: TableView, i: number): bigint {
  const k = positionOf(view, i);
  return k < 0 ? 0n : view.words[k]!;
}

interface Cached {
  readonly prov: Provenance;
  readonly view: TableView;
}

/** The views of one transaction (one `qemu-img check` run: its passes share the transaction). */
const views = new WeakMap<Tx, { reftable?: Cached; l1?: Cached }>();

/** Most entries patched into a view at once; more written entries make a new view. */
const MAX_PATCHED_ENTRIES = 64;

/**
 * Whether what `p` was read from is unchanged in the working image of `tx`, or changed only in a few
 * entries (their indexes, at most MAX_PATCHED_ENTRIES: 'patch'), or changed otherwise ('stale').
 * Updates `p` unless stale.
 */
function holds(tx: Tx, p: Provenance, from: bigint, length: bigint, sameHeader: (a: HeaderState, b: HeaderState) => boolean): true | 'stale' | { patch: Set<number> } {
  const h = tx.img.header;
  if (h !== p.header) {
    if (!sameHeader(h, p.header)) return 'stale';
    p.header = h;
  }
  if (from !== p.from || length !== p.length) return 'stale';
  const io = tx.io;
  if (tx.img.file === p.file && io.length === p.ioLength) return true;
  if (io.length < p.ioLength) return 'stale';
  const end = from + length;
  let patch: Set<number> | undefined;
  for (let k = p.ioLength; k < io.length; k++) {
    const op = io[k]!;
    if (op.kind === 'flush' || op.target === 'data') continue;
    if (op.kind === 'truncate') {
      // Growing the file adds zeros (what was read past the end); cutting into the table changes it.
      if (op.length < end) return 'stale';
      continue;
    }
    const len = op.kind === 'write' ? BigInt(op.bytes.length) : op.length;
    if (op.offset < end && from < op.offset + len) {
      // The entries the operation touches (clipped to the table).
      const first = (op.offset > from ? op.offset - from : 0n) / 8n;
      const last = ((op.offset + len < end ? op.offset + len : end) - from - 1n) / 8n;
      patch ??= new Set<number>();
      if (last - first >= BigInt(MAX_PATCHED_ENTRIES - patch.size)) return 'stale';
      for (let i = Number(first); i <= Number(last); i++) patch.add(i);
    }
  }
  p.file = tx.img.file;
  p.ioLength = io.length;
  return patch === undefined ? true : { patch };
}

/**
 * Patches the entries `indexes` of `view` (entries of the table at `from`) in place from the working
 * file of `tx`, when each keeps its zero-ness and the bits of `pointer` (the offset part); returns
 * false, changing nothing, otherwise.
 */
function patchView(tx: Tx, view: TableView, from: bigint, indexes: ReadonlySet<number>, pointer: bigint,
  decode: (bytes: Uint8Array, at: number) => bigint): boolean {
  const updates: [number, bigint][] = [];
  for (const i of indexes) {
    // Zeros past the end of the file, as readTable reads them.
    const raw = readHost(tx.img.file, from + BigInt(i) * 8n, 8);
    const zero = raw.every((b) => b === 0);
    const k = positionOf(view, i);
    if (k < 0) {
      if (!zero) return false;
      continue;
    }
    if (zero) return false;
    const word = decode(raw, 0);
    if (((word ^ view.words[k]!) & pointer) !== 0n) return false;
    updates.push([k, word]);
  }
  for (const [k, word] of updates) view.words[k] = word;
  return true;
}

/** Index in `view.indexes` of entry `i`, or -1. */
function positionOf(view: TableView, i: number): number {
  const lo = lowerBound(view.indexes, i);
  return lo < view.indexes.length && view.indexes[lo] === i ? lo : -1;
}

/**
 * Reads the table of `size` 8-byte entries at `offset` of the working file (entries past the end of
 * the file are 0) and keeps the non-zero ones, decoded by `decode` (the exact 64-bit word).
 */
function readTable(tx: Tx, offset: bigint, size: number, decode: (bytes: Uint8Array, at: number) => bigint): TableView {
  const fileLength = tx.img.file.length;
  const bytes = BigInt(size) * 8n;
  const inFile = offset >= fileLength ? 0 : Number(fileLength - offset < bytes ? fileLength - offset : bytes);
  const n = Math.ceil(inFile / 8);
  const raw = readHost(tx.img.file, offset, n * 8);
  const indexes: number[] = [];
  const words: bigint[] = [];
  for (let i = 0; i < n; i++) {
    const at = i * 8;
    // An all-zero entry is a zero word: skip it without decoding.
    if ((raw[at]! | raw[at + 1]! | raw[at + 2]! | raw[at + 3]! | raw[at + 4]! | raw[at + 5]! | raw[at + 6]! | raw[at + 7]!) === 0) continue;
    indexes.push(i);
    words.push(decode(raw, at));
  }
  return { size, indexes: Int32Array.from(indexes), words: BigUint64Array.from(words) };
}

function sameReftablePlace(a: HeaderState, b: HeaderState): boolean {
  return a.refcountTableOffset === b.refcountTableOffset && a.refcountTableClusters === b.refcountTableClusters
    && a.clusterBits === b.clusterBits && a.refcountOrder === b.refcountOrder;
}

function sameL1Place(a: HeaderState, b: HeaderState): boolean {
  return a.l1TableOffset === b.l1TableOffset && a.l1Size === b.l1Size && a.clusterBits === b.clusterBits
    && a.incompatibleFeatures === b.incompatibleFeatures;
}

function cachedView(tx: Tx, which: 'reftable' | 'l1', from: bigint, size: number, same: (a: HeaderState, b: HeaderState) => boolean,
  pointer: bigint, decode: (bytes: Uint8Array, at: number) => bigint): TableView {
  let entry = views.get(tx);
  if (entry === undefined) {
    entry = {};
    views.set(tx, entry);
  }
  const length = BigInt(size) * 8n;
  const hit = entry[which];
  if (hit !== undefined) {
    const h = holds(tx, hit.prov, from, length, same);
    if (h === true) return hit.view;
    if (h !== 'stale' && patchView(tx, hit.view, from, h.patch, pointer, decode)) return hit.view;
  }
  const view = readTable(tx, from, size, decode);
  entry[which] = { prov: { file: tx.img.file, ioLength: tx.io.length, header: tx.img.header, from, length }, view };
  return view;
}

/** The bits of a reftable word that place a refcount block (all but the reserved bits 0-8). */
const REFTABLE_POINTER = RefcountTableEntryMasks.refblockOffset;
/** The bits of an L1 word that place an L2 table (bits 9-55). */
const L1_POINTER = L1EntryMasks.l2Offset;

/**
 * The refcount table of the working image of `tx` (s->refcount_table): each non-zero entry's exact
 * word — the refcount block offset with the reserved bits 0-8 — as the generated decoder reads it.
 */
export function reftableView(tx: Tx): TableView {
  const h = tx.img.header;
  const clusterBits = h.clusterBits;
  const size = (h.refcountTableClusters * 2 ** clusterBits) / 8;
  const params = { clusterBits, refcountOrder: h.refcountOrder };
  return cachedView(tx, 'reftable', h.refcountTableOffset, size, sameReftablePlace, REFTABLE_POINTER, (bytes, at) => {
    const e = decodeRefcountTableEntryFields(bytes, at, params);
    return refcountBlockOffset(e) | BigInt(e.reserved >>> 0);
  });
}

/** The active L1 table of the working image of `tx` (s->l1_table): each non-zero entry's exact word. */
export function activeL1View(tx: Tx): TableView {
  const h = tx.img.header;
  const params = { clusterBits: h.clusterBits, extendedL2: (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n };
  return cachedView(tx, 'l1', h.l1TableOffset, h.l1Size, sameL1Place, L1_POINTER, (bytes, at) => l1EntryWord(decodeL1EntryFields(bytes, at, params)));
}
