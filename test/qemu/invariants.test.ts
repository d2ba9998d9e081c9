/**
 * checkInvariants (src/oracle/invariants.ts):
 * - every QEMU-made image of the matrix (test/support/image-matrix.ts) keeps all invariants, except
 *   the one left dirty by a crash, which must report refcount mismatches (positive control);
 * - corruptions planted in copies of real images are caught, each as its specific violation kind;
 * - mutated real images (hostile input) never make it throw or run away;
 * - random write / write-zeroes / discard sequences through the model's `step`, on images made by
 *   `createImage`, keep every invariant after every step.
 * Needs qemu-img/qemu-io for the matrix.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { L2EntryMasks } from '../../generated/qcow2.ts';
import { refcountOf, walkImage, type ImageWalk, type L2EntryInfo, type L2TableInfo } from '../../src/format/walk.ts';
import { createImage, type CreateOptions } from '../../src/model/create.ts';
import type { Image } from '../../src/model/image.ts';
import { storeDataFile, storeImage } from '../../src/model/load-store.ts';
import type { Op } from '../../src/model/ops.ts';
import { step } from '../../src/model/step.ts';
import { workSince, workSnapshot } from '../../src/codec/work-meter.ts';
import { checkInvariants, MAX_VIOLATIONS, type InvariantKind, type InvariantViolation } from '../../src/oracle/invariants.ts';
import { applyMutations, locateMetadata, mutationsArbitrary } from '../support/mutations.ts';
import { buildImageMatrix, MATRIX_IMAGE_NAMES, type MatrixImage } from '../support/image-matrix.ts';

interface Built {
  readonly image: MatrixImage;
  readonly bytes: Uint8Array;
  readonly dataFile?: Uint8Array;
}

let dir: string | undefined;
const built = new Map<string, Built>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-invariants-'));
  const images = await buildImageMatrix(dir);
  await Promise.all(
    images.map(async (image) => {
      const bytes = new Uint8Array(await readFile(image.path));
      const dataPath = image.createOptions['data_file'];
      const dataFile = dataPath !== undefined ? new Uint8Array(await readFile(dataPath)) : undefined;
      built.set(image.name, { image, bytes, ...(dataFile !== undefined ? { dataFile } : {}) });
    }),
  );
});

afterAll(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

function get(name: string): Built {
  const b = built.get(name);
  if (b === undefined) throw new Error(`matrix image ${name} was not built`);
  return b;
}

const kinds = (v: readonly InvariantViolation[]): InvariantKind[] => [...new Set(v.map((x) => x.kind))].sort();
const show = (v: readonly InvariantViolation[]): string => v.map((x) => `${x.kind}: ${x.message}`).join('\n');

// ---------------------------------------------------------------------------------------------

describe('QEMU-made images', () => {
  it.each(MATRIX_IMAGE_NAMES)('%s', (name) => {
    const b = get(name);
    const v = checkInvariants(b.bytes, b.dataFile !== undefined ? { dataFile: b.dataFile } : {});
    if (!b.image.leftDirty) {
      expect(v, show(v)).toEqual([]);
      return;
    }
    // Positive control: the crash left referenced clusters with refcount 0 (and their COPIED flags set).
    const mismatches = v.filter((x) => x.kind === 'refcount-mismatch');
    expect(mismatches.length, show(v)).toBeGreaterThan(0);
    for (const m of mismatches) {
      expect(m.refcount).toBe(0n);
      expect(m.references).toBe(1);
      expect(m.message).toMatch(/^host cluster \d+ at 0x[0-9a-f]+ \(data\): refcount 0 on disk but 1 reference\(s\) counted$/);
    }
    expect(kinds(v)).toEqual(['copied-mismatch', 'refcount-mismatch']);
  });
});

// ---------------------------------------------------------------------------------------------
// Planting corruptions

function copyOf(name: string): { bytes: Uint8Array; walk: ImageWalk } {
  const bytes = get(name).bytes.slice();
  return { bytes, walk: walkImage(bytes) };
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function getU64(b: Uint8Array, off: bigint): bigint {
  return view(b).getBigUint64(Number(off));
}

function setU64(b: Uint8Array, off: bigint, v: bigint): void {
  view(b).setBigUint64(Number(off), v);
}

/** Writes the 16-bit refcount of host cluster `cluster` (images with refcount_bits 16). */
function setRefcount16(b: Uint8Array, walk: ImageWalk, cluster: bigint, value: number): void {
  expect(walk.header.refcountBits).toBe(16);
  const perBlock = BigInt((walk.header.clusterSize * 8) / 16);
  const te = walk.refcounts.entries.find((e) => BigInt(e.index) === cluster / perBlock);
  if (te === undefined) throw new Error(`no refcount block covers cluster ${cluster}`);
  view(b).setUint16(Number(te.blockOffset + (cluster % perBlock) * 2n), value);
}

