/**
 * Machinery of the model-based property in test/unit/model-commands.test.ts: image configurations,
 * fast-check commands over the op vocabulary (src/model/ops.ts), and the checks run after every
 * command. The system under test is a holder of the current qcow2 Image, stepped by a `StepFn`
 * (normally the model's `step`; the test also plugs in deliberately broken ones to show the property
 * can fail). The fast-check "model" is the flat raw-disk oracle (src/oracle/raw-disk.ts).
 *
 * Backing files are plain data too (BackingSpec): a raw disk, or a qcow2 image the model builds from
 * createImage and a list of ops (writes, zeroes, discards, compressed writes, snapshots), possibly
 * over its own backing — chains of up to three images. The overlay gets the chain as a BackingSource
 * that reads through the model's readGuest; the oracle gets the same chain computed with RawDisk
 * alone (`backingOracle`). Each level is compared with its oracle when it is built.
 *
 * External data files (Config.dataFile, class 'data-file') and lazy refcounts (Config.lazy, class
 * 'lazy-refcounts' and a third of the data-file runs) are part of the state: the image's data file
 * is a second HostFile, checked like the qcow2 file (purity, io replay of the ops with
 * `target: 'data'`, reload), and the dirty bit is checked against QEMU's rule (DirtyRule).
 *
 * After every command:
 * - reads of the image over the touched range widened by one cluster each side equal the oracle's
 *   (very large ranges are compared at both edges and at sampled windows inside); with data_file_raw
 *   the data file itself, read as a raw disk, equals the oracle there too;
 * - `step` was pure: the input Image is the same object with the same HostFile (and data file), the
 *   same pages maps, the same header and session, and every page of it still hashes as it did when it
 *   was created (the pages the step's io touched are re-hashed at once; every page seen in the run is
 *   re-hashed at the end of the run);
 * - `applyHostIO(previous.file, io)` gives exactly the new image's file and
 *   `applyHostIO(previous.dataFile, io, 'data')` its data file (the io list is complete and ordered;
 *   an image without a data file gets no op addressed to one), and the new header equals what the
 *   file's header bytes decode to;
 * - the header changed only as the op may change it (checkHeaderChange): features, version and
 *   geometry never; guest writes, zeroes, discards, compressed writes and flushes only the refcount
 *   table's place and the dirty bit; the dirty bit is set by a write that links new clusters into an
 *   L2 table of a lazy-refcounts image (decided from the L2 entries in the file, writeLinks), with
 *   QEMU's 8-byte header write and flush before any existing L2 table is written, is never set
 *   otherwise (write_zeroes that may fall back to a write excepted) and never cleared;
 * - on a data-file image compressed writes and snapshot create/apply/delete are refused with QEMU's
 *   errno and message and change nothing (resizes are not generated there:
 *   NOT_YET_MODELLED_OPS_BY_CONFIG);
 * - the model's virtual size equals the oracle's (only resize and snapshot apply change it);
 * - a refused op is refused with the expected code (and, for resizes, QEMU's message) and no read
 *   changes: the holder keeps the unchanged image, or the image QEMU leaves behind after a failure
 *   part-way (a grow whose zero-fill fails after the L1 table grew; a snapshot apply whose refcount
 *   update overflows after its resize, when the oracle is resized too).
 * Commands are generated up front against the initial size and placed on the current disk when they
 * run (`place`); resizes stay within cost bounds (cheapResizeSize).
 * At the end of each run: `loadImage(storeImage(image), { dataFile: storeDataFile(image) })` has the
 * same header, file and data file and reads the same on every touched range and on random ranges; and
 * the oracle agrees with both. Then `closeImage` (closeChecks): the dirty bit is clear afterwards and
 * nothing else in the header changed, its io replays, a clean image is not written; for lazy and
 * data-file images the closed image reads as the oracle and checkInvariants (with the data file) finds
 * nothing but, after a snapshot op failed on a refcount overflow, the leaks QEMU leaves too; for lazy
 * images a reload of the closed image takes a write, and a reload of the unclosed image is refused
 * with 'dirty' exactly when its dirty bit is set.
 */
import fc from 'fast-check';
import { decodeHeader, IncompatibleFeatureMask, L1_ENTRY_FIXED_SIZE, L1EntryMasks, L2EntryMasks } from '../../generated/qcow2.ts';
import { BDRV_MAX_LENGTH, INT64_MAX, QCOW_MAX_L1_SIZE } from '../../src/format/limits.ts';
import { createImage, type CreateOptions } from '../../src/model/create.ts';
import { headerStateFrom } from '../../src/model/header.ts';
import { closeImage } from '../../src/model/close.ts';
import { applyHostIO, readHost, type HostFile } from '../../src/model/host-file.ts';
import { hostTargetOf, type HostIO, type HostTarget } from '../../src/model/host-io.ts';
import type { BackingSource, HeaderState, Image } from '../../src/model/image.ts';
import { loadImage, storeDataFile, storeImage } from '../../src/model/load-store.ts';
import { opRange, type Op } from '../../src/model/ops.ts';
import { readGuest, readGuestInto } from '../../src/model/read.ts';
import { step, type StepResult } from '../../src/model/step.ts';
import { checkInvariants } from '../../src/oracle/invariants.ts';
import { RawDisk, RawDiskError } from '../../src/oracle/raw-disk.ts';

// ---------------------------------------------------------------------------------------------
// Configurations

/** A raw backing disk: its size and the patterned ranges written to it. */
export interface RawBackingSpec {
  readonly format: 'raw';
  readonly size: bigint;
  readonly writes: readonly { readonly offset: bigint; readonly length: number; readonly seed: number }[];
}

/**
 * One op of a qcow2 backing image's history (applied with the model's `step` to build the image, and
 * with RawDisk to build its expected content). Snapshot ops whose name is (not) taken at that point,
 * and compressed writes to a cluster an earlier op of the same image touched, are skipped on both
 * sides, so every op that runs must be accepted by the model.
 */
export type BackingOpSpec =
  | { readonly op: 'write'; readonly offset: bigint; readonly length: number; readonly seed: number }
  | { readonly op: 'zero'; readonly offset: bigint; readonly length: bigint; readonly unmap: boolean }
  | { readonly op: 'discard'; readonly offset: bigint; readonly length: bigint }
  | { readonly op: 'compress'; readonly offset: bigint; readonly length: number; readonly seed: number }
  | { readonly op: 'snapshot'; readonly action: 'create' | 'apply' | 'delete'; readonly name: string };

/** A qcow2 backing image made by the model: createImage, then `ops`; it may have its own backing. */
export interface Qcow2BackingSpec {
  readonly format: 'qcow2';
  readonly clusterBits: number;
  readonly refcountBits: number;
  readonly compat: '0.10' | '1.1';
  readonly extendedL2: boolean;
  /** compression_type of its compressed writes (zstd needs v3). */
  readonly compressionType: 'zlib' | 'zstd';
  /** Virtual size (a multiple of 512). */
  readonly size: bigint;
  readonly ops: readonly BackingOpSpec[];
  readonly backing?: BackingSpec;
}

/** A backing image: raw, or qcow2 (itself possibly over a backing chain). Plain data. */
export type BackingSpec = RawBackingSpec | Qcow2BackingSpec;

/** One image configuration (plain data, so fast-check prints it in counterexamples). */
export interface Config {
  readonly clusterBits: number;
  readonly refcountBits: number;
  readonly compat: '0.10' | '1.1';
  readonly extendedL2: boolean;
  readonly compressionType: 'zlib' | 'zstd';
  readonly preallocation: 'off' | 'metadata';
  /** The size passed to createImage (qemu-img rounds it up to a multiple of 512). */
  readonly requestedSize: bigint;
  /** The virtual size after rounding: what every op is generated against. */
  readonly size: bigint;
  readonly backing?: BackingSpec;
  /**
   * An external data file (v3 only): 'plain' (`data_file`) or 'raw' (`data_file` + `data_file_raw=on`,
   * which forces preallocation=metadata and excludes a backing file). Absent: none.
   */
  readonly dataFile?: 'plain' | 'raw';
  /** lazy_refcounts=on (v3 only). Absent: off. */
  readonly lazy?: boolean;
}

/**
 * Configuration classes not generated yet: createImage accepts them, and until the model implements
 * them `step` refuses guest writes with 'unsupported' (the test checks that while they are listed).
 * Add them to the generators below when the model implements them. Empty now: every option
 * createImage takes is generated — cluster sizes, refcount widths, compat, extended L2,
 * compression_type zlib and zstd, preallocation=metadata, raw and qcow2 backing files, lazy_refcounts
 * (class 'lazy-refcounts', and some 'data-file' runs), data_file and data_file_raw (class 'data-file').
 */
export const NOT_YET_MODELLED_CONFIGS: readonly Partial<CreateOptions>[] = [];

/**
 * Ops the model refuses with 'unsupported' on some configurations only (a model limitation, not
 * QEMU's): they are not generated for those configurations (commandsArb), and the test checks they
 * are still refused while listed. Remove an entry when the model implements it.
 * - resize of an image with an external data file (resize.ts: "not modelled yet"; QEMU resizes
 *   both files). Snapshot apply, the other size change, is refused by QEMU itself on such images.
 */
export const NOT_YET_MODELLED_OPS_BY_CONFIG: readonly { readonly config: Partial<CreateOptions>; readonly op: Op['kind'] }[] = [
  { config: { dataFile: 'data.raw' }, op: 'resize' },
  { config: { dataFile: 'data.raw', dataFileRaw: true }, op: 'resize' },
];

/**
 * Ops the model refuses with 'unsupported' today (step.ts `notYet`). They are deliberately NOT
 * generated; when the model implements one, add a command for it next to the others. Every op of
 * src/model/ops.ts is modelled now: write, writeZeroes, discard, writeCompressed (zlib and zstd),
 * snapshot create/apply/delete (apply resizes to the snapshot's size first), resize, flush.
 */
export const NOT_YET_MODELLED_OPS: readonly Op['kind'][] = [];

const KiB = 1024n;
const MiB = 1024n * KiB;
const GiB = 1024n * MiB;
const TiB = 1024n * GiB;

/**
 * Largest virtual size generated for a geometry: the L1 table at most 32768 entries (256 KiB), which
 * keeps createImage cheap (512-byte clusters: 1 GiB; 16 KiB clusters and up: 1 TiB).
 */
function sizeLimit(clusterBits: number, extendedL2: boolean): bigint {
  const cs = 1n << BigInt(clusterBits);
  const l2Entries = cs / (extendedL2 ? 16n : 8n);
  const byL1 = 32768n * cs * l2Entries;
  return byL1 < TiB ? byL1 : TiB;
}

/** Cluster bits, small ones weighted. */
const clusterBitsArb = (min: number, max: number): fc.Arbitrary<number> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...[9, 10, 12, 14, 16].filter((b) => b >= min && b <= max).slice(0, 3)) },
    { weight: 2, arbitrary: fc.integer({ min, max }) },
    { weight: 1, arbitrary: fc.constantFrom(...[16, 21].filter((b) => b >= min && b <= max), min) },
  );

/** Virtual sizes from tiny to 1 TiB (capped per geometry); unaligned ones included. */
const sizeArb: fc.Arbitrary<bigint> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(MiB) },
  { weight: 3, arbitrary: fc.bigInt({ min: 1n, max: 4n * MiB }) },
  { weight: 1, arbitrary: fc.bigInt({ min: 1n, max: 128n * KiB }) },
  { weight: 2, arbitrary: fc.constantFrom(64n * MiB, GiB, 64n * GiB) },
  { weight: 3, arbitrary: fc.constantFrom(TiB, TiB - 512n) },
);

export type ConfigClass = 'small-clusters' | 'large-clusters' | 'preallocated' | 'backing' | 'backing-chain' | 'data-file' | 'lazy-refcounts';

function finishConfig(c: Omit<Config, 'size' | 'requestedSize'>, wanted: bigint, unalign: number): Config {
  const limit = sizeLimit(c.clusterBits, c.extendedL2);
  let size = wanted < limit ? wanted : limit;
  size = ((size + 511n) / 512n) * 512n;
  // A requested size qemu-img rounds up: the same virtual size, not a multiple of 512 when unalign > 0.
  const requestedSize = size - BigInt(unalign % 512 < size ? unalign % 512 : 0);
  return { ...c, requestedSize, size };
}

/** A backing size relative to the image above it: equal, shorter (also tiny), or longer. */
const backingSizeArb = (above: bigint): fc.Arbitrary<bigint> =>
  fc.oneof(
    fc.constant(above),
    fc.bigInt({ min: 1n, max: above }),
    fc.bigInt({ min: 1n, max: 300_000n }),
    fc.oneof(fc.constant(above + MiB), fc.bigInt({ min: 1n, max: 64n }).map((k) => above + k * 512n)),
  );

const rawBackingArb = (above: bigint): fc.Arbitrary<RawBackingSpec> =>
  fc
    .record({
      size: backingSizeArb(above),
      writes: fc.array(
        fc.record({ at: fc.double({ min: 0, max: 1, noNaN: true }), length: fc.integer({ min: 1, max: 200_000 }), seed: fc.integer({ min: 1, max: 255 }) }),
        { minLength: 0, maxLength: 4 },
      ),
    })
    .map(({ size: bsize, writes }) => ({
      format: 'raw' as const,
      size: bsize,
      writes: writes.map((w) => {
        const offset = BigInt(Math.floor(w.at * Number(bsize - 1n)));
        const length = Number(bsize - offset < BigInt(w.length) ? bsize - offset : BigInt(w.length));
        return { offset, length, seed: w.seed };
      }),
    }));

/**
 * The ops of a qcow2 backing image of `size` bytes with clusters of `cs` and subclusters of `sc`:
 * writes (partial clusters and subclusters included), zeroes, discards, compressed writes and
 * snapshot create/apply/delete, mostly in the first 32 clusters (so they overlap each other and the
 * overlay's hot clusters, which are drawn from these ranges) and at the end of the image.
 */
