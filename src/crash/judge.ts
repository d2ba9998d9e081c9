/**
 * The judgement of a crash state, by QEMU's rules and the raw-disk oracle: QEMU opens it, `qemu-img
 * check` finds no corruption (leaks are allowed; a dirty lazy-refcounts image is first repaired as a
 * writable open repairs it), every guest op a completed flush covered reads back, and every other
 * sector reads entirely as one of the states the guest went through since that flush — or, where
 * guest writes covered only part of it, as some of those writes applied in order over that flush's
 * state (reachableBySubsets).
 */
import { checkImage, type CheckResult } from '../check/index.ts';
import { isQcow2FormatError } from '../codec/index.ts';
import { openImage, openImageWithIo } from '../open/index.ts';
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY, ModelError, opRange, readGuest, readHost, type HostFile, type HostReader, type Image, type Op } from '../model/index.ts';
import type { RawDisk } from '../oracle/index.ts';
import { crashStates, SECTOR_SIZE, type CrashPoint, type CrashState, type CrashStateOptions } from './crash-states.ts';
import type { CrashRun, GuestEvent } from './write-log.ts';

/** The named ways a crash state can be wrong. */
export type ViolationKind =
  /** QEMU would refuse to open the state (our open-time validation refuses it). */
  | 'open-refused'
  /** The header's corrupt bit is set: QEMU refuses to open it for writing. */
  | 'corrupt-bit'
  /** `qemu-img check` counts corruptions or check errors (after the repair of a dirty image). */
  | 'corruption'
  /** Reading the guest disk fails (an entry pointing at garbage, compressed data that does not inflate). */
  | 'read-failed'
  /** The virtual size is none the guest saw since the last completed flush. */
  | 'size'
  /** A sector reads as it was before a flush that covered a later write of it: acknowledged data lost. */
  | 'lost-flushed-write'
  /** A sector reads as no state the guest ever saw (torn inside a sector, or foreign bytes). */
  | 'foreign-sector';

/** Every ViolationKind once (reports list them in this order). */
export const VIOLATION_KINDS: readonly ViolationKind[] = ['open-refused', 'corrupt-bit', 'corruption', 'read-failed', 'size', 'lost-flushed-write', 'foreign-sector'];

/** One thing wrong with a crash state. */
export interface Violation {
  readonly kind: ViolationKind;
  readonly message: string;
}

/**
 * QEMU's own crash windows, accepted and counted apart (docs/format/snapshots.md): between the
 * flushed refcount changes of a snapshot operation and the rewrite of the entries' COPIED flags,
 * `qemu-img check` reports `ERROR OFLAG_COPIED …` corruptions that `-r all` fixes.
 */
export type KnownWindow = 'snapshot-copied-window';

/** The verdict on one crash state. */
export interface Judgement {
  readonly violations: readonly Violation[];
  /** Set when the only corruptions are those of a known QEMU window the crash point lies in. */
  readonly known?: KnownWindow;
  /** Our check's counts on the state as QEMU would check it (after the repair of a dirty image). */
  readonly check?: { readonly corruptions: number; readonly leaks: number; readonly checkErrors: number };
  /** Whether the state was dirty and repaired on open first. */
  readonly repaired: boolean;
}

/** The guest's states through a run, from the oracle: states[0] before the first op, states[k + 1] after op k. */
export interface GuestTimeline {
  readonly run: CrashRun;
  readonly states: readonly RawDisk[];
  /** The guest ranges whose content is compared when the disk is too large to compare whole. */
  readonly ranges: readonly { readonly offset: bigint; readonly length: bigint }[];
  /** Reads of the states, kept across crash states (bounded: cleared past CACHE_BYTES). */
  readonly cache: Map<string, Uint8Array>;
}

/** The most bytes of state reads a timeline keeps. */
const CACHE_BYTES = 128 << 20;

/** stateRead, with zeros past the end of a state shorter than `at + n`. */
function stateReadPadded(t: GuestTimeline, k: number, at: bigint, n: number): Uint8Array {
  const size = t.states[k]!.size;
  if (size >= at + BigInt(n)) return stateRead(t, k, at, n);
  const out = new Uint8Array(n);
  if (size > at) out.set(stateRead(t, k, at, Number(size - at)));
  return out;
}

/** `n` bytes at `at` of state `k`, from the timeline's cache. */
function stateRead(t: GuestTimeline, k: number, at: bigint, n: number): Uint8Array {
  const key = `${k}:${at}:${n}`;
  let v = t.cache.get(key);
  if (v === undefined) {
    let kept = 0;
    for (const b of t.cache.values()) kept += b.length;
    if (kept + n > CACHE_BYTES) t.cache.clear();
    v = t.states[k]!.read(at, n);
    t.cache.set(key, v);
  }
  return v;
}

