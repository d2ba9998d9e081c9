/**
 * The valid families: images a conforming reader must read, each built by the model from
 * `qemu-img create` options and one session of guest ops (so the file is what QEMU 7.2 writes for
 * the same commands), some then edited at the byte level for what no op produces (unknown header
 * extensions and feature bits, header_length 104 or longer, persistent bitmaps, a crash's dirty bit).
 * One family per feature class, so a reader's failures point at the feature.
 */
import { HeaderExtensionType } from '../../generated/qcow2.ts';
import { corrupt } from '../corrupt/index.ts';
import type { CreateOptions } from '../model/index.ts';
import type { Op } from '../model/index.ts';
import { addBitmaps } from './bitmaps.ts';
import type { Family, FamilyContext, FamilyOutput } from './family.ts';
import { editHeaderFields, readHeaderCluster, writeHeaderCluster, type RawExtension } from './header-edit.ts';
import { payload, randomOps, type OpWeights } from './op-gen.ts';
import type { Prng } from './prng.ts';
import { validCase, type BackingLayer, type ValidRecipe } from './valid-case.ts';

const K = 1024;
const M = 1024 * 1024;

/** Every cluster size QEMU accepts (docs/format/header.md#header-layout: 2^9 .. 2^21). */
export const CLUSTER_SIZES: readonly number[] = Array.from({ length: 13 }, (_, i) => 512 << i);
/** Every refcount width (docs/format/refcounts.md#refcount-widths). */
export const REFCOUNT_WIDTHS: readonly number[] = [1, 2, 4, 8, 16, 32, 64];
/** Cluster sizes for families about something else: small, so the files stay small. */
const SMALL_CLUSTERS: readonly number[] = [512, 512, 1 * K, 1 * K, 2 * K, 4 * K];

/** A name for a cluster size: 512, 1k … 2m. */
function sizeName(n: number): string {
  return n >= M ? `${n / M}m` : n >= K ? `${n / K}k` : String(n);
}

/** A virtual size of 4..64 clusters (at least 64 KiB, at most 16 MiB), a multiple of 512, sometimes not of the cluster size. */
function virtualSize(prng: Prng, cs: number): bigint {
  const clusters = prng.int(4, 64);
  let size = BigInt(cs) * BigInt(clusters);
  if (size < 64n * 1024n) size = 64n * 1024n;
  if (size > 16n * BigInt(M)) size = 16n * BigInt(M) + BigInt(cs * prng.int(0, 3));
  if (prng.chance(0.25)) size += BigInt(512 * prng.int(1, Math.max(1, cs / 512 - 1)));
  return size;
}

/**
 * A small virtual size — 4 to 32 clusters, at most 64 KiB unless that is under 4 clusters — for
 * families that store a file as large as the disk (raw backing, data file, preallocation).
 */
function smallSize(prng: Prng, cs: number): bigint {
  return BigInt(cs) * BigInt(prng.int(4, Math.max(4, Math.min(32, (64 * K) / cs))));
}

/** Random guest ops over a disk (see op-gen.ts). */
function ops(prng: Prng, size: bigint, cs: number, count: number, weights: OpWeights = {}, extendedL2 = false): Op[] {
  return randomOps(prng, { size, clusterSize: cs, zeroGranularity: extendedL2 ? cs / 32 : 512 }, count, weights);
}

/** What a family declares besides its recipe. */
interface FamilyOptions {
  /** Family.minBytes. */
  readonly minBytes?: number;
  /** Family.features: required of every case (added to the recipe's requireFeatures). */
  readonly features?: readonly string[];
}

