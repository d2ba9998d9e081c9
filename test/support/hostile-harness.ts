/**
 * One hostile-input case: a (mutated) qcow2 file goes through everything a user can ask of the
 * implementation — load, open (read-only, writable, check mode, no-I/O as `qemu-img info` opens),
 * info, map, a read of every cluster (bounded, see readPlan), check, and repair (leaks and all) —
 * and each stage's outcome is recorded: ok, or the typed error it threw, or an untyped one (a bug).
 *
 * The typed errors, and why these:
 * - Qcow2FormatError: a structure that cannot be decoded (src/codec/errors.ts);
 * - ModelError: an operation QEMU would fail, e.g. a corrupt entry met on a read (src/model/errors.ts);
 * - OpenError: an image QEMU 7.2 refuses to open (src/open/open.ts).
 * HostReaderError is NOT accepted: the cases read from bytes or from a correct in-memory reader, so
 * it could only mean the model asked a reader for bytes outside the file (a broken contract).
 * Anything else — TypeError, RangeError, a plain Error — is a failure.
 *
 * The stage functions are passed in (HostileSystem), so the harness does not depend on where they
 * live. Pure apart from the clock, memory and work-meter readings; runs inside the fuzzing worker
 * (hostile-worker.ts). A stage is skipped only when the stage it needs failed (e.g. no map without
 * a read-only open).
 */
import { HeaderLayout } from '../../generated/qcow2.ts';
import { workSince, workSnapshot, type WorkCounts } from '../../src/codec/work-meter.ts';
import type { HostReader } from '../../src/model/host-reader.ts';
import type { Image } from '../../src/model/image.ts';
import type { MapExtent } from '../../src/model/block-status.ts';

/** The stages, in the order they run. */
export const HOSTILE_STAGES = [
  'load',
  'open-ro',
  'open-ro-reader',
  'open-rw',
  'open-noio',
  'info',
  'map',
  'read',
  'open-check',
  'check',
  'open-check-rw',
  'repair-leaks',
  'repair-all',
] as const;
export type HostileStage = (typeof HOSTILE_STAGES)[number];

/** How an image is opened (the options of src/open/open.ts openImage the harness uses). */
export interface HostileOpenOptions {
  readonly writable?: boolean;
  readonly checkMode?: boolean;
  readonly noIo?: boolean;
  readonly dataFile?: Uint8Array;
}

/** The functions under test (the model's, in hostile-worker.ts). */
export interface HostileSystem {
  load(source: Uint8Array, dataFile?: Uint8Array): Image;
  open(source: Uint8Array | HostReader, opts: HostileOpenOptions): Image;
  info(image: Image): unknown;
  map(image: Image, offset: bigint, length: bigint): readonly MapExtent[];
  read(image: Image, offset: bigint, length: number): Uint8Array;
  check(image: Image): unknown;
  repair(image: Image, mode: 'leaks' | 'all'): unknown;
}

/** The outcome of one stage. */
export interface StageReport {
  readonly stage: HostileStage;
  readonly ms: number;
  /** 'ok', 'skipped' (an earlier stage it needs failed), or the error's key. */
  readonly outcome: string;
  /** The work the stage did (src/codec/work-meter.ts): host bytes read and written, host reads, decoded fields. */
  readonly work: WorkCounts;
  /** Set when the stage threw something that is not a typed error. */
  readonly untyped?: { readonly name: string; readonly message: string; readonly stack: string };
}

/** What one case did. */
export interface CaseReport {
  /** Bytes of the (mutated) image plus its data file: what the work is bounded by. */
  readonly fileBytes: number;
  /** The cluster size the header claims (cluster_bits 9..21), or 0 when it claims none QEMU accepts. */
  readonly clusterSize: number;
  readonly stages: readonly StageReport[];
  readonly totalMs: number;
  /** Highest (heapUsed + arrayBuffers) seen at a stage boundary, minus the value before the case. */
  readonly heapPeakBytes: number;
  /** Clusters read by the read stage, and how many of those reads threw a typed error. */
  readonly clustersRead: number;
  readonly readErrors: number;
}

/** Bounds of one case. */
export interface HostileLimits {
  /** Most clusters the read stage reads. */
  readonly maxClusters: number;
  /** Most bytes the read stage reads in all. */
  readonly maxReadBytes: number;
  /** Most clusters the map stage maps (its work is linear in them: every entry and subcluster). */
  readonly maxMapClusters: number;
}

