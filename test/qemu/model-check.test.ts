/**
 * checkImage (src/check/check.ts) on clean images agrees with `qemu-img check --output=json` exactly:
 * the same exit code and the same JSON text — image-end-offset, total / allocated / fragmented /
 * compressed clusters, and no corruption or leak — for
 *
 * - images the model makes (createImage + step): cluster sizes 512 B … 2 MiB, every refcount width,
 *   compat 0.10 and 1.1, extended L2, zlib and zstd compressed clusters, internal snapshots,
 *   a qcow2 backing file, an external data file (plain and raw), lazy refcounts; one of them gets
 *   persistent bitmaps added by `qemu-img bitmap` (the model does not make bitmaps);
 * - the image matrix qemu-img/qemu-io make (test/support/image-matrix.ts: LUKS, bitmaps, metadata
 *   preallocation, a crashed lazy-refcounts image whose check finds errors, ...).
 *
 * Expected values are qemu-img's JSON for the same file at test time. As a guard against both sides
 * agreeing on an empty report, the model images' allocation counters are also required to be
 * non-zero where data was written.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkQObject } from '../../src/cli/check.ts';
import { qemuJsonPretty } from '../../src/cli/info.ts';
import { checkExitCode, checkImage } from '../../src/check/check.ts';
import { workSince, workSnapshot } from '../../src/codec/work-meter.ts';
import { repairImage } from '../../src/check/repair.ts';
import { closeImage } from '../../src/model/close.ts';
import { createImage, type CreateOptions } from '../../src/model/create.ts';
import type { Image } from '../../src/model/image.ts';
import { loadImage, storeDataFile, storeImage } from '../../src/model/load-store.ts';
import type { Op } from '../../src/model/ops.ts';
import { step } from '../../src/model/step.ts';
import { qemuImgBitmapAdd, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';
import { workLimitFor } from '../support/hostile-campaign.ts';
import { buildImageMatrix, MATRIX_IMAGE_NAMES, type MatrixImage } from '../support/image-matrix.ts';

const K = 1024;
const M = 1024 * K;

let dir = '';
let matrix: MatrixImage[] = [];

/** A model image recipe: createImage options and the ops applied (then the image is closed). */
interface ModelRecipe {
  readonly name: string;
  readonly create: CreateOptions;
  readonly ops: readonly Op[];
  /** The backing image's recipe name (its file is written next to this one). */
  readonly backing?: string;
  /** Add persistent bitmaps with qemu-img after writing the image (then write through them). */
  readonly bitmaps?: boolean;
}

function fill(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  // Compressible but not constant, so compressed clusters are really compressed.
  for (let i = 0; i < n; i++) b[i] = (seed + (i >> 6)) & 0xff;
  return b;
}
const write = (offset: number, length: number, seed: number): Op => ({ kind: 'write', offset: BigInt(offset), data: fill(length, seed) });
const compressed = (offset: number, length: number, seed: number): Op => ({ kind: 'writeCompressed', offset: BigInt(offset), data: fill(length, seed) });
const zero = (offset: number, length: number, unmap = false): Op => ({ kind: 'writeZeroes', offset: BigInt(offset), length: BigInt(length), unmap });
const discard = (offset: number, length: number): Op => ({ kind: 'discard', offset: BigInt(offset), length: BigInt(length) });
const snapshot = (name: string): Op => ({ kind: 'snapshotCreate', name, dateSec: 1_700_000_000, dateNsec: 0, vmClockNsec: 0n });

/** Writes, a zero write and a discard spread over the first 8 MiB (clusters of any size). */
function mixed(seed: number): Op[] {
  return [write(0, 70 * K, seed), write(M + 3 * K, 40 * K, seed + 1), zero(2 * M, 128 * K), write(5 * M, 300 * K, seed + 2), discard(5 * M + 64 * K, 64 * K), write(8 * M - 4 * K, 4 * K, seed + 3)];
}