/** A family made by one recipe function. */
function family(name: string, doc: string, recipe: (ctx: FamilyContext) => ValidRecipe, opts: FamilyOptions = {}): Family {
  const features = opts.features ?? [];
  return {
    name,
    valid: true,
    doc,
    ...(opts.minBytes !== undefined ? { minBytes: opts.minBytes } : {}),
    ...(features.length > 0 ? { features } : {}),
    generate: (ctx): FamilyOutput => {
      const r = recipe(ctx);
      return validCase(ctx, features.length > 0 ? { ...r, requireFeatures: [...new Set([...(r.requireFeatures ?? []), ...features])] } : r);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Geometry: cluster sizes, refcount widths, versions

const clusterSizeFamilies: Family[] = CLUSTER_SIZES.map((cs) =>
  family(`cluster-${sizeName(cs)}`, `version 3 image with ${cs}-byte clusters and mixed writes, zero writes and discards`, ({ prng }) => {
    // Big clusters make big files: from 16 KiB on, one write of part of one cluster, at any place.
    const size = cs >= 256 * K ? BigInt(cs) * BigInt(prng.int(2, 4)) : virtualSize(prng, cs);
    const big = cs >= 16 * K;
    const all = big
      ? [{ kind: 'write' as const, offset: BigInt(prng.int(0, Number(size / 512n) - 1)) * 512n, data: payload(prng, 512 * prng.int(1, 8), prng.pick(['pattern', 'random'] as const)) }]
      : ops(prng, size, cs, prng.int(3, 8), { compress: 1 });
    return { family: `cluster-${sizeName(cs)}`, create: { size, clusterSize: cs }, ops: all };
  }, { minBytes: 3 * cs, features: ['version:3', `cluster-size:${cs}`] })); // header, refcount table and refcount block: three clusters at least

const refcountFamilies: Family[] = REFCOUNT_WIDTHS.map((bits) =>
  family(`refcount-${bits}`, `version 3 image with ${bits}-bit refcounts${bits > 1 ? ', an internal snapshot' : ''} and compressed clusters`, ({ prng }) => {
    const cs = prng.pick(SMALL_CLUSTERS);
    const size = virtualSize(prng, cs);
    // Narrow refcounts overflow where a snapshot adds a reference to a host cluster already at the
    // maximum: 1 bit cannot take a snapshot at all (every cluster would need refcount 2, docs/format/refcounts.md#effects-of-narrow-widths), and
    // below 8 bits several compressed blobs can fill a host cluster's refcount, so compressed
    // writes come only after the snapshot there.
    const all: Op[] = [...ops(prng, size, cs, prng.int(2, 5), { compress: bits >= 8 || bits === 1 ? 2 : 0 })];
    if (bits > 1) all.push({ kind: 'snapshotCreate', name: 'snap-a' }, ...ops(prng, size, cs, prng.int(1, 4), { compress: 2 }));
    return { family: `refcount-${bits}`, create: { size, clusterSize: cs, refcountBits: bits }, ops: all };
  }, { features: [`refcount-bits:${bits}`] }));

const v2Family = family('v2', 'version 2 (compat=0.10) image: 72-byte header, no feature bits, zeroing by deallocation, a snapshot', ({ prng }) => {
  const cs = prng.pick([...SMALL_CLUSTERS, 64 * K]);
  const size = virtualSize(prng, cs);
  const all = [...ops(prng, size, cs, prng.int(2, 5), { compress: 1 }), { kind: 'snapshotCreate', name: 'v2-snap' } as Op, ...ops(prng, size, cs, prng.int(1, 3))];
  return { family: 'v2', create: { size, clusterSize: cs, compat: '0.10' }, ops: all };
}, { features: ['version:2', 'snapshots'] });

const v3Family = family('v3', 'version 3 image as qemu-img 7.2 creates it by default (header_length 112, feature name table) with mixed ops', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS.slice(2));
  const size = virtualSize(prng, cs);
  return { family: 'v3', create: { size, clusterSize: cs, compat: '1.1' }, ops: ops(prng, size, cs, prng.int(3, 6)) };
}, { features: ['version:3', 'header-length:112'] });

const sizeZeroFamily = family('size-zero', 'an image of virtual size 0: l1_size 0 and l1_table_offset 0', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  return { family: 'size-zero', create: { size: 0n, clusterSize: cs, compat: prng.pick(['0.10', '1.1']) }, ops: [] };
}, { features: ['size-zero'] });

