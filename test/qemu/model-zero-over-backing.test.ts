/**
 * An unaligned write_zeroes into an unallocated (sub)cluster over a backing file: QEMU 7.2's
 * qcow2_co_pwrite_zeroes widens it to the whole (sub)cluster and sets the zero flag when the rest of
 * the (sub)cluster "already reads as zero" — `is_zero`, which asks bdrv_block_status_above over the
 * whole backing chain: holes of a raw backing file (file-posix SEEK_HOLE), zero or unallocated
 * clusters of a qcow2 backing image and the range past the backing file's end all count as zero.
 * Otherwise the block layer writes a buffer of zeros (copy-on-write from the backing file).
 *
 * Bug found by test/qemu/qemu-reverse.test.ts (class `backing`, multi-process: extended L2,
 * preallocation=metadata, a snapshot, then `write -z -u 434176 1` over a hole of the raw backing
 * file): the model treated every range below the backing file's end as non-zero, fell back to the
 * buffer write and copied the cluster, while QEMU only set the subcluster's zero bit.
 *
 * Every expected file comes from qemu-io run on the same `qemu-img create` image in the same run;
 * the model gets the backing files' allocation probed with SEEK_DATA/SEEK_HOLE (as QEMU sees it).
 */
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeImage } from '../../src/model/close.ts';
import { imageBackingSource, rawBackingSource, rawReaderBackingSource } from '../../src/model/backing.ts';
import type { BackingSource } from '../../src/model/image.ts';
import { loadImage, storeImage } from '../../src/model/load-store.ts';
import type { Op } from '../../src/model/ops.ts';
import { step } from '../../src/model/step.ts';
import { qemuImgCreate, qemuImgMap, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu } from '../../src/qemu/run.ts';
import { probeHostAllocation } from '../support/host-allocation.ts';

let dir = '';
let counter = 0;
beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-zero-over-backing-'));
});
afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

const MiB = 1 << 20;

/** A sparse raw file of `size` bytes with `fill` written at each [offset, length]. */
async function sparseRaw(path: string, size: number, writes: readonly [number, number, number][]): Promise<Uint8Array> {
  const bytes = new Uint8Array(size);
  for (const [offset, length, fill] of writes) bytes.fill(fill, offset, offset + length);
  // Written through qemu-io so that only the written blocks are allocated (the rest are holes).
  await writeFile(path, new Uint8Array(0));
  await qemuIo(path, [`truncate ${size}`, ...writes.map(([o, n, f]) => `write -q -P ${f} ${o} ${n}`)], { format: 'raw' });
  return bytes;
}

interface Case {
  readonly overlay: Record<string, string>;
  readonly commands: readonly string[];
  readonly ops: readonly Op[];
  readonly backing: BackingSource;
  readonly backingFile: string;
  readonly backingFmt: 'raw' | 'qcow2';
}

/** Runs `c` with qemu-io and with the model from the same created image; returns both files and qemu-img map. */
async function run(c: Case): Promise<{ qemu: Uint8Array; model: Uint8Array; map: Awaited<ReturnType<typeof qemuImgMap>> }> {
  const name = `o${counter++}.qcow2`;
  const path = join(dir, name);
  await qemuImgCreate(path, String(MiB), { ...c.overlay, backing_file: c.backingFile, backing_fmt: c.backingFmt });
  await copyFile(path, `${path}.created`);
  await qemuIo(path, c.commands);
  const qemu = new Uint8Array(await readFile(path));
  let img = loadImage(new Uint8Array(await readFile(`${path}.created`)), { backing: c.backing });
  for (const op of c.ops) {
    const r = step(img, op);
    if (!r.ok) throw r.error;
    img = r.image;
  }
  const model = storeImage(closeImage(img).image);
  return { qemu, model, map: await qemuImgMap(path) };
}

const zero = (offset: number, length: number, unmap = false): Op => ({ kind: 'writeZeroes', offset: BigInt(offset), length: BigInt(length), unmap });

