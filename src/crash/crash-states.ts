/**
 * Crash states of a write log: what a disk may hold if the machine stops at any moment of a run.
 * Everything before the last completed flush persisted; of the operations issued after it (the
 * unflushed epoch) a disk may have persisted any subset, in any order — and, with torn writes, any
 * subset of a write's 512-byte sectors. An epoch of at most `exhaustiveUpTo` operations gets every
 * subset; a larger one gets its in-order prefixes (at most `prefixes` of them, evenly spaced) plus
 * `samples` random subsets.
 *
 * The unit a disk persists is the sector: a write persists each sector it touches whole, as the
 * writer's file held it right after the write — a write of 2 bytes carries the rest of its sector,
 * including what earlier writes of the epoch put there (the page cache, or QEMU's read-modify-write
 * of a partial sector, hands the disk the whole sector). So a later write to a sector never persists
 * without the earlier ones to the same sector.
 */
import { applyHostIO, hostFromBytes, readHost, type HostFile, type HostIO } from '../model/index.ts';
import { seededRng, type Rng } from '../corrupt/index.ts';
import type { WriteLog } from './write-log.ts';

/** The sector size of torn writes: a disk writes a 512-byte sector entirely or not at all. */
export const SECTOR_SIZE = 512;

/** How crash states are chosen. */
export interface CrashStateOptions {
  /** Epochs with at most this many operations get every subset of them (default 8: 256 states). */
  readonly exhaustiveUpTo?: number;
  /** Random subsets drawn from a larger epoch, besides its prefixes (default 32). */
  readonly samples?: number;
  /**
   * In-order prefixes of a larger epoch: all of them up to this many, else this many evenly spaced,
   * the empty and the whole epoch among them (default 64) — a snapshot of a preallocated image is
   * one epoch of thousands of refcount writes.
   */
  readonly prefixes?: number;
  /** Tear writes in the random subsets: a persisted write keeps a random subset of its sectors. */
  readonly tornWrites?: boolean;
  /** The seed of the random subsets (default 1): the same seed gives the same states. */
  readonly seed?: number;
}

/** Where a crash happened and what of the unflushed epoch persisted. */
export interface CrashPoint {
  /** Index in the host log of the epoch's first operation (0, or one past a flush): all before it persisted. */
  readonly epochStart: number;
  /** One past the epoch's last operation: the index of the flush closing it, or the log's length. */
  readonly epochEnd: number;
  /** Host-log indexes of the epoch's operations that persisted, ascending (applied in log order). */
  readonly persisted: readonly number[];
  /** Torn writes: host-log index → the 512-byte sectors of the disk that write kept (absolute sector numbers). */
  readonly torn?: ReadonlyMap<number, readonly number[]>;
  /** How the point was chosen: an in-order prefix, one of all subsets, or a random subset. */
  readonly how: 'prefix' | 'subset' | 'sampled';
}

/** A crash state: the point and the files it leaves. */
export interface CrashState {
  readonly point: CrashPoint;
  readonly image: HostFile;
  readonly data?: HostFile;
}

/** The epochs of a log: [start, end) ranges of host operations between flushes (empty ones included). */
export function epochsOf(host: readonly HostIO[]): { readonly start: number; readonly end: number }[] {
  const out: { start: number; end: number }[] = [];
  let start = 0;
  host.forEach((h, i) => {
    if (h.kind === 'flush') {
      out.push({ start, end: i });
      start = i + 1;
    }
  });
  out.push({ start, end: host.length });
  return out;
}

/** The crash points of one epoch [start, end) (see the module comment). */
function pointsOfEpoch(start: number, end: number, host: readonly HostIO[], o: Required<CrashStateOptions>, rng: Rng): CrashPoint[] {
  const m = end - start;
  const idx = Array.from({ length: m }, (_, i) => start + i);
  if (m <= o.exhaustiveUpTo) {
    const out: CrashPoint[] = [];
    // Bit i of the mask: operation start + i persisted. Mask order puts every prefix among them.
    for (let mask = 0; mask < 1 << m; mask++) {
      const persisted = idx.filter((_, i) => (mask & (1 << i)) !== 0);
      const prefix = mask === (1 << persisted.length) - 1;
      out.push({ epochStart: start, epochEnd: end, persisted, how: prefix ? 'prefix' : 'subset' });
    }
    return out;
  }
  const out: CrashPoint[] = [];
  const lengths = m + 1 <= o.prefixes ? Array.from({ length: m + 1 }, (_, k) => k) : [...new Set(Array.from({ length: o.prefixes }, (_, i) => Math.round((i * m) / (o.prefixes - 1))))];
  for (const k of lengths) out.push({ epochStart: start, epochEnd: end, persisted: idx.slice(0, k), how: 'prefix' });
  for (let s = 0; s < o.samples; s++) {
    const persisted = idx.filter(() => rng.int(2) === 0);
    let torn: Map<number, number[]> | undefined;
    if (o.tornWrites) {
      for (const i of persisted) {
        const h = host[i]!;
        if (h.kind !== 'write' || rng.int(10) >= 3) continue;
        const first = h.offset / BigInt(SECTOR_SIZE);
        const last = (h.offset + BigInt(h.bytes.length) - 1n) / BigInt(SECTOR_SIZE);
        if (last === first) continue;
        const kept: number[] = [];
        // A write spans at most a few MiB: its sector count is a safe number.
        for (let sec = first; sec <= last; sec++) if (rng.int(2) === 0) kept.push(Number(sec));
        (torn ??= new Map()).set(i, kept);
      }
    }
    out.push(torn === undefined ? { epochStart: start, epochEnd: end, persisted, how: 'sampled' } : { epochStart: start, epochEnd: end, persisted, torn, how: 'sampled' });
  }
  return out;
}