function backingOpsArb(size: bigint, cs: bigint, sc: bigint): fc.Arbitrary<BackingOpSpec[]> {
  const clusters = (size + cs - 1n) / cs;
  const lowClusters = clusters < 32n ? clusters : 32n;
  const cluster = fc.oneof(
    { weight: 6, arbitrary: fc.bigInt({ min: 0n, max: lowClusters - 1n }) },
    { weight: 1, arbitrary: fc.constant(clusters - 1n) },
    { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: clusters - 1n }) },
  );
  const within = fc.oneof(
    { weight: 3, arbitrary: fc.constant(0n) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 31 }).map((k) => (BigInt(k) * sc) % cs) },
    { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: cs - 1n }) },
  );
  const offset = fc.tuple(cluster, within).map(([c, w]) => {
    const o = c * cs + w;
    return o >= size ? size - 1n : o;
  });
  const maxLen = cs * 3n < 256n * KiB ? (cs * 3n > 4096n ? cs * 3n : 4096n) : 256n * KiB;
  const length = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(cs, sc, cs + 1n, cs - 1n, sc + 1n, 2n * cs) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 32 }).map((k) => BigInt(k) * sc) },
    { weight: 2, arbitrary: fc.bigInt({ min: 1n, max: 4096n }) },
    { weight: 2, arbitrary: fc.bigInt({ min: 1n, max: maxLen }) },
    { weight: 1, arbitrary: fc.bigInt({ min: 1n, max: 16n }).map((k) => k * cs) },
  );
  const clip = (o: bigint, n: bigint): bigint => (n > size - o ? size - o : n > 256n * KiB ? 256n * KiB : n);
  const op: fc.Arbitrary<BackingOpSpec> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.tuple(offset, length, fc.integer({ min: 1, max: 255 })).map(([o, n, seed]) => ({ op: 'write' as const, offset: o, length: Number(clip(o, n)), seed })),
    },
    { weight: 2, arbitrary: fc.tuple(offset, length, fc.boolean()).map(([o, n, unmap]) => ({ op: 'zero' as const, offset: o, length: clip(o, n), unmap })) },
    { weight: 2, arbitrary: fc.tuple(offset, length).map(([o, n]) => ({ op: 'discard' as const, offset: o, length: clip(o, n) })) },
    {
      weight: 2,
      arbitrary: fc.tuple(cluster, fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 255 })).map(([c, k, seed]) => {
        const o = c * cs;
        return { op: 'compress' as const, offset: o, length: Number(size - o < BigInt(k) * cs ? size - o : BigInt(k) * cs), seed };
      }),
    },
    {
      weight: 3,
      arbitrary: fc
        .tuple(fc.constantFrom<'create' | 'apply' | 'delete'>('create', 'apply', 'apply', 'delete'), fc.constantFrom('p', 'p', 'q'))
        .map(([action, name]) => ({ op: 'snapshot' as const, action, name })),
    },
  );
  // Snapshot ops that could not run become ones that can: a create of a taken name applies it, an
  // apply or delete of a free name creates it (so the printed spec is what runs).
  return fc.array(op, { minLength: 1, maxLength: 12 }).map((ops) => {
    const names = new Set<string>();
    return ops.map((o): BackingOpSpec => {
      if (o.op !== 'snapshot') return o;
      const action = o.action === 'create' ? (names.has(o.name) ? 'apply' : 'create') : names.has(o.name) ? o.action : 'create';
      if (action === 'create') names.add(o.name);
      if (action === 'delete') names.delete(o.name);
      return action === o.action ? o : { ...o, action };
    });
  });
}

/**
 * A chain of `qcow2Levels` qcow2 backing images made by the model (each of its own geometry, v2 or
 * v3, extended L2 or not; shorter, equal or longer than the image above), optionally over a raw
 * bottom. Compression is zlib or (v3) zstd; refcount widths are at least 8 so that building a
 * backing image never hits a refcount overflow (the overlay classes cover those).
 */
function qcow2BackingArb(above: bigint, qcow2Levels: number, rawBottom: boolean): fc.Arbitrary<Qcow2BackingSpec> {
  return fc
    .record({
      clusterBits: clusterBitsArb(9, 21),
      refcountBits: fc.constantFrom(8, 16, 16, 64),
      compat: fc.constantFrom<'0.10' | '1.1'>('0.10', '1.1', '1.1'),
      extendedL2: fc.boolean(),
      zstd: fc.boolean(),
      wanted: backingSizeArb(above),
    })
    .chain((b) => {
      const v3 = b.compat === '1.1';
      const extendedL2 = v3 && b.clusterBits >= 14 && b.extendedL2;
      const limit = sizeLimit(b.clusterBits, extendedL2);
      let size = b.wanted < limit ? b.wanted : limit;
      size = ((size + 511n) / 512n) * 512n;
      const cs = 1n << BigInt(b.clusterBits);
      const compressionType = v3 && b.zstd ? ('zstd' as const) : ('zlib' as const);
      const geometry = { clusterBits: b.clusterBits, refcountBits: v3 ? b.refcountBits : 16, compat: b.compat, extendedL2, compressionType, size };
      const lower: fc.Arbitrary<BackingSpec | undefined> = qcow2Levels > 1
        ? qcow2BackingArb(size, qcow2Levels - 1, rawBottom)
        : rawBottom ? rawBackingArb(size) : fc.constant(undefined);
      return fc.tuple(backingOpsArb(size, cs, extendedL2 ? cs / 32n : cs), lower).map(([ops, backing]): Qcow2BackingSpec => ({
        format: 'qcow2',
        ...geometry,
        ops,
        ...(backing !== undefined ? { backing } : {}),
      }));
    });
}

/** Backing chains below the overlay: 1 to 3 images, qcow2 over qcow2 over raw and the other mixes. */
const backingChainArb = (above: bigint): fc.Arbitrary<Qcow2BackingSpec> =>
  fc
    .constantFrom<[number, boolean]>([1, false], [1, true], [2, false], [2, true], [2, true], [3, false])
    .chain(([levels, raw]) => qcow2BackingArb(above, levels, raw));

/** Configurations of one class; together the classes cover everything the model supports today. */
export function configArb(cls: ConfigClass): fc.Arbitrary<Config> {
  const base = (minBits: number, maxBits: number) =>
    fc.record({
      clusterBits: clusterBitsArb(minBits, maxBits),
      refcountBits: fc.constantFrom(1, 2, 4, 8, 16, 32, 64),
      compat: fc.constantFrom<'0.10' | '1.1'>('0.10', '1.1', '1.1'),
      extendedL2: fc.boolean(),
      zstd: fc.boolean(),
      wanted: sizeArb,
      unalign: fc.nat(511),
    });
  const shape = (b: { clusterBits: number; refcountBits: number; compat: '0.10' | '1.1'; extendedL2: boolean; zstd: boolean }) => {
    const v3 = b.compat === '1.1';
    return {
      clusterBits: b.clusterBits,
      // v2 has 16-bit refcounts only; extended L2 needs v3 and clusters of at least 16 KiB.
      refcountBits: v3 ? b.refcountBits : 16,
      compat: b.compat,
      extendedL2: v3 && b.clusterBits >= 14 && b.extendedL2,
      compressionType: v3 && b.zstd ? ('zstd' as const) : ('zlib' as const),
    };
  };
  switch (cls) {
    case 'small-clusters':
      return base(9, 13).map((b) => finishConfig({ ...shape(b), preallocation: 'off' }, b.wanted, b.unalign));
    case 'large-clusters':
      return base(14, 21).map((b) => finishConfig({ ...shape(b), preallocation: 'off' }, b.wanted, b.unalign));
    case 'preallocated':
      // preallocation=metadata maps every cluster up front: small disks only (the file is the disk).
      return fc
        .tuple(base(9, 21), fc.oneof(fc.constant(MiB), fc.bigInt({ min: 1n, max: 4n * MiB })))
        .map(([b, wanted]) => finishConfig({ ...shape(b), preallocation: 'metadata' }, wanted, b.unalign));
    case 'backing':
    case 'backing-chain':
      return base(9, 21)
        .chain((b) => {
          const c = finishConfig({ ...shape(b), preallocation: 'off' }, b.wanted, b.unalign);
          const backingArb: fc.Arbitrary<BackingSpec> = cls === 'backing' ? rawBackingArb(c.size) : backingChainArb(c.size);
          // Backing + preallocation is allowed with extended L2 only (qemu-img).
          return fc.tuple(backingArb, fc.boolean()).map(([backing, prealloc]) => {
            const pre = prealloc && c.extendedL2 && c.size <= 4n * MiB;
            return { ...c, preallocation: pre ? ('metadata' as const) : ('off' as const), backing };
          });
        });
    case 'data-file':
      // v3 with an external data file, plain or data_file_raw (which preallocates every cluster and
      // excludes a backing file); plain ones also with preallocation=metadata, a raw backing file or a
      // qcow2 backing chain; a third of them with lazy refcounts. The data file holds the whole disk
      // (stored whole at the end of a run), so disks stay small (dataFileSizeArb).
      return fc
        .record({
          b: v3Base(9, 21),
          raw: fc.boolean(),
          lazy: fc.constantFrom(false, false, true),
          backing: fc.constantFrom<'none' | 'raw' | 'qcow2'>('none', 'none', 'raw', 'qcow2'),
          prealloc: fc.boolean(),
        })
        .chain(({ b, raw, lazy, backing, prealloc }) =>
          dataFileSizeArb(raw).chain((wanted) => {
            const c = finishConfig({ ...shape(b), preallocation: 'off' }, wanted, b.unalign);
            const withBacking = !raw && backing !== 'none';
            // Backing + preallocation is allowed with extended L2 only (qemu-img).
            const pre = raw || (prealloc && c.size <= 4n * MiB && (!withBacking || c.extendedL2));
            const cfg: Config = { ...c, preallocation: pre ? 'metadata' : 'off', dataFile: raw ? 'raw' : 'plain', ...(lazy ? { lazy: true } : {}) };
            if (!withBacking) return fc.constant(cfg);
            return (backing === 'raw' ? rawBackingArb(c.size) : backingChainArb(c.size)).map((bk): Config => ({ ...cfg, backing: bk }));
          }),
        );
    case 'lazy-refcounts':
      // v3 with lazy_refcounts=on, otherwise the other classes' range: any geometry, disks up to
      // 1 TiB, preallocation=metadata on small disks, raw backing files and qcow2 backing chains.
      // A third of them preallocated (small disks): writes into preallocated clusters are in place
      // and must leave the image clean.
      return fc
        .record({
          b: v3Base(9, 21),
          wanted: sizeArb,
          small: fc.oneof(fc.constant(MiB), fc.bigInt({ min: 1n, max: 4n * MiB })),
          backing: fc.constantFrom<'none' | 'raw' | 'qcow2'>('none', 'none', 'raw', 'qcow2'),
          prealloc: fc.constantFrom(false, false, true),
        })
        .chain(({ b, wanted, small, backing, prealloc }) => {
          const c = finishConfig({ ...shape(b), preallocation: 'off' }, prealloc ? small : wanted, b.unalign);
          const pre = prealloc && (backing === 'none' || c.extendedL2);
          const cfg: Config = { ...c, preallocation: pre ? 'metadata' : 'off', lazy: true };
          if (backing === 'none') return fc.constant(cfg);
          return (backing === 'raw' ? rawBackingArb(c.size) : backingChainArb(c.size)).map((bk): Config => ({ ...cfg, backing: bk }));
        });
  }
}

/** The geometry of a version 3 configuration (for the data-file and lazy-refcounts classes). */
function v3Base(minBits: number, maxBits: number) {
  return fc.record({
    clusterBits: clusterBitsArb(minBits, maxBits),
    refcountBits: fc.constantFrom(1, 2, 4, 8, 16, 32, 64),
    compat: fc.constant<'0.10' | '1.1'>('1.1'),
    extendedL2: fc.boolean(),
    zstd: fc.boolean(),
    unalign: fc.nat(511),
  });
}

/**
 * Virtual sizes of data-file images: the data file is as long as the disk and is stored whole at the
 * end of a run, and data_file_raw preallocates every cluster, so at most 4 MiB with data_file_raw and
 * 64 MiB without (tiny and unaligned ones included).
 */
function dataFileSizeArb(raw: boolean): fc.Arbitrary<bigint> {
  const opts: fc.WeightedArbitrary<bigint>[] = [
    { weight: 3, arbitrary: fc.constant(MiB) },
    { weight: 4, arbitrary: fc.bigInt({ min: 1n, max: 4n * MiB }) },
    { weight: 1, arbitrary: fc.bigInt({ min: 1n, max: 128n * KiB }) },
  ];
  if (!raw) opts.push({ weight: 1, arbitrary: fc.constantFrom(16n * MiB, 64n * MiB - 512n) });
  return fc.oneof(...opts);
}

// ---------------------------------------------------------------------------------------------
// Data and geometry helpers

/** Deterministic, position-dependent bytes (so a misplaced or shifted write shows). */
export function pattern(offset: bigint, length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  if (seed === 0) return out; // all zeros: a write of zeros is still a write
  const base = Number(offset % 65521n);
  for (let i = 0; i < length; i++) {
    const p = base + i;
    out[i] = (seed * 131 + p * 7 + (p >>> 9) * 29) & 0xff || seed;
  }
  return out;
}

// ---- backing images ---------------------------------------------------------------------------

/**
 * The ops of a qcow2 backing spec that run, decided from the spec alone: a snapshot op runs only when
 * its name is free (create) or taken (apply, delete) at that point, and a compressed write only when
 * no earlier write, zero or compressed write of this image touched one of its clusters (QEMU refuses
 * to compress over an allocated cluster). Both the model and the oracle apply exactly these.
 */
export function backingOps(spec: Qcow2BackingSpec): { readonly op: Op; readonly what: string }[] {
  const cs = 1n << BigInt(spec.clusterBits);
  const names = new Set<string>();
  const touched = new Set<bigint>();
  const touch = (o: bigint, n: bigint): void => {
    for (let c = o / cs; c * cs < o + n; c++) touched.add(c);
  };
  const out: { op: Op; what: string }[] = [];
  for (const o of spec.ops) {
    switch (o.op) {
      case 'write':
        touch(o.offset, BigInt(o.length));
        out.push({ op: { kind: 'write', offset: o.offset, data: pattern(o.offset, o.length, o.seed) }, what: `write(${o.offset}, ${o.length}, seed ${o.seed})` });
        break;
      case 'zero':
        touch(o.offset, o.length);
        out.push({ op: { kind: 'writeZeroes', offset: o.offset, length: o.length, unmap: o.unmap }, what: `zero(${o.offset}, ${o.length}${o.unmap ? ', unmap' : ''})` });
        break;
      case 'discard':
        out.push({ op: { kind: 'discard', offset: o.offset, length: o.length }, what: `discard(${o.offset}, ${o.length})` });
        break;
      case 'compress': {
        let free = true;
        for (let c = o.offset / cs; c * cs < o.offset + BigInt(o.length); c++) if (touched.has(c)) free = false;
        if (!free) break;
        touch(o.offset, BigInt(o.length));
        out.push({ op: { kind: 'writeCompressed', offset: o.offset, data: compressData(o.offset, o.length, o.seed, 'runs') }, what: `compress(${o.offset}, ${o.length}, seed ${o.seed})` });
        break;
      }
      case 'snapshot': {
        const exists = names.has(o.name);
        if (o.action === 'create' ? exists : !exists) break;
        if (o.action === 'create') names.add(o.name);
        if (o.action === 'delete') names.delete(o.name);
        const kind = o.action === 'create' ? 'snapshotCreate' : o.action === 'apply' ? 'snapshotApply' : 'snapshotDelete';
        out.push({ op: { kind, name: o.name }, what: `snapshot ${o.action} ${o.name}` });
        break;
      }
    }
  }
  return out;
}

/**
 * A fresh raw-disk oracle for a qcow2 geometry (version, cluster and subcluster size decide how
 * discard and zero-fill behave) over the expected content of its backing image, if any.
 */
function emptyOracle(
  g: { readonly size: bigint; readonly compat: '0.10' | '1.1'; readonly clusterBits: number; readonly extendedL2: boolean },
  backing: RawDisk | undefined,
): RawDisk {
  return new RawDisk({
    size: g.size,
    version: g.compat === '0.10' ? 2 : 3,
    clusterSize: 1n << BigInt(g.clusterBits),
    subclusterSize: (1n << BigInt(g.clusterBits)) / (g.extendedL2 ? 32n : 1n),
    ...(backing !== undefined ? { backing } : {}),
  });
}

/**
 * The expected content of a backing chain, computed with RawDisk only (no model code): a raw spec's
 * patterned writes, or a qcow2 spec's `backingOps` over the oracle of its own backing, with the
 * qcow2 image's version and cluster size (they decide what discard does).
 */
