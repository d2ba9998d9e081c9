/**
 * Real QEMU as the second oracle, in both directions (test/qemu/qemu-forward.test.ts,
 * test/qemu/qemu-reverse.test.ts, the `qemu-forward` / `qemu-reverse` campaigns of `npm run fuzz`).
 *
 * A run is a configuration (one of QEMU_CLASSES) and a random op sequence of up to 50 ops — writes of
 * any alignment, write_zeroes with and without unmap, discards, single-cluster compressed writes,
 * snapshot create/apply/delete, resizes and flushes — described as plain data (OpSpec) and resolved
 * against the disk as it is when the op runs (so resizes do not invalidate later ops):
 *
 * - forward: the model applies it to createImage's image, closes it (closeImage) and the files
 *   (image, data file, backing chain) are stored; then QEMU judges them: `qemu-img check` clean,
 *   `qemu-img compare` with the raw oracle's file identical, `qemu-img map` equal to our mapImage,
 *   `qemu-img info` equal to our info builder and to the oracle's size and snapshot names, and
 *   `qemu-io read -P` spot checks equal to the oracle;
 * - reverse: QEMU applies the same sequence (planQemuSteps: qemu-io processes, qemu-img snapshot /
 *   resize between them) to the image `qemu-img create` made with the same options; our loader reads
 *   the result as the oracle says, our map equals qemu-img's (told the probed host allocation) and
 *   checkInvariants holds; then the model continues with a second sequence on QEMU's file and QEMU
 *   judges the mixed result (check, compare). Layout fidelity: the model runs the first sequence from
 *   the same created image with QEMU's process boundaries (freshSession) and QEMU's snapshot dates;
 *   its files are compared with QEMU's byte for byte.
 *
 * Which ops run is decided before QEMU sees them: an op the model refuses with a typed error (QEMU
 * refuses it too: compressed write over an allocated cluster, snapshots with an external data file or
 * an overflowing refcount, v2 resize with snapshots …) is left out of the sequence for everyone, as
 * is a compressed write where the model avoided QEMU 7.2's stale packing cursor (README: QEMU would
 * corrupt the image), and the one write_zeroes shape the raw oracle documents it gets wrong.
 *
 * Every failure message carries a reproduction: the configuration, the qemu-img create command
 * lines of the image and its backing chain, and the op script(s) in src/script/script.ts format.
 *
 * Cost: sequences are mostly short (lengthArb); QEMU processes are started by helper processes
 * (tool-servers.ts), at most QEMU_PROCESSES at a time, and the read-only judges of one run (check,
 * compare, map, info, qemu-io -r read) run concurrently while the JS thread does the model's side;
 * the host allocation is probed by one long-lived python3. QCOW2_QEMU_TIMING=1 makes the tests print
 * the time per phase (phaseTimes).
 */
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { SeekDataProbeServer } from '../../src/io/seek-data.ts';
import { imageBackingSource } from '../../src/model/backing.ts';
import { closeImage } from '../../src/model/close.ts';
import { createImage, type CreateOptions } from '../../src/model/create.ts';
import { hostBytes } from '../../src/model/host-file.ts';
import { freshSession, type BackingSource, type Image } from '../../src/model/image.ts';
import { qcow2ImageInfo } from '../../src/views/info.ts';
import { loadImage, storeDataFile, storeImage } from '../../src/model/load-store.ts';
import { mapImage, type HostAllocation, type MapExtent } from '../../src/model/block-status.ts';
import { opRange, type Op } from '../../src/model/ops.ts';
import { readGuest } from '../../src/model/read.ts';
import { formatScript } from '../../src/script/script.ts';
import { readSnapshots } from '../../src/model/snapshot.ts';
import { step } from '../../src/model/step.ts';
import { beginTx } from '../../src/model/tx.ts';
import { checkInvariants } from '../../src/oracle/invariants.ts';
import { RawDisk, writeRawFile } from '../../src/oracle/raw-disk.ts';
import {
  checkCounter,
  qemuImgCheck,
  qemuImgCompare,
  qemuImgCreate,
  qemuImgCreateArgs,
  qemuImgInfo,
  qemuImgMap,
  qcow2Specific,
  toBigInt,
  type QemuMapExtent,
} from '../../src/qemu/qemu-img.ts';
import { planQemuSteps, runQemuSteps, type QemuStep } from '../../src/qemu/qemu-steps.ts';
import { formatCommandLine, runTool, type ToolRunner } from '../../src/qemu/run.ts';
import { ToolServerPool } from './tool-servers.ts';
import {
  backingOps,
  backingOracle,
  backingSpots,
  configArb,
  pattern,
  type BackingSpec,
  type Config,
  type ConfigClass,
} from './model-commands.ts';
import { createOptionsOf as modelCreateOptionsOf } from './model-configs.ts';

const KiB = 1024n;
const MiB = 1024n * KiB;

// ---------------------------------------------------------------------------------------------
// Configurations

/** The configuration classes of the QEMU properties: model-commands' five plus data files and lazy refcounts. */
export type QemuClass = ConfigClass | 'data-file' | 'lazy-refcounts';

/** A configuration: model-commands' Config plus what those classes do not generate. */
export interface QemuConfig extends Config {
  /** External data file: 'plain', or 'raw' (data_file_raw=on). v3 only, never with a backing file. */
  readonly dataFile?: 'plain' | 'raw';
  /** lazy_refcounts=on (v3 only). */
  readonly lazy?: boolean;
}

/** One class, what it covers, and its share of the default runs. */
export interface QemuClassInfo {
  readonly cls: QemuClass;
  readonly title: string;
}

export const QEMU_CLASSES: readonly QemuClassInfo[] = [
  { cls: 'small-clusters', title: 'cluster_bits 9..13, refcount_bits 1..64, v2/v3, zlib/zstd, disks up to 1 GiB' },
  { cls: 'large-clusters', title: 'cluster_bits 14..21, extended L2 on/off, disks up to 1 TiB' },
  { cls: 'preallocated', title: 'preallocation=metadata on small disks' },
  { cls: 'backing', title: 'a raw backing file (shorter, equal, longer)' },
  { cls: 'backing-chain', title: 'qcow2 backing chains (1-3 images made by the model, over raw or not)' },
  { cls: 'data-file', title: 'external data file, data_file_raw on/off, lazy refcounts on/off' },
  { cls: 'lazy-refcounts', title: 'lazy_refcounts=on, any geometry, raw backing or not' },
];

/** Data files are written in full by the harness: their disks are kept at most this large. */
const DATA_FILE_MAX = 64n * MiB;

/** v3 and the extra options of the two added classes on top of a model-commands configuration. */
function toV3(c: Config): Config {
  if (c.compat === '1.1') return c;
  return { ...c, compat: '1.1' };
}

/** The configurations of class `cls` (plain data, printed in counterexamples). */
export function qemuConfigArb(cls: QemuClass): fc.Arbitrary<QemuConfig> {
  switch (cls) {
    case 'data-file':
      return fc
        .tuple(
          fc.oneof(configArb('small-clusters'), configArb('large-clusters'), configArb('preallocated')),
          fc.constantFrom<'plain' | 'raw'>('plain', 'raw'),
          fc.boolean(),
          fc.bigInt({ min: 1n, max: DATA_FILE_MAX / 512n }),
        )
        .map(([c, dataFile, lazy, sectors]) => {
          const v3 = toV3(c);
          // The data file holds the whole disk: keep it small (sizes stay multiples of 512).
          const size = v3.size <= DATA_FILE_MAX ? v3.size : sectors * 512n;
          return { ...v3, size, requestedSize: size, dataFile, ...(lazy ? { lazy: true } : {}) };
        });
    case 'lazy-refcounts':
      return fc
        .oneof(configArb('small-clusters'), configArb('large-clusters'), configArb('preallocated'), configArb('backing'))
        .map((c) => ({ ...toV3(c), lazy: true }));
    default:
      return configArb(cls);
  }
}

// ---------------------------------------------------------------------------------------------
// Op sequences, as plain data