const l1MultiClusterFamily = family('l1-multi-cluster', 'an active L1 table spanning several clusters, with data mapped through its later clusters', ({ prng }) => {
  const cs = prng.pick([512, 1 * K]);
  const l1PerCluster = cs / 8;
  const bytesPerL1Entry = BigInt(cs) * BigInt(cs / 8);
  const l1Clusters = prng.int(2, 4);
  const size = bytesPerL1Entry * BigInt(l1PerCluster * (l1Clusters - 1) + prng.int(1, l1PerCluster));
  // Writes aimed at L1 entries in the last cluster of the table, and a few anywhere.
  const lastEntries: Op[] = [];
  for (let i = 0; i < 3; i++) {
    const entry = BigInt(prng.int(l1PerCluster * (l1Clusters - 1), Number(size / bytesPerL1Entry) - 1));
    const off = entry * bytesPerL1Entry + BigInt(cs * prng.int(0, cs / 8 - 1));
    lastEntries.push({ kind: 'write', offset: off, data: payload(prng, cs, prng.pick(['pattern', 'random'])) });
  }
  return { family: 'l1-multi-cluster', create: { size, clusterSize: cs }, ops: [...lastEntries, ...ops(prng, size, cs, 2)] };
}, { features: ['l1-multi-cluster'] });

const refcountTableGrownFamily = family('refcount-table-grown', 'the refcount table outgrew its first cluster and was moved (qcow2_refcount_area, docs/format/allocation.md#refcount-table-growth)', ({ prng }) => {
  // 512-byte clusters and 64-bit refcounts: one refcount block covers 64 clusters and the first
  // 1-cluster table 64 blocks, i.e. 2 MiB of file; metadata preallocation of a disk a little larger
  // than that fills the file past it, so the table has to grow.
  const size = BigInt(2 * M + 512 * prng.int(64, 512));
  return {
    family: 'refcount-table-grown',
    create: { size, clusterSize: 512, refcountBits: 64, preallocation: 'metadata' },
    ops: ops(prng, size, 512, prng.int(1, 3)),
  };
}, { minBytes: 2 * M, features: ['refcount-table-moved'] });

const preallocFamily = family('preallocation-metadata', 'preallocation=metadata: every L2 entry allocated up front (zero-filled data clusters, file extended sparse)', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = smallSize(prng, cs);
  const extendedL2 = cs >= 16 * K && prng.chance(0.5);
  return { family: 'preallocation-metadata', create: { size, clusterSize: cs, preallocation: 'metadata', extendedL2 }, ops: ops(prng, size, cs, prng.int(1, 4), {}, extendedL2) };
});

const resizeFamily = family('resized', 'an image grown (L1 table relocated) and shrunk (l1_size kept) by resize ops, with data around the old ends', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  const grown = size * BigInt(prng.int(2, 8));
  const shrunk = ((size / 2n) + 511n) & ~511n;
  const all: Op[] = [
    ...ops(prng, size, cs, 2),
    { kind: 'resize', size: grown },
    ...ops(prng, grown, cs, 3),
    { kind: 'resize', size: shrunk },
    ...ops(prng, shrunk, cs, 1),
  ];
  return { family: 'resized', create: { size, clusterSize: cs }, ops: all };
});

const largeOffsetFamily = family('size-above-4g', 'a virtual disk larger than 4 GiB with data above the 32-bit boundary (offsets that do not fit 32 bits)', ({ prng }) => {
  const cs = 4 * K;
  const size = (1n << 32n) + BigInt(cs * prng.int(4, 16));
  const above = (1n << 32n) + BigInt(cs * prng.int(0, 3));
  return {
    family: 'size-above-4g',
    create: { size, clusterSize: cs },
    ops: [
      { kind: 'write', offset: above, data: payload(prng, cs, 'random') },
      { kind: 'write', offset: (1n << 32n) - 512n, data: payload(prng, 1024, 'random') },
      { kind: 'write', offset: 0n, data: payload(prng, 512, 'pattern') },
    ],
  };
}, { features: ['size-above-4g'] });