export function backingOracle(spec: BackingSpec): RawDisk {
  if (spec.format === 'raw') {
    const d = new RawDisk({ size: spec.size });
    for (const w of spec.writes) if (w.length > 0) d.apply({ kind: 'write', offset: w.offset, data: pattern(w.offset, w.length, w.seed) });
    return d;
  }
  const lower = spec.backing !== undefined ? backingOracle(spec.backing) : undefined;
  const d = emptyOracle(spec, lower);
  for (const { op } of backingOps(spec)) d.apply(op);
  return d;
}

/** A qcow2 image as a backing source: its virtual size, and reads through the model's read path. */
export function qcow2BackingSource(img: Image): BackingSource {
  return { size: img.header.size, read: (offset, length) => readGuest(img, offset, length) };
}

/**
 * Builds a backing chain with the model: a raw spec is a RawDisk (a raw file is its bytes); a qcow2
 * spec is createImage (with `backing_file`/`backing_fmt` when it has a backing of its own) and
 * `step` over `backingOps(spec)`, exposed through `qcow2BackingSource`. Throws when the model
 * refuses one of those ops (each must be accepted, see backingOps) or when a level does not read as
 * its oracle (`backingOracle`) around every op and, for small images, everywhere.
 */
export function buildBacking(spec: BackingSpec, level = 1): BackingSource {
  if (spec.format === 'raw') return backingOracle(spec);
  const lower = spec.backing !== undefined ? buildBacking(spec.backing, level + 1) : undefined;
  let img = createImage({
    size: spec.size,
    clusterSize: 1 << spec.clusterBits,
    compat: spec.compat,
    refcountBits: spec.refcountBits,
    extendedL2: spec.extendedL2,
    compressionType: spec.compressionType,
    ...(spec.backing !== undefined ? { backingFile: `base${level + 1}.${spec.backing.format}`, backingFmt: spec.backing.format } : {}),
  }).image;
  if (lower !== undefined) img = { ...img, backing: lower };
  const ops = backingOps(spec);
  for (const [i, { op, what }] of ops.entries()) {
    const r = step(img, op);
    if (!r.ok) throw new Error(`backing level ${level}: op ${i} ${what} refused with ${r.error.code}: ${r.error.message}`);
    img = r.image;
  }
  const source = qcow2BackingSource(img);
  const oracle = backingOracle(spec);
  const rd = (o: bigint, n: number): Uint8Array => source.read(o, n);
  const ro = (o: bigint, n: number): Uint8Array => oracle.read(o, n);
  const cs = 1n << BigInt(spec.clusterBits);
  if (spec.size <= 4n * MiB) compareReads(`backing level ${level}, whole image vs its oracle`, spec.size, 0n, spec.size, rd, ro);
  else {
    for (const { op, what } of ops) {
      const range = opRange(op);
      if (range !== undefined) compareReads(`backing level ${level}, around ${what}, vs its oracle`, spec.size, range.offset - cs, range.offset + range.length + cs, rd, ro);
    }
  }
  return source;
}

/**
 * Guest offsets of the overlay where the backing chain has something to show or an edge: the first
 * and last byte of every range written, zeroed, discarded or compressed at any level, and each
 * level's end. The overlay's hot clusters are drawn from these so that its ops land on backing data.
 */
export function backingSpots(spec: BackingSpec): bigint[] {
  const out: bigint[] = [spec.size - 1n, spec.size];
  if (spec.format === 'raw') {
    for (const w of spec.writes) out.push(w.offset, w.offset + BigInt(w.length) - 1n);
    return out;
  }
  for (const o of spec.ops) {
    if (o.op === 'snapshot') continue;
    out.push(o.offset, o.offset + BigInt(o.length) - 1n);
  }
  if (spec.backing !== undefined) out.push(...backingSpots(spec.backing));
  return out;
}

/** The geometry of a configuration; `size` and `clusters` are the initial ones (commands are generated against them). */
export interface Geo {
  readonly size: bigint;
  readonly cs: bigint;
  /** Subcluster size (the cluster size without extended L2). */
  readonly sc: bigint;
  readonly clusters: bigint;
  /** Guest bytes one L2 table maps (one L1 entry). */
  readonly perL2: bigint;
  readonly version: 2 | 3;
  readonly extendedL2: boolean;
  /** The image has an external data file (Config.dataFile). */
  readonly dataFile: boolean;
  /** lazy_refcounts=on (Config.lazy). */
  readonly lazy: boolean;
}

export function geoOf(cfg: Config): Geo {
  const cs = 1n << BigInt(cfg.clusterBits);
  return {
    size: cfg.size,
    cs,
    sc: cfg.extendedL2 ? cs / 32n : cs,
    clusters: (cfg.size + cs - 1n) / cs,
    perL2: cs * (cs / (cfg.extendedL2 ? 16n : 8n)),
    version: cfg.compat === '0.10' ? 2 : 3,
    extendedL2: cfg.extendedL2,
    dataFile: cfg.dataFile !== undefined,
    lazy: cfg.lazy === true,
  };
}

const fmt = (n: bigint): string => (n >= 1n << 20n && n % 512n === 0n ? `0x${n.toString(16)}` : n.toString());

// ---------------------------------------------------------------------------------------------
// The system under test and the oracle

/** How the system steps an image; the model's `step`, or a broken stand-in. */
export type StepFn = (image: Image, op: Op) => StepResult;

export interface Real {
  image: Image;
  readonly cfg: Config;
  /** The initial geometry (the current size is the oracle's, `model.disk.size`). */
  readonly geo: Geo;
  readonly system: StepFn;
  /** Guest ranges touched so far, for the end-of-run comparisons. */
  readonly touched: { offset: bigint; length: bigint }[];
  /**
   * Every page leaf (a page or a chunked page, src/model/chunked-page.ts) seen in an image of this
   * run, with where it was seen and the hash of its bytes then.
   */
  readonly seenPages: Map<object, { readonly file: HostFile; readonly index: number; readonly hash: number }>;
  /** The backing source given to the model (also used to reload the image). */
  readonly backing?: BackingSource;
  steps: number;
  /** What the run's resizes and snapshot applies met (for the coverage checks), by outcome. */
  readonly stats: Map<string, number>;
}

export interface Model {
  readonly disk: RawDisk;
  /** The initial geometry of the configuration (cluster size, version, …). */
  readonly geo: Geo;
  /** The virtual size each existing snapshot was created at (what an apply resizes to). */
  readonly snapshotSizes: Map<string, bigint>;
  /**
   * Set when the system marked the image corrupt, as QEMU does on a fatal corruption (docs/format/overlap-checks.md#corruption-signalling):
   * QEMU refuses every later request, so no further command runs.
   */
  corrupt?: boolean;
}

/** A command; toString prints it so that the counterexample is the command list. */
export type Cmd = fc.Command<Model, Real>;

// ---- page fingerprints (purity) ---------------------------------------------------------------

function pageHash(p: Uint8Array): number {
  let h = 0x811c9dc5 ^ p.length;
  if (p.byteOffset % 4 === 0 && p.length % 4 === 0) {
    const w = new Int32Array(p.buffer, p.byteOffset, p.length / 4);
    for (let i = 0; i < w.length; i++) h = Math.imul(h ^ w[i]!, 0x01000193) ^ (h >>> 15);
  } else {
    for (let i = 0; i < p.length; i++) h = Math.imul(h ^ p[i]!, 0x01000193) ^ (h >>> 15);
  }
  return h;
}

/** The host files of an image with the HostIO target addressing each: the qcow2 file and the data file. */
function filesOf(img: Image): { readonly target: HostTarget; readonly file: HostFile }[] {
  return img.dataFile !== undefined ? [{ target: 'image', file: img.file }, { target: 'data', file: img.dataFile }] : [{ target: 'image', file: img.file }];
}

/** Page `i` of `file` as it reads now: a chunked page's chunks are read, not a cached copy. */
function pageBytes(file: HostFile, i: number): Uint8Array {
  return readHost(file, BigInt(i) * 4096n, 4096);
}

/** Records the hash of every page leaf of the image's files not seen before (leaves are immutable by contract). */
function notePages(real: Real, img: Image): void {
  for (const { file } of filesOf(img)) {
    for (const [i, leaf] of file.pages.leaves()) if (!real.seenPages.has(leaf)) real.seenPages.set(leaf, { file, index: i, hash: pageHash(pageBytes(file, i)) });
  }
}

function checkPage(real: Real, file: HostFile, idx: number, what: string): void {
  const leaf = file.pages.leaf(idx);
  const seen = leaf === undefined ? undefined : real.seenPages.get(leaf);
  if (seen !== undefined && pageHash(pageBytes(file, idx)) !== seen.hash) throw new Error(`${what}: page ${idx} (host offset 0x${(idx * 4096).toString(16)}) was mutated in place`);
}

interface FileFingerprint {
  readonly target: HostTarget;
  readonly file: HostFile;
  readonly pages: HostFile['pages'];
  readonly length: bigint;
}

interface Fingerprint {
  readonly image: Image;
  readonly files: readonly FileFingerprint[];
  readonly header: string;
  readonly session: string;
}

const show = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x));

function fingerprint(img: Image): Fingerprint {
  return { image: img, files: filesOf(img).map(({ target, file }) => ({ target, file, pages: file.pages, length: file.length })), header: show(img.header), session: show(img.session) };
}

/**
 * The input of a step is unchanged: same objects (qcow2 file and data file), same header and session,
 * and the pages `io` touched (in the file each op addresses) hash the same.
 */
function checkUnchanged(real: Real, fp: Fingerprint, io: readonly HostIO[], what: string): void {
  const img = fp.image;
  const now = filesOf(img);
  if (now.length !== fp.files.length) throw new Error(`${what}: the previous image's data file was ${now.length > fp.files.length ? 'added' : 'removed'}`);
  for (const [k, f] of fp.files.entries()) {
    const name = f.target === 'data' ? 'data file' : 'file';
    const cur = now[k]!.file;
    if (cur !== f.file) throw new Error(`${what}: the previous image's ${name} object was replaced`);
    if (cur.pages !== f.pages) throw new Error(`${what}: the previous image's ${name} pages map was replaced`);
    if (cur.length !== f.length) throw new Error(`${what}: the previous image's ${name} length changed ${f.length} → ${cur.length}`);
    checkFilePages(real, cur, f.target, io, `${what} (${name})`);
  }
  if (show(img.header) !== fp.header) throw new Error(`${what}: the previous image's header changed: ${fp.header} → ${show(img.header)}`);
  if (show(img.session) !== fp.session) throw new Error(`${what}: the previous image's session changed`);
}

/** The pages of `file` still hash as when first seen: all of them when few, else those `io` addressed to `target` and a sample. */
function checkFilePages(real: Real, file: HostFile, target: HostTarget, io: readonly HostIO[], what: string): void {
  const pages = file.pages;
  if (pages.size <= 256) {
    for (const [i] of pages.leaves()) checkPage(real, file, i, what);
    return;
  }
  // Large files: the pages this step wrote to (where an in-place write would land), plus a sample.
  const check = (i: number): void => checkPage(real, file, i, what);
  for (const o of io) {
    if (o.kind === 'flush') continue;
    if (o.kind === 'truncate') continue;
    if (hostTargetOf(o) !== target) continue;
    const len = o.kind === 'write' ? BigInt(o.bytes.length) : o.length;
    if (len <= 0n) continue;
    const first = Number(o.offset >> 12n);
    const last = Number((o.offset + len - 1n) >> 12n);
    if (last - first > 4096) {
      for (const [i] of pages.leaves()) if (i >= first && i <= last) check(i);
    } else {
      for (let i = first; i <= last; i++) check(i);
    }
  }
  check(0);
  const keys = [...pages.leaves()].map(([i]) => i);
  for (let k = 0; k < 16; k++) check(keys[(real.steps * 7919 + k * 104729) % keys.length]!);
}

/** Two host files have the same length and bytes (absent pages are zeros). */
function sameFile(a: HostFile, b: HostFile): string | undefined {
  if (a.length !== b.length) return `lengths differ: ${a.length} vs ${b.length}`;
  if (a.pages === b.pages && a.base === b.base) return undefined;
  const zero = new Uint8Array(4096);
  const keys = new Set<number>([...a.pages.keys(), ...b.pages.keys()]);
  for (const k of keys) {
    const pa = a.pages.get(k) ?? zero;
    const pb = b.pages.get(k) ?? zero;
    if (pa === pb) continue;
    if (!Buffer.from(pa.buffer, pa.byteOffset, pa.length).equals(Buffer.from(pb.buffer, pb.byteOffset, pb.length))) {
      let j = 0;
      while (pa[j] === pb[j]) j++;
      return `bytes differ at host offset 0x${(k * 4096 + j).toString(16)}`;
    }
  }
  return undefined;
}

/**
 * `applyHostIO(previous, io)` gives the new image's files: the qcow2 file from the ops addressed to it,
 * the data file from those with `target: 'data'`; an image without a data file gets no such ops and
 * none appears. Returns what differs, or undefined.
 */
function replayDiff(prev: Image, io: readonly HostIO[], next: Image): string | undefined {
  const diff = sameFile(applyHostIO(prev.file, io), next.file);
  if (diff !== undefined) return `qcow2 file: ${diff}`;
  if (prev.dataFile === undefined) {
    if (next.dataFile !== undefined) return 'a data file appeared';
    const stray = io.find((o) => hostTargetOf(o) === 'data');
    return stray !== undefined ? `a ${stray.kind} addressed to a data file the image does not have` : undefined;
  }
  if (next.dataFile === undefined) return 'the data file disappeared';
  const d = sameFile(applyHostIO(prev.dataFile, io, 'data'), next.dataFile);
  return d !== undefined ? `data file: ${d}` : undefined;
}

// ---- read comparisons -------------------------------------------------------------------------

/** Compares two readers over [from, to): whole when small, else edges and sampled windows. */
function compareReads(
  what: string,
  size: bigint,
  from: bigint,
  to: bigint,
  a: (o: bigint, n: number) => Uint8Array,
  b: (o: bigint, n: number) => Uint8Array,
): void {
  if (from < 0n) from = 0n;
  if (to > size) to = size;
  if (to <= from) return;
  const windows: [bigint, bigint][] = [];
  const WHOLE = 4n * MiB;
  if (to - from <= WHOLE) {
    windows.push([from, to]);
  } else {
    const edge = 2n * MiB;
    windows.push([from, from + edge], [to - edge, to]);
    for (let k = 1n; k <= 6n; k++) {
      const at = from + ((to - from) * k) / 7n;
      windows.push([at, at + 64n * KiB < to ? at + 64n * KiB : to]);
    }
  }
  for (const [f, t] of windows) {
    const n = Number(t - f);
    const x = a(f, n);
    const y = b(f, n);
    if (!Buffer.from(x.buffer, x.byteOffset, x.length).equals(Buffer.from(y.buffer, y.byteOffset, y.length))) {
      let j = 0;
      while (x[j] === y[j]) j++;
      throw new Error(`${what}: reads differ at guest offset ${f + BigInt(j)} (0x${(f + BigInt(j)).toString(16)}): image ${x[j]}, oracle ${y[j]} (compared [${f}, ${t}))`);
    }
  }
}

/** readGuestInto at an odd position of a buffer filled with 0xa5, returning the bytes it stored. */
function readIntoGarbage(img: Image, offset: bigint, length: number): Uint8Array {
  const buf = new Uint8Array(length + 8).fill(0xa5);
  readGuestInto(img, offset, length, buf, 3);
  return buf.subarray(3, 3 + length);
}