/** Where an op lands: a hot cluster, the last cluster or anywhere; at its start, a subcluster or any byte. */
export interface Where {
  readonly base: 'hot' | 'end' | 'random';
  readonly hot: number;
  readonly frac: number;
  readonly within: 'start' | 'sub' | 'any';
  readonly sub: number;
  readonly anyFrac: number;
}

/** A length: one of the interesting ones relative to the geometry, or random. */
export interface Len {
  readonly kind: 'special' | 'subclusters' | 'small' | 'medium' | 'clusters';
  readonly k: number;
  readonly n: number;
}

export type OpSpec =
  | { readonly op: 'write'; readonly at: Where; readonly len: Len; readonly seed: number; readonly fill: boolean }
  | { readonly op: 'zero'; readonly at: Where; readonly len: Len; readonly unmap: boolean }
  | { readonly op: 'discard'; readonly at: Where; readonly len: Len }
  | { readonly op: 'compress'; readonly at: Where; readonly seed: number; readonly mode: 'runs' | 'pattern' | 'noise' }
  | { readonly op: 'snapshot'; readonly action: 'create' | 'apply' | 'delete'; readonly name: string }
  | { readonly op: 'resize'; readonly grow: boolean; readonly clusters: number; readonly sectors: number }
  | { readonly op: 'flush' };

/** One run: a configuration, its hot clusters, the sequence QEMU and the model both run, and the model's continuation. */
export interface SequenceSpec {
  readonly cfg: QemuConfig;
  readonly hot: readonly bigint[];
  readonly ops: readonly OpSpec[];
  /** Reverse only: what the model does next on QEMU's file. */
  readonly more: readonly OpSpec[];
}

const whereArb: fc.Arbitrary<Where> = fc.record({
  base: fc.constantFrom<Where['base']>('hot', 'hot', 'hot', 'hot', 'end', 'random'),
  hot: fc.nat(7),
  frac: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
  within: fc.constantFrom<Where['within']>('start', 'sub', 'any'),
  sub: fc.nat(31),
  anyFrac: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
});

const lenArb: fc.Arbitrary<Len> = fc.record({
  kind: fc.constantFrom<Len['kind']>('special', 'special', 'subclusters', 'small', 'medium', 'clusters'),
  k: fc.nat(1000),
  n: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
});

function opSpecArb(snapshots: boolean): fc.Arbitrary<OpSpec> {
  const name = fc.constantFrom('a', 'a', 'b', 'c');
  return fc.oneof(
    { weight: 7, arbitrary: fc.record({ op: fc.constant('write' as const), at: whereArb, len: lenArb, seed: fc.integer({ min: 0, max: 255 }), fill: fc.boolean() }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('zero' as const), at: whereArb, len: lenArb, unmap: fc.boolean() }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('discard' as const), at: whereArb, len: lenArb }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('compress' as const), at: whereArb, seed: fc.integer({ min: 1, max: 255 }), mode: fc.constantFrom<'runs' | 'pattern' | 'noise'>('runs', 'runs', 'pattern', 'noise') }) },
    { weight: snapshots ? 3 : 0, arbitrary: fc.record({ op: fc.constant('snapshot' as const), action: fc.constantFrom<'create' | 'apply' | 'delete'>('create', 'create', 'apply', 'delete'), name }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('resize' as const), grow: fc.boolean(), clusters: fc.nat(4), sectors: fc.nat(8) }) },
    { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
  );
}

/** Hot clusters: where most ops land (so they overlap), near backing data when there is a backing file. */
function hotArb(cfg: QemuConfig): fc.Arbitrary<bigint[]> {
  const cs = 1n << BigInt(cfg.clusterBits);
  const clusters = (cfg.size + cs - 1n) / cs;
  const options: fc.WeightedArbitrary<bigint>[] = [
    { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: clusters - 1n }) },
    { weight: 2, arbitrary: fc.constantFrom(0n, 1n % clusters, clusters - 1n, clusters / 2n) },
  ];
  if (cfg.backing !== undefined) {
    const spots = [...new Set(backingSpots(cfg.backing).filter((o) => o >= 0n && o < cfg.size).map((o) => o / cs))];
    if (spots.length > 0) options.push({ weight: 5, arbitrary: fc.constantFrom(...spots) });
  }
  return fc.array(fc.oneof(...options), { minLength: 1, maxLength: 4 });
}

/**
 * Sequence lengths from 1 to `max`, mostly short: 60 % up to max/5, 25 % up to 3·max/5, 15 % up to
 * max (for max = 50: 1–10, 11–30, 31–50; mean about 15). Every length is reached, and the long ones
 * often enough (a seventh of the runs) — what a run costs grows with its length, so the bulk of the
 * runs stay short to afford many configurations.
 */
export function lengthArb(max: number): fc.Arbitrary<number> {
  const short = Math.max(1, Math.ceil(max / 5));
  const mid = Math.max(short, Math.ceil((3 * max) / 5));
  const parts: fc.WeightedArbitrary<number>[] = [{ weight: 12, arbitrary: fc.integer({ min: 1, max: short }) }];
  if (mid > short) parts.push({ weight: 5, arbitrary: fc.integer({ min: short + 1, max: mid }) });
  if (max > mid) parts.push({ weight: 3, arbitrary: fc.integer({ min: mid + 1, max }) });
  return fc.oneof(...parts);
}

/** Exactly `n` op specs. */
function opSpecsArb(n: number, snapshots: boolean): fc.Arbitrary<OpSpec[]> {
  return fc.array(opSpecArb(snapshots), { minLength: n, maxLength: n });
}

/**
 * Runs of class `cls`: up to `maxOps` ops (lengthArb), and a continuation of up to half as many. With
 * `maxSize`, larger disks are cut down to it (a multiple of 512; the geometry and backing stay), for
 * judges that read the whole disk many times (the crash simulator).
 */
export function sequenceArb(cls: QemuClass, maxOps = 50, maxSize?: bigint): fc.Arbitrary<SequenceSpec> {
  const cap = (cfg: QemuConfig): QemuConfig => (maxSize === undefined || cfg.size <= maxSize ? cfg : { ...cfg, size: maxSize - (maxSize % 512n), requestedSize: maxSize - (maxSize % 512n) });
  return qemuConfigArb(cls).map(cap).chain((cfg) => {
    const snapshots = cfg.dataFile === undefined;
    const ops = lengthArb(maxOps).chain((n) => opSpecsArb(n, snapshots));
    const more = lengthArb(Math.max(1, Math.floor(maxOps / 2))).chain((n) => opSpecsArb(n, snapshots));
    return fc.record({ cfg: fc.constant(cfg), hot: hotArb(cfg), ops, more });
  });
}

// ---------------------------------------------------------------------------------------------
// Resolution: OpSpec → Op, against the disk as it is

interface Geo {
  readonly cs: bigint;
  readonly sc: bigint;
  readonly version: 2 | 3;
  readonly extendedL2: boolean;
}

function geoOf(cfg: QemuConfig): Geo {
  const cs = 1n << BigInt(cfg.clusterBits);
  return { cs, sc: cfg.extendedL2 ? cs / 32n : cs, version: cfg.compat === '0.10' ? 2 : 3, extendedL2: cfg.extendedL2 };
}

const WRITE_MAX = 256n * KiB;

function resolveWhere(g: Geo, hot: readonly bigint[], size: bigint, w: Where): bigint {
  const clusters = (size + g.cs - 1n) / g.cs;
  let c: bigint;
  if (w.base === 'hot' && hot.length > 0) c = hot[w.hot % hot.length]!;
  else if (w.base === 'end') c = clusters - 1n;
  else c = BigInt(Math.floor(w.frac * Number(clusters)));
  if (c >= clusters) c = c % clusters;
  const within = w.within === 'start' ? 0n : w.within === 'sub' ? (BigInt(w.sub) * g.sc) % g.cs : BigInt(Math.floor(w.anyFrac * Number(g.cs)));
  const o = c * g.cs + within;
  return o >= size ? size - 1n : o;
}

