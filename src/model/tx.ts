/**
 * A transaction: the working Image of one `step` plus the host operations issued so far. Functions
 * of the model take a Tx and replace `tx.img` with new immutable Images as they go; the Image they
 * started from is never mutated, so `step` stays pure at its boundary.
 *
 * Every host write goes through `hostWrite`, which updates the working Image's HostFile and records
 * the write in `io` in the same order — the order a crash-safe driver must issue them.
 *
 * Owned pages (the per-operation page overlay): inside `withOwnedPages` — the body of one guest
 * operation or snapshot command — a small metadata write (a refcount, an L2 entry: at most 256 bytes)
 * makes a chunked copy of its 4 KiB page once (chunked-page.ts: 64-byte chunks over the old page),
 * puts the copy into the working file and remembers it as *owned*; later small writes to that page
 * in the same operation change the copy in place instead of copying chunks (and the trie path to
 * the page) again. A snapshot that adds a reference to thousands of clusters of one refcount block,
 * or a discard rewriting a run of L2 entries, then costs one copy instead of one per entry. An owned
 * page was created by this operation and no Image outside it can hold it until the operation
 * returns; when it does (normally or by an exception) nothing is owned any more, so every Image that
 * leaves the operation is immutable as before. Code that keeps an intermediate `tx.img` to roll back
 * to, or hands one out (`ModelError.committed`), takes it with `checkpointImg`, which ends the
 * ownership first. The arrays hostPage and hostView hand out never change (`isOwnedPage`).
 */
import { HeaderLayout } from '../../generated/qcow2.ts';
import { WORK } from '../codec/index.ts';
import { encodeHeaderState, headerLengthOf, V3_HEADER_LENGTH } from './header.ts';
import type { ChunkedPage } from './chunked-page.ts';
import { discardHost, type HostFile, readHost, viewHost, writeHost, writeHostOwned, zeroHost } from './host-file.ts';
import { type HostIO } from './host-io.ts';
import { ModelError, EIO } from './errors.ts';
import { geometryOf, type Geometry, type HeaderState, type Image, type SessionState } from './image.ts';

export interface Tx {
  img: Image;
  readonly io: HostIO[];
  /**
   * Page index → the chunked page of `img.file` (chunked-page.ts) that this transaction created
   * inside the current `withOwnedPages` scope and may still change in place; undefined outside such
   * a scope.
   */
  owned?: Map<number, ChunkedPage>;
}

/** A transaction starting from `img`. */
export function beginTx(img: Image): Tx {
  return { img, io: [] };
}

/**
 * Runs `fn` with the owned-page overlay enabled (see the module comment) and returns its result.
 * When `fn` returns or throws, no page is owned any more, so `tx.img` is an ordinary immutable Image
 * again. Nested calls share the outer scope.
 */
export function withOwnedPages<T>(tx: Tx, fn: () => T): T {
  if (tx.owned !== undefined) return fn();
  tx.owned = new Map();
  try {
    return fn();
  } finally {
    tx.owned = undefined;
  }
}

/**
 * `tx.img`, safe to keep: ends the ownership of every page first, so later writes in this
 * transaction copy pages again and never change the returned Image (for rollbacks and for
 * `ModelError.committed`).
 */
export function checkpointImg(tx: Tx): Image {
  tx.owned?.clear();
  return tx.img;
}

/**
 * Whether `page` (as hostPage returned it for page index `index` of the working file) may still
 * change in place, so that a cache keyed by page objects must not keep it. Always false now: what
 * changes in place is an owned chunked page's chunks, never an array hostPage hands out (a chunked
 * page's flat copy is dropped and made again after a change, see chunked-page.ts). Kept for the
 * callers' caches, which stay correct if that ever changes.
 */
export function isOwnedPage(_tx: Tx, _index: number, _page: Uint8Array): boolean {
  return false;
}

/**
 * The owned-page fast path of hostWrite (host-file.ts writeHostOwned): a small write inside one page
 * that does not extend the file and is not all zeros goes into this scope's own chunked copy of the
 * page, made by the first such write and changed in place by the later ones. Returns false (nothing
 * done) when the ordinary path must be taken. The resulting file reads exactly as after writeHost.
 */
function writeOwned(tx: Tx, owned: Map<number, ChunkedPage>, offset: bigint, bytes: Uint8Array): boolean {
  const file = tx.img.file;
  const next = writeHostOwned(file, offset, bytes, owned);
  if (next === undefined) return false;
  if (next !== file) tx.img = imageWith(tx.img, next, tx.img.dataFile, tx.img.header, tx.img.session);
  return true;
}