// ---------------------------------------------------------------------------------------------
// L2 entry kinds

/**
 * An extended-L2 recipe: aimed ops that make each subcluster state (a partial write into a fresh
 * cluster: normal + unallocated subclusters; a partial zero inside it: zero subclusters; a partial
 * zero of an untouched cluster: zero-plain; a compressed cluster; a discarded cluster).
 */
function extendedL2Recipe(name: string, prng: Prng, prealloc: boolean): ValidRecipe {
  const cs = prng.pick([16 * K, 16 * K, 16 * K, 32 * K, 64 * K]);
  const sc = cs / 32;
  const size = BigInt(cs) * BigInt(prng.int(4, 6));
  const clusters = Number(size / BigInt(cs));
  const at = (c: number, s: number): bigint => BigInt(c) * BigInt(cs) + BigInt(s) * BigInt(sc);
  const [c0, c1, c2, c3] = prng.sample(Array.from({ length: clusters }, (_, i) => i), 4) as [number, number, number, number];
  const aimed: Op[] = [
    { kind: 'writeCompressed', offset: at(c2, 0), data: payload(prng, cs, 'pattern') },
    { kind: 'write', offset: at(c0, prng.int(0, 15)), data: payload(prng, sc * prng.int(1, 4), 'random') },
    { kind: 'writeZeroes', offset: at(c0, prng.int(20, 30)), length: BigInt(sc), unmap: false },
    { kind: 'writeZeroes', offset: at(c1, prng.int(0, 31)), length: BigInt(sc), unmap: prng.chance(0.5) },
    { kind: 'write', offset: at(c3, 0), data: payload(prng, cs, 'pattern') },
    { kind: 'discard', offset: at(c3, 0), length: BigInt(cs) },
  ];
  // Without preallocation a raw backing file sometimes shows through the unallocated subclusters.
  const backing: BackingLayer[] = !prealloc && prng.chance(0.5) ? [{ kind: 'raw', bytes: payload(prng, Number(size), 'pattern') }] : [];
  return {
    family: name,
    create: { size, clusterSize: cs, extendedL2: true, ...(prealloc ? { preallocation: 'metadata' } : {}) },
    // Only aimed ops: random whole-cluster writes would overwrite the states just made.
    ops: aimed,
    backing,
  };
}

const extendedL2Family = family('extended-l2', 'extended L2 entries with mixed subcluster states (normal, zero, unallocated, compressed), sometimes over a raw backing file', ({ prng }) =>
  extendedL2Recipe('extended-l2', prng, false), { features: ['extended-l2', 'subcluster:normal', 'subcluster:zero-plain', 'subcluster:unallocated-plain', 'subcluster:compressed'] });

const extendedL2PreallocFamily = family('extended-l2-prealloc', 'extended L2 entries with metadata preallocation: allocated clusters whose subclusters are unallocated (unallocated-alloc), mixed with written and zeroed ones', ({ prng }) =>
  extendedL2Recipe('extended-l2-prealloc', prng, true), { features: ['extended-l2', 'subcluster:unallocated-alloc', 'subcluster:zero-alloc'] });

/** Ops that compress a run of consecutive clusters in one session (so blobs pack, share and straddle host clusters). */
function compressedRun(prng: Prng, cs: number, size: bigint): Op[] {
  const clusters = Number(size / BigInt(cs));
  const n = Math.min(clusters, prng.int(4, 10));
  const first = prng.int(0, clusters - n);
  const out: Op[] = [];
  for (let i = 0; i < n; i++) {
    // Text compresses to roughly half a cluster (two blobs cannot share a cluster without one
    // straddling into the next); a pattern compresses to a few bytes (many blobs share one cluster).
    const kind = cs > 4 * K ? 'pattern' : prng.pick(['text', 'text', 'pattern'] as const);
    out.push({ kind: 'writeCompressed', offset: BigInt(first + i) * BigInt(cs), data: payload(prng, cs, kind) });
  }
  return out;
}