function checkAround(model: Model, real: Real, offset: bigint, length: bigint, what: string): void {
  const cs = real.geo.cs;
  compareReads(what, model.disk.size, offset - cs, offset + length + cs, (o, n) => readGuest(real.image, o, n), (o, n) => model.disk.read(o, n));
  // The same reads into a reused buffer (what convert streams through): every byte must be stored,
  // zeros included, so the buffer starts full of garbage.
  compareReads(`${what} (readGuestInto)`, model.disk.size, offset - cs, offset + length + cs, (o, n) => readIntoGarbage(real.image, o, n), (o, n) => model.disk.read(o, n));
  if (real.cfg.dataFile === 'raw') checkRawDataFile(model, real, offset - cs, offset + length + cs, what);
}

/**
 * data_file_raw promises that the data file is a valid raw image of the disk (QEMU: "the data file
 * stays consistent as a raw image"): with every cluster preallocated at host offset == guest offset,
 * its bytes over [from, to) equal the oracle's, whatever the mapping says.
 */
function checkRawDataFile(model: Model, real: Real, from: bigint, to: bigint, what: string): void {
  const df = real.image.dataFile;
  if (df === undefined) throw new Error(`${what}: the data_file_raw image has no data file`);
  compareReads(`${what}, data_file_raw: the data file read as a raw image`, model.disk.size, from, to, (o, n) => readHost(df, o, n), (o, n) => model.disk.read(o, n));
}

// ---- the header and the dirty bit -------------------------------------------------------------

const INCOMPAT_DIRTY_BIT = IncompatibleFeatureMask.DIRTY;
const isDirtyHeader = (h: HeaderState): boolean => (h.incompatibleFeatures & INCOMPAT_DIRTY_BIT) !== 0n;

/**
 * What a step may do to the dirty bit (incompatible bit 0) of an image with lazy refcounts, decided by
 * the command from QEMU's rules (not from the model): 'set' — a guest write that links new clusters
 * into an L2 table (qcow2_alloc_cluster_link_l2 calls qcow2_mark_dirty), so the bit is set after it;
 * 'keep' — the bit stays as it was (in-place writes, zero writes that cannot fall back to a write,
 * discards, clusters written compressed, snapshots, resizes, flushes [7.2,
 * test/qemu/model-lazy-refcounts.test.ts]); 'may-set' — a write_zeroes the block layer may turn into an
 * explicit write of zeros (unaligned to subclusters, or a partial cluster with extended L2), which
 * links clusters like a write. A "compressed" write of data that does not compress is a normal write
 * (compressedDirtyRule).
 * Without lazy refcounts the bit is never set; nothing but a clean close ever clears it.
 */
export type DirtyRule = 'set' | 'keep' | 'may-set';

/** A big-endian u64 of `file` at `offset`. */
function be64(file: HostFile, offset: bigint): bigint {
  const b = readHost(file, offset, 8);
  return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0);
}

const L1_L2_OFFSET_MASK = L1EntryMasks.l2Offset;

/** The cluster offsets of the L2 tables the active L1 table points at, read from the file. */
function activeL2Tables(img: Image): Set<bigint> {
  const h = img.header;
  const out = new Set<bigint>();
  const t = readHost(img.file, h.l1TableOffset, h.l1Size * 8);
  const v = new DataView(t.buffer, t.byteOffset, t.length);
  for (let i = 0; i + 8 <= t.length; i += 8) {
    const l2 = v.getBigUint64(i) & L1_L2_OFFSET_MASK;
    if (l2 !== 0n) out.add(l2);
  }
  return out;
}

/**
 * The header of a successful step (or of the image a refused one leaves behind) against the previous
 * one: the feature fields (but the dirty bit), version, geometry, backing file and compression type
 * never change; guest writes, zeroes, discards, compressed writes and flushes change nothing but the
 * refcount table's place and size and the dirty bit (`dirty`, see DirtyRule). When the step sets the
 * dirty bit, its io holds qcow2_mark_dirty: an 8-byte write of incompatible_features at offset 72,
 * directly followed by a flush — for a guest write before any write into an L2 table the image
 * already had.
 */
function checkHeaderChange(real: Real, prev: Image, next: Image, op: Op, io: readonly HostIO[], dirty: DirtyRule, what: string): void {
  const a = prev.header;
  const b = next.header;
  const fixed: (keyof HeaderState)[] = ['version', 'backingFileOffset', 'backingFileSize', 'clusterBits', 'cryptMethod', 'compatibleFeatures', 'autoclearFeatures', 'refcountOrder', 'headerLength', 'compressionType'];
  if (op.kind === 'write' || op.kind === 'writeZeroes' || op.kind === 'discard' || op.kind === 'writeCompressed' || op.kind === 'flush') {
    fixed.push('size', 'l1Size', 'l1TableOffset', 'nbSnapshots', 'snapshotsOffset');
  }
  for (const k of fixed) if (a[k] !== b[k]) throw new Error(`${what}: header field ${k} changed ${show(a[k])} → ${show(b[k])}`);
  const changed = a.incompatibleFeatures ^ b.incompatibleFeatures;
  if ((changed & ~INCOMPAT_DIRTY_BIT) !== 0n) throw new Error(`${what}: incompatible features changed 0x${a.incompatibleFeatures.toString(16)} → 0x${b.incompatibleFeatures.toString(16)}`);
  const was = isDirtyHeader(a);
  const is = isDirtyHeader(b);
  if (was && !is) throw new Error(`${what}: the dirty bit was cleared (only a clean close may clear it)`);
  if (!real.geo.lazy) {
    if (is) throw new Error(`${what}: the dirty bit is set on an image without lazy refcounts`);
    return;
  }
  if (dirty === 'set' && !is) throw new Error(`${what}: an allocating write (it links new clusters into an L2 table) left the dirty bit of a lazy-refcounts image clear`);
  if (dirty === 'keep' && !was && is) throw new Error(`${what}: the dirty bit was set by an op that links no new cluster into an L2 table`);
  if (was || !is) return;
  const at = io.findIndex((o) => o.kind === 'write' && hostTargetOf(o) === 'image' && o.offset === 72n && o.bytes.length === 8);
  const w = io[at];
  if (w === undefined || w.kind !== 'write') throw new Error(`${what}: the dirty bit was set without an 8-byte write of incompatible_features at offset 72`);
  if (new DataView(w.bytes.buffer, w.bytes.byteOffset, 8).getBigUint64(0) !== b.incompatibleFeatures) throw new Error(`${what}: the dirty-bit write does not write the new incompatible_features`);
  if (io[at + 1]?.kind !== 'flush') throw new Error(`${what}: the dirty-bit write is not followed by a flush`);
  // A guest write updates existing L2 tables only to link clusters; other ops (a write_zeroes whose
  // aligned part zeroes entries before its unaligned part falls back to a write) may do so earlier.
  if (op.kind !== 'write') return;
  const tables = activeL2Tables(prev);
  const cs = 1n << BigInt(a.clusterBits);
  const early = io.slice(0, at).find((o) => o.kind === 'write' && hostTargetOf(o) === 'image' && tables.has((o.offset / cs) * cs));
  if (early !== undefined && early.kind === 'write') throw new Error(`${what}: an L2 table (0x${((early.offset / cs) * cs).toString(16)}) was written before the dirty bit`);
}

/** The header the image's file holds (decoded from its first cluster); a decoding error names `what`. */
function fileHeader(img: Image, what: string): HeaderState {
  try {
    return headerStateFrom(decodeHeader(readHost(img.file, 0n, 1 << img.header.clusterBits)));
  } catch (e) {
    throw new Error(`${what}: the image's header does not decode: ${(e as Error).message}`);
  }
}

// ---- stepping ---------------------------------------------------------------------------------

/**
 * Steps the system with `op` and checks purity, io completeness (both files) and the header (also
 * against the previous one: checkHeaderChange with `dirty`); on success applies `op` to the oracle
 * and installs the new image. Returns the failed result instead when the system refuses the op (the
 * caller decides whether that was expected). `refusal`: QEMU refuses this op, so success is an error
 * (thrown before the oracle sees the op).
 */
function stepChecked(model: Model, real: Real, op: Op, what: string, refusal?: ExpectedRefusal, dirty: DirtyRule = 'keep'): StepResult {
  const prev = real.image;
  const fp = fingerprint(prev);
  const r = real.system(prev, op);
  real.steps++;
  checkUnchanged(real, fp, r.ok ? r.io : [], what);
  if (!r.ok) return r;
  const diff = replayDiff(prev, r.io, r.image);
  if (diff !== undefined) throw new Error(`${what}: applyHostIO(previous files, io) is not the new image: ${diff}`);
  const decoded = fileHeader(r.image, what);
  if (show(decoded) !== show(r.image.header)) throw new Error(`${what}: the image header ${show(r.image.header)} is not what the file says: ${show(decoded)}`);
  if (op.kind !== 'resize' && op.kind !== 'snapshotApply' && r.image.header.size !== prev.header.size) throw new Error(`${what}: the virtual size changed`);
  if (refusal !== undefined) throw new Error(`${what}: accepted; QEMU refuses it with '${refusal.message.source}'`);
  checkHeaderChange(real, prev, r.image, op, r.io, dirty, what);
  if (real.geo.lazy && !isDirtyHeader(prev.header) && isDirtyHeader(r.image.header)) count(real, `lazy: ${op.kind} set the dirty bit`);
  try {
    model.disk.apply(op);
  } catch (e) {
    if (e instanceof RawDiskError) throw new Error(`${what}: accepted an op beyond the end of the disk that the oracle refuses (${e.message})`);
    throw e;
  }
  if (r.image.header.size !== model.disk.size) throw new Error(`${what}: the virtual size is ${r.image.header.size}, the oracle's ${model.disk.size}`);
  notePages(real, r.image);
  real.image = r.image;
  return r;
}

/**
 * A refusal that must change nothing (QEMU refuses before touching the image): the expected code,
 * errno and message, no io, and the holder keeps the previous image object.
 */
function expectRefusedUnchanged(real: Real, prev: Image, r: StepResult, expected: ExpectedRefusal & { readonly errno: number }, what: string): void {
  if (r.ok) throw new Error(`${what}: accepted; QEMU refuses it with '${expected.message.source}'`);
  if (r.error.code !== expected.code || r.error.errno !== expected.errno || !expected.message.test(r.error.message)) {
    throw new Error(`${what}: refused with ${r.error.code} (errno ${r.error.errno}): ${r.error.message}; expected ${expected.code} (errno ${expected.errno}): ${expected.message.source}`);
  }
  if (r.image !== prev || r.io.length > 0 || real.image !== prev) throw new Error(`${what}: refused, but the image changed (${r.io.length} io)`);
  count(real, `refused unchanged: ${expected.label}`);
}

function expectOk(r: StepResult, what: string): void {
  if (!r.ok) throw new Error(`${what}: refused with ${r.error.code}: ${r.error.message}`);
}

// ---------------------------------------------------------------------------------------------
// Commands

/*
 * Where a command lands after the size changed. fc.commands generates every command up front, against
 * the initial size (`Geo.size`); a resize or a snapshot apply moves the end of the disk later. Each
 * range command therefore keeps the offset and length it was generated with (what it prints) and is
 * placed on the current disk when it runs, by `place`:
 * - while the size is the initial one, the range is used as generated (a sequence without a size
 *   change runs exactly as printed);
 * - a range generated `fromEnd` (drawn only in the last two clusters of the initial disk) keeps its
 *   distance in clusters from the last cluster and its offset inside the cluster, so the partial last
 *   cluster stays the partial last cluster after a resize;
 * - any other range keeps its offset when that is inside the disk, else moves to cluster
 *   (index mod the current number of clusters) at the same offset inside the cluster;
 * - the offset is clamped to the last byte; a range that reached the initial end reaches the current
 *   end (one not `fromEnd` keeps its length: when the end is farther away it moves to end there),
 *   any other range is cut at it.
 * A placed range that differs from the printed one is printed with it in every failure message.
 */

/** The current virtual size: the oracle's (the model's must be equal after every step, stepChecked). */
function sizeOf(model: Model): bigint {
  return model.disk.size;
}

/** See above: where a range generated against the initial disk lands on a disk of `size` bytes. */
export function place(g: Geo, size: bigint, offset: bigint, length: bigint, fromEnd: boolean): { offset: bigint; length: bigint } {
  if (size === g.size) return { offset, length };
  const cs = g.cs;
  const clusters = (size + cs - 1n) / cs;
  const c = offset / cs;
  const w = offset % cs;
  let o = fromEnd ? (clusters - 1n - (g.clusters - 1n - c)) * cs + w : offset < size ? offset : (c % clusters) * cs + w;
  if (o >= size) o = size - 1n;
  if (o < 0n) o = 0n;
  if (offset + length === g.size && !fromEnd && size - o > length) o = size - length;
  const n = offset + length === g.size || length > size - o ? size - o : length;
  return { offset: o, length: n };
}

/** ` at OFFSET+LENGTH` when the placed range differs from the generated one (for messages). */
function placedNote(offset: bigint, length: bigint, p: { offset: bigint; length: bigint }): string {
  return p.offset === offset && p.length === length ? '' : ` at ${fmt(p.offset)}+${fmt(p.length)}`;
}

function count(real: Real, key: string): void {
  real.stats.set(key, (real.stats.get(key) ?? 0) + 1);
}

export class WriteCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: number, readonly seed: number, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const p = place(model.geo, sizeOf(model), this.offset, BigInt(this.length), this.fromEnd);
    const what = `${this}${placedNote(this.offset, BigInt(this.length), p)}`;
    const op: Op = { kind: 'write', offset: p.offset, data: pattern(p.offset, Number(p.length), this.seed) };
    const prev = real.image;
    const links = writeLinks(prev, p.offset, p.length, model.geo.dataFile);
    noteWrite(model, real, prev, p, links);
    expectOk(stepChecked(model, real, op, what, undefined, links ? 'set' : 'keep'), what);
    real.touched.push(p);
    checkAround(model, real, p.offset, p.length, what);
  }
  toString(): string {
    return `Write(${fmt(this.offset)}, ${this.length}, seed ${this.seed}${this.fromEnd ? ', from end' : ''})`;
  }
}

/**
 * The L2 entry mapping guest `offset` (and its extended-L2 subcluster bitmap, 0 without), read straight
 * from the image file (the header's L1 table, then the L2 table), not through the model's code;
 * undefined when the L1 entry points at no L2 table.
 */
function l2EntryAt(img: Image, offset: bigint): { readonly word: bigint; readonly bitmap: bigint } | undefined {
  const h = img.header;
  const cs = 1n << BigInt(h.clusterBits);
  const ext = (h.incompatibleFeatures & IncompatibleFeatureMask.EXTENDED_L2) !== 0n;
  const entryBytes = ext ? 16n : 8n;
  const l2Entries = cs / entryBytes;
  const l1Index = offset / (cs * l2Entries);
  if (l1Index >= BigInt(h.l1Size)) return undefined;
  const l2 = be64(img.file, h.l1TableOffset + l1Index * 8n) & L1_L2_OFFSET_MASK;
  if (l2 === 0n) return undefined;
  const at = l2 + ((offset / cs) % l2Entries) * entryBytes;
  return { word: be64(img.file, at), bitmap: ext ? be64(img.file, at + 8n) : 0n };
}

/** Whether the cluster holding guest `offset` is compressed (L2 entry bit 62, read from the file). */
function compressedAt(img: Image, offset: bigint): boolean {
  const e = l2EntryAt(img, offset);
  return e !== undefined && (e.word & L2EntryMasks.compressed) !== 0n;
}