export const DEFAULT_LIMITS: HostileLimits = { maxClusters: 256, maxReadBytes: 16 * 1024 * 1024, maxMapClusters: 2048 };

/** Clusters per window when the map stage cannot map the whole disk. */
const MAP_WINDOW_CLUSTERS = 64n;

/**
 * The guest ranges the map stage maps: the whole disk when it has at most `maxMapClusters` clusters
 * (QEMU's map, like ours, visits every entry of every allocated L2 table, so a disk of untrusted size
 * cannot be mapped whole in bounded time); otherwise the first half of the budget from offset 0 and
 * windows of MAP_WINDOW_CLUSTERS spread evenly over the rest, so every part of the disk is reached.
 */
export function mapPlan(size: bigint, clusterSize: number, limits: HostileLimits): { offset: bigint; length: bigint }[] {
  const cs = BigInt(clusterSize);
  if (size <= 0n) return [];
  const clusters = (size + cs - 1n) / cs;
  const budget = BigInt(limits.maxMapClusters);
  if (clusters <= budget) return [{ offset: 0n, length: size }];
  const head = budget / 2n;
  const out = [{ offset: 0n, length: head * cs }];
  const windows = (budget - head) / MAP_WINDOW_CLUSTERS;
  for (let k = 1n; k <= windows; k++) {
    const first = head + ((clusters - head - MAP_WINDOW_CLUSTERS) * k) / windows;
    const offset = first * cs;
    const end = offset + MAP_WINDOW_CLUSTERS * cs < size ? offset + MAP_WINDOW_CLUSTERS * cs : size;
    if (offset >= out[out.length - 1]!.offset + out[out.length - 1]!.length && end > offset) out.push({ offset, length: end - offset });
  }
  return out;
}

/** The key of a typed error (`Class:code`), or undefined when `e` is not one of the accepted classes. */
export function typedErrorKey(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  const code = (e as { code?: unknown }).code;
  if (typeof code !== 'string') return undefined;
  if (e.name === 'Qcow2FormatError' || e.name === 'ModelError' || e.name === 'OpenError') return `${e.name}:${code}`;
  return undefined;
}

/** A HostReader over `bytes` that honours the contract (exact reads inside the file, fresh arrays). */
export function bytesReader(bytes: Uint8Array): HostReader {
  return {
    length: BigInt(bytes.length),
    read(offset: bigint, length: number): Uint8Array {
      const o = Number(offset);
      if (offset < 0n || length < 0 || o + length > bytes.length) throw new RangeError(`bytesReader: read of ${length} at ${offset} outside a ${bytes.length}-byte file`);
      return bytes.slice(o, o + length);
    },
  };
}

/**
 * The guest ranges the read stage reads, one cluster (or the disk's partial last cluster) each:
 * every cluster when the disk has at most `maxClusters`; otherwise the first and last cluster of
 * every present extent of the map (or none when map failed), then cluster 0, the last cluster and
 * clusters spread evenly over the disk, until `maxClusters` or `maxReadBytes` is reached.
 */
export function readPlan(size: bigint, clusterSize: number, extents: readonly MapExtent[] | undefined, limits: HostileLimits): { offset: bigint; length: number }[] {
  const cs = BigInt(clusterSize);
  if (size <= 0n) return [];
  const clusters = (size + cs - 1n) / cs;
  const maxByBytes = BigInt(Math.max(1, Math.floor(limits.maxReadBytes / clusterSize)));
  const budget = clusters < BigInt(limits.maxClusters) && clusters <= maxByBytes ? clusters : BigInt(Math.min(limits.maxClusters, Number(maxByBytes)));
  const chosen = new Set<bigint>();
  if (clusters <= budget) for (let c = 0n; c < clusters; c++) chosen.add(c);
  else {
    const add = (c: bigint): void => {
      if (chosen.size < Number(budget) && c >= 0n && c < clusters) chosen.add(c);
    };
    add(0n);
    add(clusters - 1n);
    for (const e of extents ?? []) {
      if (!e.present) continue;
      add(e.start / cs);
      add((e.start + e.length - 1n) / cs);
    }
    const spread = budget > BigInt(chosen.size) ? budget - BigInt(chosen.size) : 0n;
    for (let k = 0n; k < spread; k++) add((clusters * k) / spread);
  }
  return [...chosen].sort((a, b) => (a < b ? -1 : 1)).map((c) => {
    const offset = c * cs;
    return { offset, length: Number(size - offset < cs ? size - offset : cs) };
  });
}

