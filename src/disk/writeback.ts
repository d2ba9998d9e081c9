/**
 * Write-back scheduling: the host I/O of many model operations, issued with few flushes and the
 * crash-safety order each operation asked for.
 *
 * Every operation's I/O comes with flush barriers where QEMU needs them (refcount increase before
 * the mapping that uses it, unmapping before the refcount decrease). Issued one operation after the
 * other, that is one or two fdatasyncs per allocating write — what the driver does by default, and
 * what QEMU does not: with cache=writeback QEMU keeps metadata in its caches and writes it out at a
 * flush, ordered by cache dependencies (qcow2_cache_set_dependency, qcow2_cache_flush_dependency).
 *
 * Here the operations' I/O is deferred and then issued in epochs, a flush between consecutive
 * epochs. Each write gets the earliest epoch that keeps:
 * 1. its own operation's barriers: a write after a barrier goes into a later epoch than every write
 *    of the same operation before that barrier;
 * 2. the order of writes to the same bytes: never an earlier epoch than an earlier write to the
 *    same page of the same file (within one epoch writes are issued in their original order, so the
 *    later one wins);
 * 3. the order around operations that change a file as a whole (a truncate, a zero or punch longer
 *    than WIDE_PAGES pages): nothing after them goes into an earlier epoch than they do, and they go
 *    into an epoch no earlier than anything before them.
 * 4. the order around freeing: a barrier marked `ordersLater` (the model's, between an unmapping and
 *    the refcount decrease that frees the clusters) keeps every write of a later operation in a later
 *    epoch than the writes before it — a later operation may write into the freed clusters at once.
 * Operations touching different pages are independent: a crash leaves each page in one of the
 * states the operations gave it in order, and every barrier an operation placed between two of its
 * writes is still a flush between them. So a run of allocating writes costs the two or three flushes
 * of one allocating write, however many there are.
 *
 * DirectWrites picks the writes that need not wait at all — guest data whose earliest epoch is
 * before everything deferred — so that, as in QEMU, data reaches the file as it is written and only
 * metadata waits for a flush.
 */
import { hostTargetOf, type HostIO } from '../model/index.ts';

/** Pages are 4 KiB, the unit the ordering is tracked in. */
const PAGE_BITS = 12n;
/** A zero or punch over more pages than this orders against everything (rule 3). */
const WIDE_PAGES = 4096n;

/**
 * The I/O of `ops` (each one operation's I/O, barriers included, in the order they ran) as epochs of
 * writes without barriers; the caller flushes between consecutive epochs. Writes keep their original
 * relative order inside an epoch. Adjacent or overlapping writes to one file that end up next to each
 * other in an epoch are merged into one write (the later bytes win).
 */
export function scheduleEpochs(ops: readonly (readonly HostIO[])[]): HostIO[][] {
  const epochs: Run[][] = [];
  /** (page << 1 | file) → the epoch of the last write to it; file 1 is the data file. */
  const lastEpoch = new Map<number, number>();
  /** No write goes into an epoch below this (rule 3). */
  let floorAll = 0;
  /** No write of a later operation goes into an epoch below this (rule 4). */
  let floorLater = 0;
  /** The highest epoch used so far. */
  let highest = -1;
  for (const io of ops) {
    // The first epoch the next write of this operation may use (rule 1), and the highest epoch
    // this operation used so far.
    let floor = Math.max(floorAll, floorLater);
    let opHigh = -1;
    let nextLater = floorLater;
    for (const op of io) {
      if (op.kind === 'flush') {
        if (opHigh >= 0) floor = Math.max(floor, opHigh + 1);
        if (op.ordersLater === true && opHigh >= 0) nextLater = Math.max(nextLater, opHigh + 1);
        continue;
      }
      const file = hostTargetOf(op) === 'data' ? 1 : 0;
      const { start, end } = extent(op);
      const firstPage = Number(start >> PAGE_BITS);
      const lastPage = end > start ? Number((end - 1n) >> PAGE_BITS) : firstPage;
      const wide = isWide(op);
      let e = Math.max(floor, floorAll);
      if (wide) {
        e = Math.max(e, highest);
        floorAll = e;
      } else {
        for (let p = firstPage; p <= lastPage; p++) e = Math.max(e, lastEpoch.get(p * 2 + file) ?? 0);
        for (let p = firstPage; p <= lastPage; p++) lastEpoch.set(p * 2 + file, e);
      }
      while (epochs.length <= e) epochs.push([]);
      append(epochs[e]!, op);
      highest = Math.max(highest, e);
      opHigh = Math.max(opHigh, e);
    }
    floorLater = nextLater;
  }
  return epochs.map((runs) => runs.map(materialize));
}

