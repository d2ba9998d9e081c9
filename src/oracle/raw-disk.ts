/**
 * The flat raw-disk oracle: what a guest reads from the disk after any sequence of ops
 * (src/model/ops.ts), computed the obvious way and independently of the qcow2 model. It knows
 * nothing of clusters tables, refcounts or allocation; it is a byte array, stored sparsely.
 *
 * Representation. The content is a Map from 4 KiB page index to a 4 KiB Uint8Array. A missing page
 * reads from the backing disk (zeros past the backing's end, or everywhere when there is none).
 * Pages are never mutated after they are stored (a write stores a fresh copy), so a snapshot is a
 * copy of the Map and shares every page with the live disk. A 2 TiB disk costs only the pages that
 * were written.
 *
 * Configuration. The guest-visible result of `discard` is not fixed by the qcow2 spec ("zeros or the
 * backing content"); QEMU 7.2 decides it from three facts of the image, so the oracle takes exactly
 * these, explicitly, instead of guessing:
 * - `version` (2 or 3): v2 has no zero flag, so with a backing file QEMU refuses discard (no-op);
 * - `backing` (present or not): the content unwritten ranges read through to;
 * - `clusterSize`: discard only acts on whole clusters (partial clusters are left as they are).
 * Nothing else about the image changes what a read returns.
 *
 * Past the end: the partial last cluster. When the virtual size is not a multiple of the cluster size,
 * QEMU's last cluster holds bytes past the end of the disk, and QEMU 7.2 shows them again when the
 * disk grows without zero-filling (block/qcow2.c qcow2_co_truncate: a shrink discards only from the
 * first cluster boundary at or after the new size; a grow zero-fills only when a backing file longer
 * than the old size would show through). The oracle therefore keeps the content of
 * `[size, roundUp(size, clusterSize))` (the "tail") and follows QEMU's rules for it:
 * - shrink: the tail is what the bytes there read before (content past the new end is otherwise gone);
 * - grow with a backing file longer than the old size: the whole new range reads zeros (and the new
 *   tail too where QEMU's zero flags cover it);
 * - grow otherwise: the old tail shows again, everything after it reads zeros;
 * - ops that QEMU applies to the whole last cluster zero the tail: a compressed write of the partial
 *   last cluster (zero padded), a discard covering the last cluster from its start to the end of the
 *   disk, and a write_zeroes covering it so (except v2 with a backing file, which writes explicit
 *   zeros). With subclusters (`subclusterSize` < `clusterSize`, extended L2) a write_zeroes reaching
 *   the end zeroes the whole tail when it covers the last cluster from its start and the end is in
 *   the first subcluster or subcluster aligned, else only the rest of the last subcluster when the
 *   end is not subcluster aligned and the range covers that subcluster from its start (and, starting
 *   past the last cluster's start, also the subcluster before it).
 * Ordinary writes never change the tail (QEMU's copy-on-write copies it).
 * Known difference, from allocation state the oracle does not have: with extended L2, if the partial
 * last cluster is compressed and a write_zeroes covers exactly its last (partial) subcluster, QEMU
 * cannot zero part of a compressed cluster and writes explicit zeros, keeping that subcluster's tail;
 * the oracle zeroes it. Harnesses must not generate that sequence.
 *
 * Errors. Ops addressing bytes past the virtual size are rejected as QEMU's block layer rejects them
 * (`blk_check_byte_request`: -EIO, qemu-io prints "Input/output error"), with a RawDiskError; a
 * rejected op changes nothing. Protocol for harnesses: apply an op to the model first; when the model
 * refuses it with a typed error QEMU would also give, do not apply it to the oracle.
 */
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { match } from 'ts-pattern';
import type { Op } from '../model/index.ts';

/** Bytes per stored page. */
export const ORACLE_PAGE_SIZE = 4096;
const PAGE = 4096n;

