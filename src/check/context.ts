/**
 * What one pass of `qemu-img check` works on and the primitives every step of it shares
 * (src/check/check.ts runs the pass): QEMU's BDRVQcow2State as far as the check reads it (the
 * CheckContext), the BlockDriverState's lifetime across passes (CheckSession: corruption events,
 * the refcount-block cache), the result counters, the printed lines (Transcript), reading the file
 * as the block layer does (zeros past the end, EIO past BDRV_MAX_LENGTH) and the in-memory reference
 * count (qcow2_inc_refcounts_imrt). The on-disk refcounts and the refcount-block cache are
 * src/check/refblocks.ts; the in-memory reftable and L1 table src/check/tables.ts.
 */
import { decodeL1EntryFields } from '../../generated/qcow2.ts';
import { asciiDecode, isQcow2FormatError } from '../codec/index.ts';
import { BDRV_MAX_LENGTH } from '../format/index.ts';
import { l1EntryWord } from '../format/index.ts';
import { reftableSize as reftableEntries } from '../model/index.ts';
import type { CheckFinding } from './check.ts';
import { readHost } from '../model/index.ts';
import { type HostIO } from '../model/index.ts';
import { AUTOCLEAR_BITMAPS, INCOMPAT_CORRUPT, geometryOf, type Geometry } from '../model/index.ts';
import type { Imrt } from './imrt.ts';
import { headerReferences } from '../model/index.ts';
import type { SnapshotState } from '../model/index.ts';
import { hostFlush, setHeaderFields, type Tx } from '../model/index.ts';


/** QEMU's BdrvCheckMode: 0 = check only, 1 = BDRV_FIX_LEAKS (-r leaks), 3 = LEAKS | ERRORS (-r all). */
export type FixMode = 0 | 1 | 3;
export const FIX_LEAKS = 1;
export const FIX_ERRORS = 2;

/**
 * What lives as long as QEMU's open BlockDriverState across the passes of one `qemu-img check`:
 * whether the image is open read-write (corruption events are then fatal), whether a corruption was
 * signalled already (QEMU prints only the first), whether a fatal one made the image unusable
 * (`bs->drv = NULL`: the next check fails with ENOMEDIUM, and the image is never flushed or closed
 * properly), the refcount-block cache, and every line printed to stderr so far.
 */
export interface CheckSession {
  readonly writable: boolean;
  signaled: boolean;
  dead: boolean;
  readonly lines: string[];
  /** QEMU's refcount-block cache (src/check/refblocks.ts). */
  readonly refblockCache: RefblockCacheState;
  /**
   * Host writes the model made that QEMU would not have made (a refcount change QEMU's cache could
   * not take): never part of the result.
   */
  readonly droppedWrites: Set<HostIO>;
  /** The context of the last pass: what the image is closed with (its snapshot list, bitmaps). */
  lastContext?: CheckContext;
}

/** One entry of the refcount-block cache (Qcow2CachedTable). */
export interface RefblockCacheEntry {
  /** The cached block's offset; 0 when the entry is empty. */
  offset: bigint;
  /** The cache's counter when the entry was last used (0 when never). */
  lru: number;
  dirty: boolean;
  /** The model's host writes of this block's changes not yet written back (see check-refblocks.ts). */
  pending: HostIO[];
}

/** The refcount-block cache (Qcow2Cache): its entries and use counter. */
export interface RefblockCacheState {
  readonly entries: readonly RefblockCacheEntry[];
  counter: number;
}

/** Entries of the refcount-block cache: MIN_REFCOUNT_CACHE_SIZE, what QEMU 7.2 uses by default. */
export const REFBLOCK_CACHE_ENTRIES = 4;

/** A fresh session for an image opened read-only (`writable` false) or read-write (`-r`). */
export function newCheckSession(writable: boolean): CheckSession {
  const entries = Array.from({ length: REFBLOCK_CACHE_ENTRIES }, (): RefblockCacheEntry => ({ offset: 0n, lru: 0, dirty: false, pending: [] }));
  return { writable, signaled: false, dead: false, lines: [], refblockCache: { entries, counter: 0 }, droppedWrites: new Set() };
}