describe('unaligned write_zeroes over a backing file (qcow2 is_zero through the backing chain)', () => {
  it('raw backing with holes, extended L2: a zero bit where the backing has a hole, a copied cluster where it has data', async () => {
    const backingFile = join(dir, 'b1.raw');
    const bytes = await sparseRaw(backingFile, MiB, [[0, 8192, 0x11], [200 * 1024, 4096, 0x22]]);
    const alloc = probeHostAllocation(backingFile);
    // The probe must see the holes, or the test would not test anything.
    expect(alloc.data.length).toBeGreaterThan(0);
    expect(alloc.data.every(([a, b]) => b - a < BigInt(MiB))).toBe(true);
    const backing = rawReaderBackingSource({ length: BigInt(bytes.length), read: (o, n) => bytes.subarray(Number(o), Number(o) + n) }, alloc.data);
    // cluster 64 KiB, subclusters 2 KiB: 70000 is in a hole (subcluster 2 of cluster 1);
    // 205000 is inside the data at 200 KiB (subcluster 4 of cluster 3).
    const r = await run({
      overlay: { cluster_size: '65536', extended_l2: 'on' },
      commands: ['write -z 70000 1', 'write -z -u 205000 1'],
      ops: [zero(70000, 1), zero(205000, 1, true)],
      backing, backingFile, backingFmt: 'raw',
    });
    // QEMU's own verdict, from its map: the hole's subcluster is a zero subcluster of this image
    // (no host cluster), the data's was copied (data at depth 0 with a host offset).
    const at = (o: number) => r.map.find((e) => Number(e.start) <= o && o < Number(e.start) + Number(e.length))!;
    expect(at(70000)).toMatchObject({ depth: 0, present: true, zero: true, data: false });
    expect(at(70000).offset).toBeUndefined();
    expect(at(205000)).toMatchObject({ depth: 0, present: true, data: true });
    expect(r.model).toEqual(r.qemu);
  });

  it('raw backing with holes, standard L2: the whole cluster becomes a zero cluster', async () => {
    const backingFile = join(dir, 'b2.raw');
    const bytes = await sparseRaw(backingFile, MiB, [[0, 4096, 0x33]]);
    const backing = rawReaderBackingSource({ length: BigInt(bytes.length), read: (o, n) => bytes.subarray(Number(o), Number(o) + n) }, probeHostAllocation(backingFile).data);
    const r = await run({
      overlay: { cluster_size: '4096' },
      commands: ['write -z 8300 100', 'write -z 100 1'],
      ops: [zero(8300, 100), zero(100, 1)],
      backing, backingFile, backingFmt: 'raw',
    });
    expect(r.map.find((e) => Number(e.start) === 8192)).toMatchObject({ length: 4096, depth: 0, present: true, zero: true, data: false });
    expect(r.model).toEqual(r.qemu);
  });

  it('a raw backing file without holes is data everywhere: the fallback write copies the cluster', async () => {
    const backingFile = join(dir, 'b3.raw');
    const bytes = new Uint8Array(MiB);
    await writeFile(backingFile, bytes); // written in full: no holes, although all zeros
    const r = await run({
      overlay: { cluster_size: '4096' },
      commands: ['write -z 8300 100'],
      ops: [zero(8300, 100)],
      backing: rawBackingSource(bytes), backingFile, backingFmt: 'raw',
    });
    expect(r.map.find((e) => Number(e.start) === 8192)).toMatchObject({ depth: 0, present: true, zero: false, data: true });
    expect(r.model).toEqual(r.qemu);
  });

  it('qcow2 backing: its unallocated and zero clusters count as zero, its data clusters do not', async () => {
    const backingFile = join(dir, 'b4.qcow2');
    await qemuImgCreate(backingFile, String(MiB), { cluster_size: '4096' });
    await qemuIo(backingFile, ['write -P 0x44 0 8192', 'write -z 16384 4096']);
    const backingImage = loadImage(new Uint8Array(await readFile(backingFile)));
    const r = await run({
      overlay: { cluster_size: '4096', extended_l2: 'off' },
      // cluster 1: backing data; cluster 4: backing zero cluster; cluster 9: backing unallocated.
      commands: ['write -z 5000 10', 'write -z 17000 10', 'write -z 37000 10'],
      ops: [zero(5000, 10), zero(17000, 10), zero(37000, 10)],
      backing: imageBackingSource(backingImage, { host: probeHostAllocation(backingFile) }), backingFile, backingFmt: 'qcow2',
    });
    const at = (o: number) => r.map.find((e) => Number(e.start) <= o && o < Number(e.start) + Number(e.length))!;
    expect(at(5000)).toMatchObject({ depth: 0, data: true });
    expect(at(17000)).toMatchObject({ depth: 0, zero: true, data: false });
    expect(at(37000)).toMatchObject({ depth: 0, zero: true, data: false });
    expect(r.model).toEqual(r.qemu);
  });
});