/**
 * A disk up to this size is compared whole; a larger one over the first and last COMPARED_EDGE bytes
 * of every range its ops touched (where a crash shows: the ends of requests and of clusters), so the
 * work per state stays bounded whatever ranges an op names.
 */
const WHOLE_DISK_LIMIT = 64n << 20n;
const COMPARED_EDGE = 1n << 20n;

/** The oracle's states through `run` (a failed op leaves the state as it was). */
export function guestTimeline(run: CrashRun): GuestTimeline {
  const states: RawDisk[] = [run.initial.clone()];
  let d = run.initial.clone();
  const ranges: { offset: bigint; length: bigint }[] = [];
  for (const g of run.log.guest) {
    if (g.ok) {
      d = d.clone();
      d.apply(g.op);
      const r = opRange(g.op);
      if (r !== undefined && r.length <= 2n * COMPARED_EDGE) ranges.push(r);
      else if (r !== undefined) ranges.push({ offset: r.offset, length: COMPARED_EDGE }, { offset: r.offset + r.length - COMPARED_EDGE, length: COMPARED_EDGE });
    }
    states.push(d);
  }
  return { run, states, ranges, cache: new Map() };
}

/**
 * How many guest ops are durable at `point`: every op up to the last guest flush that surely
 * completed before the crash. Only a guest flush promises durability — a write-back writer
 * acknowledges writes it has not issued yet, and its host flushes in between do not cover them. A
 * flush that issued host operations completed when its last one (its host flush) lies before the
 * epoch; one that issued none (nothing to write) completed before the next host operation was issued,
 * which is before the crash when a later operation persisted.
 */
function durableOps(guest: readonly GuestEvent[], point: CrashPoint): number {
  const lastIssued = point.persisted.length > 0 ? point.persisted[point.persisted.length - 1]! : point.epochStart - 1;
  let durable = 0;
  for (let j = 0; j < guest.length; j++) {
    const g = guest[j]!;
    if (g.start >= point.epochEnd) break;
    if (g.op.kind !== 'flush' || !g.ok) continue;
    const done = g.end > g.start ? g.end <= point.epochStart : g.end <= lastIssued;
    if (done) durable = j + 1;
  }
  return durable;
}

/** The ops that may have issued something the crash state holds: those starting before the epoch ends. */
function startedOps(guest: readonly GuestEvent[], point: CrashPoint): number {
  let k = 0;
  while (k < guest.length && guest[k]!.start < point.epochEnd) k++;
  return k;
}

function isSnapshotOp(op: Op): boolean {
  return op.kind === 'snapshotCreate' || op.kind === 'snapshotApply' || op.kind === 'snapshotDelete';
}

/**
 * Whether the crash point may cut through a snapshot op's host operations: one that is not covered by
 * a completed guest flush, started before the epoch ended, and either issued something in or after
 * this epoch or issued nothing itself (a write-back writer issues it later, at a flush).
 */
function insideSnapshotOp(guest: readonly GuestEvent[], point: CrashPoint, durable: number): boolean {
  return guest.some((g, j) => j >= durable && isSnapshotOp(g.op) && g.start < point.epochEnd && (g.end > point.epochStart || g.end === g.start));
}

