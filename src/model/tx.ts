/**
 * A transaction: the working Image of one `step` plus the host operations issued so far. Functions
 * of the model take a Tx and replace `tx.img` with new immutable Images as they go; the Image they
 * started from is never mutated, so `step` stays pure at its boundary.
 *
 * Every host write goes through `hostWrite`, which updates the working Image's HostFile and records
 * the write in `io` in the same order — the order a crash-safe driver must issue them.
 *
 * Owned pages (the per-operation page overlay): inside `withOwnedPages` — the body of one guest
 * operation or snapshot command — a small metadata write (a refcount, an L2 entry: less than a page)
 * copies its 4 KiB page once, puts the copy into the working file and remembers it as *owned*; later
 * small writes to that page in the same operation change the copy in place instead of copying the
 * page (and the trie path to it) again. A snapshot that adds a reference to thousands of clusters of
 * one refcount block, or a discard rewriting a run of L2 entries, then costs one page copy instead
 * of one per entry. An owned page was created by this operation and no Image outside it can hold it
 * until the operation returns; when it does (normally or by an exception) nothing is owned any more,
 * so every Image that leaves the operation is immutable as before. Code that keeps an intermediate
 * `tx.img` to roll back to, or hands one out (`ModelError.committed`), takes it with
 * `checkpointImg`, which ends the ownership first. Caches keyed by page objects must not keep an
 * owned page (`isOwnedPage`): its bytes may still change.
 */
import { isZeroBytes } from '../format/bytes.ts';
import { encodeHeaderState, headerLengthOf, V3_HEADER_LENGTH } from './header.ts';
import { discardHost, type HostIO, hostPage, PAGE_SIZE, readHost, viewHost, writeHost, zeroHost } from './host-file.ts';
import { ModelError, EIO } from './errors.ts';
import { geometryOf, type Geometry, type HeaderState, type Image, type SessionState } from './image.ts';

