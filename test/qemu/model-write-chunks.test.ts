/**
 * One guest write split into several chunks (qcow2_co_pwritev_part: a chunk ends where the host
 * mapping stops being contiguous, e.g. at the end of an L2 table or between clusters overwritten in
 * place and clusters newly allocated). QEMU 7.2 allocates a chunk under s->lock and hands its data
 * write and L2 update to an AIO task, which needs the lock again to link; the request goes straight
 * on to allocate the next chunk, and the tasks get the lock only when that allocation waits for I/O
 * (a new L2 table is written and flushed). So the clusters a chunk replaced are freed (and
 * free_cluster_index lowered) after the next allocation that wrote metadata, or after the last
 * chunk was allocated — never before the next chunk's allocation.
 *
 * Bug found by test/qemu/qemu-reverse.test.ts (class `backing`, 512-byte clusters): the model linked
 * each chunk, and freed what it replaced, before allocating the next one, so a compressed cluster
 * overwritten by the first chunk was reused at once by the second (for its new L2 table); QEMU puts
 * that table at the end of the file and reuses the freed cluster for the next allocation. Worse,
 * that hid a later compressed write that QEMU 7.2 packs into the reused cluster (its stale packing
 * cursor, docs/layout-differences.md), which then corrupted QEMU's image.
 *
 * Expected files come from qemu-io on the same `qemu-img create` image in the same run.
 */
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeImage } from '../../src/model/close.ts';
import { loadImage, storeImage } from '../../src/model/load-store.ts';
import type { Op } from '../../src/model/ops.ts';
import { step } from '../../src/model/step.ts';
import { qemuImgCreate, qemuImgMap, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu } from '../../src/qemu/run.ts';

let dir = '';
beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-ref-write-chunks-'));
});
afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

describe('a write split into chunks: chunk k is linked after chunk k+1 is allocated', () => {
  it('overwriting a compressed cluster at the end of an L2 table and the first cluster of the next', async () => {
    // 512-byte clusters: one L2 table maps 64 clusters (32 KiB). Guest cluster 63 is the last of
    // table 0; the 1 KiB write at 32256 is two chunks (cluster 63, then cluster 64 in table 1).
    const path = join(dir, 'a.qcow2');
    await qemuImgCreate(path, String(1 << 20), { cluster_size: '512' });
    await copyFile(path, `${path}.created`);
    await qemuIo(path, ['write -q -c -P 1 32256 512', 'write -q -P 2 32256 1024', 'write -q -P 3 5120 512']);
    const qemu = new Uint8Array(await readFile(path));

    let img = loadImage(new Uint8Array(await readFile(`${path}.created`)));
    const ops: Op[] = [
      { kind: 'writeCompressed', offset: 32256n, data: fill(512, 1) },
      { kind: 'write', offset: 32256n, data: fill(1024, 2) },
      { kind: 'write', offset: 5120n, data: fill(512, 3) },
    ];
    for (const op of ops) {
      const r = step(img, op);
      if (!r.ok) throw r.error;
      img = r.image;
    }
    const model = storeImage(closeImage(img).image);

    // QEMU's own account (qemu-img map): the last write went to a cluster below the two the chunked
    // write allocated — the compressed cluster's, freed after both chunks were allocated.
    const map = await qemuImgMap(path);
    const at = (o: number) => map.find((e) => Number(e.start) <= o && o < Number(e.start) + Number(e.length))!;
    expect(Number(at(5120).offset)).toBeLessThan(Number(at(32256).offset));
    expect(Number(at(5120).offset)).toBeLessThan(Number(at(32768).offset));
    expect(model).toEqual(qemu);
  });

  it('three chunks in one cached L2 table: all are allocated before the first is linked', async () => {
    // Found by test/qemu/qemu-reverse.test.ts (class lazy-refcounts). The 2 KiB write at 0 is
    // cluster 0 (compressed: new allocation) + cluster 1 (new, contiguous), cluster 2 (COPIED:
    // written in place), cluster 3 (new). No allocation writes metadata, so nothing waits for I/O
    // and chunk 3 is allocated before chunk 1 frees the compressed cluster; the next write reuses it.
    const path = join(dir, 'b.qcow2');
    await qemuImgCreate(path, String(1 << 20), { cluster_size: '512' });
    await copyFile(path, `${path}.created`);
    await qemuIo(path, ['write -q -c -P 1 0 512', 'write -q -P 2 1024 512', 'write -q -P 4 0 2048', 'write -q -P 3 8192 512']);
    const qemu = new Uint8Array(await readFile(path));

    let img = loadImage(new Uint8Array(await readFile(`${path}.created`)));
    for (const op of [
      { kind: 'writeCompressed', offset: 0n, data: fill(512, 1) },
      { kind: 'write', offset: 1024n, data: fill(512, 2) },
      { kind: 'write', offset: 0n, data: fill(2048, 4) },
      { kind: 'write', offset: 8192n, data: fill(512, 3) },
    ] satisfies Op[]) {
      const r = step(img, op);
      if (!r.ok) throw r.error;
      img = r.image;
    }
    const model = storeImage(closeImage(img).image);

    // QEMU's account: cluster 3 of the write lies after clusters 0-1 in the file (allocated later,
    // not in the freed cluster), and the last write took the freed cluster, below both.
    const map = await qemuImgMap(path);
    const at = (o: number) => map.find((e) => Number(e.start) <= o && o < Number(e.start) + Number(e.length))!;
    expect(Number(at(1536).offset)).toBeGreaterThan(Number(at(0).offset));
    expect(Number(at(8192).offset)).toBeLessThan(Number(at(0).offset));
    expect(model).toEqual(qemu);
  });
});