/** The byte range an operation addresses (a truncate: from its new length to the end of everything). */
function extent(op: Exclude<HostIO, { kind: 'flush' }>): { start: bigint; end: bigint } {
  switch (op.kind) {
    case 'write': return { start: op.offset, end: op.offset + BigInt(op.bytes.length) };
    case 'zero':
    case 'discard': return { start: op.offset, end: op.offset + op.length };
    case 'truncate': return { start: op.length, end: op.length };
  }
}

/** An operation of an epoch, or a run of small writes to one file that touch or overlap, merged when issued. */
type Run = HostIO | { readonly kind: 'run'; readonly target: 'image' | 'data'; start: bigint; end: bigint; readonly parts: Extract<HostIO, { kind: 'write' }>[] };

/**
 * Writes smaller than this may be merged with their neighbours: metadata entries (a 2-byte refcount,
 * an 8-byte L2 entry), not data. Merging copies every part into a fresh buffer; a copy-on-write's
 * 60 KiB is written from its own bytes instead (merging those cost a quarter of serve's time).
 */
const MERGE_BELOW = 4096;
/** A merged run grows to at most this many bytes. */
const MERGE_MAX = 1 << 20;

/** Appends `op` to an epoch, joining it to the last run when both are small writes to the same file that touch or overlap. */
function append(epoch: Run[], op: HostIO): void {
  const last = epoch[epoch.length - 1];
  if (op.kind !== 'write' || op.bytes.length >= MERGE_BELOW || last === undefined) {
    epoch.push(op);
    return;
  }
  const target = hostTargetOf(op);
  const b0 = op.offset;
  const b1 = op.offset + BigInt(op.bytes.length);
  if (last.kind === 'write' && last.bytes.length < MERGE_BELOW && hostTargetOf(last) === target) {
    const a0 = last.offset;
    const a1 = last.offset + BigInt(last.bytes.length);
    if (b0 <= a1 && b1 >= a0) {
      epoch[epoch.length - 1] = { kind: 'run', target, start: a0 < b0 ? a0 : b0, end: a1 > b1 ? a1 : b1, parts: [last, op] };
      return;
    }
  } else if (last.kind === 'run' && last.target === target && b0 <= last.end && b1 >= last.start) {
    const s = last.start < b0 ? last.start : b0;
    const t = last.end > b1 ? last.end : b1;
    if (t - s <= BigInt(MERGE_MAX)) {
      last.start = s;
      last.end = t;
      last.parts.push(op);
      return;
    }
  }
  epoch.push(op);
}

/** A run as one write (its parts applied in order: the later bytes win). */
function materialize(r: Run): HostIO {
  if (r.kind !== 'run') return r;
  const bytes = new Uint8Array(Number(r.end - r.start));
  for (const p of r.parts) bytes.set(p.bytes, Number(p.offset - r.start));
  return { kind: 'write', offset: r.start, bytes, ...(r.target === 'data' ? { target: 'data' as const } : {}) };
}

/** Writes of at least this many bytes may be issued at once (data); smaller ones wait to be merged. */
const DIRECT_MIN = 4096;