export interface Tx {
  img: Image;
  readonly io: HostIO[];
  /**
   * Page index → page of `img.file` that this transaction created inside the current
   * `withOwnedPages` scope and may still change in place; undefined outside such a scope.
   */
  owned?: Map<number, Uint8Array>;
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
 * Whether `page` (stored at page index `index` of the working file) is owned by `tx`, i.e. may still
 * change in place: a cache keyed by page objects must not keep it.
 */
export function isOwnedPage(tx: Tx, index: number, page: Uint8Array): boolean {
  return tx.owned !== undefined && tx.owned.get(index) === page;
}

const TWO_53 = 2 ** 53;

/**
 * The owned-page fast path of hostWrite: writes `bytes` into the page holding them when the write
 * lies inside one page, does not extend the file and is not all zeros (a zero write may turn the page
 * into a hole, which writeHost decides), copying the page once per scope. Returns false (nothing
 * done) when the ordinary path must be taken. The resulting file reads exactly as after writeHost.
 */
function writeOwned(tx: Tx, owned: Map<number, Uint8Array>, offset: bigint, bytes: Uint8Array): boolean {
  const n = bytes.length;
  if (n === 0 || n >= PAGE_SIZE) return false;
  const o = Number(offset);
  if (!(o + n < TWO_53)) return false;
  const index = Math.floor(o / PAGE_SIZE);
  const within = o - index * PAGE_SIZE;
  const file = tx.img.file;
  if (within + n > PAGE_SIZE || offset + BigInt(n) > file.length) return false;
  if (isZeroBytes(bytes)) return false;
  let page = owned.get(index);
  // The working file may have been replaced since (zeroHost, discardHost, a rollback): own the
  // page only while the file still holds this very object.
  if (page !== undefined && hostPage(file, index) === page) {
    page.set(bytes, within);
    return true;
  }
  // First small write to this page in the scope: a private copy of what the page reads (hostPage:
  // a stored page or what a base shows; undefined reads as zeros) with the bytes in, stored in
  // place of the old page. The page is not all zeros (the bytes are not), so writeHost would store
  // it too.
  const old = hostPage(file, index);
  page = old !== undefined ? old.slice() : new Uint8Array(PAGE_SIZE);
  page.set(bytes, within);
  const next = { ...file, pages: file.pages.set(index, page) };
  if (hostPage(next, index) !== page) {
    owned.delete(index);
    return false;
  }
  owned.set(index, page);
  tx.img = { ...tx.img, file: next };
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

/** Writes `bytes` at `offset` of the qcow2 file and records the write. */
export function hostWrite(tx: Tx, offset: bigint, bytes: Uint8Array): void {
  const owned = tx.owned;
  if (owned === undefined || !writeOwned(tx, owned, offset, bytes)) {
    tx.img = { ...tx.img, file: writeHost(tx.img.file, offset, bytes) };
  }
  tx.io.push({ kind: 'write', offset, bytes });
}

/** Zeroes `length` bytes at `offset` of the qcow2 file (a write_zeroes request) and records it. */
export function hostZero(tx: Tx, offset: bigint, length: bigint): void {
  if (length <= 0n) return;
  tx.img = { ...tx.img, file: zeroHost(tx.img.file, offset, length) };
  tx.io.push({ kind: 'zero', offset, length });
}

function dataFileOf(tx: Tx): import('./host-file.ts').HostFile {
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

/** Writes `bytes` at `offset` of the external data file and records the write (`target: 'data'`). */
export function dataWrite(tx: Tx, offset: bigint, bytes: Uint8Array): void {
  tx.img = { ...tx.img, dataFile: writeHost(dataFileOf(tx), offset, bytes) };
  tx.io.push({ kind: 'write', offset, bytes, target: 'data' });
}

/** Zeroes `length` bytes at `offset` of the external data file and records it (`target: 'data'`). */
export function dataZero(tx: Tx, offset: bigint, length: bigint): void {
  if (length <= 0n) return;
  tx.img = { ...tx.img, dataFile: zeroHost(dataFileOf(tx), offset, length) };
  tx.io.push({ kind: 'zero', offset, length, target: 'data' });
}

/** Punches `length` bytes at `offset` out of the external data file and records it (`target: 'data'`). */
export function dataDiscard(tx: Tx, offset: bigint, length: bigint): void {
  if (length <= 0n) return;
  tx.img = { ...tx.img, dataFile: discardHost(dataFileOf(tx), offset, length) };
  tx.io.push({ kind: 'discard', offset, length, target: 'data' });
}

/** Records a flush barrier (the writes before it must be stable before any write after it). */
export function hostFlush(tx: Tx): void {
  if (tx.io.length > 0 && tx.io[tx.io.length - 1]!.kind === 'flush') return;
  tx.io.push({ kind: 'flush' });
}

/** Replaces the per-process session state. */
export function setSession(tx: Tx, s: Partial<SessionState>): void {
  tx.img = { ...tx.img, session: { ...tx.img.session, ...s } };
}

const HEADER_FIELD_BYTES: Partial<Record<keyof HeaderState, readonly [number, number]>> = {
  l1Size: [36, 4],
  l1TableOffset: [40, 8],
  refcountTableOffset: [48, 8],
  refcountTableClusters: [56, 4],
  nbSnapshots: [60, 4],
  snapshotsOffset: [64, 8],
  incompatibleFeatures: [72, 8],
  size: [24, 8],
};

/**
 * Changes header fields: re-encodes the header through the generated encoder (header.ts, with the
 * file's unknown header bytes preserved) and writes only the byte range covering the changed
 * fields, as QEMU does (e.g. one 12-byte write for refcount_table_offset + clusters, §11.1).
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
    const at = HEADER_FIELD_BYTES[key];
    if (!at) throw new Error(`setHeaderFields: field ${key} cannot be changed by the model`);
    lo = Math.min(lo, at[0]);
    hi = Math.max(hi, at[0] + at[1]);
  }
  tx.img = { ...tx.img, header: next };
  if (lo < hi) hostWrite(tx, BigInt(lo), bytes.subarray(lo, hi));
}