/** Why the oracle rejected an op or read. */
export type RawDiskErrorCode =
  /** The range ends past the virtual size (QEMU: EIO, "Input/output error"). */
  | 'beyond-end'
  /** A negative offset, length or size (QEMU: EINVAL / EIO from the range check). */
  | 'invalid-argument'
  /** snapshotCreate with a name already in use (QEMU's QMP: "Snapshot with name … already exists"). */
  | 'snapshot-exists'
  /** snapshotApply/snapshotDelete of a name that does not exist (QEMU: ENOENT). */
  | 'no-such-snapshot';

/** The errno QEMU reports for each code (what `qemu-io` prints after "write failed: "). */
export const RAW_DISK_ERRNO: Readonly<Record<RawDiskErrorCode, string>> = {
  'beyond-end': 'EIO',
  'invalid-argument': 'EINVAL',
  'snapshot-exists': 'EEXIST',
  'no-such-snapshot': 'ENOENT',
};

/** The only error the oracle throws. `message` reads `<op>: <detail>`. */
export class RawDiskError extends Error {
  override readonly name = 'RawDiskError';
  readonly code: RawDiskErrorCode;
  /** The op kind or method (`write`, `read`, `snapshotApply`, …) that was rejected. */
  readonly op: string;
  constructor(code: RawDiskErrorCode, op: string, detail: string) {
    super(`${op}: ${detail}`);
    this.code = code;
    this.op = op;
  }
  /** QEMU's errno for this error. */
  get errno(): string {
    return RAW_DISK_ERRNO[this.code];
  }
}

/**
 * A read-only backing disk: its virtual size and a read function. `read` is only ever called for
 * ranges inside `[0, size)`; the oracle supplies the zeros past the end of a short backing file.
 * A RawDisk is one (it is copied when given as a backing, so later changes to it are not seen).
 */
export interface OracleBacking {
  readonly size: bigint;
  read(offset: bigint, length: number): Uint8Array;
  /**
   * Optional: the whole content `[0, size)` as contiguous chunks (RawDisk.rawChunks' contract). When
   * present, the disk above streams the backing through it instead of reading every byte, so a
   * sparse backing (a 1 TiB RawDisk with a few writes) costs its stored pages, not its size.
   */
  rawChunks?(maxChunk?: number): Iterable<RawChunk>;
}

/** The facts of an image configuration that decide what reads return (see the module comment). */
export interface RawDiskConfig {
  /** Virtual size in bytes. */
  readonly size: bigint;
  /** qcow2 version; default 3. Only matters for discard with a backing file. */
  readonly version?: 2 | 3;
  /** Cluster size in bytes (discard granularity); default 65536. */
  readonly clusterSize?: bigint;
  /**
   * Subcluster size in bytes (write_zeroes granularity): clusterSize / 32 with extended L2 entries,
   * else the cluster size (the default). Only matters for the tail past an unaligned end.
   */
  readonly subclusterSize?: bigint;
  /** The backing disk unwritten ranges read from; none by default. */
  readonly backing?: OracleBacking;
}

/** One piece of the content in `rawChunks` order: bytes, or a run of zeros. */
export type RawChunk =
  | { readonly kind: 'data'; readonly offset: bigint; readonly bytes: Uint8Array }
  | { readonly kind: 'zero'; readonly offset: bigint; readonly length: bigint };

interface Snapshot {
  readonly size: bigint;
  readonly pages: ReadonlyMap<number, Uint8Array>;
}

/** A page of zeros, shared by every range zeroed under a backing file. Never mutated. */
const ZERO_PAGE = new Uint8Array(ORACLE_PAGE_SIZE);

function pageOf(offset: bigint): number {
  return Number(offset / PAGE);
}

function isAllZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** The sparse raw disk. Mutable; `clone()` is cheap (pages are shared, never mutated). */
export class RawDisk implements OracleBacking {
  readonly version: 2 | 3;
  readonly clusterSize: bigint;
  readonly subclusterSize: bigint;
  #backing: OracleBacking | undefined;
  #size: bigint;
  #pages: Map<number, Uint8Array>;
  #snapshots: Map<string, Snapshot>;

