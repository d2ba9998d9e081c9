/**
 * The QEMU side of the test infrastructure, tested against real qemu-img/qemu-io 7.2: the image
 * matrix builds, and what qemu-img reports about each image matches what was asked for. A machine
 * without QEMU fails here (requireQemu in beforeAll), it never skips.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkCounter,
  parseQemuJson,
  qcow2Specific,
  qemuImgCheck,
  qemuImgCreate,
  qemuImgInfo,
  qemuImgMap,
  qemuIo,
  toBigInt,
  type QemuOpenOptions,
} from '../../src/qemu/qemu-img.ts';
import { QemuCommandError, QemuToolMissingError, requireQemu, runTool } from '../../src/qemu/run.ts';
import { buildImageMatrix, MATRIX_IMAGE_NAMES, type MatrixImage } from '../support/image-matrix.ts';

const DEFAULT_CLUSTER_SIZE = 65536;
const DEFAULT_REFCOUNT_BITS = 16;
/** Each test starts a few QEMU processes; leave room for a loaded machine. */
const QEMU_TESTS = { timeout: 30_000 };

let dir = '';
let matrix: MatrixImage[] = [];
let buildSeconds = 0;

function image(name: string): MatrixImage {
  const img = matrix.find((m) => m.name === name);
  if (img === undefined) throw new Error(`matrix has no image ${name} (was the build successful?)`);
  return img;
}

/** How to open a matrix image for I/O (LUKS images need their secret). */
function openOpts(img: MatrixImage): QemuOpenOptions {
  return img.luksSecret !== undefined ? { luksSecret: img.luksSecret } : {};
}

beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-matrix-'));
  const t0 = performance.now();
  matrix = await buildImageMatrix(dir);
  buildSeconds = (performance.now() - t0) / 1000;
  console.log(`image matrix: ${matrix.length} images built in ${buildSeconds.toFixed(2)} s in ${dir}`);
}, 120_000);

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

describe('image matrix', QEMU_TESTS, () => {
  it('builds every declared image, each in its own file', () => {
    // Not timed (the build time is logged above; beforeAll's timeout is the hang detector).
    expect(matrix.map((m) => m.name)).toEqual(MATRIX_IMAGE_NAMES);
    expect(new Set(matrix.map((m) => m.path)).size).toBe(matrix.length);
  });

  it('covers the variants the brief asks for', () => {
    const opts = matrix.map((m) => m.createOptions);
    const clusterSizes = new Set(opts.map((o) => Number(o['cluster_size'] ?? DEFAULT_CLUSTER_SIZE)));
    for (const cs of [512, 4096, 65536, 2097152]) expect(clusterSizes).toContain(cs);
    const widths = new Set(opts.map((o) => Number(o['refcount_bits'] ?? DEFAULT_REFCOUNT_BITS)));
    for (const w of [1, 2, 4, 8, 16, 32, 64]) expect(widths).toContain(w);
    expect(opts.some((o) => o['compat'] === '0.10')).toBe(true);
    expect(opts.some((o) => o['extended_l2'] === 'on')).toBe(true);
    expect(opts.some((o) => o['compression_type'] === 'zstd')).toBe(true);
    expect(opts.some((o) => o['compression_type'] === 'zlib')).toBe(true);
    expect(opts.some((o) => o['lazy_refcounts'] === 'on')).toBe(true);
    expect(opts.some((o) => o['backing_fmt'] === 'qcow2')).toBe(true);
    expect(opts.some((o) => o['backing_fmt'] === 'raw')).toBe(true);
    expect(opts.some((o) => o['data_file'] !== undefined && o['data_file_raw'] === undefined)).toBe(true);
    expect(opts.some((o) => o['data_file_raw'] === 'on')).toBe(true);
    expect(opts.some((o) => o['preallocation'] === 'metadata')).toBe(true);
    expect(opts.some((o) => o['encrypt.format'] === 'luks')).toBe(true);
    expect(matrix.filter((m) => m.leftDirty).map((m) => m.name)).toEqual(['lazy-refcounts-dirty']);
  });
});