/**
 * Whether the cluster holding guest `offset` is a NORMAL data cluster by its L2 entry (QEMU 7.2
 * qcow2_get_cluster_type, restated): not compressed, no zero flag (standard L2), and a host offset —
 * with an external data file offset 0 is a valid host offset when COPIED is set. With extended L2 the
 * subclusters may still be unallocated or zero (`bitmap`).
 */
function normalAt(img: Image, offset: bigint, dataFile: boolean): { readonly copied: boolean; readonly bitmap: bigint } | undefined {
  const e = l2EntryAt(img, offset);
  if (e === undefined) return undefined;
  const ext = (img.header.incompatibleFeatures & IncompatibleFeatureMask.EXTENDED_L2) !== 0n;
  const copied = (e.word & L2EntryMasks.copied) !== 0n;
  if ((e.word & L2EntryMasks.compressed) !== 0n || (!ext && (e.word & L2EntryMasks.zero) !== 0n)) return undefined;
  if ((e.word & L2EntryMasks.hostOffset) === 0n && !(dataFile && copied)) return undefined;
  return { copied, bitmap: e.bitmap };
}

/**
 * Whether a guest write of [offset, offset + length) links new clusters into an L2 table — QEMU 7.2's
 * qcow2_alloc_cluster_link_l2, where lazy refcounts mark the image dirty — restated from QEMU's rules
 * over the entries in the file: a cluster is overwritten in place only when it is NORMAL with COPIED
 * set (cluster_needs_new_alloc false → handle_copied) and, with extended L2, every subcluster written
 * is allocated (calculate_l2_meta with keep_old: anything else needs an L2 update); every other
 * cluster is allocated (handle_alloc) and linked.
 */
function writeLinks(img: Image, offset: bigint, length: bigint, dataFile: boolean): boolean {
  if (length <= 0n) return false;
  const h = img.header;
  const cs = 1n << BigInt(h.clusterBits);
  const ext = (h.incompatibleFeatures & IncompatibleFeatureMask.EXTENDED_L2) !== 0n;
  const sc = ext ? cs / 32n : cs;
  const end = offset + length;
  for (let c = offset / cs; c * cs < end; c++) {
    const n = normalAt(img, c * cs, dataFile);
    if (n === undefined || !n.copied) return true;
    if (!ext) continue;
    const from = (offset > c * cs ? offset : c * cs) - c * cs;
    const to = (end < (c + 1n) * cs ? end : (c + 1n) * cs) - c * cs;
    for (let i = from / sc; i <= (to - 1n) / sc; i++) if (((n.bitmap >> i) & 1n) === 0n) return true;
  }
  return false;
}

/**
 * Whether QEMU's block layer may turn (part of) a write_zeroes into an explicit write of zeros, which
 * links clusters like a write (DirtyRule 'may-set'): a piece not aligned to subclusters (the unaligned
 * end at the end of the disk excepted), or with extended L2 a piece of a cluster (zero_l2_subclusters
 * refuses a compressed cluster). Version 2 with a backing file too, but lazy refcounts need v3.
 */
function zeroMayWrite(g: Geo, size: bigint, offset: bigint, length: bigint): boolean {
  if (length <= 0n) return false;
  const end = offset + length;
  if (offset % g.sc !== 0n || (end % g.sc !== 0n && end !== size)) return true;
  return g.extendedL2 && (offset % g.cs !== 0n || (end % g.cs !== 0n && end !== size));
}

/** Coverage counts of a write_zeroes or discard about to run over data-file clusters holding data. */
function noteZeroOrDiscard(model: Model, real: Real, p: { offset: bigint; length: bigint }, kind: 'zero' | 'zero, unmap' | 'discard'): void {
  const g = model.geo;
  if (!g.dataFile || p.length === 0n) return;
  const end = p.offset + p.length;
  // Discard acts on whole clusters only: look at the first one inside the range; zeroes at both ends.
  const firstWhole = ((p.offset + g.cs - 1n) / g.cs) * g.cs;
  const spots = kind === 'discard' ? (firstWhole + g.cs <= end || (firstWhole < end && end === sizeOf(model)) ? [firstWhole] : []) : [p.offset, end - 1n];
  if (!spots.some((o) => normalAt(real.image, o, true) !== undefined)) return;
  count(real, `data file (${real.cfg.dataFile}): ${kind} over a data cluster`);
}

/** Coverage counts of a guest write about to run (data-file and lazy-refcounts cases). */
function noteWrite(model: Model, real: Real, img: Image, p: { offset: bigint; length: bigint }, links: boolean): void {
  const g = model.geo;
  if (p.length === 0n) return;
  if (g.lazy) {
    if (!isDirtyHeader(img.header)) count(real, links ? 'lazy: allocating write on a clean image' : 'lazy: in-place write on a clean image');
    if (links && model.disk.snapshotNames.length > 0) count(real, 'lazy: allocating write with snapshots');
  }
  if (!g.dataFile || !links) return;
  const partial = (o: bigint): boolean => o % g.cs !== 0n && o < sizeOf(model);
  const end = p.offset + p.length;
  for (const [edge, at] of [[p.offset, p.offset], [end, end - 1n]] as const) {
    if (!partial(edge)) continue;
    const n = normalAt(img, at, true);
    if (n === undefined) count(real, `data file: COW into a new cluster${real.backing !== undefined ? ' over a backing file' : ''}`);
    else if (!n.copied) count(real, 'data file: COW of a cluster not COPIED');
    else if (g.extendedL2) count(real, 'data file: write into unallocated subclusters');
  }
}

export class WriteZeroesCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: bigint, readonly unmap: boolean, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const size = sizeOf(model);
    const p = place(model.geo, size, this.offset, this.length, this.fromEnd);
    // The oracle's one known difference (src/oracle/raw-disk.ts): with extended L2, a write_zeroes of
    // exactly the last, partial subcluster [roundDown(size, sc), size) of a compressed last cluster
    // (not starting at the cluster's start) makes QEMU write explicit zeros (zero_l2_subclusters
    // cannot zero part of a compressed cluster: -ENOTSUP, the block layer's fallback), which keep the
    // bytes past the end in that subcluster; the oracle, which has no allocation state, zeroes them.
    // Such a range is widened by one subcluster to the left: the first piece then turns the compressed
    // cluster into a normal one (explicit zeros) and the last piece gets a zero flag, as the oracle says.
    const g = model.geo;
    const lastPiece = (size / g.sc) * g.sc;
    if (g.extendedL2 && size % g.sc !== 0n && lastPiece % g.cs !== 0n && p.offset === lastPiece && p.offset + p.length === size && compressedAt(real.image, lastPiece)) {
      p.offset -= g.sc;
      p.length += g.sc;
      count(real, 'write_zeroes widened: last partial subcluster of a compressed cluster');
    }
    const what = `${this}${placedNote(this.offset, this.length, p)}`;
    const op: Op = { kind: 'writeZeroes', offset: p.offset, length: p.length, unmap: this.unmap };
    noteZeroOrDiscard(model, real, p, this.unmap ? 'zero, unmap' : 'zero');
    const dirty: DirtyRule = zeroMayWrite(g, size, p.offset, p.length) ? 'may-set' : 'keep';
    expectOk(stepChecked(model, real, op, what, undefined, dirty), what);
    real.touched.push(p);
    checkAround(model, real, p.offset, p.length, what);
  }
  toString(): string {
    return `WriteZeroes(${fmt(this.offset)}, ${fmt(this.length)}${this.unmap ? ', unmap' : ''}${this.fromEnd ? ', from end' : ''})`;
  }
}

export class DiscardCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: bigint, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const p = place(model.geo, sizeOf(model), this.offset, this.length, this.fromEnd);
    const what = `${this}${placedNote(this.offset, this.length, p)}`;
    const op: Op = { kind: 'discard', offset: p.offset, length: p.length };
    noteZeroOrDiscard(model, real, p, 'discard');
    expectOk(stepChecked(model, real, op, what), what);
    real.touched.push(p);
    checkAround(model, real, p.offset, p.length, what);
  }
  toString(): string {
    return `Discard(${fmt(this.offset)}, ${fmt(this.length)}${this.fromEnd ? ', from end' : ''})`;
  }
}

export class FlushCmd implements Cmd {
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const before = real.image;
    const r = stepChecked(model, real, { kind: 'flush' }, this.toString());
    expectOk(r, this.toString());
    if (r.ok && r.io.some((o) => o.kind !== 'flush')) throw new Error(`Flush: io has host writes: ${r.io.map((o) => o.kind).join(', ')}`);
    if (sameFile(before.file, real.image.file) !== undefined) throw new Error('Flush: the file changed');
    if (before.dataFile !== undefined && sameFile(before.dataFile, real.image.dataFile!) !== undefined) throw new Error('Flush: the data file changed');
  }
  toString(): string {
    return 'Flush';
  }
}

// ---- resize -----------------------------------------------------------------------------------

/** QEMU's limit on L1 entries (qcow2_grow_l1_table: QCOW_MAX_L1_SIZE bytes of 8-byte entries). */
const QCOW_MAX_L1_ENTRIES = BigInt(QCOW_MAX_L1_SIZE / L1_ENTRY_FIXED_SIZE);

/**
 * Cost bounds of a resize in the property (the model does what QEMU does, and some of it is linear in
 * the range): a shrink fetches (allocates) one L2 table per L1 entry between the new and the old end,
 * so at most MAX_SHRINK_L2_TABLES tables and MAX_SHRINK_L2_BYTES of them (at least one); a grow keeps
 * the L1 table at most MAX_L1_ENTRIES entries (256 KiB) and the disk at most MAX_GROWN_SIZE, and a
 * grow the backing file shows through zero-fills at most MAX_ZERO_FILL_CLUSTERS clusters.
 */
const MAX_SHRINK_L2_TABLES = 64n;
const MAX_SHRINK_L2_BYTES = 256n * KiB;
const MAX_L1_ENTRIES = 32768n;
const MAX_GROWN_SIZE = 16n * TiB;
const MAX_ZERO_FILL_CLUSTERS = 4096n;

/**
 * The valid size a resize from `from` towards `to` (both multiples of 512, positive) is clamped to by
 * the cost bounds: a shrink stops at the lowest L1-entry boundary within the table budget (keeping
 * `to`'s offset inside its cluster where that is still below `from`), a grow at the L1 and zero-fill
 * budgets. Returns `to` itself when it is within them.
 */
function cheapResizeSize(g: Geo, backingSize: bigint | undefined, from: bigint, to: bigint): bigint {
  const cs = g.cs;
  if (to > from) {
    let t = to;
    const byL1 = MAX_L1_ENTRIES * g.perL2;
    const l1Max = byL1 < MAX_GROWN_SIZE ? byL1 : MAX_GROWN_SIZE;
    if (t > l1Max) t = l1Max > from ? l1Max : from;
    if (backingSize !== undefined && backingSize > from) {
      const zMax = (from / cs + MAX_ZERO_FILL_CLUSTERS) * cs;
      if (t > zMax) t = zMax;
    }
    return t;
  }
  if (to < from) {
    const budget = MAX_SHRINK_L2_BYTES / cs < MAX_SHRINK_L2_TABLES ? MAX_SHRINK_L2_BYTES / cs : MAX_SHRINK_L2_TABLES;
    const maxTables = budget < 1n ? 1n : budget;
    const lowest = ((from + g.perL2 - 1n) / g.perL2 - maxTables) * g.perL2;
    if (((to + cs - 1n) / cs) * cs >= lowest) return to;
    const t = lowest + (to % cs);
    return t < from ? t : lowest;
  }
  return to;
}

/** What a ResizeCmd resizes to, relative to the size when it runs (plain data, so it prints). */
export type ResizeTarget =
  /** An absolute size (valid: clamped to at least 512 and by the cost bounds). */
  | { readonly to: 'size'; readonly size: bigint }
  /** The current size plus `delta` (a multiple of 512, negative shrinks). */
  | { readonly to: 'delta'; readonly delta: bigint }
  /** The current size rounded down to a cluster, plus `clusters` clusters and `plus` bytes (multiple of 512). */
  | { readonly to: 'clusters'; readonly clusters: bigint; readonly plus: bigint }
  /** `plus` bytes past the largest size whose L1 table fits one cluster: the L1 needs a second cluster. */
  | { readonly to: 'l1'; readonly plus: bigint }
  /** Refused: an invalid absolute size (0, negative, past INT64_MAX or the block layer's maximum). */
  | { readonly to: 'invalid'; readonly size: bigint }
  /** Refused: the current size plus 1..511. */
  | { readonly to: 'unaligned'; readonly plus: bigint }
  /** Refused: a size whose L1 table would exceed QEMU's 32 MiB, `512 + plus` bytes past the limit. */
  | { readonly to: 'l1-too-large'; readonly plus: bigint };

/** The size a target resolves to on a disk of `from` bytes (see ResizeTarget; valid kinds clamped by cost). */
function resolveResize(t: ResizeTarget, g: Geo, backingSize: bigint | undefined, from: bigint): bigint {
  const valid = (n: bigint): bigint => cheapResizeSize(g, backingSize, from, n < 512n ? 512n : n);
  switch (t.to) {
    case 'size':
      return valid(t.size);
    case 'delta':
      return valid(from + t.delta);
    case 'clusters':
      return valid((from / g.cs + t.clusters) * g.cs + t.plus);
    case 'l1':
      return valid((g.cs / 8n) * g.perL2 + t.plus);
    case 'invalid':
      return t.size;
    case 'unaligned':
      return from + t.plus;
    case 'l1-too-large':
      return QCOW_MAX_L1_ENTRIES * g.perL2 + 512n + t.plus;
  }
}

/**
 * A grow whose zero-fill QEMU cannot do (block/qcow2.c qcow2_co_truncate with BDRV_REQ_ZERO_WRITE, which
 * bdrv_co_truncate adds when a backing file longer than the old size would show through): zero flags
 * are needed from the first subcluster boundary at or after the old size up to the new size, and
 * version 2 has none; with extended L2, the subclusters of a partial cluster at that boundary cannot be
 * zeroed when the cluster is compressed (zero_l2_subclusters: -ENOTSUP).
 */
function zeroFillFails(model: Model, img: Image, from: bigint, to: bigint): boolean {
  const b = model.disk.backing;
  const g = model.geo;
  if (b === undefined || b.size <= from || to <= from) return false;
  const zeroStart = ((from + g.sc - 1n) / g.sc) * g.sc;
  if (to <= zeroStart) return false;
  if (g.version === 2) return true;
  return g.extendedL2 && zeroStart % g.cs !== 0n && compressedAt(img, zeroStart);
}

/**
 * The dirty bit after a grow from `from` to `to` bytes (DirtyRule): when the backing file would show
 * through, QEMU 7.2's qcow2_co_truncate zeroes the new area with zero flags from the first subcluster
 * boundary at or after `from`, and writes explicit zeros — a guest write (qcow2_co_pwritev_part) —
 * over the unaligned head [from, that boundary); that write marks a lazy image dirty exactly when it
 * links clusters (writeLinks). Every other resize keeps the bit.
 */
function growDirtyRule(model: Model, img: Image, from: bigint, to: bigint): DirtyRule {
  const b = model.disk.backing;
  const g = model.geo;
  if (b === undefined || b.size <= from || to <= from || from % g.sc === 0n) return 'keep';
  const zeroStart = ((from + g.sc - 1n) / g.sc) * g.sc;
  const headEnd = zeroStart < to ? zeroStart : to;
  return writeLinks(img, from, headEnd - from, g.dataFile) ? 'set' : 'keep';
}