/** The host writes of refcount changes still waiting in the cache (lost if the image never writes them back). */
export function pendingRefblockWrites(session: CheckSession): Set<HostIO> {
  const out = new Set<HostIO>();
  for (const e of session.refblockCache.entries) if (e.dirty) for (const w of e.pending) out.add(w);
  return out;
}

import { EFBIG, EINVAL, EIO, ENOMEDIUM, ENOMEM, strerror } from '../model/index.ts';

/** The check function returned -errno: the pass stops here (qemu-img: `Check failed: ...`). */
export class CheckAbort extends Error {
  constructor(readonly errno: number) {
    super(strerror(errno));
  }
}

/**
 * Lines a check session keeps (its findings and its log). QEMU prints each line as it goes; a
 * hostile image can make millions — one per cluster of a refcount structure the check had to grow
 * the file for (qcow2's compare_refcounts: "Can't get refcount for cluster N") — which as strings
 * cost hundreds of MiB. Past this many lines a pass keeps counting (its counters stay exact) but no
 * longer keeps the text, and says so in one line at its end.
 */
export const MAX_KEPT_LINES = 100_000;

/** The lines one pass prints, and its findings (see CheckFinding for how uncounted lines attach). */
export class Transcript {
  readonly findings: CheckFinding[] = [];
  private pending: string[] = [];
  /** Lines of this pass not kept (MAX_KEPT_LINES). */
  private notKept = 0;

  constructor(private readonly session: CheckSession) {}

  /** Whether the session has no room for another line (the line is then counted as not kept). */
  private full(): boolean {
    if (this.session.lines.length < MAX_KEPT_LINES) return false;
    this.notKept++;
    return true;
  }

  /** Prints `message` as a finding of `kind`. */
  emit(kind: CheckFinding['kind'], message: string): void {
    if (this.full()) return;
    this.session.lines.push(message);
    if (this.pending.length === 0) {
      this.findings.push({ kind, message });
      return;
    }
    const text = [...this.pending, message].join('\n');
    this.pending = [];
    this.findings.push({ kind, message: text });
  }

  /** Prints `line`, which QEMU does not count: it joins the previous finding, or the next one. */
  note(line: string, attach: 'previous' | 'next'): void {
    if (this.full()) return;
    this.session.lines.push(line);
    const last = this.findings[this.findings.length - 1];
    if (attach === 'previous' && last !== undefined) {
      this.findings[this.findings.length - 1] = { kind: last.kind, message: `${last.message}\n${line}` };
    } else {
      this.pending.push(line);
    }
  }

  /** Findings with any lines still waiting for a next finding attached to the last one. */
  done(): CheckFinding[] {
    if (this.notKept > 0) {
      const line = `qcow2-ref: ${this.notKept} more line(s) were not kept (qemu-img prints each; the counts include them)`;
      this.session.lines.push(line);
      const last = this.findings[this.findings.length - 1];
      if (last !== undefined) this.findings[this.findings.length - 1] = { kind: last.kind, message: `${last.message}\n${line}` };
      this.notKept = 0;
    }
    if (this.pending.length > 0) {
      const last = this.findings[this.findings.length - 1];
      if (last !== undefined) this.findings[this.findings.length - 1] = { kind: last.kind, message: [last.message, ...this.pending].join('\n') };
      this.pending = [];
    }
    return this.findings;
  }
}

/** QEMU's BdrvCheckResult, mutable while a pass runs. */
export interface Counters {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: bigint;
  totalClusters: bigint;
  allocatedClusters: bigint;
  fragmentedClusters: bigint;
  compressedClusters: bigint;
}

export function zeroCounters(): Counters {
  return {
    corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0,
    imageEndOffset: 0n, totalClusters: 0n, allocatedClusters: 0n, fragmentedClusters: 0n, compressedClusters: 0n,
  };
}