/** Every crash point of `log` under `opts`, epoch by epoch in log order. Deterministic. */
export function crashPoints(log: WriteLog, opts: CrashStateOptions = {}): CrashPoint[] {
  const o: Required<CrashStateOptions> = { exhaustiveUpTo: opts.exhaustiveUpTo ?? 8, samples: opts.samples ?? 32, prefixes: opts.prefixes ?? 64, tornWrites: opts.tornWrites ?? false, seed: opts.seed ?? 1 };
  if (!Number.isInteger(o.exhaustiveUpTo) || o.exhaustiveUpTo < 0 || o.exhaustiveUpTo > 16) throw new RangeError(`exhaustiveUpTo must be an integer in [0, 16], not ${o.exhaustiveUpTo}`);
  if (!Number.isInteger(o.prefixes) || o.prefixes < 2) throw new RangeError(`prefixes must be an integer of at least 2, not ${o.prefixes}`);
  // Crash states must be reproducible from the seed: the catalogs' seeded generator.
  const rng = seededRng(o.seed);
  return epochsOf(log.host).flatMap((e) => pointsOfEpoch(e.start, e.end, log.host, o, rng));
}

/** The files before a run: the image and (when there is one) the data file. */
interface Files {
  readonly image: HostFile;
  readonly data?: HostFile;
}

function apply(files: Files, ops: readonly HostIO[]): Files {
  const image = applyHostIO(files.image, ops, 'image');
  return files.data === undefined ? { image } : { image, data: applyHostIO(files.data, ops, 'data') };
}

/**
 * What persisting write `h` puts on the disk: each sector it touches (or only `sectors`, for a torn
 * write), whole, as `view` — the writer's files right after `h` — holds it (clipped to the file).
 */
function persistedPieces(h: Extract<HostIO, { kind: 'write' }>, view: Files, sectors?: readonly number[]): HostIO[] {
  const file = h.target === 'data' ? view.data! : view.image;
  const s = BigInt(SECTOR_SIZE);
  const first = h.offset / s;
  const last = (h.offset + BigInt(h.bytes.length) + s - 1n) / s;
  const ranges: [bigint, bigint][] = sectors === undefined ? [[first, last]] : sectors.map((x) => [BigInt(x), BigInt(x) + 1n]);
  const out: HostIO[] = [];
  for (const [a, b] of ranges) {
    const from = a * s;
    const to = b * s < file.length ? b * s : file.length;
    if (to <= from) continue;
    const bytes = readHost(file, from, Number(to - from));
    out.push(h.target === 'data' ? { kind: 'write', offset: from, bytes, target: 'data' } : { kind: 'write', offset: from, bytes });
  }
  return out;
}

/**
 * The crash states of `log` (crashPoints' points, with their files), lazily and in order: the files
 * before each epoch and the writer's view after each of its operations are built once, and the
 * persistent host files share everything a state did not change, so a state costs what its epoch
 * wrote.
 */
export function crashStates(log: WriteLog, opts: CrashStateOptions = {}): Generator<CrashState> {
  return crashStatesAt(log, crashPoints(log, opts));
}

/**
 * The crash states at `points` (points of `log`, in crashPoints' order: by epoch, ascending) — to
 * build only a sample of them.
 */
export function* crashStatesAt(log: WriteLog, points: readonly CrashPoint[]): Generator<CrashState> {
  let files: Files = log.baseData === undefined ? { image: hostFromBytes(log.base) } : { image: hostFromBytes(log.base), data: hostFromBytes(log.baseData) };
  let builtTo = 0;
  let views: Files[] = [];
  let viewsOf = -1;
  for (const point of points) {
    if (point.epochStart < builtTo) throw new RangeError(`crash points out of order: epoch ${point.epochStart} after ${builtTo}`);
    if (point.epochStart > builtTo) {
      files = apply(files, log.host.slice(builtTo, point.epochStart));
      builtTo = point.epochStart;
    }
    if (viewsOf !== point.epochStart) {
      // views[k]: the writer's files after the epoch's operations up to start + k.
      views = [];
      let v = files;
      for (let i = point.epochStart; i < point.epochEnd; i++) views.push((v = apply(v, [log.host[i]!])));
      viewsOf = point.epochStart;
    }
    const ops = point.persisted.flatMap((i) => {
      const h = log.host[i]!;
      return h.kind === 'write' ? persistedPieces(h, views[i - point.epochStart]!, point.torn?.get(i)) : [h];
    });
    const after = apply(files, ops);
    yield after.data === undefined ? { point, image: after.image } : { point, image: after.image, data: after.data };
  }
}