interface Found {
  readonly table: L2TableInfo;
  readonly entry: L2EntryInfo;
  /** File offset of the entry's word 0. */
  readonly at: bigint;
  readonly host: bigint;
  readonly cluster: bigint;
  readonly refcount: bigint;
}

/** The first NORMAL entry of an active L2 table satisfying `pred`. */
function findActiveNormal(walk: ImageWalk, pred: (f: Found) => boolean = () => true): Found {
  const cs = BigInt(walk.header.clusterSize);
  const entrySize = walk.header.extendedL2 ? 16n : 8n;
  for (const table of walk.l2Tables) {
    if (!table.references.some((r) => r.l1 === 'active')) continue;
    for (const entry of table.entries) {
      if (entry.class.kind !== 'normal') continue;
      const host = entry.class.hostOffset;
      const f = { table, entry, at: table.offset + entrySize * BigInt(entry.index), host, cluster: host / cs, refcount: refcountOf(walk, host / cs)! };
      if (pred(f)) return f;
    }
  }
  throw new Error('no matching active L2 entry');
}

describe('planted corruptions', () => {
  it('a data cluster refcount too high', () => {
    const { bytes, walk } = copyOf('defaults');
    const f = findActiveNormal(walk, (x) => x.refcount === 1n && x.entry.class.copied);
    setRefcount16(bytes, walk, f.cluster, 2);
    const v = checkInvariants(bytes);
    expect(kinds(v), show(v)).toEqual(['copied-mismatch', 'refcount-mismatch']);
    const m = v.find((x) => x.kind === 'refcount-mismatch')!;
    expect(m).toMatchObject({ hostCluster: Number(f.cluster), refcount: 2n, references: 1 });
    expect(m.message).toContain(`host cluster ${f.cluster} at 0x${f.host.toString(16)}`);
    expect(v.find((x) => x.kind === 'copied-mismatch')).toMatchObject({ hostCluster: Number(f.cluster), offset: f.at, refcount: 2n });
  });

  it('a data cluster refcount too low (shared cluster 2 -> 1)', () => {
    const { bytes, walk } = copyOf('snapshots');
    const f = findActiveNormal(walk, (x) => x.refcount >= 2n);
    setRefcount16(bytes, walk, f.cluster, Number(f.refcount) - 1);
    const v = checkInvariants(bytes);
    const m = v.filter((x) => x.kind === 'refcount-mismatch');
    expect(m, show(v)).toHaveLength(1);
    expect(m[0]).toMatchObject({ hostCluster: Number(f.cluster), refcount: f.refcount - 1n, references: Number(f.refcount) });
    // The entry's COPIED flag is clear (shared), so refcount 1 now also breaks COPIED ⇔ refcount 1.
    for (const k of kinds(v)) expect(['copied-mismatch', 'refcount-mismatch']).toContain(k);
  });

  it('a data cluster refcount of zero', () => {
    const { bytes, walk } = copyOf('defaults');
    const f = findActiveNormal(walk, (x) => x.refcount === 1n);
    setRefcount16(bytes, walk, f.cluster, 0);
    const v = checkInvariants(bytes);
    expect(kinds(v), show(v)).toEqual(['copied-mismatch', 'refcount-mismatch']);
    expect(v.find((x) => x.kind === 'refcount-mismatch')).toMatchObject({ hostCluster: Number(f.cluster), refcount: 0n, references: 1 });
  });

  it('COPIED set on a shared data cluster', () => {
    const { bytes, walk } = copyOf('snapshots');
    const f = findActiveNormal(walk, (x) => x.refcount >= 2n && !x.entry.class.copied);
    setU64(bytes, f.at, getU64(bytes, f.at) | (1n << 63n));
    const v = checkInvariants(bytes);
    expect(v, show(v)).toHaveLength(1);
    expect(v[0]).toMatchObject({ kind: 'copied-mismatch', hostCluster: Number(f.cluster), offset: f.at, refcount: f.refcount });
    expect(v[0]!.message).toContain(`L2 table at 0x${f.table.offset.toString(16)} [${f.entry.index}]`);
  });

  it('COPIED set on a compressed entry', () => {
    const { bytes, walk } = copyOf('refcount-4');
    const t = walk.l2Tables.find((x) => x.entries.some((e) => e.class.kind === 'compressed'))!;
    const e = t.entries.find((x) => x.class.kind === 'compressed')!;
    const at = t.offset + 8n * BigInt(e.index);
    setU64(bytes, at, getU64(bytes, at) | (1n << 63n));
    const v = checkInvariants(bytes);
    expect(v, show(v)).toHaveLength(1);
    expect(v[0]).toMatchObject({ kind: 'compressed-copied', offset: at });
  });

  it('an L2 entry pointing into the active L1 table (overlap)', () => {
    const { bytes, walk } = copyOf('defaults');
    const f = findActiveNormal(walk);
    const l1 = walk.header.l1TableOffset;
    setU64(bytes, f.at, (getU64(bytes, f.at) & ~L2EntryMasks.hostOffset) | l1);
    const v = checkInvariants(bytes);
    const o = v.filter((x) => x.kind === 'overlap');
    expect(o, show(v)).toHaveLength(1);
    expect(o[0]).toMatchObject({ hostCluster: Number(l1 / BigInt(walk.header.clusterSize)), offset: l1 });
    expect(o[0]!.other).toBe(`active L1 table at 0x${l1.toString(16)}`);
    expect(o[0]!.message).toContain(`data cluster at 0x${l1.toString(16)}`);
    // The L1 cluster is now referenced twice, the old data cluster not at all.
    const m = v.filter((x) => x.kind === 'refcount-mismatch').map((x) => [x.hostCluster, x.refcount, x.references]);
    expect(m).toEqual(
      [[Number(l1 / 65536n), 1n, 2], [Number(f.cluster), 1n, 0]].sort((a, b) => (a[0] as number) - (b[0] as number)),
    );
  });

  it('an L2 entry pointing past the end of the file', () => {
    const { bytes, walk } = copyOf('defaults');
    const f = findActiveNormal(walk);
    const cs = BigInt(walk.header.clusterSize);
    const beyond = ((BigInt(bytes.length) + cs - 1n) / cs + 16n) * cs;
    setU64(bytes, f.at, (getU64(bytes, f.at) & ~L2EntryMasks.hostOffset) | beyond);
    const v = checkInvariants(bytes);
    expect(kinds(v), show(v)).toEqual(['past-eof', 'refcount-mismatch']);
    expect(v.find((x) => x.kind === 'past-eof')).toMatchObject({ offset: beyond });
    expect(v.find((x) => x.kind === 'past-eof')!.message).toContain(`data cluster at 0x${beyond.toString(16)}`);
    expect(v.find((x) => x.kind === 'refcount-mismatch')).toMatchObject({ hostCluster: Number(f.cluster), references: 0 });
  });

  it('an L1 entry pointing past the end of the file', () => {
    const { bytes, walk } = copyOf('defaults');
    const e = walk.activeL1.entries[0]!;
    const at = walk.activeL1.offset + 8n * BigInt(e.index);
    const beyond = BigInt(bytes.length + 1) << 16n;
    setU64(bytes, at, (1n << 63n) | beyond);
    const v = checkInvariants(bytes);
    expect(v.filter((x) => x.kind === 'past-eof'), show(v)).toHaveLength(1);
    expect(v.some((x) => x.kind === 'decode-error')).toBe(true);
  });

  it('an extended-L2 subcluster both allocated and zero', () => {
    const { bytes, walk } = copyOf('extended-l2');
    const f = findActiveNormal(walk, (x) => ((x.entry.bitmap ?? 0n) & 0xffffffffn) !== 0n);
    const alloc = f.entry.bitmap! & 0xffffffffn;
    const lowest = alloc & -alloc;
    setU64(bytes, f.at + 8n, f.entry.bitmap! | (lowest << 32n));
    const v = checkInvariants(bytes);
    expect(v, show(v)).toHaveLength(1);
    expect(v[0]).toMatchObject({ kind: 'subcluster-alloc-and-zero', offset: f.at });
  });

  it('extended-L2 allocation bits on an unallocated entry, and a bitmap on a compressed entry', () => {
    const { bytes, walk } = copyOf('extended-l2');
    const t = walk.l2Tables[0]!;
    const free = [...Array(t.entryCount).keys()].find((i) => !t.entries.some((e) => e.index === i))!;
    const at = t.offset + 16n * BigInt(free);
    setU64(bytes, at + 8n, 1n);
    const c = walk.l2Tables.flatMap((x) => x.entries.filter((e) => e.class.kind === 'compressed').map((e) => x.offset + 16n * BigInt(e.index)))[0]!;
    setU64(bytes, c + 8n, 1n << 40n);
    const v = checkInvariants(bytes);
    expect(kinds(v), show(v)).toEqual(['alloc-bits-without-cluster', 'compressed-bitmap']);
    expect(v.find((x) => x.kind === 'alloc-bits-without-cluster')).toMatchObject({ offset: at });
    expect(v.find((x) => x.kind === 'compressed-bitmap')).toMatchObject({ offset: c });
  });

  it('a zero flag in a version 2 image', () => {
    const { bytes, walk } = copyOf('compat-0.10');
    const f = findActiveNormal(walk);
    setU64(bytes, f.at, getU64(bytes, f.at) | 1n);
    const v = checkInvariants(bytes);
    expect(v, show(v)).toHaveLength(1);
    expect(v[0]).toMatchObject({ kind: 'zero-flag-v2', offset: f.at });
  });

  it('reserved bits and an unaligned data offset', () => {
    const { bytes, walk } = copyOf('defaults');
    const f = findActiveNormal(walk);
    setU64(bytes, f.at, getU64(bytes, f.at) | (1n << 57n));
    const l1at = walk.activeL1.offset + 8n * BigInt(walk.activeL1.entries[0]!.index);
    setU64(bytes, l1at, getU64(bytes, l1at) | 2n);
    let v = checkInvariants(bytes);
    expect(kinds(v), show(v)).toEqual(['reserved-bits']);
    expect(v.map((x) => x.offset).sort()).toEqual([f.at, l1at].sort());

    const u = copyOf('defaults');
    const g = findActiveNormal(u.walk);
    setU64(u.bytes, g.at, getU64(u.bytes, g.at) + 0x200n);
    v = checkInvariants(u.bytes);
    expect(kinds(v), show(v)).toContain('unaligned');
    expect(v.find((x) => x.kind === 'unaligned')).toMatchObject({ offset: g.at });
  });

  it('a refcount block overlapping an L2 table', () => {
    const { bytes, walk } = copyOf('defaults');
    const rt = walk.header.refcountTableOffset;
    const l2 = walk.l2Tables[0]!.offset;
    // A second refcount-table entry pointing at the L2 table.
    const free = walk.refcounts.tableSize - 1;
    setU64(bytes, rt + 8n * BigInt(free), l2);
    const v = checkInvariants(bytes);
    const o = v.filter((x) => x.kind === 'overlap');
    expect(o, show(v)).toHaveLength(1);
    expect(o[0]).toMatchObject({ offset: l2 });
    expect([o[0]!.structure, o[0]!.other].join(' | ')).toMatch(/refcount block at .* \| L2 table at|L2 table at .* \| refcount block at/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('hostile input', () => {
  it('mutated real images never make it throw, and the output stays bounded', () => {
    const names = ['defaults', 'snapshots', 'extended-l2', 'bitmaps', 'refcount-1', 'cluster-4k'];
    const layouts = new Map(names.map((n) => [n, locateMetadata(n, get(n).bytes)] as const));
    fc.assert(
      fc.property(
        fc.constantFrom(...names).chain((n) => fc.tuple(fc.constant(n), mutationsArbitrary(layouts.get(n)!))),
        ([name, mutations]) => {
          const v = checkInvariants(applyMutations(get(name).bytes, mutations));
          expect(v.length).toBeLessThanOrEqual(MAX_VIOLATIONS + 1);
          for (const x of v) expect(typeof x.message).toBe('string');
        },
      ),
      { numRuns: 150 },
    );
  });

  it('every L1 and L2 entry pointing at one cluster costs linear work', () => {
    const { bytes, walk } = copyOf('cluster-512-many-l2');
    // Work counted (src/codec/work-meter.ts: fields decoded), never timed; the test timeout is the hang detector.
    const unmutated = workSnapshot();
    checkInvariants(bytes);
    const baseline = workSince(unmutated).decodedFields;
    const l2 = walk.l2Tables[0]!.offset;
    for (let i = 0; i < walk.header.l1Size; i++) setU64(bytes, walk.header.l1TableOffset + 8n * BigInt(i), l2);
    const before = workSnapshot();
    const v = checkInvariants(bytes);
    // The shared L2 table is decoded once, not once per L1 entry (that would be l1_size × its entries more).
    expect(workSince(before).decodedFields).toBeLessThanOrEqual(baseline + 16 * walk.header.l1Size);
    expect(v.length).toBeGreaterThan(0);
    expect(v.length).toBeLessThanOrEqual(MAX_VIOLATIONS + 1);
  });
});

// ---------------------------------------------------------------------------------------------
// The model keeps the invariants

interface ModelConfig {
  readonly clusterSize: number;
  readonly refcountBits: number;
  readonly v2: boolean;
  readonly extendedL2: boolean;
  readonly lazy: boolean;
  readonly prealloc: boolean;
  readonly dataFile: boolean;
  readonly size: number;
}

function createOptions(c: ModelConfig): CreateOptions {
  return {
    size: BigInt(c.size),
    clusterSize: c.clusterSize,
    ...(c.v2 ? { compat: '0.10' } : { refcountBits: c.refcountBits, extendedL2: c.extendedL2 && c.clusterSize >= 16384, lazyRefcounts: c.lazy }),
    ...(c.prealloc ? { preallocation: 'metadata' } : {}),
    ...(c.dataFile && !c.v2 ? { dataFile: 'model.data' } : {}),
  };
}

function violationsOf(img: Image): InvariantViolation[] {
  const df = storeDataFile(img);
  return checkInvariants(storeImage(img), df !== undefined ? { dataFile: df } : {});
}

const configArb: fc.Arbitrary<ModelConfig> = fc
  .record({
    clusterSize: fc.constantFrom(512, 4096, 16384, 65536),
    refcountBits: fc.constantFrom(1, 2, 4, 8, 16, 32, 64),
    v2: fc.boolean(),
    extendedL2: fc.boolean(),
    lazy: fc.boolean(),
    prealloc: fc.boolean(),
    dataFile: fc.boolean(),
    size: fc.constantFrom(64 * 1024, 1000 * 1024, 1 << 20, (1 << 22) + 4096),
  });

function opArb(size: number, clusterSize: number): fc.Arbitrary<Op> {
  const span = 3 * Math.max(clusterSize, 4096);
  const offset = fc.oneof(fc.nat(size - 1), fc.nat(Math.floor((size - 1) / clusterSize)).map((c) => c * clusterSize));
  const len = (o: number) => fc.oneof(fc.integer({ min: 0, max: span }), fc.constantFrom(clusterSize, 2 * clusterSize)).map((l) => Math.min(l, size - o));
  return fc.oneof(
    offset.chain((o) => fc.tuple(fc.constant(o), len(o), fc.integer({ min: 1, max: 255 }))).map(
      ([o, l, b]): Op => ({ kind: 'write', offset: BigInt(o), data: new Uint8Array(l).fill(b) }),
    ),
    offset.chain((o) => fc.tuple(fc.constant(o), len(o), fc.boolean())).map(
      ([o, l, unmap]): Op => ({ kind: 'writeZeroes', offset: BigInt(o), length: BigInt(l), unmap }),
    ),
    offset.chain((o) => fc.tuple(fc.constant(o), len(o))).map(([o, l]): Op => ({ kind: 'discard', offset: BigInt(o), length: BigInt(l) })),
  );
}

describe('the model keeps every invariant', () => {
  it('after createImage and after every step of random write / write-zeroes / discard sequences', () => {
    const arb = configArb.chain((c) => fc.tuple(fc.constant(c), fc.array(opArb(c.size, c.clusterSize), { minLength: 1, maxLength: 12 })));
    fc.assert(
      fc.property(arb, ([config, ops]) => {
        let img = createImage(createOptions(config)).image;
        expect(violationsOf(img), 'after createImage').toEqual([]);
        ops.forEach((op, i) => {
          const r = step(img, op);
          if (!r.ok) return; // a refused op changes nothing
          img = r.image;
          const v = violationsOf(img);
          expect(v, `after op ${i} (${op.kind}):\n${show(v)}`).toEqual([]);
        });
      }),
      { numRuns: 60 },
    );
  });

  // Regression (found by the property above): a write to a preallocated cluster of an image with an
  // external data file went to the qcow2 file at host offset == guest offset (here the header).
  // Until the model writes data files it refuses such writes, and the qcow2 file stays intact.
  it('a write to a preallocated cluster of a data-file image never touches the qcow2 file', () => {
    const img = createImage({ size: 1n << 20n, dataFile: 'model.data', preallocation: 'metadata' }).image;
    const r = step(img, { kind: 'write', offset: 0n, data: Uint8Array.of(1) });
    expect(r.ok ? 'accepted' : r.error.message).toBe('accepted');
    // The preallocated entry already maps guest cluster 0 to data-file offset 0: the qcow2 file is
    // unchanged and the byte lands in the data file.
    expect(Buffer.from(storeImage(r.image)).equals(Buffer.from(storeImage(img)))).toBe(true);
    expect(storeDataFile(r.image)![0]).toBe(1);
    expect(r.io.every((io) => io.kind === 'flush' || io.target === 'data')).toBe(true);
    expect(violationsOf(r.image)).toEqual([]);
  });
});