/** The geometry of the working image. */
export function geo(tx: Tx): Geometry {
  // geometryOf is a WeakMap lookup; the model asks dozens of times per operation for the same
  // header object, so the last answer is kept (headers are immutable: same object, same geometry).
  const h = tx.img.header;
  if (h !== lastHeader) {
    lastGeometry = geometryOf(h);
    lastHeader = h;
  }
  return lastGeometry!;
}

let lastHeader: HeaderState | undefined;
let lastGeometry: Geometry | undefined;

/** Reads `length` bytes of the qcow2 file at `offset` (zeros past the end). */
export function hostRead(tx: Tx, offset: bigint, length: number): Uint8Array {
  return readHost(tx.img.file, offset, length);
}

/**
 * `length` bytes of the qcow2 file at `offset` (zeros past the end) for reading only: when they lie
 * inside one stored page this is a view of that immutable page (no copy), so the caller must not
 * modify it nor keep it expecting later writes to show. Meant for decoding table entries.
 */
export function hostView(tx: Tx, offset: bigint, length: number): Uint8Array {
  return viewHost(tx.img.file, offset, length);
}

/**
 * Writes `bytes` at `offset` of the qcow2 file and records the write (the record holds `bytes`
 * itself: they must not change afterwards). `fresh`: this transaction made `bytes` for this write
 * (a copy-on-write's read, the model's copy of guest data), so the file keeps whole pages as views
 * of them (writeHost's `adopt`).
 */
export function hostWrite(tx: Tx, offset: bigint, bytes: Uint8Array, fresh = false): void {
  WORK.hostWritten += bytes.length;
  const owned = tx.owned;
  if (owned === undefined || !writeOwned(tx, owned, offset, bytes)) {
    tx.img = imageWith(tx.img, writeHost(tx.img.file, offset, bytes, fresh), tx.img.dataFile, tx.img.header, tx.img.session);
  }
  tx.io.push({ kind: 'write', offset, bytes });
}

/** Zeroes `length` bytes at `offset` of the qcow2 file (a write_zeroes request) and records it. */
export function hostZero(tx: Tx, offset: bigint, length: bigint): void {
  if (length <= 0n) return;
  WORK.hostZeroed += Number(length);
  const file = zeroHost(tx.img.file, offset, length);
  if (file !== tx.img.file) tx.img = imageWith(tx.img, file, tx.img.dataFile, tx.img.header, tx.img.session);
  tx.io.push({ kind: 'zero', offset, length });
}

function dataFileOf(tx: Tx): HostFile {
  const f = tx.img.dataFile;
  // An image with incompatible bit 2 whose data file the caller did not supply cannot be served
  // (QEMU refuses to open it: "Could not open data file" / "'data-file' is required").
  if (f === undefined) throw new ModelError('no-data-file', EIO, 'the image has an external data file but none was supplied');
  return f;
}

/** Reads `length` bytes of the external data file at `offset` (zeros past its end). */
export function dataRead(tx: Tx, offset: bigint, length: number): Uint8Array {
  return readHost(dataFileOf(tx), offset, length);
}

/** Writes `bytes` at `offset` of the external data file and records the write (`target: 'data'`); `fresh` as hostWrite. */
export function dataWrite(tx: Tx, offset: bigint, bytes: Uint8Array, fresh = false): void {
  tx.img = imageWith(tx.img, tx.img.file, writeHost(dataFileOf(tx), offset, bytes, fresh), tx.img.header, tx.img.session);
  tx.io.push({ kind: 'write', offset, bytes, target: 'data' });
}

/** Zeroes `length` bytes at `offset` of the external data file and records it (`target: 'data'`). */
export function dataZero(tx: Tx, offset: bigint, length: bigint): void {
  if (length <= 0n) return;
  WORK.hostZeroed += Number(length);
  tx.img = imageWith(tx.img, tx.img.file, zeroHost(dataFileOf(tx), offset, length), tx.img.header, tx.img.session);
  tx.io.push({ kind: 'zero', offset, length, target: 'data' });
}

/** Punches `length` bytes at `offset` out of the external data file and records it (`target: 'data'`). */
export function dataDiscard(tx: Tx, offset: bigint, length: bigint): void {
  if (length <= 0n) return;
  tx.img = imageWith(tx.img, tx.img.file, discardHost(dataFileOf(tx), offset, length), tx.img.header, tx.img.session);
  tx.io.push({ kind: 'discard', offset, length, target: 'data' });
}

/** Records a flush barrier (the writes before it must be stable before any write after it). */
export function hostFlush(tx: Tx): void {
  if (tx.io.length > 0 && tx.io[tx.io.length - 1]!.kind === 'flush') return;
  tx.io.push({ kind: 'flush' });
}

/**
 * Crash safety: a refcount decrease frees what an earlier barrier of this operation unmapped, and a
 * later operation may reuse the clusters at once; marks that barrier (the last flush issued so far)
 * as ordering every later operation's writes too (HostIO `ordersLater`). No barrier yet: nothing to mark.
 */