  /**
   * A disk of `config.size` bytes whose every byte reads from the backing (zeros without one).
   * Throws RawDiskError('invalid-argument') for a negative size or a cluster size that is not a
   * positive power of two. A RawDisk given as backing is cloned, so the new disk never sees later
   * changes to it (QEMU opens backing files read-only).
   */
  constructor(config: RawDiskConfig) {
    const clusterSize = config.clusterSize ?? 65536n;
    if (config.size < 0n) throw new RawDiskError('invalid-argument', 'create', `negative size ${config.size}`);
    if (clusterSize <= 0n || (clusterSize & (clusterSize - 1n)) !== 0n) {
      throw new RawDiskError('invalid-argument', 'create', `cluster size ${clusterSize} is not a power of two`);
    }
    const subclusterSize = config.subclusterSize ?? clusterSize;
    if (subclusterSize <= 0n || (subclusterSize & (subclusterSize - 1n)) !== 0n || subclusterSize > clusterSize) {
      throw new RawDiskError('invalid-argument', 'create', `subcluster size ${subclusterSize} is not a power of two up to the cluster size`);
    }
    this.version = config.version ?? 3;
    this.clusterSize = clusterSize;
    this.subclusterSize = subclusterSize;
    this.#backing = config.backing instanceof RawDisk ? config.backing.clone() : config.backing;
    this.#size = config.size;
    this.#pages = new Map();
    this.#snapshots = new Map();
  }

  /** The backing disk unwritten ranges read from, if any. */
  get backing(): OracleBacking | undefined {
    return this.#backing;
  }

  /** Current virtual size in bytes. */
  get size(): bigint {
    return this.#size;
  }

  /** Number of stored 4 KiB pages: the memory the content costs, in pages. */
  get pageCount(): number {
    return this.#pages.size;
  }