/** Bytes in use now: the V8 heap plus ArrayBuffer memory (what a mutated size field could blow up). */
function memoryInUse(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/**
 * Runs every stage on `bytes` (with `dataFile` as the external data file when the image has one) and
 * reports each outcome. Never throws for what the system under test throws: untyped errors are
 * recorded in the stage's `untyped`.
 */
export function runHostileCase(bytes: Uint8Array, dataFile: Uint8Array | undefined, system: HostileSystem, limits: HostileLimits = DEFAULT_LIMITS): CaseReport {
  const stages: StageReport[] = [];
  const base = memoryInUse();
  let peak = 0;
  const t0 = performance.now();
  const stage = <T>(name: HostileStage, fn: (() => T) | undefined): T | undefined => {
    if (fn === undefined) {
      stages.push({ stage: name, ms: 0, outcome: 'skipped', work: { hostBytes: 0, hostReads: 0, hostWritten: 0, hostZeroed: 0, decodedFields: 0 } });
      return undefined;
    }
    const w = workSnapshot();
    const s = performance.now();
    let outcome = 'ok';
    let untyped: StageReport['untyped'];
    let value: T | undefined;
    try {
      value = fn();
    } catch (e) {
      const key = typedErrorKey(e);
      if (key !== undefined) outcome = key;
      else {
        outcome = 'untyped';
        const err = e instanceof Error ? e : new Error(String(e));
        untyped = { name: err.name, message: err.message, stack: err.stack ?? '' };
      }
    }
    peak = Math.max(peak, memoryInUse() - base);
    stages.push({ stage: name, ms: performance.now() - s, outcome, work: workSince(w), ...(untyped !== undefined ? { untyped } : {}) });
    return value;
  };
  const withData = (o: HostileOpenOptions): HostileOpenOptions => (dataFile !== undefined ? { ...o, dataFile } : o);

  stage('load', () => system.load(bytes, dataFile));
  const ro = stage('open-ro', () => system.open(bytes, withData({})));
  stage('open-ro-reader', () => system.open(bytesReader(bytes), withData({})));
  stage('open-rw', () => system.open(bytes, withData({ writable: true })));
  const noIo = stage('open-noio', () => system.open(bytes, { noIo: true }));

  stage('info', noIo !== undefined ? () => system.info(noIo) : undefined);
  const extents = stage(
    'map',
    ro !== undefined ? () => mapPlan(ro.header.size, 1 << ro.header.clusterBits, limits).flatMap((r) => system.map(ro, r.offset, r.length)) : undefined,
  );
  let clustersRead = 0;
  let readErrors = 0;
  stage(
    'read',
    ro !== undefined
      ? () => {
          const plan = readPlan(ro.header.size, 1 << ro.header.clusterBits, extents, limits);
          for (const r of plan) {
            clustersRead++;
            try {
              system.read(ro, r.offset, r.length);
            } catch (e) {
              // A typed error on one cluster (a corrupt entry) does not stop the others; anything else does.
              if (typedErrorKey(e) === undefined) throw e;
              readErrors++;
            }
          }
        }
      : undefined,
  );

  const checkOpen = stage('open-check', () => system.open(bytes, withData({ checkMode: true })));
  stage('check', checkOpen !== undefined ? () => system.check(checkOpen) : undefined);
  const rw = stage('open-check-rw', () => system.open(bytes, withData({ writable: true, checkMode: true })));
  stage('repair-leaks', rw !== undefined ? () => system.repair(rw, 'leaks') : undefined);
  stage('repair-all', rw !== undefined ? () => system.repair(rw, 'all') : undefined);

  const at = HeaderLayout.clusterBits.offset;
  const clusterBits = bytes.length >= at + 4 ? new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(at) : 0;
  const clusterSize = clusterBits >= 9 && clusterBits <= 21 ? 2 ** clusterBits : 0;
  return { fileBytes: bytes.length + (dataFile?.length ?? 0), clusterSize, stages, totalMs: performance.now() - t0, heapPeakBytes: peak, clustersRead, readErrors };
}