/** `%lx` of a uint64. */
export const hex = (v: bigint): string => BigInt.asUintN(64, v).toString(16);
/** `%#lx`: 0x-prefixed hex, but plain "0" for zero (C's alternate form). */
export const hashHex = (v: bigint): string => (v === 0n ? '0' : `0x${hex(v)}`);
/** A uint64 as C's int64. */
export const asInt64 = (v: bigint): bigint => BigInt.asIntN(64, v);
/** A C string read from bytes: up to the first NUL, one char per byte. */
export function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return asciiDecode(end < 0 ? bytes : bytes.subarray(0, end));
}
export function roundUp8(v: bigint): bigint {
  return (v + 7n) & ~7n;
}

/**
 * One snapshot as the check reads it: QEMU's QCowSnapshot, the same in-memory form the model's
 * snapshot code keeps (id and name cut at the first NUL; extraDataSize as read, or 1024 when the
 * repair truncated it).
 */
export type CheckedSnapshot = SnapshotState;

/** Everything one pass works on: QEMU's BDRVQcow2State as far as the check reads it. */
export interface CheckContext {
  readonly tx: Tx;
  /** The fix flags of the step running now (calculate_refcounts after a rebuild runs with 0). */
  fix: FixMode;
  readonly out: Transcript;
  readonly session: CheckSession;
  readonly g: Geometry;
  /** bs->total_sectors * 512: the virtual size rounded down to a sector. */
  readonly virtualBytes: bigint;
  /** s->snapshots as the check read them, and s->snapshots_size. */
  snapshots: CheckedSnapshot[];
  snapshotsSize: bigint;
  /** The bitmap directory (only when autoclear bit 0 is set, as QEMU reads it at open). */
  readonly bitmaps?: { readonly count: number; readonly offset: bigint; readonly size: bigint };
  /** The LUKS header area (crypt_method 2). */
  readonly crypto?: { readonly offset: bigint; readonly length: bigint };
  /** rebuild_refcount_structure, supplied by the repair driver for -r all (src/check/rebuild-refcounts.ts). */
  readonly rebuild?: RebuildRefcounts;
}

/** rebuild_refcount_structure: writes new refcount structures from `imrt` (throws CheckAbort on failure). */
export type RebuildRefcounts = (c: CheckContext, res: Counters, imrt: Imrt) => void;