function compressedFamily(type: 'zlib' | 'zstd'): Family {
  return family(`compressed-${type}`, `${type} compressed clusters: blobs packed byte-contiguously, host clusters shared by several blobs, blobs straddling host clusters, overwritten compressed clusters`, ({ prng }) => {
    const cs = prng.pick(SMALL_CLUSTERS);
    const size = virtualSize(prng, cs);
    const all = [...compressedRun(prng, cs, size), ...compressedRun(prng, cs, size), ...ops(prng, size, cs, prng.int(1, 3), { compress: 2 })];
    return {
      family: `compressed-${type}`,
      create: { size, clusterSize: cs, ...(type === 'zstd' ? { compressionType: 'zstd' } : {}) },
      ops: all,
      guarantee: sharedHostCluster(cs),
    };
  }, { features: ['l2:compressed', 'compressed:shared-host-cluster', ...(type === 'zstd' ? ['compression-type:zstd'] : [])] });
}

/**
 * Three compressed writes of one repeated byte to guest clusters 0-2, which QEMU packs byte-contiguously
 * (docs/format/compression.md): each blob is a few dozen bytes, less than the smallest cluster, so of
 * three consecutive blobs at least two start in the same host cluster — whatever the earlier ops left
 * (a blob may straddle into a new cluster, or start one, only once among the three). No random draws.
 */
function sharedHostCluster(cs: number): Op[] {
  return [0, 1, 2].map((i): Op => ({ kind: 'writeCompressed', offset: BigInt(i) * BigInt(cs), data: new Uint8Array(cs).fill(0x5a + i) }));
}

const zeroPlainFamily = family('zero-plain', 'zero-plain L2 entries (zero flag, no host cluster) from zero writes to unallocated and unmapped clusters', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  return {
    family: 'zero-plain',
    create: { size, clusterSize: cs },
    ops: [...ops(prng, size, cs, 3, { write: 1, writeUnaligned: 0, zero: 3, zeroUnmap: 3, zeroPartial: 0, discard: 0 })],
    // A zero write with unmap frees the cluster and leaves the zero flag alone (docs/format/allocation.md).
    guarantee: [{ kind: 'writeZeroes', offset: 0n, length: BigInt(cs), unmap: true }],
  };
}, { features: ['l2:zero-plain'] });

const zeroAllocFamily = family('zero-alloc', 'zero-alloc L2 entries (zero flag on an allocated cluster) from zero writes without unmap over written clusters', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  const clusters = Number(size / BigInt(cs));
  const first = prng.int(0, clusters - 2);
  const n = prng.int(1, Math.min(4, clusters - first));
  const range = { offset: BigInt(first) * BigInt(cs), length: BigInt(n) * BigInt(cs) };
  return {
    family: 'zero-alloc',
    create: { size, clusterSize: cs },
    ops: [
      { kind: 'write', offset: range.offset, data: payload(prng, Number(range.length), 'pattern') },
      { kind: 'writeZeroes', offset: range.offset, length: range.length, unmap: false },
    ],
  };
}, { features: ['l2:zero-alloc'] });

// ---------------------------------------------------------------------------------------------
// Backing files, snapshots, data files

/** A qcow2 backing layer of `size` bytes with some data. */
function qcow2Layer(prng: Prng, size: bigint, cs: number): BackingLayer {
  return { kind: 'qcow2', create: { size, clusterSize: cs, compat: prng.pick(['0.10', '1.1']) }, ops: ops(prng, size, cs, prng.int(2, 5), { zero: 0, zeroUnmap: 0, zeroPartial: 0, discard: 0 }) };
}

