/**
 * The seed images hostile-input fuzzing mutates: valid qcow2 files covering the structures a
 * mutation can hit. Most are built by the model (createImage + step; pure, no QEMU, the same bytes
 * on every run): versions 2 and 3, cluster sizes from 512 B to 2 MiB, refcount widths 1 to 64,
 * extended L2, zlib and zstd compressed clusters, zero clusters, several L2 tables, internal
 * snapshots, preallocation, a backing file name with its format extension, an external data file
 * name, lazy refcounts left dirty. Two are made by qemu-img because the model cannot make them:
 * persistent bitmaps (directory, tables, extension) and LUKS encryption (FDE extension, LUKS header).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createImage, type CreateOptions } from '../../src/model/create.ts';
import type { Image } from '../../src/model/image.ts';
import { storeImage } from '../../src/model/load-store.ts';
import type { Op } from '../../src/model/ops.ts';
import { step } from '../../src/model/step.ts';
import { qemuImgBitmapAdd, qemuImgCreate, qemuIo } from '../../src/qemu/qemu-img.ts';
import { pattern } from './model-commands.ts';

/** One seed image. */
export interface PoolImage {
  readonly name: string;
  readonly bytes: Uint8Array;
  /** Bytes of the external data file to open it with (images with incompatible bit 2). */
  readonly dataFile?: Uint8Array;
}

const KiB = 1024n;
const MiB = 1024n * KiB;
const GiB = 1024n * MiB;

/** A recipe: creation options and the ops run on the new image (cluster sizes scale the offsets). */
interface Recipe {
  readonly name: string;
  readonly create: CreateOptions;
  readonly ops: (cs: bigint) => Op[];
}

const write = (offset: bigint, length: number, seed: number): Op => ({ kind: 'write', offset, data: pattern(offset, length, seed) });
const compressed = (offset: bigint, length: number, seed: number): Op => ({ kind: 'writeCompressed', offset, data: new Uint8Array(length).map((_v, i) => ((i >> 6) * seed) & 0xff) });

/** Writes, a zeroed range, a discard and compressed clusters spread over several L2 tables. */
function mixed(cs: bigint, perL2: bigint, withSnapshots: boolean): Op[] {
  const ops: Op[] = [
    write(0n, Number(cs) + 1000, 1),
    write(3n * cs + 17n, Number(cs) + 17, 2),
    compressed(6n * cs, Number(cs), 3),
    compressed(7n * cs, Number(cs), 4),
    { kind: 'writeZeroes', offset: 9n * cs, length: 2n * cs, unmap: false },
    write(perL2 + 5n * cs, Number(cs), 5),
    write(3n * perL2, 4096, 6),
  ];
  if (withSnapshots) {
    ops.push({ kind: 'snapshotCreate', name: 'one' }, write(0n, 3000, 7), { kind: 'snapshotCreate', name: 'two' }, write(perL2 + 5n * cs, 100, 8), { kind: 'discard', offset: 9n * cs, length: cs });
  } else {
    ops.push({ kind: 'discard', offset: 3n * cs, length: cs });
  }
  return ops;
}

const perL2Of = (cs: bigint, ext: boolean): bigint => cs * (cs / (ext ? 16n : 8n));