export function markFreeingBarrier(tx: Tx): void {
  for (let i = tx.io.length - 1; i >= 0; i--) {
    const op = tx.io[i]!;
    if (op.kind !== 'flush') continue;
    if (op.ordersLater !== true) tx.io[i] = { kind: 'flush', ordersLater: true };
    return;
  }
}

/** Replaces the per-process session state. */
export function setSession(tx: Tx, s: Partial<SessionState>): void {
  tx.img = imageWith(tx.img, tx.img.file, tx.img.dataFile, tx.img.header, { ...tx.img.session, ...s });
}

/** setSession(tx, { freeClusterIndex }): the allocator's hint, moved on every allocation. */
export function setFreeClusterIndex(tx: Tx, freeClusterIndex: bigint): void {
  const c = tx.img.session;
  // The literal has every SessionState field (SESSION_FIELDS_LISTED); the optional one only when present.
  const session: SessionState = !('dirtyBySession' in c) && !('noDiscardPassthrough' in c)
    ? { freeClusterIndex, freeByteOffset: c.freeByteOffset, cursorClusterFreed: c.cursorClusterFreed, staleCursorAvoided: c.staleCursorAvoided }
    : { ...c, freeClusterIndex };
  tx.img = imageWith(tx.img, tx.img.file, tx.img.dataFile, tx.img.header, session);
}

/** True when A and B are the same union of keys (a compile-time check). */
type SameKeys<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/** imageWith and setFreeClusterIndex list every field: adding one to Image or SessionState fails to compile here. */
const IMAGE_FIELDS_LISTED: SameKeys<keyof Image, 'file' | 'dataFile' | 'header' | 'session' | 'backing'> = true;
const SESSION_FIELDS_LISTED: SameKeys<keyof SessionState, 'freeClusterIndex' | 'freeByteOffset' | 'cursorClusterFreed' | 'staleCursorAvoided' | 'dirtyBySession' | 'noDiscardPassthrough'> = true;
void IMAGE_FIELDS_LISTED;
void SESSION_FIELDS_LISTED;

/**
 * `img` with the given file, data file, header and session: what `{ ...img, file, ... }` makes — the
 * same own properties, `dataFile` and `backing` only when `img` has them (or a data file is given) —
 * built as an object literal. V8 makes a spread with an overriding property through a generic slow
 * path, about ten times the cost of a literal, and the model replaces its working Image on every
 * host write.
 */
function imageWith(img: Image, file: HostFile, dataFile: HostFile | undefined, header: HeaderState, session: SessionState): Image {
  const hasData = dataFile !== undefined || 'dataFile' in img;
  if (!('backing' in img)) return hasData ? { file, dataFile, header, session } : { file, header, session };
  return hasData ? { file, dataFile, header, session, backing: img.backing } : { file, header, session, backing: img.backing };
}

/** The header fields the model's operations change (setHeaderFields refuses any other). */
const CHANGEABLE_HEADER_FIELDS: ReadonlySet<keyof HeaderState> = new Set<keyof HeaderState>(
  ['l1Size', 'l1TableOffset', 'refcountTableOffset', 'refcountTableClusters', 'nbSnapshots', 'snapshotsOffset', 'incompatibleFeatures', 'size']);

/**
 * Changes header fields: re-encodes the header through the generated encoder (header.ts, with the
 * file's unknown header bytes preserved) and writes only the byte range covering the changed
 * fields, as QEMU does (e.g. one 12-byte write for refcount_table_offset + clusters, docs/format/allocation.md#refcount-table-growth).
 */
export function setHeaderFields(tx: Tx, changes: Partial<HeaderState>): void {
  const h = tx.img.header;
  const next: HeaderState = { ...h, ...changes };
  const len = headerLengthOf(h);
  const unknown = len > V3_HEADER_LENGTH ? hostRead(tx, BigInt(V3_HEADER_LENGTH), len - V3_HEADER_LENGTH) : undefined;
  const bytes = encodeHeaderState(next, unknown);
  let lo = Infinity;
  let hi = -Infinity;
  for (const key of Object.keys(changes) as (keyof HeaderState)[]) {
    const at = CHANGEABLE_HEADER_FIELDS.has(key) ? HeaderLayout[key as keyof typeof HeaderLayout] : undefined;
    if (!at) throw new Error(`setHeaderFields: field ${key} cannot be changed by the model`);
    lo = Math.min(lo, at.offset);
    hi = Math.max(hi, at.offset + at.size);
  }
  tx.img = imageWith(tx.img, tx.img.file, tx.img.dataFile, next, tx.img.session);
  if (lo < hi) hostWrite(tx, BigInt(lo), bytes.subarray(lo, hi));
}