/** A raw backing file of exactly `length` bytes: patterned runs and random blocks. */
function rawLayer(prng: Prng, length: number): BackingLayer {
  const bytes = new Uint8Array(length);
  for (let at = 0; at < length;) {
    const n = Math.min(length - at, 512 * prng.int(1, 16));
    bytes.set(payload(prng, n, prng.pick(['pattern', 'random'])), at);
    at += n;
  }
  return { kind: 'raw', bytes };
}

const backingQcow2Family = family('backing-qcow2', 'a chain of 1-3 qcow2 backing files (names relative to the image, format from the backing-format extension)', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = smallSize(prng, cs);
  const depth = prng.int(1, 3);
  const layers = Array.from({ length: depth }, () => qcow2Layer(prng, size, prng.pick(SMALL_CLUSTERS)));
  return { family: 'backing-qcow2', create: { size, clusterSize: cs }, ops: ops(prng, size, cs, prng.int(2, 5)), backing: layers };
}, { features: ['backing-format:qcow2'] });

const backingRawFamily = family('backing-raw', 'a raw backing file (backing_fmt=raw) under a qcow2 overlay with partial overwrites', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = smallSize(prng, cs);
  return { family: 'backing-raw', create: { size, clusterSize: cs }, ops: ops(prng, size, cs, prng.int(2, 5)), backing: [rawLayer(prng, Number(size))] };
}, { features: ['backing-format:raw'] });

const backingShortFamily = family('backing-short', 'a backing file shorter than the overlay (raw of a length that is not a multiple of 512, or a smaller qcow2): reads past its end are zeros', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = smallSize(prng, cs);
  const raw = prng.chance(0.5);
  const short = raw
    ? rawLayer(prng, prng.int(1, Number(size) - 1))
    : qcow2Layer(prng, ((size * BigInt(prng.int(1, 3))) / 4n + 511n) & ~511n, prng.pick(SMALL_CLUSTERS));
  // Writes straddling the backing file's end, so COW copies its tail.
  return { family: 'backing-short', create: { size, clusterSize: cs }, ops: ops(prng, size, cs, prng.int(2, 5), { writeUnaligned: 4 }), backing: [short] };
});

const snapshotsFamily = family('snapshots', 'internal snapshots: created between writes (COW of shared clusters, COPIED flags cleared), one deleted, one applied', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  const n = prng.int(2, 3);
  const all: Op[] = [];
  for (let i = 0; i < n; i++) {
    all.push(...ops(prng, size, cs, prng.int(1, 3), { compress: 1 }), { kind: 'snapshotCreate', name: `snap-${i}` });
  }
  all.push(...ops(prng, size, cs, 2));
  if (prng.chance(0.5)) all.push({ kind: 'snapshotDelete', name: `snap-${prng.int(0, n - 1)}` });
  else all.push({ kind: 'snapshotApply', name: `snap-${prng.int(0, n - 1)}` });
  all.push(...ops(prng, size, cs, 1));
  return { family: 'snapshots', create: { size, clusterSize: cs }, ops: all };
}, { features: ['snapshots'] });

const dataFileFamily = family('data-file', 'an external data file (guest data at host offset = guest offset, not refcounted); zero writes and discards leave stale data there', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = smallSize(prng, cs);
  return { family: 'data-file', create: { size, clusterSize: cs }, ops: ops(prng, size, cs, prng.int(3, 6)), dataFile: true };
}, { features: ['data-file'] });

const dataFileRawFamily = family('data-file-raw', 'an external data file with data_file_raw (autoclear bit 1): metadata preallocated 1:1, the data file is a valid raw image', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = smallSize(prng, cs);
  return { family: 'data-file-raw', create: { size, clusterSize: cs, dataFileRaw: true }, ops: ops(prng, size, cs, prng.int(3, 6)), dataFile: true };
}, { features: ['data-file', 'data-file-raw'] });