/** QEMU's refusal of `qemu-img resize` from `from` to `to` bytes (its rules, restated), or undefined. */
function expectedResizeRefusal(model: Model, img: Image, from: bigint, to: bigint): ExpectedRefusal | undefined {
  if (to <= 0n || to > INT64_MAX) return { label: 'size not positive', code: 'unsupported', message: /^New image size must be positive$/ };
  if (to > BDRV_MAX_LENGTH) return { label: 'past the maximum', code: 'too-big', message: /^offset\(\d+\) exceeds maximum\(9223372035781033984\)$/ };
  if (to % 512n !== 0n) return { label: 'not a multiple of 512', code: 'unsupported', message: /^The new size must be a multiple of 512$/ };
  const g = model.geo;
  if (g.version === 2 && model.disk.snapshotNames.length > 0) return { label: 'v2 with snapshots', code: 'unsupported', message: /^Can't resize a v2 image which has snapshots$/ };
  if (to > from && (to + g.perL2 - 1n) / g.perL2 > QCOW_MAX_L1_ENTRIES) return { label: 'L1 over 32 MiB', code: 'too-big', message: /^Failed to grow the L1 table: File too large$/ };
  if (zeroFillFails(model, img, from, to)) return { label: 'zero-fill impossible', code: 'unsupported', message: /^Failed to zero out new clusters: Operation not supported$/ };
  return undefined;
}

/** A refusal QEMU gives: a short label (for the coverage counts), the model's error code and QEMU's message. */
interface ExpectedRefusal {
  readonly label: string;
  readonly code: string;
  readonly message: RegExp;
}

/** Refcount blocks the reftable points at, read from the file. */
function liveRefblocks(img: Image): number {
  const h = img.header;
  const t = readHost(img.file, h.refcountTableOffset, h.refcountTableClusters << h.clusterBits);
  const v = new DataView(t.buffer, t.byteOffset, t.length);
  let n = 0;
  for (let i = 0; i + 8 <= t.length; i += 8) if (v.getBigUint64(i) !== 0n) n++;
  return n;
}

/**
 * A refused step that QEMU also refuses: the oracle is not applied; the model either returned the
 * image unchanged with no io, or (a grow whose zero-fill failed after the L1 table grew) an image
 * with the same virtual size whose io replays to it, which the holder then keeps — in both cases
 * every read is as before (compared around the end and on the whole disk, sampled).
 */
function acceptRefusal(model: Model, real: Real, prev: Image, op: Op, r: StepResult, expected: ExpectedRefusal, what: string): void {
  if (r.ok) throw new Error(`${what}: accepted; QEMU refuses it with '${expected.message.source}'`);
  if (r.error.code !== expected.code || !expected.message.test(r.error.message)) {
    throw new Error(`${what}: refused with ${r.error.code}: ${r.error.message}; expected ${expected.code}: ${expected.message.source}`);
  }
  if (r.image === prev) {
    if (r.io.length > 0) throw new Error(`${what}: refused with the image unchanged but ${r.io.length} io`);
    return;
  }
  const diff = replayDiff(prev, r.io, r.image);
  if (diff !== undefined) throw new Error(`${what}: refused; applyHostIO(previous files, io) is not the image left behind: ${diff}`);
  if (r.image.header.size !== prev.header.size) throw new Error(`${what}: refused, but the virtual size changed to ${r.image.header.size}`);
  checkHeaderChange(real, prev, r.image, op, r.io, 'keep', `${what} (refused, left changed)`);
  notePages(real, r.image);
  real.image = r.image;
  const size = sizeOf(model);
  checkAround(model, real, size - real.geo.cs, real.geo.cs, `${what} (refused, left changed)`);
  compareReads(`${what} (refused, left changed)`, size, 0n, size, (o, n) => readGuest(real.image, o, n), (o, n) => model.disk.read(o, n));
}

/**
 * `qemu-img resize [--shrink]` to a target relative to the size when it runs (ResizeTarget). Valid
 * sizes must succeed: afterwards the model's size is the new one and reads equal the oracle's around
 * the old and the new end and on the whole disk (sampled when large). QEMU's refusals (computed here
 * from QEMU's rules: size 0 / negative / past the maximum / not a multiple of 512, a version 2 image
 * with snapshots, an L1 table over 32 MiB, a zero-fill over a backing file version 2 or a compressed
 * extended-L2 cluster cannot do) must be refused with QEMU's message and change no read.
 */
export class ResizeCmd implements Cmd {
  constructor(readonly target: ResizeTarget) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const from = sizeOf(model);
    const g = model.geo;
    const to = resolveResize(this.target, g, model.disk.backing?.size, from);
    const what = `${this} (${fmt(from)} → ${fmt(to)})`;
    const prev = real.image;
    const expected = expectedResizeRefusal(model, prev, from, to);
    const refblocks = liveRefblocks(prev);
    const op: Op = { kind: 'resize', size: to };
    const r = stepChecked(model, real, op, what, expected, growDirtyRule(model, prev, from, to));
    if (expected !== undefined) {
      acceptRefusal(model, real, prev, op, r, expected, what);
      count(real, `resize refused: ${expected.label}`);
      return;
    }
    expectOk(r, what);
    count(real, to > from ? 'resize grow' : to < from ? 'resize shrink' : 'resize to the same size');
    if (to !== from && to % g.cs !== 0n) count(real, `resize ${to > from ? 'grow' : 'shrink'} to a size not cluster aligned`);
    if (to > from && from % g.cs !== 0n) count(real, 'resize grow from a partial last cluster');
    if (BigInt(real.image.header.l1Size) * 8n > g.cs && BigInt(prev.header.l1Size) * 8n <= g.cs) count(real, 'resize grows the L1 table past one cluster');
    if (liveRefblocks(real.image) < refblocks) count(real, 'resize drops refcount blocks');
    const b = model.disk.backing;
    if (to > from && b !== undefined && b.size > from) count(real, 'resize grow zero-fills over the backing file');
    const low = from < to ? from : to;
    checkAround(model, real, low, 0n, what);
    if (to > from) checkAround(model, real, to, 0n, what);
    compareReads(what, to, 0n, to, (o, n) => readGuest(real.image, o, n), (o, n) => model.disk.read(o, n));
  }
  toString(): string {
    const t = this.target;
    switch (t.to) {
      case 'size':
      case 'invalid':
        return `Resize(${t.to} ${fmt(t.size)})`;
      case 'delta':
        return `Resize(${t.delta < 0n ? '-' : '+'}${fmt(t.delta < 0n ? -t.delta : t.delta)})`;
      case 'clusters':
        return `Resize(cluster ${t.clusters < 0n ? '' : '+'}${t.clusters}, +${t.plus})`;
      case 'l1':
      case 'unaligned':
      case 'l1-too-large':
        return `Resize(${t.to} +${t.plus})`;
    }
  }
}

/**
 * Snapshot create / apply / delete by name. Names are unique in the oracle, so a create is generated
 * only for a free name and apply/delete only for an existing one. Creating or applying can fail when
 * a refcount would overflow (narrow refcount_bits): QEMU then keeps what it did so far (a new L1
 * leaks, some refcounts stay raised, the guest content is unchanged), the model returns that image,
 * and the oracle is unchanged — except that an apply resizes the disk to the snapshot's size first
 * (QEMU 7.2 qcow2_snapshot_goto: blk_truncate, the same path as `qemu-img resize`), so when it fails
 * after that the oracle is resized too. An apply whose resize is beyond the cost bounds of ResizeCmd
 * is skipped (check); one whose zero-fill QEMU cannot do (see zeroFillFails) must be refused like the
 * resize and change no read.
 * On an image with an external data file QEMU 7.2 refuses internal snapshots (measured,
 * test/qemu/model-data-file.test.ts): every create, apply and delete runs and must be refused with
 * QEMU's errno and message (dataFileSnapshotRefusal) and change nothing.
 */
/** ENOTSUP and ENOENT as QEMU returns them. */
const ENOTSUP_ERRNO = -95;
const ENOENT_ERRNO = -2;

/**
 * qemu-img 7.2's refusal of an internal snapshot op on an image with an external data file (measured,
 * test/qemu/model-data-file.test.ts): create and apply fail with ENOTSUP; delete finds no snapshot (such an
 * image cannot have one).
 */
function dataFileSnapshotRefusal(kind: SnapshotCmd['kind'], name: string): ExpectedRefusal & { readonly errno: number } {
  const q = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  switch (kind) {
    case 'snapshotCreate':
      return { label: 'data file: snapshot create', code: 'unsupported', errno: ENOTSUP_ERRNO, message: new RegExp(`^Could not create snapshot '${q}': -95 \\(Operation not supported\\)$`) };
    case 'snapshotApply':
      return { label: 'data file: snapshot apply', code: 'unsupported', errno: ENOTSUP_ERRNO, message: new RegExp(`^Could not apply snapshot '${q}': Failed to load snapshot: Operation not supported$`) };
    case 'snapshotDelete':
      return { label: 'data file: snapshot delete', code: 'unsupported', errno: ENOENT_ERRNO, message: new RegExp(`^Could not delete snapshot '${q}': snapshot not found$`) };
  }
}

export class SnapshotCmd implements Cmd {
  constructor(readonly kind: 'snapshotCreate' | 'snapshotApply' | 'snapshotDelete', readonly name: string) {}
  check(m: Readonly<Model>): boolean {
    if (m.corrupt === true) return false;
    if (m.geo.dataFile) return true;
    const exists = m.disk.snapshotNames.includes(this.name);
    if (this.kind === 'snapshotCreate') return !exists;
    if (!exists) return false;
    if (this.kind === 'snapshotDelete') return true;
    const to = m.snapshotSizes.get(this.name)!;
    return cheapResizeSize(m.geo, m.disk.backing?.size, m.disk.size, to) === to;
  }
  run(model: Model, real: Real): void {
    const what = this.toString();
    const from = sizeOf(model);
    const prev = real.image;
    const op: Op = { kind: this.kind, name: this.name };
    if (model.geo.dataFile) {
      const expected = dataFileSnapshotRefusal(this.kind, this.name);
      expectRefusedUnchanged(real, prev, stepChecked(model, real, op, what, expected), expected, what);
      return;
    }
    const to = this.kind === 'snapshotApply' ? model.snapshotSizes.get(this.name)! : from;
    const refusal: ExpectedRefusal | undefined = this.kind === 'snapshotApply' && zeroFillFails(model, prev, from, to)
      ? { label: 'zero-fill impossible', code: 'unsupported', message: new RegExp(`^Could not apply snapshot '${this.name}': Failed to zero out new clusters: Operation not supported$`) }
      : undefined;
    const r = stepChecked(model, real, op, what, refusal, this.kind === 'snapshotApply' ? growDirtyRule(model, prev, from, to) : 'keep');
    if (refusal !== undefined) {
      acceptRefusal(model, real, prev, op, r, refusal, what);
      count(real, 'snapshot apply refused: zero-fill of the resize');
      return;
    }
    if (!r.ok) {
      // Narrow widths overflow easily: a shared cluster (refcount_bits 1, 2) or a host cluster packed
      // with many compressed blobs (each blob is one reference; 4 bits allow only 15).
      if (this.kind !== 'snapshotDelete' && r.error.code === 'refcount-overflow' && real.cfg.refcountBits <= 8) {
        const size = r.image.header.size;
        if (size !== from && size !== to) throw new Error(`${what}: failed leaving a ${size}-byte disk (before ${from}, the snapshot's ${to})`);
        if (size !== from) {
          // The resize to the snapshot's size happened before the failure, and stays.
          model.disk.apply({ kind: 'resize', size });
          count(real, 'snapshot apply failed after its resize');
        }
        count(real, 'snapshot failed: refcount overflow');
        if (r.image !== prev) {
          const diff = replayDiff(prev, r.io, r.image);
          if (diff !== undefined) throw new Error(`${what}: failed; applyHostIO(previous files, io) is not the image left behind: ${diff}`);
          checkHeaderChange(real, prev, r.image, op, r.io, 'keep', `${what} (failed, left changed)`);
        }
        notePages(real, r.image);
        real.image = r.image;
        if (size !== from) checkAround(model, real, 0n, size, `${what} (failed after the resize)`);
        return;
      }
      throw new Error(`${what}: refused with ${r.error.code}: ${r.error.message}`);
    }
    if (this.kind === 'snapshotCreate') model.snapshotSizes.set(this.name, from);
    if (this.kind === 'snapshotDelete') model.snapshotSizes.delete(this.name);
    // After an apply every read equals the content captured at create time (the oracle's snapshot).
    if (this.kind === 'snapshotApply') {
      if (to !== from) count(real, `snapshot apply ${to > from ? 'grows' : 'shrinks'} the disk`);
      checkAround(model, real, 0n, sizeOf(model), what);
    }
  }
  toString(): string {
    return `${this.kind[0]!.toUpperCase()}${this.kind.slice(1)}(${JSON.stringify(this.name)})`;
  }
}

export class ReadRandomCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: number, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const size = sizeOf(model);
    const p = place(model.geo, size, this.offset, BigInt(this.length), this.fromEnd);
    const what = `${this}${placedNote(this.offset, BigInt(this.length), p)}`;
    compareReads(what, size, p.offset, p.offset + p.length, (o, n) => readGuest(real.image, o, n), (o, n) => model.disk.read(o, n));
  }
  toString(): string {
    return `ReadRandom(${fmt(this.offset)}, ${this.length}${this.fromEnd ? ', from end' : ''})`;
  }
}

/** Bytes for a compressed write: compressible runs, the position pattern, or noise (stored uncompressed). */
function compressData(offset: bigint, length: number, seed: number, mode: 'runs' | 'pattern' | 'noise'): Uint8Array {
  if (mode === 'pattern') return pattern(offset, length, seed);
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    if (mode === 'runs') {
      out[i] = ((i >> 7) * seed + seed) & 0xff;
    } else {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      out[i] = x & 0xff;
    }
  }
  return out;
}

/**
 * A compressed write of whole clusters (the last one may be the partial last cluster of the disk),
 * zlib or zstd as the image's compression_type says. After a size change it is placed like the
 * other ranges, then cut to whole clusters of the current disk. QEMU refuses it when a target
 * cluster is allocated ("Compression can't overwrite anything", EIO): that refusal must change nothing.
 * On an image with an external data file QEMU refuses every compressed write (ENOTSUP), unchanged.
 */
export class WriteCompressedCmd implements Cmd {
  constructor(readonly offset: bigint, readonly length: number, readonly seed: number, readonly mode: 'runs' | 'pattern' | 'noise', readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const size = sizeOf(model);
    const cs = model.geo.cs;
    const placed = place(model.geo, size, this.offset, BigInt(this.length), this.fromEnd);
    const offset = (placed.offset / cs) * cs;
    const whole = ((BigInt(this.length) + cs - 1n) / cs) * cs;
    const p = { offset, length: whole < size - offset ? whole : size - offset };
    const what = `${this}${placedNote(this.offset, BigInt(this.length), p)}`;
    const op: Op = { kind: 'writeCompressed', offset: p.offset, data: compressData(p.offset, Number(p.length), this.seed, this.mode) };
    const prev = real.image;
    if (model.geo.dataFile) {
      // QEMU 7.2: "write failed: Operation not supported" (measured, test/qemu/model-data-file.test.ts).
      const expected = { label: 'data file: compressed write', code: 'unsupported', errno: ENOTSUP_ERRNO, message: /not supported/i };
      expectRefusedUnchanged(real, prev, stepChecked(model, real, op, what, expected), expected, what);
      return;
    }
    const r = stepChecked(model, real, op, what, undefined, compressedDirtyRule(model.geo, prev, p, this.mode));
    if (!r.ok && r.error.code === 'corrupt' && /Preventing invalid write on metadata/.test(r.error.message)) {
      // QEMU 7.2 does the same: its compressed-byte cursor can point into a cluster freed and reused
      // as metadata since; the overlap check refuses the write and marks the image corrupt.
      if ((r.image.header.incompatibleFeatures & 2n) === 0n) throw new Error(`${what}: refused as corrupt without the corrupt bit`);
      real.image = r.image;
      model.corrupt = true;
      return;
    }
    if (!r.ok) {
      if (r.error.code !== 'unsupported' || !/allocated cluster/.test(r.error.message)) throw new Error(`${what}: refused with ${r.error.code}: ${r.error.message}`);
      if (real.image !== prev || r.image !== prev) throw new Error(`${what}: the image changed`);
      return;
    }
    count(real, `compressed write (${real.cfg.compressionType})`);
    real.touched.push(p);
    checkAround(model, real, p.offset, p.length, what);
  }
  toString(): string {
    return `WriteCompressed(${fmt(this.offset)}, ${this.length}, ${this.mode} ${this.seed}${this.fromEnd ? ', from end' : ''})`;
  }
}