/**
 * Which writes of a write-back disk go to the backend at once: QEMU writes guest data (and
 * copy-on-write) straight to the file and keeps only metadata in its caches until a flush, so a run
 * of allocating writes costs no fdatasync until the guest asks for one. Here a write may be issued
 * before everything deferred — as if it had the earliest epoch of all, the one before the next
 * write-back's leading flush — when that epoch is one scheduleEpochs could give it:
 * - its operation placed no barrier before it (rule 1);
 * - nothing deferred touches its pages, and no other I/O of its operation does (rule 2; and the
 *   driver may then drop its pages from the model, host-file.ts absorbIssuedWrites);
 * - nothing deferred truncates or zeroes a wide range (rule 3) or ends with a freeing barrier
 *   (rule 4) — a freed cluster may be the one written, still referenced on disk;
 * - and whatever the last write-back issued has been flushed (the caller flushes first).
 * Metadata-sized writes (under DIRECT_MIN) are deferred anyway, to be merged. One instance per
 * write-back disk; `reset` once everything deferred has been issued.
 */
export class DirectWrites {
  /** (page << 1 | file) of every deferred write, zero and discard. */
  private readonly pages = new Set<number>();
  /** A deferred truncate, wide zero or freeing barrier: nothing goes early until the next write-back. */
  private blocked = false;

  /**
   * Splits one change's I/O into the writes to issue now (in order) and the rest, deferred (barriers
   * kept), and records what is deferred.
   */
  split(io: readonly HostIO[]): { readonly now: Extract<HostIO, { kind: 'write' }>[]; readonly later: HostIO[] } {
    const now: Extract<HostIO, { kind: 'write' }>[] = [];
    if (this.blocked || io.some(isWide)) {
      this.defer(io);
      return { now, later: [...io] };
    }
    // Pages every operation of this change touches, counted (a candidate's own pages count once).
    const touched = new Map<number, number>();
    for (const op of io) forPages(op, (k) => touched.set(k, (touched.get(k) ?? 0) + 1));
    const later: HostIO[] = [];
    let barrier = false;
    for (const op of io) {
      if (op.kind === 'write' && !barrier && op.bytes.length >= DIRECT_MIN && this.free(op, touched)) now.push(op);
      else {
        if (op.kind === 'flush') barrier = true;
        later.push(op);
      }
    }
    this.defer(later);
    return { now, later };
  }

  /** Everything deferred has been issued: writes may go early again. */
  reset(): void {
    this.pages.clear();
    this.blocked = false;
  }

  /** Whether no deferred I/O and no other I/O of the change touches a page of `op`. */
  private free(op: Extract<HostIO, { kind: 'write' }>, touched: ReadonlyMap<number, number>): boolean {
    let ok = true;
    forPages(op, (k) => {
      if (this.pages.has(k) || touched.get(k)! > 1) ok = false;
    });
    return ok;
  }

  private defer(io: readonly HostIO[]): void {
    for (const op of io) {
      if (op.kind === 'flush') {
        if (op.ordersLater === true) this.blocked = true;
      } else if (isWide(op)) this.blocked = true;
      else forPages(op, (k) => this.pages.add(k));
    }
  }
}

/** A truncate, or a zero or punch over more than WIDE_PAGES pages (rule 3's operations). */
function isWide(op: HostIO): boolean {
  if (op.kind === 'flush') return false;
  if (op.kind === 'truncate') return true;
  const { start, end } = extent(op);
  return end > start && ((end - 1n) >> PAGE_BITS) - (start >> PAGE_BITS) >= WIDE_PAGES;
}

/** Calls `fn` with (page << 1 | file) for each 4 KiB page of `op`, which is neither a barrier nor wide. */
function forPages(op: HostIO, fn: (key: number) => void): void {
  if (op.kind === 'flush' || op.kind === 'truncate') return;
  const file = hostTargetOf(op) === 'data' ? 1 : 0;
  const { start, end } = extent(op);
  if (end <= start) return;
  const last = Number((end - 1n) >> PAGE_BITS);
  for (let p = Number(start >> PAGE_BITS); p <= last; p++) fn(p * 2 + file);
}