  /** Names of the existing snapshots, in creation order. */
  get snapshotNames(): string[] {
    return [...this.#snapshots.keys()];
  }

  /** An independent copy (content, size, snapshots); costs one Map copy, pages are shared. */
  clone(): RawDisk {
    const c = new RawDisk({ size: this.#size, version: this.version, clusterSize: this.clusterSize, subclusterSize: this.subclusterSize });
    c.#backing = this.#backing;
    c.#pages = new Map(this.#pages);
    c.#snapshots = new Map(this.#snapshots);
    return c;
  }

  /**
   * The `length` bytes at `offset` as the guest reads them. Throws RawDiskError 'beyond-end' when
   * the range ends past the virtual size, 'invalid-argument' for a negative offset or length.
   */
  read(offset: bigint, length: number): Uint8Array {
    this.#checkRange('read', offset, BigInt(length));
    return this.#readRaw(offset, length);
  }

  /**
   * Applies `op` with its guest-visible meaning (src/model/ops.ts). Promises: on success reads are
   * exactly as the op's doc comment says; on a RawDiskError nothing changed.
   */
  apply(op: Op): void {
    match(op)
      .with({ kind: 'write' }, (o) => {
        this.#checkRange('write', o.offset, BigInt(o.data.length));
        this.#write(o.offset, o.data);
      })
      .with({ kind: 'writeCompressed' }, (o) => {
        // Compression is invisible to the guest: same content as a plain write.
        this.#checkRange('writeCompressed', o.offset, BigInt(o.data.length));
        this.#write(o.offset, o.data);
        // The partial last cluster is compressed zero padded.
        if (o.data.length > 0 && o.offset + BigInt(o.data.length) === this.#size) this.#zeroTail();
      })
      .with({ kind: 'writeZeroes' }, (o) => {
        // Reads zeros in every configuration (docs/format/allocation.md#write_zeroes): v3 zero flags, v2 without backing
        // by deallocation, v2 with backing by explicit zeros. `unmap` is invisible.
        this.#checkRange('writeZeroes', o.offset, o.length);
        this.#zero(o.offset, o.offset + o.length);
        if (o.length > 0n && o.offset + o.length === this.#size) this.#zeroesReachEnd(o.offset);
      })
      .with({ kind: 'discard' }, (o) => {
        this.#checkRange('discard', o.offset, o.length);
        this.#discard(o.offset, o.offset + o.length);
      })
      .with({ kind: 'snapshotCreate' }, (o) => {
        if (this.#snapshots.has(o.name)) {
          throw new RawDiskError('snapshot-exists', 'snapshotCreate', `snapshot '${o.name}' already exists`);
        }
        this.#snapshots.set(o.name, { size: this.#size, pages: new Map(this.#pages) });
      })
      .with({ kind: 'snapshotApply' }, (o) => {
        const s = this.#findSnapshot('snapshotApply', o.name);
        this.#size = s.size;
        this.#pages = new Map(s.pages);
      })
      .with({ kind: 'snapshotDelete' }, (o) => {
        this.#findSnapshot('snapshotDelete', o.name);
        this.#snapshots.delete(o.name);
      })
      .with({ kind: 'resize' }, (o) => {
        if (o.size < 0n) throw new RawDiskError('invalid-argument', 'resize', `negative size ${o.size}`);
        this.#resize(o.size);
      })
      .with({ kind: 'flush' }, () => {})
      .exhaustive();
  }

  /**
   * The whole content, `[0, size)`, in order, as data chunks of at most `maxChunk` bytes and zero
   * runs (coalesced, any length). Promises: the chunks are contiguous, start at 0, end at `size`,
   * and concatenated equal `read(0, size)`. Memory stays bounded by `maxChunk` whatever the size; time
   * is proportional to the stored pages plus the backing range read (a backing with rawChunks, such as
   * a RawDisk, is streamed: its stored pages, not its size). A caller writing a raw file can
   * skip zero runs (see writeRawFile) so the file is as sparse as the disk.
   */
  *rawChunks(maxChunk = 1 << 20): Generator<RawChunk> {
    if (!Number.isSafeInteger(maxChunk) || maxChunk < ORACLE_PAGE_SIZE) {
      throw new RawDiskError('invalid-argument', 'rawChunks', `maxChunk ${maxChunk} is below ${ORACLE_PAGE_SIZE}`);
    }
    let pending: RawChunk | undefined;
    for (const piece of this.#pieces(BigInt(maxChunk))) {
      if (pending === undefined) {
        pending = piece;
      } else if (pending.kind === 'zero' && piece.kind === 'zero') {
        pending = { kind: 'zero', offset: pending.offset, length: pending.length + piece.length };
      } else if (pending.kind === 'data' && piece.kind === 'data' && pending.bytes.length + piece.bytes.length <= maxChunk) {
        const joined = new Uint8Array(pending.bytes.length + piece.bytes.length);
        joined.set(pending.bytes, 0);
        joined.set(piece.bytes, pending.bytes.length);
        pending = { kind: 'data', offset: pending.offset, bytes: joined };
      } else {
        yield pending;
        pending = piece;
      }
    }
    if (pending !== undefined) yield pending;
  }

  /**
   * SHA-256 (lowercase hex) of the raw content `[0, size)` — what `sha256sum` prints for the raw file
   * writeRawFile produces. Streams: memory is bounded; time is linear in the virtual size (zero runs
   * are hashed too, from one shared buffer).
   */
  contentSha256(): string {
    const h = createHash('sha256');
    const zeros = new Uint8Array(1 << 20);
    for (const c of this.rawChunks()) {
      if (c.kind === 'data') {
        h.update(c.bytes);
      } else {
        let left = c.length;
        while (left > 0n) {
          const n = left < BigInt(zeros.length) ? Number(left) : zeros.length;
          h.update(zeros.subarray(0, n));
          left -= BigInt(n);
        }
      }
    }
    return h.digest('hex');
  }

  // ---- internals -------------------------------------------------------------------------------

  #checkRange(op: string, offset: bigint, length: bigint): void {
    if (offset < 0n || length < 0n) {
      throw new RawDiskError('invalid-argument', op, `negative offset or length (offset ${offset}, length ${length})`);
    }
    if (offset + length > this.#size) {
      throw new RawDiskError(
        'beyond-end',
        op,
        `offset ${offset} length ${length}: beyond end of device (virtual size ${this.#size}): Input/output error`,
      );
    }
  }

  #findSnapshot(op: string, name: string): Snapshot {
    const s = this.#snapshots.get(name);
    if (s === undefined) throw new RawDiskError('no-such-snapshot', op, `snapshot '${name}' not found`);
    return s;
  }

  /** Bytes of the backing at `[offset, offset + length)`, zeros past its end or without one. */
  #backingBytes(offset: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    const b = this.backing;
    if (b === undefined || offset >= b.size) return out;
    const end = offset + BigInt(length) < b.size ? offset + BigInt(length) : b.size;
    out.set(b.read(offset, Number(end - offset)), 0);
    return out;
  }

  /** The content of page `p` as the guest sees it (a stored page, or the backing's bytes there). */
  #page(p: number): Uint8Array {
    return this.#pages.get(p) ?? this.#backingBytes(BigInt(p) * PAGE, ORACLE_PAGE_SIZE);
  }

  #readRaw(offset: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let pos = 0;
    while (pos < length) {
      const abs = offset + BigInt(pos);
      const within = Number(abs % PAGE);
      const n = Math.min(ORACLE_PAGE_SIZE - within, length - pos);
      out.set(this.#page(pageOf(abs)).subarray(within, within + n), pos);
      pos += n;
    }
    return out;
  }

  /** Stores `bytes` at `offset`; every touched page is replaced by a fresh copy. */
  #write(offset: bigint, bytes: Uint8Array): void {
    let pos = 0;
    while (pos < bytes.length) {
      const abs = offset + BigInt(pos);
      const p = pageOf(abs);
      const within = Number(abs % PAGE);
      const n = Math.min(ORACLE_PAGE_SIZE - within, bytes.length - pos);
      const next = this.#page(p).slice();
      next.set(bytes.subarray(pos, pos + n), within);
      this.#pages.set(p, next);
      pos += n;
    }
  }