/**
 * The dirty bit after a compressed write (DirtyRule): QEMU 7.2 writes a cluster whose data does not
 * compress to less than a cluster as a normal cluster (qcow2_co_pwritev_compressed_task: -ENOMEM from
 * qcow2_co_compress → qcow2_co_pwritev_part), which links it like any write; a compressed cluster is
 * linked without marking the image dirty. 'runs' data always compresses ('keep'); 'noise' never does
 * when it fills the cluster (a write, 'set' exactly when it links: writeLinks) — a partial last
 * cluster is padded with zeros and may compress; 'pattern' depends on the compressor ('may-set').
 */
function compressedDirtyRule(g: Geo, img: Image, p: { offset: bigint; length: bigint }, mode: 'runs' | 'pattern' | 'noise'): DirtyRule {
  if (mode === 'runs') return 'keep';
  if (mode === 'pattern') return 'may-set';
  const whole = (p.length / g.cs) * g.cs;
  if (writeLinks(img, p.offset, whole, g.dataFile)) return 'set';
  return whole === p.length ? 'keep' : 'may-set';
}

/**
 * An op past the end of the disk (or at a negative offset): refused, 'out-of-range', nothing changes.
 * `fromEnd`: `offset` is counted back from the current end (0 = starting at the end), so it straddles
 * the end whatever the size is when it runs.
 */
export class OutOfRangeCmd implements Cmd {
  constructor(readonly kind: 'write' | 'writeZeroes' | 'discard', readonly offset: bigint, readonly length: number, readonly fromEnd = false) {}
  check(m: Readonly<Model>): boolean {
    return m.corrupt !== true;
  }
  run(model: Model, real: Real): void {
    const size = sizeOf(model);
    const at = this.fromEnd ? size - this.offset : this.offset;
    const what = `${this}${this.fromEnd ? ` at ${fmt(at)}` : ''}`;
    const op: Op = this.kind === 'write'
      ? { kind: 'write', offset: at, data: pattern(at < 0n ? 0n : at, this.length, 99) }
      : this.kind === 'writeZeroes'
        ? { kind: 'writeZeroes', offset: at, length: BigInt(this.length), unmap: true }
        : { kind: 'discard', offset: at, length: BigInt(this.length) };
    const prev = real.image;
    const pages = prev.file.pages;
    const header = show(prev.header);
    const r = stepChecked(model, real, op, what);
    if (r.ok) throw new Error(`${what}: accepted an op beyond the end of the ${size}-byte disk`);
    if (r.error.code !== 'out-of-range') throw new Error(`${what}: refused with '${r.error.code}' (${r.error.message}), expected 'out-of-range'`);
    if (real.image !== prev || real.image.file.pages !== pages || show(real.image.header) !== header) throw new Error(`${what}: the image changed`);
    // The oracle refuses it too (and stays as it was).
    let refused = false;
    try {
      model.disk.apply(op);
    } catch (e) {
      if (!(e instanceof RawDiskError)) throw e;
      refused = true;
    }
    if (!refused) throw new Error(`${what}: the oracle accepted it`);
  }
  toString(): string {
    const at = this.fromEnd ? `end${this.offset === 0n ? '' : `-${this.offset}`}` : fmt(this.offset);
    return `OutOfRange${this.kind[0]!.toUpperCase()}${this.kind.slice(1)}(${at}, ${this.length})`;
  }
}

// ---- command arbitraries ----------------------------------------------------------------------

function clampOffset(g: Geo, o: bigint): bigint {
  return o < 0n ? 0n : o >= g.size ? g.size - 1n : o;
}

/**
 * Offsets weighted to a few hot clusters (so later ops overwrite earlier ranges) and to boundaries;
 * about half of those in the last two clusters follow the end of the disk when it moves (see `place`).
 */
function offsetArb(g: Geo, hot: readonly bigint[]): fc.Arbitrary<{ offset: bigint; fromEnd: boolean }> {
  const last = g.clusters - 1n;
  const cluster = fc.oneof(
    { weight: 5, arbitrary: fc.tuple(fc.constantFrom(...hot), fc.integer({ min: -1, max: 2 })).map(([h, d]) => h + BigInt(d)) },
    { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: last }) },
    { weight: 1, arbitrary: fc.constantFrom(0n, last) },
  );
  const within = fc.oneof(
    { weight: 3, arbitrary: fc.constant(0n) },
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 31 }).map((k) => (BigInt(k) * g.sc) % g.cs) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: g.cs / 512n - 1n }).map((k) => k * 512n) },
    { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: g.cs - 1n }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 16 }).map((d) => g.cs - BigInt(d)) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 16 }).map((d) => g.sc - BigInt(d)) },
  );
  return fc.tuple(cluster, within, fc.boolean()).map(([c, w, end]) => {
    const offset = clampOffset(g, c * g.cs + w);
    return { offset, fromEnd: end && offset / g.cs >= g.clusters - 2n };
  });
}

/**
 * Resize targets (see ResizeTarget), relative to the size when the command runs: a few sectors either
 * way, a few clusters either way to a cluster boundary or into a cluster, absolute sizes from one sector
 * (tiny ones weighted: a shrink that frees most of the file drops refcount blocks) to twice the initial
 * size and large ones (64 GiB to 4 TiB, clamped by the cost bounds), sizes just
 * past one cluster of L1 table, and the sizes QEMU refuses (about one resize in seven).
 */
function resizeArb(g: Geo): fc.Arbitrary<ResizeTarget> {
  const sectorsPerCluster = g.cs / 512n;
  const intoCluster = fc.oneof(
    { weight: 2, arbitrary: fc.constant(0n) },
    { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: sectorsPerCluster - 1n }).map((k) => k * 512n) },
    { weight: 1, arbitrary: fc.constantFrom(512n, g.cs - 512n, g.sc, g.sc + 512n, g.sc > 512n ? g.sc - 512n : 0n) },
  );
  return fc.oneof(
    { weight: 3, arbitrary: fc.bigInt({ min: -64n, max: 64n }).map((k): ResizeTarget => ({ to: 'delta', delta: k * 512n })) },
    { weight: 5, arbitrary: fc.tuple(fc.bigInt({ min: -6n, max: 6n }), intoCluster).map(([clusters, plus]): ResizeTarget => ({ to: 'clusters', clusters, plus })) },
    {
      weight: 3,
      arbitrary: fc.oneof(
        fc.bigInt({ min: 1n, max: 8192n }).map((k) => k * 512n),
        fc.bigInt({ min: 1n, max: 16n }).map((k) => k * 512n),
        fc.bigInt({ min: 1n, max: (2n * g.size) / 512n + 1n }).map((k) => k * 512n),
        fc.constantFrom(512n, g.cs, g.cs + 512n, 2n * g.cs - 512n, MiB, 4n * MiB + 512n, 64n * GiB, TiB, 4n * TiB),
      ).map((size): ResizeTarget => ({ to: 'size', size })),
    },
    { weight: 1, arbitrary: fc.oneof(fc.constantFrom(0n, 512n, g.cs, g.perL2, g.perL2 + 512n), fc.bigInt({ min: 1n, max: (4n * g.perL2) / 512n }).map((k) => k * 512n)).map((plus): ResizeTarget => ({ to: 'l1', plus })) },
    {
      weight: 2,
      arbitrary: fc.oneof(
        fc.constantFrom(0n, -512n, -(1n << 40n), 1n << 63n, (1n << 64n) - 512n, (1n << 63n) - 1n, (1n << 63n) - 512n, (1n << 63n) - (1n << 30n) + 512n)
          .map((size): ResizeTarget => ({ to: 'invalid', size })),
        fc.bigInt({ min: 1n, max: 511n }).map((plus): ResizeTarget => ({ to: 'unaligned', plus })),
        fc.constantFrom(0n, 512n, g.cs).map((plus): ResizeTarget => ({ to: 'l1-too-large', plus })),
      ),
    },
  );
}

function writeLengthArb(g: Geo): fc.Arbitrary<number> {
  const cs = Number(g.cs);
  const sc = Number(g.sc);
  const max = Math.max(Math.min(3 * cs, 1 << 20), cs);
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(cs, sc, cs + 1, cs - 1, sc + 1, 2 * cs) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: 32 }).map((k) => k * sc) },
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 4096 }) },
    { weight: 2, arbitrary: fc.integer({ min: 1, max: max }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 64 }).map((k) => k * 512) },
    { weight: 1, arbitrary: fc.constant(0) },
  ).map((n) => Math.min(n, max));
}

/** Zero/discard lengths: like writes, plus runs of whole clusters and (small disks) the rest of the disk. */
function rangeLengthArb(g: Geo): fc.Arbitrary<bigint> {
  const maxClusters = 512n;
  const opts: fc.WeightedArbitrary<bigint>[] = [
    { weight: 4, arbitrary: writeLengthArb(g).map(BigInt) },
    { weight: 3, arbitrary: fc.bigInt({ min: 1n, max: 64n }).map((k) => k * g.cs) },
    { weight: 1, arbitrary: fc.bigInt({ min: 1n, max: maxClusters * g.cs }) },
  ];
  // The whole rest of the disk when that is cheap for the model (it visits every cluster).
  if (g.clusters <= 4096n) opts.push({ weight: 1, arbitrary: fc.constant(g.size) });
  return fc.oneof(...opts).map((n) => (n > maxClusters * g.cs && g.clusters > 4096n ? maxClusters * g.cs : n));
}

function clampLength(g: Geo, offset: bigint, n: bigint): bigint {
  return n > g.size - offset ? g.size - offset : n;
}

export interface CommandOptions {
  readonly maxCommands: number;
  /** Generate WriteCompressed commands (see COMPRESSED_WRITES_IN_PROPERTY in the test). */
  readonly compressed?: boolean;
  /** Generate Resize commands (default true). */
  readonly resize?: boolean;
  /**
   * The replayPath fast-check printed with a failing command list: with the failure's seed and path
   * (`fc.assert(…, { seed, path, endOnFailure: true })`) it replays that exact shrunk sequence.
   */
  readonly replayPath?: string;
  /**
   * Called after every execution of the property (also failing and shrinking ones) with the number of
   * ops stepped and what the run's resizes, snapshot applies and compressed writes met (Real.stats).
   */
  readonly onRun?: (info: { readonly steps: number; readonly stats: ReadonlyMap<string, number> }) => void;
}

/** The commands of one run, for a configuration and its hot clusters. */
export function commandsArb(cfg: Config, hot: readonly bigint[], opts: CommandOptions): fc.Arbitrary<Iterable<Cmd>> {
  const g = geoOf(cfg);
  const off = offsetArb(g, hot);
  const write = fc
    .tuple(off, writeLengthArb(g), fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 255 }) }, { weight: 1, arbitrary: fc.constant(0) }))
    .map(([o, n, seed]): Cmd => new WriteCmd(o.offset, Number(clampLength(g, o.offset, BigInt(n))), seed, o.fromEnd));
  const zeroes = fc.tuple(off, rangeLengthArb(g), fc.boolean()).map(([o, n, unmap]): Cmd => new WriteZeroesCmd(o.offset, clampLength(g, o.offset, n), unmap, o.fromEnd));
  const discard = fc.tuple(off, rangeLengthArb(g)).map(([o, n]): Cmd => new DiscardCmd(o.offset, clampLength(g, o.offset, n), o.fromEnd));
  const flush = fc.constant<Cmd>(new FlushCmd());
  const snapshot = fc
    .tuple(fc.constantFrom<SnapshotCmd['kind']>('snapshotCreate', 'snapshotCreate', 'snapshotApply', 'snapshotDelete'), fc.constantFrom('a', 'b', 'c'))
    .map(([kind, name]): Cmd => new SnapshotCmd(kind, name));
  const read = fc
    .tuple(fc.oneof(off, fc.bigInt({ min: 0n, max: g.size - 1n }).map((offset) => ({ offset, fromEnd: false }))), fc.integer({ min: 1, max: Math.max(Number(g.cs) * 2, 65536) }))
    .map(([o, n]): Cmd => new ReadRandomCmd(o.offset, Number(clampLength(g, o.offset, BigInt(n))), o.fromEnd));
  const oor = fc
    .tuple(
      fc.constantFrom<'write' | 'writeZeroes' | 'discard'>('write', 'write', 'writeZeroes', 'discard'),
      fc.oneof(
        // Straddling the (current) end, starting at it, far beyond, negative.
        fc.integer({ min: 1, max: 4096 }).map((k) => ({ at: BigInt(k), min: k + 1, fromEnd: true })),
        fc.constant({ at: 0n, min: 1, fromEnd: true }),
        fc.constant({ at: 1n << 62n, min: 1, fromEnd: false }),
        fc.constant({ at: -1n, min: 0, fromEnd: false }),
      ),
      fc.integer({ min: 1, max: 8192 }),
    )
    .map(([kind, { at, min, fromEnd }, n]): Cmd => new OutOfRangeCmd(kind, at, Math.max(min, n), fromEnd));
  const compressed = fc
    .tuple(
      fc.oneof(
        { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...hot), fc.integer({ min: -1, max: 2 })).map(([h, d]) => h + BigInt(d)) },
        { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: g.clusters - 1n }) },
        { weight: 1, arbitrary: fc.constant(g.clusters - 1n) },
      ),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 255 }),
      fc.constantFrom<'runs' | 'pattern' | 'noise'>('runs', 'runs', 'pattern', 'noise'),
      fc.boolean(),
    )
    .map(([c, k, seed, mode, end]): Cmd => {
      const idx = c < 0n ? 0n : c >= g.clusters ? g.clusters - 1n : c;
      const offset = idx * g.cs;
      const length = Number(clampLength(g, offset, BigInt(k) * g.cs));
      return new WriteCompressedCmd(offset, length, seed, mode, end && idx >= g.clusters - 2n);
    });
  const resize = resizeArb(g).map((t): Cmd => new ResizeCmd(t));
  const cmd = fc.oneof(
    { weight: 8, arbitrary: write },
    { weight: 3, arbitrary: zeroes },
    { weight: 3, arbitrary: discard },
    { weight: 1, arbitrary: flush },
    { weight: 2, arbitrary: read },
    { weight: 1, arbitrary: oor },
    { weight: opts.compressed === true ? 2 : 0, arbitrary: compressed },
    { weight: 2, arbitrary: snapshot },
    // Not on data-file images: the model does not resize them yet (NOT_YET_MODELLED_OPS_BY_CONFIG).
    { weight: opts.resize === false || cfg.dataFile !== undefined ? 0 : 3, arbitrary: resize },
  );
  return fc.commands([cmd], { size: 'max', maxCommands: opts.maxCommands, ...(opts.replayPath !== undefined ? { replayPath: opts.replayPath } : {}) });
}

