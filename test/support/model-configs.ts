/**
 * Image configurations of the model property (test/unit/model-commands.test.ts) and their fast-check
 * arbitraries — geometry, backing specs, data files, lazy refcounts — with the geometry helpers the
 * commands place their ops with.
 */
import fc from 'fast-check';
import { createImage, type CreateOptions } from '../../src/model/create.ts';
import { type Op } from '../../src/model/ops.ts';
import { step } from '../../src/model/step.ts';
import { RawDisk } from '../../src/oracle/raw-disk.ts';
import { place } from './model-cmds.ts';
import { commandsArb } from './model-commands.ts';

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

export const KiB = 1024n;

export const MiB = 1024n * KiB;

export const GiB = 1024n * MiB;

export const TiB = 1024n * GiB;

/**
 * Largest virtual size generated for a geometry: the L1 table at most 32768 entries (256 KiB), which
 * keeps createImage cheap (512-byte clusters: 1 GiB; 16 KiB clusters and up: 1 TiB).
 */
export function sizeLimit(clusterBits: number, extendedL2: boolean): bigint {
  const cs = 1n << BigInt(clusterBits);
  const l2Entries = cs / (extendedL2 ? 16n : 8n);
  const byL1 = 32768n * cs * l2Entries;
  return byL1 < TiB ? byL1 : TiB;
}

/** Cluster bits, small ones weighted. */
export const clusterBitsArb = (min: number, max: number): fc.Arbitrary<number> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...[9, 10, 12, 14, 16].filter((b) => b >= min && b <= max).slice(0, 3)) },
    { weight: 2, arbitrary: fc.integer({ min, max }) },
    { weight: 1, arbitrary: fc.constantFrom(...[16, 21].filter((b) => b >= min && b <= max), min) },
  );

/** Virtual sizes from tiny to 1 TiB (capped per geometry); unaligned ones included. */
export const sizeArb: fc.Arbitrary<bigint> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(MiB) },
  { weight: 3, arbitrary: fc.bigInt({ min: 1n, max: 4n * MiB }) },
  { weight: 1, arbitrary: fc.bigInt({ min: 1n, max: 128n * KiB }) },
  { weight: 2, arbitrary: fc.constantFrom(64n * MiB, GiB, 64n * GiB) },
  { weight: 3, arbitrary: fc.constantFrom(TiB, TiB - 512n) },
);

export type ConfigClass = 'small-clusters' | 'large-clusters' | 'preallocated' | 'backing' | 'backing-chain' | 'data-file' | 'lazy-refcounts';

export function finishConfig(c: Omit<Config, 'size' | 'requestedSize'>, wanted: bigint, unalign: number): Config {
  const limit = sizeLimit(c.clusterBits, c.extendedL2);
  let size = wanted < limit ? wanted : limit;
  size = ((size + 511n) / 512n) * 512n;
  // A requested size qemu-img rounds up: the same virtual size, not a multiple of 512 when unalign > 0.
  const requestedSize = size - BigInt(unalign % 512 < size ? unalign % 512 : 0);
  return { ...c, requestedSize, size };
}

/** A backing size relative to the image above it: equal, shorter (also tiny), or longer. */
export const backingSizeArb = (above: bigint): fc.Arbitrary<bigint> =>
  fc.oneof(
    fc.constant(above),
    fc.bigInt({ min: 1n, max: above }),
    fc.bigInt({ min: 1n, max: 300_000n }),
    fc.oneof(fc.constant(above + MiB), fc.bigInt({ min: 1n, max: 64n }).map((k) => above + k * 512n)),
  );

export const rawBackingArb = (above: bigint): fc.Arbitrary<RawBackingSpec> =>
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
export function backingOpsArb(size: bigint, cs: bigint, sc: bigint): fc.Arbitrary<BackingOpSpec[]> {
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
export function qcow2BackingArb(above: bigint, qcow2Levels: number, rawBottom: boolean): fc.Arbitrary<Qcow2BackingSpec> {
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
export const backingChainArb = (above: bigint): fc.Arbitrary<Qcow2BackingSpec> =>
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
export function v3Base(minBits: number, maxBits: number) {
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
export function dataFileSizeArb(raw: boolean): fc.Arbitrary<bigint> {
  const opts: fc.WeightedArbitrary<bigint>[] = [
    { weight: 3, arbitrary: fc.constant(MiB) },
    { weight: 4, arbitrary: fc.bigInt({ min: 1n, max: 4n * MiB }) },
    { weight: 1, arbitrary: fc.bigInt({ min: 1n, max: 128n * KiB }) },
  ];
  if (!raw) opts.push({ weight: 1, arbitrary: fc.constantFrom(16n * MiB, 64n * MiB - 512n) });
  return fc.oneof(...opts);
}

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

/**
 * createImage's options for `cfg`: its geometry and features, the backing file (named `base.FORMAT`
 * unless `names.backing` says otherwise; none when `names.backing` is null) and the external data
 * file (`data.raw` unless `names.dataFile` says otherwise).
 */
export function createOptionsOf(cfg: Config, names: { readonly backing?: string | null; readonly dataFile?: string } = {}): CreateOptions {
  const backingName = names.backing === undefined && cfg.backing !== undefined ? `base.${cfg.backing.format}` : names.backing;
  return {
    size: cfg.requestedSize,
    clusterSize: 1 << cfg.clusterBits,
    compat: cfg.compat,
    refcountBits: cfg.refcountBits,
    extendedL2: cfg.extendedL2,
    compressionType: cfg.compressionType,
    preallocation: cfg.preallocation,
    ...(typeof backingName === 'string' && cfg.backing !== undefined ? { backingFile: backingName, backingFmt: cfg.backing.format } : {}),
    ...(cfg.dataFile !== undefined ? { dataFile: names.dataFile ?? 'data.raw', dataFileRaw: cfg.dataFile === 'raw' } : {}),
    ...(cfg.lazy === true ? { lazyRefcounts: true } : {}),
  };
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

export const fmt = (n: bigint): string => (n >= 1n << 20n && n % 512n === 0n ? `0x${n.toString(16)}` : n.toString());