// ---------------------------------------------------------------------------------------------
// Byte-level additions: bitmaps, lazy refcounts and the dirty bit, unknown extensions and bits,
// header lengths

const bitmapsFamily = family('bitmaps', 'persistent dirty bitmaps (bitmaps extension, directory, tables with all-zero, all-one and data entries, autoclear bit 0)', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  const count = prng.int(1, 3);
  return {
    family: 'bitmaps',
    create: { size, clusterSize: cs },
    ops: ops(prng, size, cs, prng.int(1, 4)),
    post: (built) => {
      const r = addBitmaps(built.image, prng, count);
      return { bytes: r.bytes, features: [`bitmap-count:${count}`] };
    },
  };
}, { features: ['bitmaps'] });

const lazyFamily = family('lazy-refcounts', 'lazy_refcounts=on, closed cleanly (dirty bit cleared)', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  return { family: 'lazy-refcounts', create: { size, clusterSize: cs, lazyRefcounts: true }, ops: ops(prng, size, cs, prng.int(2, 5)) };
}, { features: ['lazy-refcounts'] });

const lazyDirtyFamily = family('lazy-refcounts-dirty', 'lazy refcounts after a crash: the dirty bit set and the newest clusters\' refcounts not on disk (readable read-only; check reports it, a writable open repairs it)', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  const first: Op = { kind: 'write', offset: 0n, data: payload(prng, cs, 'random') };
  return {
    family: 'lazy-refcounts-dirty',
    create: { size, clusterSize: cs, lazyRefcounts: true },
    ops: [first, ...ops(prng, size, cs, prng.int(1, 4), { zero: 0, zeroUnmap: 0, zeroPartial: 0, discard: 0 })],
    close: false,
    checkMayFail: true,
    // What a crash leaves (the corruption catalog's dirty-stale-refcounts, docs/format/features.md#dirty-bit-and-lazy-refcounts).
    post: (built) => {
      const r = corrupt(built.bytes, 'dirty-stale-refcounts', { int: (n) => prng.int(0, n - 1) });
      if (r.kind !== 'applied') throw new Error(`lazy-refcounts-dirty: ${r.reason}`);
      return { bytes: r.bytes, features: ['crash-stale-refcounts'] };
    },
  };
}, { features: ['lazy-refcounts', 'dirty-bit'] });

/** Header extension types QEMU knows (an unknown extension must use none of them). */
const KNOWN_EXTENSIONS = new Set<number>(Object.values(HeaderExtensionType));

const unknownExtensionFamily = family('unknown-header-extension', 'unknown header extensions (types QEMU does not know, any length, padded to 8) among the known ones: a reader must skip them', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS.slice(1));
  const withBacking = prng.chance(0.3);
  const size = withBacking ? smallSize(prng, cs) : virtualSize(prng, cs);
  const n = prng.int(1, 3);
  return {
    family: 'unknown-header-extension',
    create: { size, clusterSize: cs },
    ops: ops(prng, size, cs, prng.int(1, 3)),
    ...(withBacking ? { backing: [rawLayer(prng, Number(size))] } : {}),
    post: (built) => {
      const c = readHeaderCluster(built.bytes);
      const exts: RawExtension[] = [...c.extensions];
      for (let i = 0; i < n; i++) {
        let type = prng.nextU32();
        while (KNOWN_EXTENSIONS.has(type)) type = prng.nextU32();
        exts.splice(prng.int(0, exts.length), 0, { type, data: prng.bytes(prng.int(0, 40)) });
      }
      return { bytes: writeHeaderCluster(built.bytes, { ...c, extensions: exts }), features: [`unknown-extensions:${n}`] };
    },
  };
}, { features: ['unknown-header-extension'] });