const RECIPES: readonly ModelRecipe[] = [
  { name: 'defaults', create: { size: 64n * BigInt(M) }, ops: mixed(1) },
  { name: 'cluster-512', create: { size: 16n * BigInt(M), clusterSize: 512 }, ops: mixed(2) },
  { name: 'cluster-4k', create: { size: 16n * BigInt(M), clusterSize: 4096 }, ops: mixed(3) },
  { name: 'cluster-2m', create: { size: 64n * BigInt(M), clusterSize: 2 * M }, ops: mixed(4) },
  ...[1, 2, 4, 8, 32, 64].map((bits): ModelRecipe => ({ name: `refcount-${bits}`, create: { size: 16n * BigInt(M), refcountBits: bits }, ops: mixed(bits) })),
  { name: 'compat-0.10', create: { size: 16n * BigInt(M), compat: '0.10' }, ops: [...mixed(5), snapshot('s1'), write(0, 64 * K, 9)] },
  { name: 'extended-l2', create: { size: 16n * BigInt(M), extendedL2: true }, ops: [...mixed(6), write(12 * M + 2 * K, 3 * K, 7)] },
  {
    name: 'compressed-zlib',
    create: { size: 16n * BigInt(M) },
    ops: [compressed(0, 64 * K, 1), compressed(64 * K, 64 * K, 2), compressed(M, 128 * K, 3), write(2 * M, 64 * K, 4), compressed(4 * M, 64 * K, 5)],
  },
  {
    name: 'compressed-zstd-4k',
    create: { size: 16n * BigInt(M), compressionType: 'zstd', clusterSize: 4096 },
    ops: [compressed(0, 64 * K, 6), write(M, 8 * K, 7), compressed(2 * M, 32 * K, 8)],
  },
  {
    name: 'compressed-extended-l2',
    create: { size: 16n * BigInt(M), extendedL2: true },
    ops: [compressed(0, 64 * K, 9), write(M + 2 * K, 2 * K, 10), compressed(2 * M, 64 * K, 11)],
  },
  {
    name: 'snapshots',
    create: { size: 32n * BigInt(M) },
    ops: [...mixed(7), snapshot('one'), write(0, 64 * K, 8), compressed(3 * M, 64 * K, 9), snapshot('two'), write(5 * M, 64 * K, 10), { kind: 'snapshotDelete', name: 'one' }],
  },
  { name: 'lazy-refcounts', create: { size: 16n * BigInt(M), lazyRefcounts: true }, ops: mixed(11) },
  { name: 'backing-base', create: { size: 16n * BigInt(M) }, ops: mixed(12) },
  { name: 'overlay', create: { size: 16n * BigInt(M), backingFile: 'backing-base.qcow2', backingFmt: 'qcow2' }, backing: 'backing-base', ops: [write(M, 8 * K, 13), discard(5 * M, 64 * K)] },
  { name: 'data-file', create: { size: 16n * BigInt(M), dataFile: 'data-file.raw' }, ops: mixed(14) },
  { name: 'data-file-raw', create: { size: 16n * BigInt(M), dataFile: 'data-file-raw.raw', dataFileRaw: true }, ops: mixed(15) },
  { name: 'bitmaps', create: { size: 16n * BigInt(M) }, ops: mixed(16), bitmaps: true },
];

/** Builds the recipe's image with the model and writes its file(s); returns the image path. */
async function buildModelImage(r: ModelRecipe): Promise<{ path: string; image: Image }> {
  const made = createImage(r.create);
  let img = made.dataFile !== undefined ? { ...made.image, dataFile: made.dataFile } : made.image;
  for (const op of r.ops) {
    const s = step(img, op);
    if (!s.ok) throw new Error(`${r.name}: ${op.kind} failed: ${s.error.message}`);
    img = s.image;
  }
  img = closeImage(img).image;
  const path = join(dir, `${r.name}.qcow2`);
  await writeFile(path, storeImage(img));
  const data = storeDataFile(img);
  if (data !== undefined && r.create.dataFile !== undefined) await writeFile(join(dir, r.create.dataFile), data);
  if (r.bitmaps === true) {
    await qemuImgBitmapAdd(path, 'b0');
    await qemuImgBitmapAdd(path, 'b1', { granularity: 4096 });
    // Writes through the enabled bitmaps give them data clusters when the image is closed.
    await qemuIo(path, ['write -P 0x61 0 64k', 'write -P 0x62 9M 1M']);
    return { path, image: loadImage(new Uint8Array(await readFile(path))) };
  }
  return { path, image: img };
}

/** `qemu-img check --output=json` of `path` (run in `dir`, named by its base name). */
async function qemuJson(path: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const name = path.slice(path.lastIndexOf('/') + 1);
  const r = await runTool('qemu-img', ['check', '--output=json', '-f', 'qcow2', name], { cwd: path.slice(0, path.lastIndexOf('/')) });
  if (r.code === null) throw new Error(`qemu-img check ${path} crashed`);
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

function ourJson(image: Image, name: string): { code: number; stdout: string } {
  const r = checkImage(image);
  return { code: checkExitCode(r), stdout: r.failure === undefined ? `${qemuJsonPretty(checkQObject(r, name))}\n` : '' };
}

const built = new Map<string, { path: string; image: Image }>();

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2ref-modelcheck-'));
  // Backing files before their overlays; the rest side by side.
  for (const r of RECIPES.filter((x) => x.backing === undefined && RECIPES.some((y) => y.backing === x.name))) built.set(r.name, await buildModelImage(r));
  await Promise.all(RECIPES.filter((r) => !built.has(r.name)).map(async (r) => built.set(r.name, await buildModelImage(r))));
  matrix = await buildImageMatrix(await mkdtemp(join(dir, 'matrix-')));
}, 120_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