function resolveLen(g: Geo, l: Len, cap: bigint): bigint {
  let n: bigint;
  switch (l.kind) {
    case 'special': n = [g.cs, g.sc, g.cs + 1n, g.cs - 1n, g.sc + 1n, 2n * g.cs, 512n, 1n][l.k % 8]!; break;
    case 'subclusters': n = BigInt(1 + (l.k % 32)) * g.sc; break;
    case 'small': n = BigInt(1 + Math.floor(l.n * 4096)); break;
    case 'medium': n = 1n + BigInt(Math.floor(l.n * Number(3n * g.cs < cap ? 3n * g.cs : cap))); break;
    case 'clusters': n = BigInt(1 + (l.k % 16)) * g.cs; break;
  }
  return n < 1n ? 1n : n > cap ? cap : n;
}

/** Bytes for a compressed write: compressible runs, the position pattern, or noise (stored uncompressed). */
function compressData(offset: bigint, length: number, seed: number, mode: 'runs' | 'pattern' | 'noise'): Uint8Array {
  if (mode === 'pattern') return pattern(offset, length, seed);
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    if (mode === 'runs') out[i] = ((i >> 7) * seed + seed) & 0xff;
    else {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      out[i] = x & 0xff;
    }
  }
  return out;
}

/** The first op `s` stands for on a disk of `size` bytes with snapshots `names`, or undefined when it is skipped. */
function resolveOp(g: Geo, hot: readonly bigint[], size: bigint, names: readonly string[], s: OpSpec, initialSize: bigint): Op | undefined {
  switch (s.op) {
    case 'write': {
      const offset = resolveWhere(g, hot, size, s.at);
      const n = resolveLen(g, s.len, size - offset < WRITE_MAX ? size - offset : WRITE_MAX);
      const data = s.fill ? new Uint8Array(Number(n)).fill(s.seed) : pattern(offset, Number(n), s.seed);
      return { kind: 'write', offset, data };
    }
    case 'zero':
    case 'discard': {
      const offset = resolveWhere(g, hot, size, s.at);
      const cap = 64n * g.cs > WRITE_MAX ? 64n * g.cs : WRITE_MAX;
      const n = resolveLen(g, s.len, size - offset < cap ? size - offset : cap);
      return s.op === 'zero' ? { kind: 'writeZeroes', offset, length: n, unmap: s.unmap } : { kind: 'discard', offset, length: n };
    }
    case 'compress': {
      const offset = (resolveWhere(g, hot, size, s.at) / g.cs) * g.cs;
      const n = size - offset < g.cs ? size - offset : g.cs;
      return { kind: 'writeCompressed', offset, data: compressData(offset, Number(n), s.seed, s.mode) };
    }
    case 'snapshot': {
      // A create of a taken name applies it; an apply or delete of a free name creates it.
      const exists = names.includes(s.name);
      const action = s.action === 'create' ? (exists ? 'apply' : 'create') : exists ? s.action : 'create';
      return { kind: action === 'create' ? 'snapshotCreate' : action === 'apply' ? 'snapshotApply' : 'snapshotDelete', name: s.name };
    }
    case 'resize': {
      const delta = BigInt(s.clusters) * g.cs + BigInt(s.sectors) * 512n || 512n;
      let to = s.grow ? size + delta : size - delta;
      const max = initialSize * 2n + 16n * MiB;
      if (to > max) to = size - delta;
      if (to < 512n) to = size + delta <= max ? size + delta : 512n;
      to = (to / 512n) * 512n;
      if (to < 512n) to = 512n;
      return to === size ? undefined : { kind: 'resize', size: to };
    }
    case 'flush':
      return { kind: 'flush' };
  }
}

/** Whether `op` starts a new QEMU process (qemu-img snapshot / resize run on their own). */
export function isBoundary(op: Op): boolean {
  return op.kind === 'snapshotCreate' || op.kind === 'snapshotApply' || op.kind === 'snapshotDelete' || op.kind === 'resize';
}

/** QEMU's clean close and the next open: the model's closeImage, then a fresh session. */
export function closeAndReopen(img: Image): Image {
  return { ...closeImage(img).image, session: freshSession() };
}

/** What resolving a sequence produced. */
export interface Resolved {
  /** The ops that ran (every one accepted by the model), in order. */
  readonly ops: Op[];
  /** The model's image after them, closed (closeImage). */
  readonly image: Image;
  /** Refusals by the model's error code, and other skips. */
  readonly skipped: Map<string, number>;
}

/**
 * Resolves `specs` against `image` and `oracle` (mutated: it ends with the content the ops give):
 * each spec becomes an op for the disk as it is at that point, and runs on the model — with QEMU's
 * process boundaries (closeAndReopen before and after each snapshot op and resize), so the session
 * state matches QEMU's. An op the model refuses is skipped (and not applied to the oracle), as is a
 * compressed write where the model avoided QEMU's stale packing cursor and the one write_zeroes
 * shape the oracle documents it does not model (extended L2, partial last cluster compressed, zeroes
 * covering only its last subcluster). `dateOf(i)` gives the date of the i-th snapshot created.
 */
export function resolveSequence(cfg: QemuConfig, hot: readonly bigint[], start: Image, oracle: RawDisk, specs: readonly OpSpec[], dateOf: (i: number, name: string) => { dateSec: number; dateNsec: number }): Resolved {
  const g = geoOf(cfg);
  let img = start;
  const ops: Op[] = [];
  const skipped = new Map<string, number>();
  const skip = (why: string): void => void skipped.set(why, (skipped.get(why) ?? 0) + 1);
  let created = 0;
  for (const s of specs) {
    let op = resolveOp(g, hot, oracle.size, oracle.snapshotNames, s, cfg.size);
    if (op === undefined) {
      skip('no-op');
      continue;
    }
    if (op.kind === 'snapshotCreate') op = { ...op, ...dateOf(created, op.name) };
    const size = oracle.size;
    // (Conservatively whether or not the last cluster is compressed now: a snapshot may bring it back.)
    if (op.kind === 'writeZeroes' && g.extendedL2 && size % g.cs !== 0n && op.offset + op.length === size && op.offset > ((size - 1n) / g.cs) * g.cs) {
      skip('oracle-known-difference');
      continue;
    }
    const boundary = isBoundary(op);
    const before = boundary ? closeAndReopen(img) : img;
    const r = step(before, op);
    if (!r.ok) {
      skip(r.error.code);
      continue;
    }
    if (r.image.session.staleCursorAvoided > before.session.staleCursorAvoided) {
      skip('qemu-stale-cursor');
      continue;
    }
    img = boundary ? closeAndReopen(r.image) : r.image;
    oracle.apply(op);
    ops.push(op);
    if (op.kind === 'snapshotCreate') created++;
  }
  return { ops, image: closeImage(img).image, skipped };
}

/**
 * Runs `ops` (all accepted before) on `start` with QEMU's process boundaries and returns the closed
 * image. Throws when the model refuses one of them now.
 */
export function runModel(start: Image, ops: readonly Op[]): Image {
  let img = start;
  for (const [i, op] of ops.entries()) {
    const boundary = isBoundary(op);
    const r = step(boundary ? closeAndReopen(img) : img, op);
    if (!r.ok) throw new Error(`model refused op ${i} (${op.kind}) it accepted before: ${r.error.code}: ${r.error.message}`);
    img = boundary ? closeAndReopen(r.image) : r.image;
  }
  return closeImage(img).image;
}

// ---------------------------------------------------------------------------------------------
// Files: the image, its data file and its backing chain

/** qemu-img create's -o options for `cfg` (in the order qemu-img documents them). */
export function createOptionsOf(cfg: QemuConfig, backingName?: string): Record<string, string> {
  return {
    compat: cfg.compat,
    cluster_size: String(1 << cfg.clusterBits),
    refcount_bits: String(cfg.refcountBits),
    ...(cfg.extendedL2 ? { extended_l2: 'on' } : {}),
    ...(cfg.compressionType === 'zstd' ? { compression_type: 'zstd' } : {}),
    ...(cfg.preallocation === 'metadata' ? { preallocation: 'metadata' } : {}),
    ...(cfg.lazy === true ? { lazy_refcounts: 'on' } : {}),
    ...(cfg.dataFile !== undefined ? { data_file: DATA_NAME } : {}),
    ...(cfg.dataFile === 'raw' ? { data_file_raw: 'on' } : {}),
    ...(backingName !== undefined && cfg.backing !== undefined ? { backing_file: backingName, backing_fmt: cfg.backing.format } : {}),
  };
}