/** The context of one pass over the working image of `tx`, read as QEMU's check-mode open leaves it. */
export function newCheckContext(tx: Tx, fix: FixMode, out: Transcript, session: CheckSession, rebuild?: RebuildRefcounts): CheckContext {
  const h = tx.img.header;
  const g = geometryOf(h);
  let refs: ReturnType<typeof headerReferences> = {};
  try {
    refs = headerReferences(tx.img);
  } catch (e) {
    // QEMU's open fails on an extension area it cannot parse; there is nothing to count then.
    if (!isQcow2FormatError(e)) throw e;
  }
  const bitmaps = (h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n && refs.bitmaps !== undefined && refs.bitmaps.count > 0
    ? { count: refs.bitmaps.count, offset: refs.bitmaps.directoryOffset, size: refs.bitmaps.directorySize }
    : undefined;
  const crypto = h.cryptMethod === 2 && refs.fde !== undefined && refs.fde.length !== 0n ? { offset: refs.fde.offset, length: refs.fde.length } : undefined;
  return {
    tx, fix, out, session, g,
    virtualBytes: h.size & ~511n,
    snapshots: [],
    snapshotsSize: 0n,
    ...(bitmaps !== undefined ? { bitmaps } : {}),
    ...(crypto !== undefined ? { crypto } : {}),
    ...(rebuild !== undefined ? { rebuild } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Reading the file as the block layer does

/** Whether the block layer accepts a request of `length` bytes at `offset` (bdrv_check_request). */
export function readable(offset: bigint, length: bigint): boolean {
  return offset >= 0n && offset <= BDRV_MAX_LENGTH && length <= BDRV_MAX_LENGTH - offset;
}

/**
 * `bdrv_pread(bs->file, offset, length)`: the bytes (zeros past the end of the file), or undefined
 * when the request fails (offset or end past BDRV_MAX_LENGTH: EIO).
 */
export function pread(c: CheckContext, offset: bigint, length: number): Uint8Array | undefined {
  if (!readable(offset, BigInt(length))) return undefined;
  return readHost(c.tx.img.file, offset, length);
}

/** Bytes [offset, offset+length) of which only those inside the file are read (the rest are zero). */
export function inFileLength(c: CheckContext, offset: bigint, length: bigint): number {
  const len = c.tx.img.file.length;
  if (offset >= len) return 0;
  return Number(len - offset < length ? len - offset : length);
}

export function fileLength(c: CheckContext): bigint {
  return c.tx.img.file.length;
}

/** ceil(bytes / cluster size) (size_to_clusters). */
export function sizeToClusters(c: CheckContext, bytes: bigint): bigint {
  return (bytes + BigInt(c.g.clusterSize) - 1n) >> BigInt(c.g.clusterBits);
}

/** Word `index` of a 64-bit table at `offset` read through the generated decoders (exact). */
export function l1WordAt(bytes: Uint8Array, at: number, g: Geometry): bigint {
  return l1EntryWord(decodeL1EntryFields(bytes, at, { clusterBits: g.clusterBits, extendedL2: g.extendedL2 }));
}

/** The number of refcount-table entries (s->refcount_table_size). */
export function reftableSize(c: CheckContext): number {
  return reftableEntries(c.tx);
}

// ---------------------------------------------------------------------------------------------
// Corruption events (qcow2_signal_corruption)

/**
 * qcow2_signal_corruption with fatal = true: on a writable image it marks the image corrupt (writes
 * the corrupt bit) and makes it unusable; on a read-only one it only prints. Printed once per open.
 */
export function signalCorruption(c: CheckContext, message: string, attach: 'previous' | 'next'): void {
  const fatal = c.session.writable;
  const alreadyCorrupt = (c.tx.img.header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n;
  if (c.session.signaled && (!fatal || alreadyCorrupt)) return;
  if (fatal) {
    c.out.note(`qcow2: Marking image as corrupt: ${message}; further corruption events will be suppressed`, attach);
    setHeaderFields(c.tx, { incompatibleFeatures: c.tx.img.header.incompatibleFeatures | INCOMPAT_CORRUPT });
    hostFlush(c.tx);
    c.session.dead = true;
  } else {
    c.out.note(`qcow2: Image is corrupt: ${message}; further non-fatal corruption events will be suppressed`, attach);
  }
  c.session.signaled = true;
}

// ---------------------------------------------------------------------------------------------
// The in-memory reference count

/**
 * qcow2_inc_refcounts_imrt: +1 for every cluster [offset, offset+size) touches. A range reaching a
 * whole cluster or more past the end of the file is a corruption instead. Arithmetic as QEMU's:
 * `offset` is an int64, the cluster walk unsigned.
 */
export function incRefcounts(c: CheckContext, res: Counters, imrt: Imrt, offset: bigint, size: bigint): void {
  if (size <= 0n) return;
  const cs = BigInt(c.g.clusterSize);
  if (asInt64(offset) + size - fileLength(c) >= cs) {
    c.out.emit('corruption', `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${hex(offset)} size 0x${hex(size)}`);
    res.corruptions++;
    return;
  }
  const start = offset & ~(cs - 1n);
  const last = BigInt.asUintN(64, offset + size - 1n) & ~(cs - 1n);
  if (offset >= 1n << 63n) {
    // A negative int64 offset passes the test above; QEMU then grows its array to the cluster index
    // (2^63 / cluster size entries), which g_try_realloc cannot allocate.
    res.checkErrors++;
    throw new CheckAbort(ENOMEM);
  }
  const max = (1n << BigInt(1 << c.tx.img.header.refcountOrder)) - 1n;
  for (let co = start; co <= last; co += cs) {
    const k = Number(co >> BigInt(c.g.clusterBits));
    if (k >= imrt.size) imrt.size = k + 1;
    const rc = imrt.get(k);
    if (BigInt(rc) === max) {
      c.out.emit('corruption', `ERROR: overflow cluster offset=0x${hex(co)}`);
      c.out.note('Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing', 'previous');
      res.corruptions++;
      continue;
    }
    imrt.set(k, rc + 1);
  }
}