const RECIPES: readonly Recipe[] = [
  { name: 'v3-64k-snapshots', create: { size: 4n * GiB }, ops: (cs) => mixed(cs, perL2Of(cs, false), true) },
  { name: 'v2-64k-snapshots', create: { size: 4n * GiB, compat: '0.10' }, ops: (cs) => mixed(cs, perL2Of(cs, false), true) },
  { name: 'v3-extl2-32k', create: { size: 4n * GiB, clusterSize: 32768, extendedL2: true }, ops: (cs) => [...mixed(cs, perL2Of(cs, true), true), write(20n * cs + 1024n, 3000, 9), { kind: 'writeZeroes', offset: 21n * cs + 1024n, length: 2048n, unmap: false }] },
  { name: 'v3-512-refcount4', create: { size: 64n * MiB, clusterSize: 512, refcountBits: 4 }, ops: (cs) => mixed(cs, perL2Of(cs, false), true) },
  { name: 'v3-512-refcount1', create: { size: 16n * MiB, clusterSize: 512, refcountBits: 1 }, ops: (cs) => mixed(cs, perL2Of(cs, false), false) },
  { name: 'v3-4k-refcount64-zstd', create: { size: 64n * GiB, clusterSize: 4096, refcountBits: 64, compressionType: 'zstd' }, ops: (cs) => mixed(cs, perL2Of(cs, false), true) },
  { name: 'v3-2m-refcount2', create: { size: 8n * GiB, clusterSize: 2 * 1024 * 1024, refcountBits: 2 }, ops: (cs) => [write(0n, 4096, 1), write(cs + 100n, 4096, 2), { kind: 'writeZeroes', offset: 3n * cs, length: cs, unmap: false }] },
  { name: 'v3-1k-refcount8-prealloc', create: { size: 256n * KiB, clusterSize: 1024, refcountBits: 8, preallocation: 'metadata' }, ops: (cs) => [write(0n, 3000, 1), { kind: 'writeZeroes', offset: 8n * cs, length: 4n * cs, unmap: false }, { kind: 'snapshotCreate', name: 's' }] },
  { name: 'v3-backing-name', create: { size: 32n * MiB, clusterSize: 16384, backingFile: 'base.qcow2', backingFmt: 'qcow2' }, ops: (cs) => [write(cs, 5000, 1), { kind: 'writeZeroes', offset: 4n * cs, length: cs, unmap: true }] },
  { name: 'v3-lazy-dirty', create: { size: 16n * MiB, clusterSize: 8192, lazyRefcounts: true }, ops: (cs) => [write(0n, 20000, 1), write(40n * cs, 100, 2)] },
  { name: 'v3-tiny-unaligned', create: { size: 1000n }, ops: () => [write(0n, 1000, 3)] },
  { name: 'v3-empty-l1-zero', create: { size: 0n }, ops: () => [] },
];

/** A data-file image (incompatible bit 2): the model writes its data to the second file. */
const DATA_FILE_RECIPE: Recipe = {
  name: 'v3-data-file',
  create: { size: 4n * MiB, clusterSize: 65536, dataFile: 'data.raw' },
  ops: (cs) => [write(0n, 70000, 1), { kind: 'writeZeroes', offset: 3n * cs, length: cs, unmap: false }],
};

function build(r: Recipe): { image: Image } {
  const created = createImage(r.create);
  let image = created.image;
  const cs = 1n << BigInt(image.header.clusterBits);
  for (const op of r.ops(cs)) {
    const s = step(image, op);
    if (!s.ok) throw new Error(`hostile pool ${r.name}: ${op.kind} refused: ${s.error.code}: ${s.error.message}`);
    image = s.image;
  }
  return { image };
}

/** The model-made seed images (deterministic; no QEMU needed). */
export function modelPool(): PoolImage[] {
  const out: PoolImage[] = RECIPES.map((r) => ({ name: r.name, bytes: storeImage(build(r).image) }));
  const { image } = build(DATA_FILE_RECIPE);
  const data = image.dataFile;
  if (data === undefined) throw new Error('hostile pool: the data-file recipe made no data file');
  out.push({ name: DATA_FILE_RECIPE.name, bytes: storeImage(image), dataFile: storeImage({ ...image, file: data }) });
  return out;
}

/** Passphrase of the LUKS seed image. */
const LUKS_SECRET = 'hostile';

/**
 * The qemu-img-made seed images: one with two persistent bitmaps, one LUKS-encrypted. Needs qemu-img
 * (a missing binary is a QemuToolMissingError, never a skip).
 */
export async function qemuPool(): Promise<PoolImage[]> {
  const dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-hostile-pool-'));
  try {
    const bitmaps = join(dir, 'bitmaps.qcow2');
    await qemuImgCreate(bitmaps, '64M', { cluster_size: '65536' });
    await qemuIo(bitmaps, ['write -P 0x11 0 128k', 'write -c -P 0x22 1M 64k']);
    await qemuImgBitmapAdd(bitmaps, 'b0');
    await qemuImgBitmapAdd(bitmaps, 'b1', { granularity: 65536 });
    const luks = join(dir, 'luks.qcow2');
    await qemuImgCreate(luks, '8M', { 'encrypt.format': 'luks', 'encrypt.key-secret': 'sec0', 'encrypt.iter-time': '10' }, ['--object', `secret,id=sec0,data=${LUKS_SECRET}`]);
    return [
      { name: 'qemu-bitmaps', bytes: new Uint8Array(await readFile(bitmaps)) },
      { name: 'qemu-luks', bytes: new Uint8Array(await readFile(luks)) },
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