describe.each(MATRIX_IMAGE_NAMES)('matrix image %s', QEMU_TESTS, (name) => {
  it('info reports the requested cluster size, refcount width, compat and virtual size', async () => {
    const img = image(name);
    const info = await qemuImgInfo(img.path);
    expect(info.format).toBe('qcow2');
    expect(info['cluster-size']).toBe(Number(img.createOptions['cluster_size'] ?? DEFAULT_CLUSTER_SIZE));
    expect(toBigInt(info['virtual-size'])).toBe(BigInt(img.virtualSize));
    const q = qcow2Specific(info);
    expect(q['refcount-bits']).toBe(Number(img.createOptions['refcount_bits'] ?? DEFAULT_REFCOUNT_BITS));
    expect(q.compat).toBe(img.createOptions['compat'] ?? '1.1');
    expect(info['dirty-flag']).toBe(img.leftDirty);
  });

  it('map returns extents covering the whole virtual size contiguously', async () => {
    const img = image(name);
    const extents = await qemuImgMap(img.path, openOpts(img));
    expect(extents.length).toBeGreaterThan(0);
    let next = 0n;
    for (const e of extents) {
      expect(toBigInt(e.start)).toBe(next);
      expect(toBigInt(e.length) > 0n).toBe(true);
      next = toBigInt(e.start) + toBigInt(e.length);
    }
    expect(next).toBe(BigInt(img.virtualSize));
    // Every image had data written, so some range is present with data.
    expect(extents.some((e) => e.present && e.data)).toBe(true);
  });

  it('check: clean images exit 0; the image left dirty by abort exits 2 with corruptions', async () => {
    const img = image(name);
    const r = await qemuImgCheck(img.path, openOpts(img));
    if (img.leftDirty) {
      // qemu-img 7.2 check (no -r) does not auto-repair a dirty lazy-refcount image: the new
      // clusters' refcounts are 0, reported as corruptions (docs/format/features.md#dirty-bit-and-lazy-refcounts), exit code 2.
      expect(r.code).toBe(2);
      expect(Number(checkCounter(r.json!, 'corruptions'))).toBeGreaterThan(0);
      expect(r.stderr).toMatch(/ERROR cluster \d+ refcount=0 reference=1/);
    } else {
      expect(r.code, r.stderr).toBe(0);
      expect(r.json).toBeDefined();
      expect(checkCounter(r.json!, 'corruptions')).toBe(0);
      expect(checkCounter(r.json!, 'leaks')).toBe(0);
      expect(Number(checkCounter(r.json!, 'allocated-clusters'))).toBeGreaterThan(0);
    }
    expect(r.json!['check-errors']).toBe(0);
  });
});