function messageOf(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** A HostReader over a persistent host file. */
function readerOf(file: HostFile): HostReader {
  return { length: file.length, read: (offset, length) => readHost(file, offset, length) };
}

/** Whether `e` is one of the typed errors the model's layers throw for a bad image. */
function isTypedImageError(e: unknown): boolean {
  return e instanceof ModelError || isQcow2FormatError(e) || (e instanceof Error && (e.name === 'OpenError' || e.name === 'HostReaderError'));
}

/** Equality of two byte ranges; by 32-bit words where both are aligned (the guest compare is the judge's hot loop). */
function sameBytes(a: Uint8Array, ai: number, b: Uint8Array, bi: number, n: number): boolean {
  const pa = a.byteOffset + ai;
  const pb = b.byteOffset + bi;
  if ((pa & 3) === 0 && (pb & 3) === 0 && (n & 3) === 0) {
    const wa = new Uint32Array(a.buffer, pa, n >>> 2);
    const wb = new Uint32Array(b.buffer, pb, n >>> 2);
    for (let i = 0; i < wa.length; i++) if (wa[i] !== wb[i]) return false;
    return true;
  }
  for (let i = 0; i < n; i++) if (a[ai + i] !== b[bi + i]) return false;
  return true;
}

/**
 * Judges one crash state of `timeline.run` at `point` with our open, check and read (pure; the
 * qemu-img side is src/qemu's). Never throws for a bad state: what is wrong is a violation. Only
 * typed image errors are caught; anything else is a bug of ours and propagates.
 */
export function judgeCrashState(timeline: GuestTimeline, point: CrashPoint, files: { readonly image: HostFile; readonly data?: HostFile }): Judgement {
  const { run } = timeline;
  // Opened over readers of the persistent files: nothing is copied but what the open reads, and a
  // state of any length (a log may address any offset) is judged without materialising it.
  const bytes = readerOf(files.image);
  const dataFile = files.data !== undefined ? readerOf(files.data) : undefined;
  const load = { ...run.load, ...(dataFile !== undefined ? { dataFile } : {}) };
  const violations: Violation[] = [];

  // What QEMU would check: a dirty image is repaired by the writable open first.
  let checked: Image;
  let readable: Image;
  let repaired = false;
  try {
    const probe = openImage(bytes, { ...load, checkMode: true });
    if ((probe.header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n) {
      return { violations: [{ kind: 'corrupt-bit', message: 'the header has the corrupt bit (incompatible bit 1) set' }], repaired };
    }
    if ((probe.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) {
      readable = openImageWithIo(bytes, { ...load, writable: true }).image;
      checked = readable;
      repaired = true;
    } else {
      checked = probe;
      readable = openImage(bytes, load);
    }
  } catch (e) {
    if (!isTypedImageError(e)) throw e;
    return { violations: [{ kind: 'open-refused', message: messageOf(e) }], repaired };
  }

  const result: CheckResult = checkImage(checked);
  const check = { corruptions: result.corruptions, leaks: result.leaks, checkErrors: result.checkErrors };
  let known: KnownWindow | undefined;
  if (result.corruptions > 0 || result.checkErrors > 0 || result.failure !== undefined) {
    const bad = result.findings.filter((f) => f.kind !== 'leak');
    const copiedOnly = result.checkErrors === 0 && result.failure === undefined && bad.length > 0 && bad.every((f) => /OFLAG_COPIED/.test(f.message));
    if (copiedOnly && insideSnapshotOp(run.log.guest, point, durableOps(run.log.guest, point))) known = 'snapshot-copied-window';
    else {
      const first = bad[0]?.message ?? result.failure ?? 'check failed';
      violations.push({ kind: 'corruption', message: `check: ${result.corruptions} corruption(s), ${result.checkErrors} check error(s); first: ${first.split('\n')[0]}` });
    }
  }

  violations.push(...judgeGuest(timeline, point, readable));
  return known === undefined ? { violations, check, repaired } : { violations, known, check, repaired };
}

/** The guest-content part of the judgement (see the module comment). */
function judgeGuest(timeline: GuestTimeline, point: CrashPoint, image: Image): Violation[] {
  const { states, run } = timeline;
  const durable = durableOps(run.log.guest, point);
  const started = startedOps(run.log.guest, point);
  const candidates = states.slice(durable, started + 1);
  const since = durable === 0 ? 'the start' : `guest op ${durable - 1} (${run.log.guest[durable - 1]!.op.kind})`;
  const size = image.header.size;
  if (!candidates.some((c) => c.size === size)) {
    return [{ kind: 'size', message: `virtual size ${size} is none of ${[...new Set(candidates.map((c) => c.size))].join(', ')} (the sizes since the last completed flush)` }];
  }
  const ranges = size <= WHOLE_DISK_LIMIT ? [{ offset: 0n, length: size }] : timeline.ranges;
  const out: Violation[] = [];
  for (const r of ranges) {
    // Clip to the disk; compare in pieces of at most 1 MiB.
    const end = r.offset + r.length < size ? r.offset + r.length : size;
    for (let at = r.offset - (r.offset % BigInt(SECTOR_SIZE)); at < end; at += 1n << 20n) {
      const n = Number(end - at < 1n << 20n ? end - at : 1n << 20n);
      let got: Uint8Array;
      try {
        got = readGuest(image, at, n);
      } catch (e) {
        if (!isTypedImageError(e)) throw e;
        return [...out, { kind: 'read-failed', message: `reading ${n} bytes at guest offset ${at}: ${messageOf(e)}` }];
      }
      // A state shorter than this piece contributes what it has and zeros past its end: what a
      // later grow would expose, and what a crash inside a shrink leaves (QEMU's qcow2_co_truncate
      // discards the clusters past the new end before it writes the new size into the header).
      const views: Uint8Array[] = [];
      for (let k = started; k >= durable; k--) views.push(stateReadPadded(timeline, k, at, n));
      // Usually the whole piece is one state; sector by sector only when it is not.
      if (views.some((v) => sameBytes(got, 0, v, 0, n))) continue;
      for (let s = 0; s < n; s += SECTOR_SIZE) {
        const len = Math.min(SECTOR_SIZE, n - s);
        if (views.some((v) => sameBytes(got, s, v, s, len))) continue;
        if (reachableBySubsets(timeline, durable, started, at + BigInt(s), len, got, s)) continue;
        const sector = (at + BigInt(s)) / BigInt(SECTOR_SIZE);
        const older = states.slice(0, durable).some((st) => st.size >= at + BigInt(s + len) && sameBytes(got, s, st.read(at + BigInt(s), len), 0, len));
        out.push(older
          ? { kind: 'lost-flushed-write', message: `guest sector ${sector} reads as it was before ${since}, which a completed flush covered` }
          : { kind: 'foreign-sector', message: `guest sector ${sector} reads as no state the guest saw since ${since}` });
        return out;
      }
    }
  }
  return out;
}

/** The most distinct sector contents reachableBySubsets follows before it gives up (and the sector fails). */
const MAX_SUBSET_STATES = 4096;

/**
 * Whether `got[gotPos, gotPos + len)`, the sector at guest offset `at`, is what some subset of the
 * unflushed guest ops touching it gives when applied in order to the state the last completed flush
 * left. A guest write that covers part of a sector reaches the disk as separate host writes — its
 * bytes, and the zero or copy-on-write fill of the rest of the cluster (QEMU's handle_alloc_space and
 * perform_cow issue them separately as well) — so a crash may keep one and not the other: the sector
 * shows the write's bytes over an older state of the rest. For writes of whole sectors this adds
 * nothing to "a state the guest saw". Only writes, zero writes and discards are followed: with a
 * resize or a snapshot op among them the sector must be one of the states the guest saw.
 */
function reachableBySubsets(t: GuestTimeline, durable: number, started: number, at: bigint, len: number, got: Uint8Array, gotPos: number): boolean {
  const effects: { readonly from: number; readonly bytes: Uint8Array }[] = [];
  for (let j = durable; j < started; j++) {
    const g = t.run.log.guest[j]!;
    if (!g.ok || g.op.kind === 'flush') continue;
    const r = opRange(g.op);
    if (r === undefined) return false;
    const x = r.offset > at ? r.offset : at;
    const y = r.offset + r.length < at + BigInt(len) ? r.offset + r.length : at + BigInt(len);
    // What op j left in the part of the sector it addresses: state j + 1 there.
    if (y > x) effects.push({ from: Number(x - at), bytes: stateReadPadded(t, j + 1, x, Number(y - x)) });
  }
  if (effects.length < 2) return false; // one op: its state or the flushed one, both compared already
  const base = stateReadPadded(t, durable, at, len);
  const seen = new Map<string, Uint8Array>([[bytesKey(base), base]]);
  for (const e of effects) {
    for (const c of [...seen.values()]) {
      const next = c.slice();
      next.set(e.bytes, e.from);
      const k = bytesKey(next);
      if (seen.has(k)) continue;
      if (seen.size >= MAX_SUBSET_STATES) return false;
      seen.set(k, next);
    }
  }
  for (const c of seen.values()) if (sameBytes(got, gotPos, c, 0, len)) return true;
  return false;
}

/** `b` as a string key (one character per byte). */
function bytesKey(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 4096) s += String.fromCharCode(...b.subarray(i, i + 4096));
  return s;
}

/** What judging every crash state of a run found. */
export interface RunVerdict {
  readonly writer: string;
  /** Crash states judged. */
  readonly states: number;
  /** States with at least one violation. */
  readonly violating: number;
  /** Violations by kind (a state counts once per kind it shows). */
  readonly byKind: Readonly<Record<ViolationKind, number>>;
  /** States accepted only as a known QEMU window. */
  readonly known: number;
  /** The first violating state, to reproduce it. */
  readonly first?: { readonly point: CrashPoint; readonly violations: readonly Violation[] };
}

/**
 * Judges every crash state of `run` (crashStates with `opts`); `onState` sees each state and its
 * judgement (to cross-check it with qemu-img, or to write it out). Stops early, after the state, when
 * `onState` returns false.
 */
export function judgeRun(run: CrashRun, opts: CrashStateOptions & { readonly onState?: (state: CrashState, judgement: Judgement) => boolean | void } = {}): RunVerdict {
  const timeline = guestTimeline(run);
  const byKind = Object.fromEntries(VIOLATION_KINDS.map((k) => [k, 0])) as Record<ViolationKind, number>;
  let states = 0;
  let violating = 0;
  let known = 0;
  let first: RunVerdict['first'];
  for (const state of crashStates(run.log, opts)) {
    const j = judgeCrashState(timeline, state.point, state);
    states++;
    if (j.known !== undefined) known++;
    if (j.violations.length > 0) {
      violating++;
      for (const k of new Set(j.violations.map((v) => v.kind))) byKind[k]++;
      first ??= { point: state.point, violations: j.violations };
    }
    if (opts.onState?.(state, j) === false) break;
  }
  return first === undefined ? { writer: run.log.writer, states, violating, byKind, known } : { writer: run.log.writer, states, violating, byKind, known, first };
}