/** File names inside a run's directory. */
export const IMAGE_NAME = 'image.qcow2';
export const DATA_NAME = 'data.raw';
export const ORACLE_NAME = 'oracle.raw';
const backingName = (level: number, spec: BackingSpec): string => `b${level}.${spec.format}`;

/** One level of a backing chain as files: what it holds and how the model sees it. */
interface BackingLevel {
  readonly name: string;
  readonly spec: BackingSpec;
  /** The model image of a qcow2 level; undefined for raw. */
  readonly image?: Image;
  /** The content of a raw level. */
  readonly raw?: RawDisk;
}

/** Builds backing level `level` of `spec` (and those below) with the model, writes them to `dir`. */
async function writeBackingChain(dir: string, spec: BackingSpec, level: number, out: BackingLevel[]): Promise<void> {
  const name = backingName(level, spec);
  if (spec.format === 'raw') {
    const raw = backingOracle(spec);
    writeRawFile(raw, join(dir, name));
    out.push({ name, spec, raw });
    return;
  }
  if (spec.backing !== undefined) await writeBackingChain(dir, spec.backing, level + 1, out);
  let img = createImage({
    size: spec.size,
    clusterSize: 1 << spec.clusterBits,
    compat: spec.compat,
    refcountBits: spec.refcountBits,
    extendedL2: spec.extendedL2,
    compressionType: spec.compressionType,
    ...(spec.backing !== undefined ? { backingFile: backingName(level + 1, spec.backing), backingFmt: spec.backing.format } : {}),
  }).image;
  // The ops run with the lower levels attached, as QEMU opens them: whether a backing file is there,
  // and where its block status says zero (holes of the files as written, probed), decide what zero
  // writes and discards do.
  if (spec.backing !== undefined) {
    img = { ...img, backing: chainSource(out, await probe(dir, out.map((l) => l.name)))! };
  }
  for (const { op, what } of backingOps(spec)) {
    const r = step(img, op);
    if (!r.ok) throw new Error(`backing level ${level}: ${what} refused: ${r.error.message}`);
    img = r.image;
  }
  img = closeImage(img).image;
  const { backing: _attached, ...bare } = img;
  img = bare;
  writeFileSync(join(dir, name), storeImage(img));
  out.push({ name, spec, image: img });
}

/**
 * A raw file holding `disk`'s content as a backing source: reads from the disk, extents as QEMU's
 * file-posix reports them from SEEK_DATA/SEEK_HOLE (`host`): data where the file has data, zeros
 * (with an offset) in holes and in the rest of the last sector past the end of the file.
 */
export function rawFileBackingSource(disk: RawDisk, host: HostAllocation): BackingSource {
  const length = disk.size;
  const size = (length + 511n) & ~511n;
  return {
    size,
    read: (offset, n) => {
      const out = new Uint8Array(n);
      if (offset < length) {
        const m = offset + BigInt(n) <= length ? n : Number(length - offset);
        out.set(disk.read(offset, m), 0);
      }
      return out;
    },
    map: (offset, n) => {
      const end = offset + n;
      const out: MapExtent[] = [];
      const add = (from: bigint, to: bigint, data: boolean): void => {
        if (to <= from) return;
        const last = out[out.length - 1];
        if (last !== undefined && last.data === data && last.start + last.length === from) {
          out[out.length - 1] = { ...last, length: last.length + (to - from) };
        } else out.push({ start: from, length: to - from, depth: 0, present: true, zero: !data, data, offset: from });
      };
      let at = offset;
      for (const [a, b] of host.data) {
        if (at >= end) break;
        if (b <= at) continue;
        const ds = a > at ? a : at;
        if (ds >= end) break;
        add(at, ds, false);
        const de = b < end ? b : end;
        add(ds, de, true);
        at = de;
      }
      add(at, end, false);
      return out;
    },
  };
}

/** The backing chain `levels` (bottom first) as the BackingSource of the top image, told each file's allocation. */
function chainSource(levels: readonly BackingLevel[], hosts: ReadonlyMap<string, HostAllocation>): BackingSource | undefined {
  let below: BackingSource | undefined;
  for (const l of levels) {
    const host = hosts.get(l.name)!;
    if (l.raw !== undefined) below = rawFileBackingSource(l.raw, host);
    else {
      const img: Image = below !== undefined ? { ...l.image!, backing: below } : l.image!;
      below = imageBackingSource(img, { host });
    }
  }
  return below;
}

/** Counts QEMU processes. */
export interface Counter {
  qemuCalls: number;
}

/**
 * Where the time of the runs goes, by phase (summed over runs; phases of concurrent lanes overlap,
 * so the sums of asynchronous phases can exceed the elapsed time). QCOW2_QEMU_TIMING=1 makes the
 * tests print it (formatPhaseTimes).
 */
export const phaseTimes = new Map<string, { ms: number; n: number }>();

function addPhase(name: string, ms: number): void {
  const p = phaseTimes.get(name);
  if (p === undefined) phaseTimes.set(name, { ms, n: 1 });
  else {
    p.ms += ms;
    p.n++;
  }
}

/** Runs `fn` and adds its time to phase `name`. */
function timed<T>(name: string, fn: () => T): T {
  const t = performance.now();
  try {
    return fn();
  } finally {
    addPhase(name, performance.now() - t);
  }
}

/** Awaits `fn()` and adds the time until it settles to phase `name`. */
async function timedAsync<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const t = performance.now();
  try {
    return await fn();
  } finally {
    addPhase(name, performance.now() - t);
  }
}

/**
 * QEMU processes the harness runs at the same time, over all lanes (QCOW2_QEMU_PROCESSES; default:
 * the number of CPUs). More would only queue on the CPUs.
 */
export const QEMU_PROCESSES = Math.max(1, Number(process.env['QCOW2_QEMU_PROCESSES'] ?? availableParallelism()));

/** The helpers that start the QEMU processes (test/support/tool-servers.ts), one per slot. */
const tools = new ToolServerPool(QEMU_PROCESSES);

/**
 * Runs `fn` — one QEMU process, started through the runner it is given — when one of the
 * QEMU_PROCESSES helpers is free; its time goes to phase `name`.
 */
function qemuSlot<T>(name: string, fn: (runner: ToolRunner) => Promise<T>): Promise<T> {
  return tools.use((runner) => timedAsync(name, () => fn(runner)));
}

/** The phase table: name, count, total seconds, mean milliseconds; slowest first. */
export function formatPhaseTimes(): string {
  const rows = [...phaseTimes].sort((a, b) => b[1].ms - a[1].ms);
  return ['phase                              count   total s   mean ms', ...rows.map(([k, v]) => `${k.padEnd(34)} ${String(v.n).padStart(5)} ${(v.ms / 1000).toFixed(1).padStart(9)} ${(v.ms / v.n).toFixed(1).padStart(9)}`)].join('\n');
}

/** A run's directory with the backing chain written, and how to describe and rebuild it. */
export interface RunFiles {
  readonly dir: string;
  readonly levels: readonly BackingLevel[];
  /** The backing files' allocation as written (probed): what QEMU's block status sees of them. */
  readonly backingHosts: ReadonlyMap<string, HostAllocation>;
  /** The backing file name the top image refers to. */
  readonly backingName?: string;
  /** qemu-img create command lines equivalent to the files (for reproductions). */
  readonly createLines: string[];
}

