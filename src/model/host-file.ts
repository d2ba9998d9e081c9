/**
 * The host file of an image as a persistent, sparse value: fixed 4 KiB pages in an immutable map
 * (absent page = zeros) plus a length. Writing returns a new HostFile that shares every page it did
 * not touch with the old one — the path copying the model relies on to stay pure and cheap on a
 * multi-terabyte virtual disk. Pages that become all zeros are dropped, so zero-filled clusters
 * cost nothing.
 *
 * `HostIO` is the vocabulary of host operations `step` returns; `applyHostIO` replays them onto a
 * HostFile (what a real-file driver does to a file).
 */
import { Map as IMap } from 'immutable';

/** Bytes per page of the sparse store. */
export const PAGE_SIZE = 4096;
const PAGE_BITS = 12;

/**
 * Which file a host operation addresses: the qcow2 file itself (the default, `target` absent) or the
 * image's external data file (`target: 'data'`, incompatible bit 2). A flush is a barrier for both.
 */
export type HostTarget = 'image' | 'data';

/** One host operation, in the order a crash-safe driver must issue them. */
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
  /** Page index → 4 KiB page; a missing page reads as zeros. Pages are never mutated. */
  readonly pages: IMap<number, Uint8Array>;
}

/** An empty host file. */
export function emptyHostFile(): HostFile {
  return { length: 0n, pages: IMap<number, Uint8Array>() };
}

function isZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function pageIndexOf(offset: bigint): number {
  return Number(offset >> BigInt(PAGE_BITS));
}

/** `length` bytes at `offset`; bytes past the end of the file (or in holes) read as zeros. */
export function readHost(file: HostFile, offset: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let pos = 0;
  while (pos < length) {
    const abs = offset + BigInt(pos);
    const page = pageIndexOf(abs);
    const within = Number(abs & BigInt(PAGE_SIZE - 1));
    const n = Math.min(PAGE_SIZE - within, length - pos);
    const p = file.pages.get(page);
    if (p !== undefined) out.set(p.subarray(within, within + n), pos);
    pos += n;
  }
  return out;
}

/** A file with `bytes` written at `offset` (extending the length if needed). `file` is unchanged. */
export function writeHost(file: HostFile, offset: bigint, bytes: Uint8Array): HostFile {
  if (bytes.length === 0) return file;
  const pages = file.pages.withMutations((m) => {
    let pos = 0;
    while (pos < bytes.length) {
      const abs = offset + BigInt(pos);
      const page = pageIndexOf(abs);
      const within = Number(abs & BigInt(PAGE_SIZE - 1));
      const n = Math.min(PAGE_SIZE - within, bytes.length - pos);
      const chunk = bytes.subarray(pos, pos + n);
      const old = m.get(page);
      let next: Uint8Array;
      if (n === PAGE_SIZE) {
        next = chunk.slice();
      } else {
        next = old ? old.slice() : new Uint8Array(PAGE_SIZE);
        next.set(chunk, within);
      }
      if (isZero(next)) m.delete(page);
      else m.set(page, next);
      pos += n;
    }
  });
  const end = offset + BigInt(bytes.length);
  return { length: end > file.length ? end : file.length, pages };
}

/** A file with [offset, offset+length) zeroed (extending the length if needed). `file` is unchanged. */
export function zeroHost(file: HostFile, offset: bigint, length: bigint): HostFile {
  if (length <= 0n) return file;
  const end = offset + length;
  const ps = BigInt(PAGE_SIZE);
  const firstPage = offset / ps;
  const lastPage = (end - 1n) / ps;
  const partial = (p: bigint): boolean => offset > p * ps || end < (p + 1n) * ps;
  let pages = file.pages;
  // Whole pages drop out of the map (absent = zeros); the range may be far larger than the map.
  if (lastPage - firstPage + 1n > BigInt(pages.size)) {
    pages = pages.filter((_p, i) => BigInt(i) < firstPage || BigInt(i) > lastPage || partial(BigInt(i)));
  } else {
    pages = pages.withMutations((m) => {
      for (let p = firstPage; p <= lastPage; p++) if (!partial(p)) m.delete(Number(p));
    });
  }
  let f: HostFile = { length: file.length, pages };
  // Pages only partly covered keep their other bytes.
  for (const p of new Set([firstPage, lastPage])) {
    if (!partial(p)) continue;
    const from = offset > p * ps ? offset : p * ps;
    const to = end < (p + 1n) * ps ? end : (p + 1n) * ps;
    if (f.pages.has(Number(p))) f = writeHost(f, from, new Uint8Array(Number(to - from)));
  }
  return { length: end > f.length ? end : f.length, pages: f.pages };
}

/** A file with [offset, offset+length) punched out (zeros) without changing its length. */
export function discardHost(file: HostFile, offset: bigint, length: bigint): HostFile {
  const end = offset + length < file.length ? offset + length : file.length;
  if (end <= offset) return file;
  return zeroHost(file, offset, end - offset);
}

/** A file cut (or extended with zeros) to `length`. */
export function truncateHost(file: HostFile, length: bigint): HostFile {
  if (length >= file.length) return { length, pages: file.pages };
  const lastPage = pageIndexOf(length + BigInt(PAGE_SIZE - 1));
  let pages = file.pages.filter((_p, i) => i < lastPage);
  const tail = Number(length & BigInt(PAGE_SIZE - 1));
  if (tail !== 0) {
    const idx = pageIndexOf(length);
    const p = pages.get(idx);
    if (p !== undefined) {
      const q = p.slice();
      q.fill(0, tail);
      pages = isZero(q) ? pages.delete(idx) : pages.set(idx, q);
    }
  }
  return { length, pages };
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

/** A host file holding `bytes`. */
export function hostFromBytes(bytes: Uint8Array): HostFile {
  const f = writeHost(emptyHostFile(), 0n, bytes);
  return { length: BigInt(bytes.length), pages: f.pages };
}