describe('checkImage agrees with qemu-img check --output=json', () => {
  describe.concurrent('images made by the model', () => {
    for (const r of RECIPES) {
      it(r.name, async () => {
        const { path, image } = built.get(r.name)!;
        const name = path.slice(path.lastIndexOf('/') + 1);
        const qemu = await qemuJson(path);
        const ours = ourJson(image, name);
        expect(ours).toEqual({ code: qemu.code, stdout: qemu.stdout });
        expect(qemu.code).toBe(0);
        // Not vacuous: data was written, so qemu-img counts allocated clusters and an end offset.
        expect(qemu.stdout).toMatch(/"allocated-clusters": [1-9]/);
        expect(qemu.stdout).toMatch(/"image-end-offset": [1-9]/);
        if (r.name.startsWith('compressed')) expect(qemu.stdout).toMatch(/"compressed-clusters": [1-9]/);
      });
    }
  });

  describe.concurrent('the qemu-img image matrix', () => {
    it.each(MATRIX_IMAGE_NAMES)('%s', async (imageName) => {
      const m = matrix.find((x) => x.name === imageName);
      if (m === undefined) throw new Error(`matrix image ${imageName} was not built`);
      const name = m.path.slice(m.path.lastIndexOf('/') + 1);
      const cwd = m.path.slice(0, m.path.lastIndexOf('/'));
      const args = m.luksSecret !== undefined
        ? ['check', '--output=json', '--object', `secret,id=s0,data=${m.luksSecret}`, '--image-opts', `driver=qcow2,file.filename=${name},encrypt.key-secret=s0`]
        : ['check', '--output=json', '-f', 'qcow2', name];
      const qemu = await runTool('qemu-img', args, { cwd });
      const ours = ourJson(loadImage(new Uint8Array(await readFile(m.path))), name);
      // With --image-opts qemu-img names the image by its options: compare everything else.
      const anyName = (t: string): string => t.replace(/"filename": "(?:[^"\\]|\\.)*"/, '"filename": "IMAGE"');
      expect({ code: ours.code, stdout: anyName(ours.stdout) }, m.name).toEqual({ code: qemu.code, stdout: anyName(qemu.stdout) });
      expect(qemu.code, m.name).toBe(m.leftDirty ? 2 : 0);
    });
  });

});

/** Boundary values for 32- and 64-bit header fields (issue 5: "values 0, 2^31-1, 2^32-1, 2^63, 2^64-1"). */
const U32_VALUES = [0n, 1n, 0x7fffffffn, 0xffffffffn];
const U64_VALUES = [0n, 0x7fffffffn, 0xffffffffn, 1n << 53n, 1n << 63n, (1n << 64n) - 1n, (1n << 64n) - 65536n];
const HEADER_FIELDS: readonly { readonly name: string; readonly offset: number; readonly values: readonly bigint[] }[] = [
  { name: 'size', offset: 24, values: U64_VALUES },
  { name: 'l1_size', offset: 36, values: U32_VALUES },
  { name: 'l1_table_offset', offset: 40, values: U64_VALUES },
  { name: 'refcount_table_offset', offset: 48, values: U64_VALUES },
  { name: 'refcount_table_clusters', offset: 56, values: U32_VALUES },
  { name: 'nb_snapshots', offset: 60, values: U32_VALUES },
  { name: 'snapshots_offset', offset: 64, values: U64_VALUES },
];

describe('hostile header fields: checkImage and repairImage stay bounded, and agree with qemu-img where it opens the image', () => {
  it.concurrent.each(HEADER_FIELDS.flatMap((f) => f.values.map((v) => [f.name, f.offset, f.values === U32_VALUES ? 4 : 8, v] as const)))(
    '%s = %s', async (_field, offset, width, value) => {
      const base = await readFile(built.get('snapshots')!.path);
      const bytes = new Uint8Array(base);
      for (let i = 0; i < width; i++) bytes[offset + i] = Number((value >> BigInt((width - 1 - i) * 8)) & 0xffn);
      const path = join(dir, `hostile-${offset}-${value}.qcow2`);
      await writeFile(path, bytes);
      const image = loadImage(bytes);
      // Bounded work, not time (src/codec/work-meter.ts; the bound is the hostile-input campaign's,
      // test/support/hostile-campaign.ts): what a field claims must not make check or repair walk
      // more than the file. Synchronous, so the concurrent cases cannot add to the count.
      const before = workSnapshot();
      const result = checkImage(image);
      const repaired = repairImage(image, 'all');
      const work = workSince(before);
      expect(work.hostBytes + 8 * work.decodedFields).toBeLessThanOrEqual(workLimitFor(bytes.length, 1 << image.header.clusterBits, work.hostWritten + work.hostZeroed));
      expect(typeof result.corruptions).toBe('number');
      expect(repaired.result.findings.length).toBeGreaterThanOrEqual(0);
      const qemu = await qemuJson(path);
      // Only an image QEMU opens says anything about the check itself.
      if (!/Could not open/.test(qemu.stderr)) expect(ourJson(image, path.slice(path.lastIndexOf('/') + 1))).toEqual({ code: qemu.code, stdout: qemu.stdout });
    });
});