  /**
   * Makes `[from, to)` read as zeros. Whole pages become "missing" where that already reads zeros
   * (past the backing's end) and the shared ZERO_PAGE where a backing would show through; partial
   * pages get a fresh copy. Cost: the stored pages plus the pages of the range inside the backing.
   */
  #zero(from: bigint, to: bigint): void {
    if (to <= from) return;
    const firstWhole = (from + PAGE - 1n) / PAGE;
    const endWhole = to / PAGE; // exclusive
    if (firstWhole >= endWhole) {
      this.#write(from, new Uint8Array(Number(to - from)));
      return;
    }
    if (from < firstWhole * PAGE) this.#write(from, new Uint8Array(Number(firstWhole * PAGE - from)));
    if (endWhole * PAGE < to) this.#write(endWhole * PAGE, new Uint8Array(Number(to - endWhole * PAGE)));
    // Whole pages: drop what is stored, then cover what the backing would show.
    for (const p of [...this.#pages.keys()]) {
      if (p >= firstWhole && p < endWhole) this.#pages.delete(p);
    }
    const backingPages = this.backing === undefined ? 0n : (this.backing.size + PAGE - 1n) / PAGE;
    const coverEnd = endWhole < backingPages ? endWhole : backingPages;
    for (let p = firstWhole; p < coverEnd; p++) this.#pages.set(Number(p), ZERO_PAGE);
  }