/** A mask of 1-3 random bits from `lowest`..63. */
function unknownBits(prng: Prng, lowest: number): bigint {
  let mask = 0n;
  for (let i = prng.int(1, 3); i > 0; i--) mask |= 1n << BigInt(prng.int(lowest, 63));
  return mask;
}

const unknownCompatFamily = family('unknown-compatible-bits', 'unknown compatible feature bits set (bits 1..63): a reader must ignore them', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  const mask = unknownBits(prng, 1);
  return {
    family: 'unknown-compatible-bits',
    create: { size, clusterSize: cs, lazyRefcounts: prng.chance(0.5) },
    ops: ops(prng, size, cs, prng.int(1, 3)),
    post: (built) => ({ bytes: editHeaderFields(built.bytes, (h) => ({ compatibleFeatures: h.compatibleFeatures | mask })) }),
  };
}, { features: ['unknown-compatible-bits'] });

const unknownAutoclearFamily = family('unknown-autoclear-bits', 'unknown autoclear feature bits set (bits 2..63): a reader must ignore them (a writer must clear them)', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  const mask = unknownBits(prng, 2);
  return {
    family: 'unknown-autoclear-bits',
    create: { size, clusterSize: cs },
    ops: ops(prng, size, cs, prng.int(1, 3)),
    post: (built) => ({ bytes: editHeaderFields(built.bytes, (h) => ({ autoclearFeatures: h.autoclearFeatures | mask })) }),
  };
}, { features: ['unknown-autoclear-bits'] });

const headerLength104Family = family('header-length-104', 'a version 3 header of 104 bytes (as QEMU before 5.1 wrote it): no compression_type field, extensions from byte 104', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS);
  const size = virtualSize(prng, cs);
  return {
    family: 'header-length-104',
    create: { size, clusterSize: cs },
    ops: ops(prng, size, cs, prng.int(2, 4), { compress: 1 }),
    post: (built) => ({ bytes: editHeaderFields(built.bytes, () => ({ headerLength: 104 })) }),
  };
}, { features: ['header-length:104'] });

const headerLengthLongFamily = family('header-length-long', 'a version 3 header longer than 112 bytes (unknown additional fields, length not always a multiple of 8): extensions start at header_length', ({ prng }) => {
  const cs = prng.pick(SMALL_CLUSTERS.slice(1));
  const size = virtualSize(prng, cs);
  const length = 112 + prng.int(1, 64);
  return {
    family: 'header-length-long',
    create: { size, clusterSize: cs, ...(prng.chance(0.5) ? { compressionType: 'zstd' } : {}) },
    ops: ops(prng, size, cs, prng.int(2, 4), { compress: 1 }),
    post: (built) => {
      const c = readHeaderCluster(built.bytes);
      const header = { ...c.header, headerLength: length };
      return { bytes: writeHeaderCluster(built.bytes, { ...c, header, unknownHeaderBytes: prng.bytes(length - 112) }), features: [`header-length-multiple-of-8:${length % 8 === 0}`] };
    },
  };
});

/** Every valid family, in a fixed order. */
export const VALID_FAMILIES: readonly Family[] = [
  ...clusterSizeFamilies,
  ...refcountFamilies,
  v2Family,
  v3Family,
  sizeZeroFamily,
  l1MultiClusterFamily,
  refcountTableGrownFamily,
  preallocFamily,
  resizeFamily,
  largeOffsetFamily,
  extendedL2Family,
  extendedL2PreallocFamily,
  compressedFamily('zlib'),
  compressedFamily('zstd'),
  zeroPlainFamily,
  zeroAllocFamily,
  backingQcow2Family,
  backingRawFamily,
  backingShortFamily,
  snapshotsFamily,
  dataFileFamily,
  dataFileRawFamily,
  bitmapsFamily,
  lazyFamily,
  lazyDirtyFamily,
  unknownExtensionFamily,
  unknownCompatFamily,
  unknownAutoclearFamily,
  headerLength104Family,
  headerLengthLongFamily,
];