describe('feature-specific info', QEMU_TESTS, () => {
  it('extended L2, compression types, lazy refcounts', async () => {
    expect(qcow2Specific(await qemuImgInfo(image('extended-l2').path))['extended-l2']).toBe(true);
    expect(qcow2Specific(await qemuImgInfo(image('defaults').path))['extended-l2']).toBe(false);
    expect(qcow2Specific(await qemuImgInfo(image('zstd').path))['compression-type']).toBe('zstd');
    expect(qcow2Specific(await qemuImgInfo(image('zlib-unaligned-size').path))['compression-type']).toBe('zlib');
    expect(qcow2Specific(await qemuImgInfo(image('lazy-refcounts-clean').path))['lazy-refcounts']).toBe(true);
    const zstdCheck = await qemuImgCheck(image('zstd').path);
    expect(Number(checkCounter(zstdCheck.json!, 'compressed-clusters'))).toBeGreaterThanOrEqual(3);
  });

  it('compat 0.10 reports only the v2 keys', async () => {
    const q = qcow2Specific(await qemuImgInfo(image('compat-0.10').path));
    expect(q.compat).toBe('0.10');
    expect(q['lazy-refcounts']).toBeUndefined();
    expect(q.corrupt).toBeUndefined();
    expect(q['extended-l2']).toBeUndefined();
  });

  it('backing files: names, formats and the backing chain', async () => {
    const overlay = image('overlay-qcow2-backing');
    const info = await qemuImgInfo(overlay.path);
    expect(info['backing-filename']).toBe('backing-base.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
    const chain = await qemuImgInfo(overlay.path, { backingChain: true });
    expect(chain.map((i) => i.format)).toEqual(['qcow2', 'qcow2']);
    const rawChain = await qemuImgInfo(image('overlay-raw-backing').path, { backingChain: true });
    expect(rawChain.map((i) => i.format)).toEqual(['qcow2', 'raw']);
    expect(rawChain[1]!['cluster-size']).toBeUndefined();
    // Ranges the overlay does not own are reported from the backing file (depth 1).
    const map = await qemuImgMap(overlay.path);
    expect(map.some((e) => e.depth === 1 && e.data)).toBe(true);
  });

  it('external data files', async () => {
    const df = image('data-file');
    const q = qcow2Specific(await qemuImgInfo(df.path));
    expect(q['data-file']).toBe(df.extraFiles[0]);
    expect(q['data-file-raw']).toBe(false);
    expect(qcow2Specific(await qemuImgInfo(image('data-file-raw').path))['data-file-raw']).toBe(true);
  });

  it('snapshots and bitmaps', async () => {
    const snaps = (await qemuImgInfo(image('snapshots').path)).snapshots ?? [];
    expect(snaps.map((s) => s.name)).toEqual(['s1', 's2']);
    expect(snaps.map((s) => s.id)).toEqual(['1', '2']);
    const bitmaps = qcow2Specific(await qemuImgInfo(image('bitmaps').path)).bitmaps ?? [];
    expect(bitmaps.map((b) => [b.name, b.granularity, [...b.flags]])).toEqual([
      ['b0', 65536, ['auto']],
      ['b1', 4096, []],
    ]);
  });

  it('LUKS: info works without the secret, I/O needs it', async () => {
    const luks = image('luks');
    const info = await qemuImgInfo(luks.path);
    expect(info.encrypted).toBe(true);
    expect(qcow2Specific(info).encrypt?.format).toBe('luks');
    const noSecret = await qemuImgCheck(luks.path);
    expect(noSecret.code).toBe(1);
    expect(noSecret.json).toBeUndefined();
    expect(noSecret.stderr).toContain("Parameter 'encrypt.key-secret' is required for cipher");
    const out = await qemuIo(luks.path, ['read -P 0xa1 0 64k'], { luksSecret: luks.luksSecret! });
    expect(out.stdout).toContain('read 65536/65536 bytes at offset 0');
  });
});

describe('drivers', QEMU_TESTS, () => {
  it('keeps integers above 2^53 exact (bigint), smaller ones as numbers', () => {
    expect(parseQemuJson('{"a": 9007199254740993, "b": 9007199254740991, "c": -1, "d": [1.5, "x\\n"]}')).toEqual({
      a: 9007199254740993n,
      b: 9007199254740991,
      c: -1,
      d: [1.5, 'x\n'],
    });
    expect(() => parseQemuJson('{"a": 1,}')).toThrow(/invalid JSON/);
  });

  it('reports an 8 PiB + 512 B image exactly through create, info, qemu-io and map', async () => {
    const path = join(dir, 'huge.qcow2');
    // Beyond Number.MAX_SAFE_INTEGER, so JSON numbers must come back as bigint. (qemu-img map spends
    // ~1.3 s of CPU walking the empty L1 of this image.)
    const size = 2n ** 53n + 512n;
    await qemuImgCreate(path, size.toString(), { cluster_size: '2097152' });
    expect((await qemuImgInfo(path))['virtual-size']).toBe(size);
    await qemuIo(path, [`write -P 0x5a ${2n ** 53n} 512`]);
    const map = await qemuImgMap(path);
    expect(map.map((e) => [toBigInt(e.start), toBigInt(e.length), e.present])).toEqual([
      [0n, 2n ** 53n, false],
      [2n ** 53n, 512n, true],
    ]);
    expect(typeof map[1]!.start).toBe('bigint');
  });

  it('throws a QemuCommandError with the command line and stderr on failure', async () => {
    const path = join(dir, 'bad.qcow2');
    const err = await qemuImgCreate(path, '1M', { cluster_size: '1000' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuCommandError);
    expect((err as Error).message).toContain('qemu-img create -q -f qcow2 -o cluster_size=1000');
    expect((err as Error).message).toContain('Cluster size must be a power of two between 512 and 2048k');
    // qemu-io exits 1 when any of its commands failed (here: unaligned compressed write).
    const scratch = join(dir, 'scratch.qcow2');
    await qemuImgCreate(scratch, 1024 * 1024, {});
    const io = await qemuIo(scratch, ['read 0 512', 'write -c 0 1k']).catch((e: unknown) => e);
    expect(io).toBeInstanceOf(QemuCommandError);
    expect((io as Error).message).toMatch(/exit code 1/);
  });

  it('raises QemuToolMissingError when qemu-img or qemu-io is not on PATH', async () => {
    const emptyBin = join(dir, 'empty-bin');
    await mkdir(emptyBin, { recursive: true });
    const env = { PATH: emptyBin };
    for (const tool of ['qemu-img', 'qemu-io'] as const) {
      const err = await runTool(tool, ['--version'], { env }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QemuToolMissingError);
      expect((err as QemuToolMissingError).tool).toBe(tool);
      expect((err as Error).message).toContain(`${tool} was not found`);
      expect((err as Error).message).toContain('apt-get install qemu-utils');
    }
    // The typed drivers pass the environment through and fail the same way.
    await expect(qemuImgInfo(image('defaults').path, { env })).rejects.toBeInstanceOf(QemuToolMissingError);
    await expect(qemuImgCheck(image('defaults').path, { env })).rejects.toBeInstanceOf(QemuToolMissingError);
  });
});
