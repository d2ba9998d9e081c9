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
import { createImage } from '../../src/model/create.ts';
import { closeImage } from '../../src/model/close.ts';
import { applyHostIO } from '../../src/model/host-file.ts';
import type { Image } from '../../src/model/image.ts';
import { loadImage, storeDataFile, storeImage } from '../../src/model/load-store.ts';
import { type Op } from '../../src/model/ops.ts';
import { readGuest } from '../../src/model/read.ts';
import { step } from '../../src/model/step.ts';
import { checkInvariants } from '../../src/oracle/invariants.ts';
import { type Config, createOptionsOf, NOT_YET_MODELLED_OPS_BY_CONFIG, MiB, GiB, TiB, type ConfigClass, pattern, type Geo, geoOf } from './model-configs.ts';
import { emptyOracle, backingOracle, buildBacking, backingSpots } from './model-backing.ts';
import { type StepFn, type Real, type Model, type Cmd, pageHash, pageBytes, notePages, show, fingerprint, checkUnchanged, sameFile, replayDiff, compareReads, checkRawDataFile, INCOMPAT_DIRTY_BIT, isDirtyHeader, fileHeader, count } from './model-checks.ts';
import { type ResizeTarget } from './model-qemu-rules.ts';
import { place, WriteCmd, WriteZeroesCmd, DiscardCmd, FlushCmd, ResizeCmd, SnapshotCmd, ReadRandomCmd, WriteCompressedCmd, OutOfRangeCmd } from './model-cmds.ts';

// The machinery, for the property and the campaigns built on it.
export * from './model-configs.ts';
export * from './model-backing.ts';
export * from './model-checks.ts';
export * from './model-qemu-rules.ts';
export * from './model-cmds.ts';

export function clampOffset(g: Geo, o: bigint): bigint {
  return o < 0n ? 0n : o >= g.size ? g.size - 1n : o;
}

/**
 * Offsets weighted to a few hot clusters (so later ops overwrite earlier ranges) and to boundaries;
 * about half of those in the last two clusters follow the end of the disk when it moves (see `place`).
 */
export function offsetArb(g: Geo, hot: readonly bigint[]): fc.Arbitrary<{ offset: bigint; fromEnd: boolean }> {
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
export function resizeArb(g: Geo): fc.Arbitrary<ResizeTarget> {
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

export function writeLengthArb(g: Geo): fc.Arbitrary<number> {
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
export function rangeLengthArb(g: Geo): fc.Arbitrary<bigint> {
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

export function clampLength(g: Geo, offset: bigint, n: bigint): bigint {
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

/** The image and oracle a run starts from. */
export function setup(cfg: Config, system: StepFn): { model: Model; real: Real } {
  const backing = cfg.backing !== undefined ? buildBacking(cfg.backing) : undefined;
  const backingExpected = cfg.backing !== undefined ? backingOracle(cfg.backing) : undefined;
  const created = createImage(createOptionsOf(cfg)).image;
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
export function reload(real: Real, img: Image): Image {
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
export function closeChecks(model: Model, real: Real, reloadedUnclosed: Image, ranges: readonly { from: bigint; to: bigint }[]): void {
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