  /** QEMU 7.2's discard (docs/format/allocation.md#discard), see DiscardOp. */
  #discard(from: bigint, to: bigint): void {
    // v2 + backing: QEMU refuses (ENOTSUP, silently) — zeroing would need a zero flag v2 lacks,
    // and deallocating would expose the backing file (docs/format/surprises.md#9-version-2-with-a-backing-file, iotest 290).
    if (this.version === 2 && this.backing !== undefined) return;
    // Only whole clusters: round the start up and the end down to cluster boundaries, except that
    // a range reaching the end of the disk also covers the partial last cluster.
    const c = this.clusterSize;
    const start = ((from + c - 1n) / c) * c;
    const end = to === this.#size ? to : (to / c) * c;
    // v3: the clusters become ZERO_PLAIN; v2 without backing: unallocated. Both read zeros.
    if (end > start) this.#zero(start, end);
    // The whole partial last cluster was discarded, its tail with it.
    if (to === this.#size && from <= this.#lastClusterStart()) this.#zeroTail();
  }

  /** Start of the cluster holding the last byte of the disk. */
  #lastClusterStart(): bigint {
    const c = this.clusterSize;
    return this.#size === 0n ? 0n : ((this.#size - 1n) / c) * c;
  }

  /** The end of the tail: the end of the last cluster. */
  #tailEnd(): bigint {
    const c = this.clusterSize;
    return ((this.#size + c - 1n) / c) * c;
  }

  /** Zeroes the tail, `[size, tailEnd)`. */
  #zeroTail(): void {
    if (this.#tailEnd() > this.#size) this.#zero(this.#size, this.#tailEnd());
  }

  /**
   * What a write_zeroes of `[from, size)` does to the tail (see the module comment; QEMU's block layer
   * cuts the request at subcluster boundaries and qcow2_subcluster_zeroize zeroes whole clusters, or
   * whole subclusters, of the last piece).
   */
  #zeroesReachEnd(from: bigint): void {
    const size = this.#size;
    const tailEnd = this.#tailEnd();
    if (tailEnd === size) return; // no tail
    if (this.version === 2 && this.backing !== undefined) return; // explicit zeros (no zero flag)
    const last = this.#lastClusterStart();
    const sc = this.subclusterSize;
    if (sc === this.clusterSize) {
      if (from <= last) this.#zeroTail();
      return;
    }
    const tail = size % sc;
    const lastPiece = size - tail; // start of the last, partial subcluster
    const subEnd = lastPiece + sc;
    if (from <= last) {
      if (tail === 0n || lastPiece === last) this.#zeroTail();
      else this.#zero(size, subEnd);
      return;
    }
    const firstAligned = ((from + sc - 1n) / sc) * sc;
    if (firstAligned < size && tail !== 0n) this.#zero(size, subEnd);
  }

  #resize(size: bigint): void {
    const old = this.#size;
    const c = this.clusterSize;
    if (size < old) {
      // Bytes past the new end are gone, except the tail of the new last cluster (QEMU discards from
      // the first cluster boundary at or after the new size): drop the pages lying wholly beyond it.
      const keep = (((size + c - 1n) / c) * c + PAGE - 1n) / PAGE;
      for (const p of [...this.#pages.keys()]) if (p >= keep) this.#pages.delete(p);
    }
    if (size > old) {
      const backing = this.backing;
      const oldTailEnd = ((old + c - 1n) / c) * c;
      const newTailEnd = ((size + c - 1n) / c) * c;
      if (backing !== undefined && backing.size > old) {
        // block/io.c bdrv_co_truncate: the backing would show through, so the new range is
        // zero-filled (BDRV_REQ_ZERO_WRITE): explicit zeros up to the first subcluster boundary,
        // zero flags from there (qcow2_subcluster_zeroize: whole clusters, or the subclusters up to
        // the new end within the cluster holding that boundary). The new tail follows suit.
        this.#zero(old, size);
        const sc = this.subclusterSize;
        const zeroStart = ((old + sc - 1n) / sc) * sc;
        if (size > zeroStart) {
          const firstClusterEnd = ((zeroStart + c - 1n) / c) * c;
          if (size > firstClusterEnd) this.#zero(size, newTailEnd);
          else this.#zero(size, ((size + sc - 1n) / sc) * sc);
        }
      } else if (newTailEnd > oldTailEnd) {
        // Unallocated and no backing data there: the old tail shows again, the rest reads zeros.
        this.#zero(oldTailEnd, newTailEnd);
      }
    }
    this.#size = size;
  }

  /** The content as pieces of at most `max` bytes: stored pages, backing content, zero runs. */
  *#pieces(max: bigint): Generator<RawChunk> {
    const size = this.#size;
    const stored = [...this.#pages.keys()].filter((p) => BigInt(p) * PAGE < size).sort((a, b) => a - b);
    let pos = 0n;
    const backing = this.backing;
    // A backing that can stream its content (a RawDisk) is consumed as one forward stream, merged
    // with the stored pages: its zero runs stay runs, so the cost is its stored pages, not its size
    // (reading a 1 TiB sparse backing byte by byte took hours). Others are read range by range.
    const stream = backing?.rawChunks?.(Number(max))[Symbol.iterator]();
    let head: RawChunk | undefined;
    const chunkEnd = (c: RawChunk): bigint => c.offset + (c.kind === 'data' ? BigInt(c.bytes.length) : c.length);
    const backingPiece = (from: bigint, n: bigint): RawChunk => {
      if (stream === undefined) {
        const bytes = this.#backingBytes(from, Number(n));
        return isAllZero(bytes) ? { kind: 'zero', offset: from, length: n } : { kind: 'data', offset: from, bytes };
      }
      // Gaps only move forward, and the stream is contiguous from 0: skip what lies before `from`.
      while (head === undefined || chunkEnd(head) <= from) {
        const r = stream.next();
        if (r.done === true) throw new RawDiskError('invalid-argument', 'rawChunks', `the backing's chunks end before ${from}`);
        head = r.value;
      }
      const end = chunkEnd(head) < from + n ? chunkEnd(head) : from + n;
      if (head.kind === 'zero') return { kind: 'zero', offset: from, length: end - from };
      const bytes = head.bytes.subarray(Number(from - head.offset), Number(end - head.offset));
      return isAllZero(bytes) ? { kind: 'zero', offset: from, length: end - from } : { kind: 'data', offset: from, bytes };
    };
    const gap = function* (to: bigint): Generator<RawChunk> {
      // A range without stored pages: backing content up to its end, zeros after.
      const bEnd = backing === undefined ? 0n : backing.size < to ? backing.size : to;
      for (let o = pos; o < bEnd; ) {
        const piece = backingPiece(o, bEnd - o < max ? bEnd - o : max);
        yield piece;
        o = chunkEnd(piece);
      }
      const zStart = pos > bEnd ? pos : bEnd;
      if (to > zStart) yield { kind: 'zero', offset: zStart, length: to - zStart };
    };
    for (const p of stored) {
      const at = BigInt(p) * PAGE;
      if (at > pos) yield* gap(at);
      const page = this.#pages.get(p)!;
      const n = size - at < PAGE ? Number(size - at) : ORACLE_PAGE_SIZE;
      yield page === ZERO_PAGE
        ? { kind: 'zero', offset: at, length: BigInt(n) }
        : { kind: 'data', offset: at, bytes: page.subarray(0, n) };
      pos = at + BigInt(n);
    }
    if (size > pos) yield* gap(size);
  }
}

/**
 * Writes the disk's content to a raw file at `path` (created or truncated), skipping zero runs so the
 * file is sparse where the disk is: afterwards the file is exactly `disk.size` bytes and equals
 * `disk.read(0, size)` — ready for `qemu-img compare -f raw`.
 */
export function writeRawFile(disk: RawDisk, path: string): void {
  const fd = openSync(path, 'w');
  try {
    for (const c of disk.rawChunks()) {
      if (c.kind === 'data') writeSync(fd, c.bytes, 0, c.bytes.length, Number(c.offset));
    }
    ftruncateSync(fd, Number(disk.size));
  } finally {
    closeSync(fd);
  }
}
