/**
 * A transaction: the working Image of one `step` plus the host operations issued so far. Functions
 * of the model take a Tx and replace `tx.img` with new immutable Images as they go; the Image they
 * started from is never mutated, so `step` stays pure at its boundary.
 *
 * Every host write goes through `hostWrite`, which updates the working Image's HostFile and records
 * the write in `io` in the same order — the order a crash-safe driver must issue them.
 */
import { encodeHeaderState, headerLengthOf, V3_HEADER_LENGTH } from './header.ts';
import { discardHost, type HostIO, readHost, viewHost, writeHost, zeroHost } from './host-file.ts';
import { ModelError, EIO } from './errors.ts';
import { geometryOf, type Geometry, type HeaderState, type Image, type SessionState } from './image.ts';

export interface Tx {
  img: Image;
  readonly io: HostIO[];
}

/** A transaction starting from `img`. */
export function beginTx(img: Image): Tx {
  return { img, io: [] };
}

/** The geometry of the working image. */
export function geo(tx: Tx): Geometry {
  return geometryOf(tx.img.header);
}

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
  tx.img = { ...tx.img, file: writeHost(tx.img.file, offset, bytes) };
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