/** A fresh directory with `cfg`'s backing chain written by the model (and probed). */
export async function makeRunFiles(cfg: QemuConfig): Promise<RunFiles> {
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-qemu-seq-'));
  try {
    const levels: BackingLevel[] = [];
    if (cfg.backing !== undefined) await writeBackingChain(dir, cfg.backing, 1, levels);
    const backingHosts = await probe(dir, levels.map((l) => l.name));
    const top = cfg.backing !== undefined ? backingName(1, cfg.backing) : undefined;
    const createLines = [formatCommandLine('qemu-img', qemuImgCreateArgs(IMAGE_NAME, cfg.requestedSize.toString(), createOptionsOf(cfg, top)))];
    return { dir, levels, backingHosts, ...(top !== undefined ? { backingName: top } : {}), createLines };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** The oracle of a run's starting disk. */
export function startOracle(cfg: QemuConfig): RawDisk {
  const backing = cfg.backing !== undefined ? backingOracle(cfg.backing) : undefined;
  return new RawDisk({
    size: cfg.size,
    version: cfg.compat === '0.10' ? 2 : 3,
    clusterSize: 1n << BigInt(cfg.clusterBits),
    subclusterSize: (1n << BigInt(cfg.clusterBits)) / (cfg.extendedL2 ? 32n : 1n),
    ...(backing !== undefined ? { backing } : {}),
  });
}

/** Files whose allocation QEMU's map depends on, relative to the run directory. */
function probedNames(cfg: QemuConfig, files: RunFiles): string[] {
  return [IMAGE_NAME, ...(cfg.dataFile !== undefined ? [DATA_NAME] : []), ...files.levels.map((l) => l.name)];
}

/** One long-lived SEEK_DATA probe for every sequence (src/io/seek-data.ts). */
const probeServer = new SeekDataProbeServer();

/** Stops the helper processes: the probe server and the QEMU starters (tests call it in afterAll). */
export function closeProbeServer(): void {
  probeServer.close();
  tools.close();
}

/** The allocation of `paths`, from the probe server (fails loudly when python3 cannot run). */
export async function probeAsync(paths: readonly string[]): Promise<HostAllocation[]> {
  return probeServer.probe(paths);
}

async function probe(dir: string, names: readonly string[]): Promise<Map<string, HostAllocation>> {
  const hosts = await probeAsync(names.map((n) => join(dir, n)));
  return new Map(names.map((n, i) => [n, hosts[i]!]));
}

/** QEMU's extents in the model's shape. */
export function fromQemu(e: QemuMapExtent): MapExtent {
  return {
    start: toBigInt(e.start),
    length: toBigInt(e.length),
    depth: e.depth,
    present: e.present,
    zero: e.zero,
    data: e.data,
    ...(e.offset !== undefined ? { offset: toBigInt(e.offset) } : {}),
  };
}

/**
 * qemu-img's map of the run's image and the allocation of every file at that moment (probed before
 * and after, retried until they agree: ext4 reports unwritten extents differently while dirty).
 */
async function qemuMapWithAllocation(cfg: QemuConfig, files: RunFiles, calls: Counter): Promise<{ map: MapExtent[]; hosts: Map<string, HostAllocation> }> {
  const names = probedNames(cfg, files);
  const key = (h: Map<string, HostAllocation>): string => JSON.stringify([...h], (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
  for (let attempt = 0; ; attempt++) {
    const before = await timedAsync('probe allocation', () => probe(files.dir, names));
    calls.qemuCalls++;
    const map = (await qemuSlot('qemu-img map', (runner) => qemuImgMap(IMAGE_NAME, { cwd: files.dir, runner }))).map(fromQemu);
    const after = await timedAsync('probe allocation', () => probe(files.dir, names));
    if (key(before) === key(after)) return { map, hosts: after };
    if (attempt >= 5) throw new Error('the allocation of the files kept changing while qemu-img map ran');
  }
}

const show = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `${x}n` : x));

/** The first extent where two maps differ, described. */
function mapDiff(ours: readonly MapExtent[], theirs: readonly MapExtent[]): string | undefined {
  const n = Math.max(ours.length, theirs.length);
  for (let i = 0; i < n; i++) {
    if (show(ours[i]) !== show(theirs[i])) return `extent ${i} of ${theirs.length}: qemu-img ${show(theirs[i])}, ours ${show(ours[i])}`;
  }
  return undefined;
}

/**
 * Ranges worth reading back: every op's range ± one cluster, the first two and the last cluster —
 * or the whole disk when it is small and `wholeSmallDisk` (where QEMU's own compare of the same
 * files follows, the op ranges are enough).
 */
function readRanges(cfg: QemuConfig, ops: readonly Op[], size: bigint, wholeSmallDisk: boolean): [bigint, bigint][] {
  const cs = 1n << BigInt(cfg.clusterBits);
  const out: [bigint, bigint][] = [];
  if (wholeSmallDisk && size <= 8n * MiB) return [[0n, size]];
  for (const op of ops) {
    const r = opRange(op);
    if (r === undefined) continue;
    const from = r.offset - cs < 0n ? 0n : r.offset - cs;
    const to = r.offset + r.length + cs > size ? size : r.offset + r.length + cs;
    if (from < to) out.push([from, to]);
  }
  out.push([0n, size < 2n * cs ? size : 2n * cs], [size - cs > 0n ? size - cs : 0n, size]);
  return out;
}

/** The first byte where `img` reads differently from `oracle` over `ranges`, described, or undefined. */
function compareReads(img: Image, oracle: RawDisk, ranges: readonly [bigint, bigint][]): string | undefined {
  const CHUNK = 1n << 20n;
  for (const [from, to] of ranges) {
    for (let at = from; at < to; at += CHUNK) {
      const n = Number(to - at < CHUNK ? to - at : CHUNK);
      const a = readGuest(img, at, n);
      const b = oracle.read(at, n);
      if (!Buffer.from(a).equals(Buffer.from(b))) {
        let i = 0;
        while (a[i] === b[i]) i++;
        return `guest byte ${at + BigInt(i)}: reads ${a[i]}, the oracle says ${b[i]}`;
      }
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// QEMU's judgement of files

/** One failed check: which oracle said no, and what it said. */
export interface Problem {
  readonly check: 'check' | 'compare' | 'map' | 'info' | 'read' | 'reads' | 'invariants' | 'layout' | 'qemu-run';
  readonly message: string;
}

/**
 * QEMU's verdict on the files in `files.dir` (image, data file, backing chain) whose content should
 * be `oracle`'s: `qemu-img check` clean, `qemu-img compare` with the oracle's raw file identical,
 * `qemu-img map` equal to `mapImage(image)` told the probed allocation, `qemu-img info` equal to our
 * info builder (and to the oracle's size and snapshot names, a clean dirty flag), and `qemu-io -r
 * read -P` of a few uniform ranges. The QEMU processes only read the files, so they run concurrently
 * (at most QEMU_PROCESSES at a time over all lanes). `image` is the model's view of the same files.
 * Returns every problem found.
 */
export async function qemuJudges(cfg: QemuConfig, files: RunFiles, image: Image, oracle: RawDisk, ops: readonly Op[], calls: Counter, spotSeed: number): Promise<Problem[]> {
  const problems: Problem[] = [];
  const cwd = files.dir;
  timed('write oracle file', () => writeRawFile(oracle, join(cwd, ORACLE_NAME)));
  const spots = spotChecks(oracle, ops, spotSeed);
  calls.qemuCalls += 3 + (spots.length > 0 ? 1 : 0);
  const [check, cmp, mapped, qi, read] = await Promise.all([
    qemuSlot('qemu-img check', (runner) => qemuImgCheck(IMAGE_NAME, { cwd, runner })),
    qemuSlot('qemu-img compare', (runner) => qemuImgCompare(IMAGE_NAME, ORACLE_NAME, { cwd, runner })),
    qemuMapWithAllocation(cfg, files, calls),
    qemuSlot('qemu-img info', (runner) => qemuImgInfo(IMAGE_NAME, { cwd, runner })),
    spots.length > 0
      ? qemuSlot('qemu-io read -P', (runner) => runTool('qemu-io', ['-r', '-f', 'qcow2', ...spots.flatMap((s) => ['-c', `read -q -P ${s.value} ${s.offset} ${s.length}`]), IMAGE_NAME], { cwd, runner }))
      : Promise.resolve(undefined),
  ]);
  // check
  const j = check.json;
  if (check.code !== 0 || j === undefined || j['check-errors'] !== 0 || checkCounter(j, 'corruptions') !== 0 || checkCounter(j, 'leaks') !== 0) {
    problems.push({ check: 'check', message: `qemu-img check exit ${check.code}: ${check.stdout.trim().slice(0, 600)} ${check.stderr.trim().slice(0, 1200)}` });
  }
  // compare with the oracle's raw file
  if (!cmp.identical) problems.push({ check: 'compare', message: `qemu-img compare with the oracle: ${cmp.stdout.trim()} ${cmp.stderr.trim()}` });
  // map
  const { map, hosts } = mapped;
  const withChain: Image = { ...image, ...(cfg.backing !== undefined ? { backing: chainSource(files.levels, hosts)! } : {}) };
  const ours = timed('mapImage', () => mapImage(withChain, 0n, undefined, { host: hosts.get(IMAGE_NAME)!, ...(cfg.dataFile !== undefined ? { dataFileHost: hosts.get(DATA_NAME)! } : {}) }));
  const md = mapDiff(ours, map);
  if (md !== undefined) problems.push({ check: 'map', message: `qemu-img map differs from mapImage: ${md}` });
  // info
  const mine = timed('info builder', () => qcow2ImageInfo(image, { filename: IMAGE_NAME }).info);
  const qd = qcow2Specific(qi);
  const md2 = mine.formatSpecific!.data;
  const theirs = {
    'virtual-size': toBigInt(qi['virtual-size']),
    'cluster-size': qi['cluster-size'],
    'dirty-flag': qi['dirty-flag'],
    'backing-filename': qi['backing-filename'],
    'backing-filename-format': qi['backing-filename-format'],
    snapshots: (qi.snapshots ?? []).map((s) => ({ id: s.id, name: s.name, 'vm-state-size': toBigInt(s['vm-state-size']), 'date-sec': toBigInt(s['date-sec']), 'date-nsec': s['date-nsec'] })),
    'format-specific': {
      compat: qd.compat,
      'data-file': qd['data-file'],
      'data-file-raw': qd['data-file-raw'],
      'extended-l2': qd['extended-l2'],
      'lazy-refcounts': qd['lazy-refcounts'],
      corrupt: qd.corrupt,
      'refcount-bits': qd['refcount-bits'],
      'compression-type': qd['compression-type'],
    },
  };
  const ourInfo = {
    'virtual-size': mine.virtualSize,
    'cluster-size': mine.clusterSize,
    'dirty-flag': mine.dirtyFlag,
    'backing-filename': mine.backingFilename,
    'backing-filename-format': mine.backingFilenameFormat,
    snapshots: (mine.snapshots ?? []).map((s) => ({ id: s.id, name: s.name, 'vm-state-size': s.vmStateSize, 'date-sec': s.dateSec, 'date-nsec': Number(s.dateNsec) })),
    'format-specific': {
      compat: md2.compat,
      'data-file': md2.dataFile,
      'data-file-raw': md2.dataFileRaw,
      'extended-l2': md2.extendedL2,
      'lazy-refcounts': md2.lazyRefcounts,
      corrupt: md2.corrupt,
      'refcount-bits': md2.refcountBits,
      'compression-type': md2.compressionType,
    },
  };
  if (show(ourInfo) !== show(theirs)) problems.push({ check: 'info', message: `qemu-img info ${show(theirs)}\n  ours          ${show(ourInfo)}` });
  // …and what the oracle and the configuration say, independently of our info builder.
  const expected = {
    size: oracle.size,
    names: oracle.snapshotNames,
    dirty: false,
    corrupt: cfg.compat === '1.1' ? false : undefined,
    cluster: 1 << cfg.clusterBits,
    refcountBits: cfg.refcountBits,
    compat: cfg.compat,
    lazy: cfg.compat === '1.1' ? cfg.lazy === true : undefined,
    backing: files.backingName,
  };
  const got = {
    size: theirs['virtual-size'],
    names: theirs.snapshots.map((s) => s.name),
    dirty: theirs['dirty-flag'],
    corrupt: qd.corrupt,
    cluster: theirs['cluster-size'],
    refcountBits: qd['refcount-bits'],
    compat: qd.compat,
    lazy: qd['lazy-refcounts'],
    backing: theirs['backing-filename'],
  };
  if (show(expected) !== show(got)) problems.push({ check: 'info', message: `qemu-img info ${show(got)}, expected ${show(expected)}` });
  // qemu-io read -P spot checks: uniform runs of the oracle's content.
  if (read !== undefined && (read.code !== 0 || read.stdout.includes('Pattern verification failed') || read.stderr.trim() !== '')) {
    problems.push({ check: 'read', message: `qemu-io read -P (${spots.map((s) => `${s.value}@${s.offset}+${s.length}`).join(', ')}): exit ${read.code}: ${read.stdout.trim().slice(0, 500)} ${read.stderr.trim().slice(0, 500)}` });
  }
  return problems;
}

/** Up to four uniform runs of the oracle's content (value, offset, length), at op ranges and random places. */
export function spotChecks(oracle: RawDisk, ops: readonly Op[], seed: number): { value: number; offset: bigint; length: number }[] {
  const size = oracle.size;
  const starts: bigint[] = [];
  for (const op of ops) {
    const r = opRange(op);
    if (r !== undefined && r.offset < size) starts.push(r.offset);
  }
  let x = seed >>> 0 || 1;
  const rnd = (): number => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
  const picks: bigint[] = [];
  for (let i = 0; i < 3 && starts.length > 0; i++) picks.push(starts[Math.floor(rnd() * starts.length)]!);
  picks.push(BigInt(Math.floor(rnd() * Number(size))));
  return picks.map((offset) => {
    const n = size - offset < 65536n ? Number(size - offset) : 65536;
    const b = oracle.read(offset, n);
    let len = 1;
    while (len < b.length && b[len] === b[0]) len++;
    return { value: b[0]!, offset, length: len };
  });
}

// ---------------------------------------------------------------------------------------------
// The two directions

/** What one run did (for the tables of the tests and the fuzz script). */
export interface RunReport {
  readonly problems: Problem[];
  readonly ops: number;
  readonly qemuCalls: number;
  /** Reverse only: the layout category of the sequence and whether the files were byte-identical. */
  readonly layout?: { readonly category: LayoutCategory; readonly identical: boolean; readonly difference?: string };
}

/** Layout categories: one qemu-io process without compressed writes must be identical (asserted). */
export type LayoutCategory = 'single-process' | 'single-process+compress' | 'multi-process' | 'multi-process+compress';
export const LAYOUT_CATEGORIES: readonly LayoutCategory[] = ['single-process', 'single-process+compress', 'multi-process', 'multi-process+compress'];

/** A reproduction of a run: configuration, create lines and op scripts. */
export function reproduction(spec: SequenceSpec, files: RunFiles | undefined, scripts: readonly { title: string; ops: readonly Op[] }[]): string {
  const lines = [`configuration: ${show(spec.cfg)}`];
  if (files !== undefined) {
    lines.push('qemu-img create (in one directory; backing files as written by the model from the configuration\'s backing spec):');
    for (const l of files.createLines) lines.push(`  ${l}`);
  }
  for (const s of scripts) lines.push(`${s.title} (op script, docs/op-script.md):`, formatScript(s.ops).trimEnd());
  return lines.join('\n');
}

/** The model's starting image for `cfg` (createImage) with its backing chain attached. */
function modelStart(cfg: QemuConfig, files: RunFiles): Image {
  const created = createImage(modelCreateOptionsOf(cfg, { backing: files.backingName ?? null, dataFile: DATA_NAME }));
  const image: Image = { ...created.image, ...(created.dataFile !== undefined ? { dataFile: created.dataFile } : {}) };
  const backing = cfg.backing !== undefined ? chainSource(files.levels, files.backingHosts) : undefined;
  return backing !== undefined ? { ...image, backing } : image;
}

function writeModelFiles(dir: string, img: Image): void {
  writeFileSync(join(dir, IMAGE_NAME), storeImage(img));
  const d = storeDataFile(img);
  if (d !== undefined) writeFileSync(join(dir, DATA_NAME), d);
}

const snapshotDate = (i: number): { dateSec: number; dateNsec: number } => ({ dateSec: 1_700_000_000 + i * 61, dateNsec: (i * 7919 * 1000) % 1_000_000_000 });

class ReportedError extends Error {}

/**
 * Forward: the model runs the sequence, its files are written and QEMU judges them. Returns the
 * report; throws (with the reproduction) when a check failed.
 */
export async function forwardRun(spec: SequenceSpec): Promise<RunReport> {
  const calls: Counter = { qemuCalls: 0 };
  const files = await timedAsync('backing chain files', () => makeRunFiles(spec.cfg));
  let ops: Op[] = [];
  try {
    const oracle = startOracle(spec.cfg);
    const start = modelStart(spec.cfg, files);
    const r = timed('model runs the sequence', () => resolveSequence(spec.cfg, spec.hot, start, oracle, spec.ops, (i) => snapshotDate(i)));
    ops = r.ops;
    timed('write model files', () => writeModelFiles(files.dir, r.image));
    const reads = timed('model reads vs oracle', () => compareReads(r.image, oracle, readRanges(spec.cfg, ops, oracle.size, false)));
    const problems = await qemuJudges(spec.cfg, files, r.image, oracle, ops, calls, spec.ops.length * 31 + spec.hot.length);
    if (reads !== undefined) problems.unshift({ check: 'reads', message: `the model reads differently from the oracle: ${reads}` });
    if (problems.length > 0) throw new ReportedError(`${problems.map((p) => `[${p.check}] ${p.message}`).join('\n')}\n${reproduction(spec, files, [{ title: 'the model ran', ops }])}`);
    return { problems, ops: ops.length, qemuCalls: calls.qemuCalls };
  } catch (e) {
    if (e instanceof ReportedError) throw e;
    throw new Error(`${e instanceof Error ? e.message : String(e)}\n${reproduction(spec, files, [{ title: 'the model ran', ops }])}`, { cause: e });
  } finally {
    rmSync(files.dir, { recursive: true, force: true });
  }
}

function firstDifference(a: Uint8Array, b: Uint8Array): string | undefined {
  if (a.length === b.length && Buffer.from(a).equals(Buffer.from(b))) return undefined;
  let i = 0;
  const n = Math.min(a.length, b.length);
  while (i < n && a[i] === b[i]) i++;
  return `lengths qemu ${a.length} / model ${b.length}, first difference at 0x${i.toString(16)}`;
}

/**
 * Reverse: qemu-img creates the image, QEMU runs the sequence, our loader, map and invariants read
 * its files; the model's layout from the same created image is compared byte for byte; then the
 * model continues on QEMU's file and QEMU judges the mixed result. Throws (with the reproduction)
 * when a check failed; a layout difference is reported, not thrown (the test decides).
 */
export async function reverseRun(spec: SequenceSpec): Promise<RunReport> {
  const cfg = spec.cfg;
  const calls: Counter = { qemuCalls: 0 };
  const files = await timedAsync('backing chain files', () => makeRunFiles(cfg));
  const cwd = files.dir;
  let ops: Op[] = [];
  let more: Op[] = [];
  try {
    calls.qemuCalls++;
    await qemuSlot('qemu-img create', (runner) => qemuImgCreate(IMAGE_NAME, cfg.requestedSize.toString(), createOptionsOf(cfg, files.backingName), [], 'qcow2', { cwd, runner }));
    const createdBytes = new Uint8Array(readFileSync(join(cwd, IMAGE_NAME)));
    const createdData = cfg.dataFile !== undefined ? new Uint8Array(readFileSync(join(cwd, DATA_NAME))) : undefined;
    const backing0 = cfg.backing !== undefined ? chainSource(files.levels, files.backingHosts) : undefined;
    const load = (bytes: Uint8Array, data: Uint8Array | undefined, backing: BackingSource | undefined): Image =>
      loadImage(bytes, { ...(data !== undefined ? { dataFile: data } : {}), ...(backing !== undefined ? { backing } : {}) });

    // The sequence, decided with the model on the created image. Its snapshot dates are stand-ins
    // (dates never decide which ops run); the layout comparison below uses QEMU's.
    const oracle = startOracle(cfg);
    const resolved = timed('model runs the sequence', () => resolveSequence(cfg, spec.hot, load(createdBytes, createdData, backing0), oracle, spec.ops, (i) => snapshotDate(i)));
    ops = resolved.ops;

    // QEMU runs it, process by process (reading each new snapshot's date from its file).
    const steps: QemuStep[] = planQemuSteps(ops, cfg.size);
    const dates: { dateSec: number; dateNsec: number }[] = [];
    for (const s of steps) {
      calls.qemuCalls++;
      try {
        await qemuSlot(s.tool === 'qemu-io' ? 'qemu-io runs ops' : `qemu-img ${s.action}`, (runner) => runQemuSteps(IMAGE_NAME, [s], { cwd, runner }));
      } catch (e) {
        throw new ReportedError(`[qemu-run] QEMU failed a step the model accepted: ${e instanceof Error ? e.message : String(e)}\n${reproduction(spec, files, [{ title: 'QEMU ran', ops }])}`);
      }
      if (s.tool === 'qemu-img' && s.action === 'snapshot-create') {
        const e = timed('read snapshot dates', () => readSnapshots(beginTx(loadImage(new Uint8Array(readFileSync(join(cwd, IMAGE_NAME)))))).find((t) => t.name === s.name));
        dates.push(e !== undefined ? { dateSec: e.dateSec, dateNsec: e.dateNsec } : { dateSec: 0, dateNsec: 0 });
      }
    }
    const qemuBytes = new Uint8Array(readFileSync(join(cwd, IMAGE_NAME)));
    const qemuData = cfg.dataFile !== undefined ? new Uint8Array(readFileSync(join(cwd, DATA_NAME))) : undefined;
    const problems: Problem[] = [];

    // QEMU's map of its files. (QEMU's reading of its own files is judged by the compare of the
    // mixed image at the end: the continuation changes only the ranges its ops write.)
    const { map, hosts } = await qemuMapWithAllocation(cfg, files, calls);
    const backing = cfg.backing !== undefined ? chainSource(files.levels, hosts) : undefined;
    const theirImage = timed('load QEMU image', () => load(qemuBytes, qemuData, backing));
    const reads = timed('our reads of QEMU image', () => compareReads(theirImage, oracle, readRanges(cfg, ops, oracle.size, true)));
    if (reads !== undefined) problems.push({ check: 'reads', message: `our loader reads QEMU's image differently from the oracle: ${reads}` });
    const ours = timed('mapImage', () => mapImage(theirImage, 0n, undefined, { host: hosts.get(IMAGE_NAME)!, ...(cfg.dataFile !== undefined ? { dataFileHost: hosts.get(DATA_NAME)! } : {}) }));
    const md = mapDiff(ours, map);
    if (md !== undefined) problems.push({ check: 'map', message: `mapImage of QEMU's image differs from qemu-img map: ${md}` });
    const inv = timed('checkInvariants', () => checkInvariants(qemuBytes, qemuData !== undefined ? { dataFile: qemuData } : {}));
    if (inv.length > 0) problems.push({ check: 'invariants', message: `checkInvariants on QEMU's image: ${inv.slice(0, 5).map((v) => v.message).join('; ')}` });

    // Layout: the model from the same created image, QEMU's boundaries and dates. Without snapshot
    // creates no date differs and the model's run above is that run already (same ops, same start).
    let di = 0;
    const dated = ops.map((op): Op => (op.kind === 'snapshotCreate' ? { ...op, ...dates[di++]! } : op));
    const modelImg = di === 0 ? resolved.image : timed('model reruns with QEMU dates', () => runModel(load(createdBytes, createdData, backing0), dated));
    const diff = firstDifference(qemuBytes, storeImage(modelImg));
    const dataDiff = qemuData !== undefined ? firstDifference(qemuData, storeDataFile(modelImg) ?? new Uint8Array()) : undefined;
    const multi = steps.length > 1 || steps.some((s) => s.tool === 'qemu-img');
    const compressed = ops.some((o) => o.kind === 'writeCompressed');
    const category: LayoutCategory = `${multi ? 'multi-process' : 'single-process'}${compressed ? '+compress' : ''}` as LayoutCategory;
    const difference = diff !== undefined ? `image: ${diff}` : dataDiff !== undefined ? `data file: ${dataDiff}` : undefined;

    // The model continues on QEMU's files; QEMU judges the mix.
    const cont = timed('model continues', () => resolveSequence(cfg, spec.hot, theirImage, oracle, spec.more, (i) => snapshotDate(100 + i)));
    more = cont.ops;
    timed('write model files', () => writeModelFiles(cwd, cont.image));
    timed('write oracle file', () => writeRawFile(oracle, join(cwd, ORACLE_NAME)));
    calls.qemuCalls += 2;
    const checkP = qemuSlot('qemu-img check', (runner) => qemuImgCheck(IMAGE_NAME, { cwd, runner }));
    const cmpP = qemuSlot('qemu-img compare', (runner) => qemuImgCompare(IMAGE_NAME, ORACLE_NAME, { cwd, runner }));
    const cont2 = timed('model reads vs oracle', () => compareReads(cont.image, oracle, readRanges(cfg, more, oracle.size, false)));
    if (cont2 !== undefined) problems.push({ check: 'reads', message: `the model continuing on QEMU's image reads differently from the oracle: ${cont2}` });
    const [check, cmp] = await Promise.all([checkP, cmpP]);
    const j = check.json;
    if (check.code !== 0 || j === undefined || j['check-errors'] !== 0) problems.push({ check: 'check', message: `qemu-img check of the mixed image: exit ${check.code}: ${check.stdout.trim().slice(0, 600)} ${check.stderr.trim().slice(0, 1200)}` });
    if (!cmp.identical) problems.push({ check: 'compare', message: `qemu-img compare of the mixed image with the oracle: ${cmp.stdout.trim()} ${cmp.stderr.trim()}` });

    const scripts = [{ title: 'QEMU ran', ops }, { title: 'then the model ran', ops: more }];
    if (problems.length > 0) throw new ReportedError(`${problems.map((p) => `[${p.check}] ${p.message}`).join('\n')}\n${reproduction(spec, files, scripts)}`);
    return { problems, ops: ops.length + more.length, qemuCalls: calls.qemuCalls, layout: { category, identical: difference === undefined, ...(difference !== undefined ? { difference: `${difference}\n${reproduction(spec, files, [{ title: 'QEMU and the model ran', ops }])}` } : {}) } };
  } catch (e) {
    if (e instanceof ReportedError) throw e;
    throw new Error(`${e instanceof Error ? e.stack ?? e.message : String(e)}\n${reproduction(spec, files, [{ title: 'QEMU ran', ops }, { title: 'then the model ran', ops: more }])}`, { cause: e });
  } finally {
    rmSync(files.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Running many: lanes of fast-check in parallel, and the layout table

/** Layout tally per class and category. */
export type LayoutTally = Map<string, Map<LayoutCategory, { compared: number; identical: number; examples: string[] }>>;

export function tallyLayout(t: LayoutTally, cls: string, r: RunReport): void {
  if (r.layout === undefined) return;
  let m = t.get(cls);
  if (m === undefined) t.set(cls, (m = new Map()));
  let c = m.get(r.layout.category);
  if (c === undefined) m.set(r.layout.category, (c = { compared: 0, identical: 0, examples: [] }));
  c.compared++;
  if (r.layout.identical) c.identical++;
  else if (c.examples.length < 2 && r.layout.difference !== undefined) c.examples.push(r.layout.difference);
}

/** The layout table: per class and category, identical / compared and the share. */
export function formatLayoutTable(t: LayoutTally): string {
  const rows: string[][] = [['class', ...LAYOUT_CATEGORIES, 'all']];
  const cell = (c: { compared: number; identical: number } | undefined): string =>
    c === undefined || c.compared === 0 ? '-' : `${c.identical}/${c.compared} (${((100 * c.identical) / c.compared).toFixed(0)} %)`;
  for (const [cls, m] of t) {
    const all = [...m.values()].reduce((a, c) => ({ compared: a.compared + c.compared, identical: a.identical + c.identical }), { compared: 0, identical: 0 });
    rows.push([cls, ...LAYOUT_CATEGORIES.map((k) => cell(m.get(k))), cell(all)]);
  }
  const widths = rows[0]!.map((_c, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

/** Runs `fn` over `items` with at most `concurrency` at a time; resolves to the results in order. */
export async function pool<T, R>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return out;
}

/**
 * Runs per class and direction in npm test (QCOW2_QEMU_RUNS overrides; the issue asks for at least
 * 100). Measured on the 2-core dev VM at 100 per class (700 sequences each): in a whole `npm test`
 * (6 min 46 s) forward took 1.7 min and reverse 3.9 min beside the other files; the two alone side
 * by side with other jobs holding the load average at 4-8: 5.7 min wall, 5.1 CPU-minutes
 * (QCOW2_QEMU_TIMING=1 prints where the time goes). Lanes run
 * concurrently (QCOW2_QEMU_CONCURRENCY), QEMU processes at most QEMU_PROCESSES at a time.
 */
export const DEFAULT_QEMU_RUNS = 100;
export const QEMU_CONCURRENCY = Number(process.env['QCOW2_QEMU_CONCURRENCY'] ?? 3);

/**
 * The property of one class in one direction as `lanes` independent fast-check runs with seeds
 * derived from `seed` (each failure names its lane's seed and path), run concurrently. Resolves to
 * the failures' reports (fast-check's, with seed, path and the counterexample's reproduction) and
 * calls `onRun` after every successful run.
 */
export async function runLanes(
  cls: QemuClass,
  run: (spec: SequenceSpec) => Promise<RunReport>,
  opts: { seed: number; numRuns: number; lanes: number; maxOps?: number; onRun?: (r: RunReport) => void },
): Promise<string[]> {
  const lanes = Math.max(1, Math.min(opts.lanes, opts.numRuns));
  const per = Array.from({ length: lanes }, (_v, i) => Math.floor(opts.numRuns / lanes) + (i < opts.numRuns % lanes ? 1 : 0));
  const failures: string[] = [];
  await pool(per, lanes, async (numRuns, lane) => {
    const seed = laneSeed(opts.seed, cls, lane);
    const prop = fc.asyncProperty(sequenceArb(cls, opts.maxOps), async (spec) => {
      const r = await run(spec);
      opts.onRun?.(r);
    });
    // QCOW2_QEMU_SHRINK=0 reports the first counterexample without shrinking (each shrink step runs QEMU).
    const d = await fc.check(prop, { seed, numRuns, endOnFailure: process.env['QCOW2_QEMU_SHRINK'] === '0' });
    if (d.failed) {
      const err = d.errorInstance instanceof Error ? d.errorInstance.message : String(d.errorInstance);
      failures.push(`${cls}, lane ${lane}: ${fc.defaultReportMessage(d) ?? 'failed'}\nerror: ${err}\n` +
        `replay: fc.assert(fc.asyncProperty(sequenceArb('${cls}'${opts.maxOps !== undefined ? `, ${opts.maxOps}` : ''}), …), { seed: ${d.seed}, path: '${d.counterexamplePath ?? ''}', endOnFailure: true })`);
    }
  });
  return failures;
}

/** A lane's seed: the run's seed mixed with the class name and the lane number. */
export function laneSeed(seed: number, cls: string, lane: number): number {
  let h = (seed ^ Math.imul(lane + 1, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < cls.length; i++) h = Math.imul(h ^ cls.charCodeAt(i), 0x01000193) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  return (h ^ (h >>> 13)) | 0;
}

/** hostBytes re-exported for tests that plant differences. */
export { hostBytes };