// ---------------------------------------------------------------------------------------------
// The configuration classes, as `npm test` runs them

/** One configuration class with the size of its default run in `npm test`. */
export interface ClassRun {
  readonly cls: ConfigClass;
  readonly title: string;
  /** Sequences per `npm test` run (QCOW2_COMMANDS_RUNS overrides). */
  readonly numRuns: number;
  readonly maxCommands: number;
}

/** Every configuration class the model supports today, each once (the test and `npm run fuzz` use this list). */
export const CONFIG_CLASSES: readonly ClassRun[] = [
  { cls: 'small-clusters', title: 'cluster_bits 9..13, refcount_bits 1..64, v2/v3, up to the largest cheap disk', numRuns: 100, maxCommands: 100 },
  { cls: 'large-clusters', title: 'cluster_bits 14..21, extended L2 on/off, disks up to 1 TiB', numRuns: 80, maxCommands: 100 },
  { cls: 'preallocated', title: 'preallocation=metadata on small disks', numRuns: 60, maxCommands: 100 },
  { cls: 'backing', title: 'a raw backing file (short, equal, long; v2/v3; extended L2)', numRuns: 60, maxCommands: 100 },
  { cls: 'backing-chain', title: 'qcow2 backing chains made by the model (1-3 images, over raw or not; snapshots, compressed, zero/discard)', numRuns: 50, maxCommands: 100 },
  { cls: 'data-file', title: 'an external data file, data_file_raw on/off (v3; raw or qcow2 backing, preallocation, lazy refcounts; compressed writes and snapshots refused)', numRuns: 35, maxCommands: 100 },
  { cls: 'lazy-refcounts', title: 'lazy_refcounts=on (v3; any geometry, backing files, preallocation, snapshots; the dirty bit, clean close and reload)', numRuns: 35, maxCommands: 100 },
];

// ---------------------------------------------------------------------------------------------
// One run

/** The image and oracle a run starts from. */
export function setup(cfg: Config, system: StepFn): { model: Model; real: Real } {
  const backing = cfg.backing !== undefined ? buildBacking(cfg.backing) : undefined;
  const backingExpected = cfg.backing !== undefined ? backingOracle(cfg.backing) : undefined;
  const created = createImage({
    size: cfg.requestedSize,
    clusterSize: 1 << cfg.clusterBits,
    compat: cfg.compat,
    refcountBits: cfg.refcountBits,
    extendedL2: cfg.extendedL2,
    compressionType: cfg.compressionType,
    preallocation: cfg.preallocation,
    ...(cfg.backing !== undefined ? { backingFile: `base.${cfg.backing.format}`, backingFmt: cfg.backing.format } : {}),
    ...(cfg.dataFile !== undefined ? { dataFile: 'data.raw', dataFileRaw: cfg.dataFile === 'raw' } : {}),
    ...(cfg.lazy === true ? { lazyRefcounts: true } : {}),
  }).image;
  if (created.header.size !== cfg.size) throw new Error(`createImage made a ${created.header.size}-byte disk, expected ${cfg.size}`);
  if ((created.dataFile !== undefined) !== (cfg.dataFile !== undefined)) throw new Error(`createImage: data file ${created.dataFile !== undefined}, configuration ${cfg.dataFile}`);
  const image: Image = backing !== undefined ? { ...created, backing } : created;
  const disk = emptyOracle(cfg, backingExpected);
  const geo = geoOf(cfg);
  const real: Real = { image, cfg, geo, system, touched: [], seenPages: new Map(), steps: 0, stats: new Map(), ...(backing !== undefined ? { backing } : {}) };
  notePages(real, image);
  return { model: { disk, geo, snapshotSizes: new Map() }, real };
}

/** End of a run: every page seen is unchanged, and the stored image reloads with the same header and reads. */
export function finalChecks(model: Model, real: Real, randomRanges: readonly { at: number; length: number }[]): void {
  for (const s of real.seenPages.values()) if (pageHash(pageBytes(s.file, s.index)) !== s.hash) throw new Error('end of run: a page of an earlier image was mutated in place');
  const img = real.image;
  const reloaded = reload(real, img);
  if (show(reloaded.header) !== show(img.header)) throw new Error(`load(store(image)): header ${show(reloaded.header)} differs from ${show(img.header)}`);
  const diff = sameFile(reloaded.file, img.file);
  if (diff !== undefined) throw new Error(`load(store(image)): file differs: ${diff}`);
  if (img.dataFile !== undefined) {
    const d = sameFile(reloaded.dataFile!, img.dataFile);
    if (d !== undefined) throw new Error(`load(store(image)): data file differs: ${d}`);
  }
  // The reloaded image has the same bytes and header, so it reads as the image does; both must read as
  // the oracle on every range touched in the run (already compared ±1 cluster right after each op,
  // but later ops may have changed them) and on random ranges.
  const size = model.disk.size;
  if (img.header.size !== size) throw new Error(`end of run: the image is ${img.header.size} bytes, the oracle ${size}`);
  const rdImage = (o: bigint, n: number): Uint8Array => readGuest(img, o, n);
  const rdReloaded = (o: bigint, n: number): Uint8Array => readGuest(reloaded, o, n);
  const rdOracle = (o: bigint, n: number): Uint8Array => model.disk.read(o, n);
  const seen = new Set<string>();
  for (const t of real.touched) {
    const key = `${t.offset}+${t.length}`;
    if (seen.has(key)) continue;
    seen.add(key);
    compareReads(`end of run, touched [${t.offset}, ${t.offset + t.length}), reloaded vs oracle`, size, t.offset - 512n, t.offset + t.length + 512n, rdReloaded, rdOracle);
  }
  const ranges = randomRanges.map((r) => {
    const from = BigInt(Math.floor(r.at * Number(size)));
    return { from, to: from + BigInt(r.length) };
  });
  if (size <= 4n * MiB) ranges.push({ from: 0n, to: size });
  for (const { from, to } of ranges) {
    compareReads(`end of run, [${from}, ${to}), reloaded vs oracle`, size, from, to, rdReloaded, rdOracle);
    compareReads(`end of run, [${from}, ${to}), reloaded vs image`, size, from, to, rdReloaded, rdImage);
  }
  if (real.cfg.dataFile === 'raw') checkRawDataFile(model, real, 0n, size, 'end of run');
  closeChecks(model, real, reloaded, ranges);
}

/** `loadImage(storeImage(img))` with its data file (storeDataFile) and the run's backing source. */
function reload(real: Real, img: Image): Image {
  const dataFile = storeDataFile(img);
  return loadImage(storeImage(img), { ...(dataFile !== undefined ? { dataFile } : {}), ...(real.backing !== undefined ? { backing: real.backing } : {}) });
}

/**
 * End of a run, the clean close (closeImage, QEMU's qcow2_inactivate): it leaves the image it closes
 * unchanged, its io replays onto both files, the dirty bit is clear afterwards and nothing else in the
 * header changed; an image that was not dirty is not written at all (flushes only). For images with
 * lazy refcounts or a data file also: the closed image reads as the oracle on the run's ranges and
 * checkInvariants finds nothing in its bytes (with the data file). With lazy refcounts: a reload of
 * the closed image takes a write, while a reload of the unclosed image (what a crash leaves) takes
 * one only when the dirty bit is clear, and is refused with 'dirty', unchanged, when it is set (QEMU
 * would repair the refcounts first, which the model does not do).
 */
function closeChecks(model: Model, real: Real, reloadedUnclosed: Image, ranges: readonly { from: bigint; to: bigint }[]): void {
  const img = real.image;
  const fp = fingerprint(img);
  const closed = closeImage(img);
  checkUnchanged(real, fp, closed.io, 'closeImage');
  const diff = replayDiff(img, closed.io, closed.image);
  if (diff !== undefined) throw new Error(`closeImage: applyHostIO(image files, io) is not the closed image: ${diff}`);
  const h = closed.image.header;
  const decoded = fileHeader(closed.image, 'closeImage');
  if (show(decoded) !== show(h)) throw new Error(`closeImage: the header ${show(h)} is not what the file says: ${show(decoded)}`);
  if (isDirtyHeader(h)) throw new Error('closeImage: the dirty bit is still set after a clean close');
  const expected = { ...img.header, incompatibleFeatures: img.header.incompatibleFeatures & ~INCOMPAT_DIRTY_BIT };
  if (show(h) !== show(expected)) throw new Error(`closeImage: header ${show(h)}, expected ${show(expected)} (only the dirty bit cleared)`);
  const wasDirty = isDirtyHeader(img.header);
  if (!wasDirty && closed.io.some((o) => o.kind !== 'flush')) throw new Error(`closeImage of a clean image wrote: ${closed.io.map((o) => o.kind).join(', ')}`);
  if (!real.geo.lazy && !real.geo.dataFile) return;
  const size = model.disk.size;
  const rdClosed = (o: bigint, n: number): Uint8Array => readGuest(closed.image, o, n);
  const rdOracle = (o: bigint, n: number): Uint8Array => model.disk.read(o, n);
  for (const { from, to } of ranges) compareReads(`closed image, [${from}, ${to}), vs oracle`, size, from, to, rdClosed, rdOracle);
  for (const t of real.touched.slice(-8)) compareReads(`closed image, touched [${t.offset}, ${t.offset + t.length}), vs oracle`, size, t.offset - 512n, t.offset + t.length + 512n, rdClosed, rdOracle);
  const dataBytes = storeDataFile(closed.image);
  // A snapshot op that failed on a refcount overflow leaves what QEMU 7.2 leaves
  // (qcow2_update_snapshot_refcount stops part-way and does not write the L1 table back): leaked
  // clusters (a refcount above the references counted) and COPIED flags still set on tables whose
  // refcount was raised — `qemu-img check` reports both on QEMU's image too. Those two are allowed
  // then; past MAX_VIOLATIONS of them (a leaked L1 table of 512-byte clusters) the rest is not seen.
  const leaked = (real.stats.get('snapshot failed: refcount overflow') ?? 0) > 0;
  const all = checkInvariants(storeImage(closed.image), dataBytes !== undefined ? { dataFile: dataBytes } : {});
  const isLeak = (v: (typeof all)[number]): boolean =>
    (v.kind === 'refcount-mismatch' && v.refcount !== undefined && v.references !== undefined && v.refcount > BigInt(v.references)) ||
    (v.kind === 'copied-mismatch' && /COPIED is set but/.test(v.message));
  const violations = leaked ? all.filter((v) => !isLeak(v) && !(v.kind === 'too-many-violations' && all.every((w) => w === v || isLeak(w)))) : all;
  if (violations.length > 0) throw new Error(`closed image: checkInvariants: ${violations.slice(0, 5).map((v) => `${v.kind}: ${v.message}`).join('; ')}`);
  if (!real.geo.lazy) return;
  count(real, wasDirty ? 'lazy: dirty at the end of a run' : 'lazy: clean at the end of a run');
  if (real.backing !== undefined) count(real, `lazy: ${wasDirty ? 'dirty' : 'clean'} at the end, with a backing file`);
  if (real.geo.dataFile) count(real, `lazy: ${wasDirty ? 'dirty' : 'clean'} at the end, with a data file`);
  const n = size < 512n ? Number(size) : 512;
  const probe: Op = { kind: 'write', offset: 0n, data: pattern(0n, n, 77) };
  const again = step(reload(real, closed.image), probe);
  if (!again.ok) throw new Error(`a reload of the closed image refuses a write: ${again.error.code}: ${again.error.message}`);
  if (!Buffer.from(readGuest(again.image, 0n, n)).equals(Buffer.from(probe.data))) throw new Error('a reload of the closed image: the write does not read back');
  const crashed = step(reloadedUnclosed, probe);
  if (wasDirty) {
    if (crashed.ok || crashed.error.code !== 'dirty') throw new Error(`a reload of the unclosed dirty image: the write was ${crashed.ok ? 'accepted' : `refused with ${crashed.error.code}`}; expected 'dirty'`);
    if (crashed.image !== reloadedUnclosed || crashed.io.length > 0) throw new Error('a reload of the unclosed dirty image: the refused write changed the image');
  } else if (!crashed.ok) {
    throw new Error(`a reload of the unclosed clean image refuses a write: ${crashed.error.code}: ${crashed.error.message}`);
  }
}

/** Hot clusters of a run: where most ops land, so they overwrite each other. */
export function hotArb(cfg: Config): fc.Arbitrary<bigint[]> {
  const g = geoOf(cfg);
  const options: fc.WeightedArbitrary<bigint>[] = [
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: g.clusters - 1n }) },
    { weight: 1, arbitrary: fc.constantFrom(0n, g.clusters - 1n, g.clusters / 2n) },
  ];
  // With a backing file, mostly clusters where the backing chain has data or an edge (so writes land
  // partially on backing data, COW copies it, and zero/discard hide it).
  if (cfg.backing !== undefined) {
    const spots = [...new Set(backingSpots(cfg.backing).filter((o) => o >= 0n && o < g.size).map((o) => o / g.cs))];
    if (spots.length > 0) options.push({ weight: 6, arbitrary: fc.constantFrom(...spots) });
  }
  return fc.array(fc.oneof(...options), { minLength: 1, maxLength: 4 });
}

/** One run of the property: a configuration and its command sequence (drawn around its hot clusters). */
export function runArb(cfgs: fc.Arbitrary<Config>, opts: CommandOptions): fc.Arbitrary<{ cfg: Config; cmds: Iterable<Cmd> }> {
  return cfgs.chain((cfg) => hotArb(cfg).chain((hot) => commandsArb(cfg, hot, opts).map((cmds) => ({ cfg, cmds }))));
}

/** The whole property for one configuration class, with a given system. */
export function commandsProperty(
  cfgs: fc.Arbitrary<Config>,
  system: StepFn,
  opts: CommandOptions,
): fc.IPropertyWithHooks<[{ cfg: Config; cmds: Iterable<Cmd> }, { at: number; length: number }[]]> {
  const run = runArb(cfgs, opts);
  const ranges = fc.array(fc.record({ at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), length: fc.integer({ min: 1, max: 200_000 }) }), { minLength: 1, maxLength: 8 });
  return fc.property(run, ranges, ({ cfg, cmds }, randomRanges) => {
    let steps = 0;
    let stats: ReadonlyMap<string, number> = new Map();
    try {
      const s = setup(cfg, system);
      stats = s.real.stats;
      fc.modelRun(() => s, cmds);
      steps = s.real.steps;
      finalChecks(s.model, s.real, randomRanges);
    } finally {
      opts.onRun?.({ steps, stats });
    }
  });
}

/**
 * Runs a fixed command sequence (a shrunk counterexample) with all the checks of the property; a
 * command whose `check` is false is skipped, as fc.modelRun does. Returns what the run met (Real.stats).
 */
export function runSequence(cfg: Config, cmds: readonly Cmd[], system: StepFn = step): ReadonlyMap<string, number> {
  const s = setup(cfg, system);
  for (const c of cmds) if (c.check(s.model)) c.run(s.model, s.real);
  finalChecks(s.model, s.real, [{ at: 0, length: 1 }]);
  return s.real.stats;
}

/** The model's own step. */
export const modelStep: StepFn = step;
