/**
 * The one metadata-overlap check (src/model/overlap.ts, QEMU's qcow2_check_metadata_overlap with the
 * "cached" template) against qemu-io 7.2, on the case where the model's former write-path copy and
 * QEMU differed: the template includes the snapshots' (inactive) L1 tables, which that copy did not
 * test. A snapshot's L1 cluster whose refcount was zeroed is the first free cluster QEMU's allocator
 * finds, so a compressed write lands there; QEMU refuses it and marks the image corrupt, and so must
 * the model — with QEMU's message naming the section, and the same file left behind.
 *
 * (QEMU runs the same check before every L2-table and refcount-block cache write-back and every data
 * write too; the model runs it where a corrupt refcount can reach it without a prior metadata write:
 * compressed data, the snapshot table, and the check's repairs — docs/layout-differences.md.)
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layoutOf, refcountSlot, writeField } from '../../src/corrupt/layout.ts';
import { loadImage, storeImage } from '../../src/model/load-store.ts';
import { getRefcount } from '../../src/model/refcount.ts';
import { readSnapshots } from '../../src/model/snapshot.ts';
import { step } from '../../src/model/step.ts';
import { beginTx } from '../../src/model/tx.ts';
import { INCOMPAT_CORRUPT } from '../../src/model/image.ts';
import { qemuImgCreate, qemuImgSnapshot, qemuIo } from '../../src/qemu/qemu-img.ts';
import { requireQemu, runTool } from '../../src/qemu/run.ts';

let dir: string;
beforeAll(async () => {
  await requireQemu();
  dir = await mkdtemp(join(tmpdir(), 'qcow2-overlap-'));
});
afterAll(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

const CLUSTER = 4096;

describe('a compressed write onto a snapshot L1 table whose refcount is 0', () => {
  it('is refused by QEMU and by the model alike: "overlaps with inactive L1 table", the same file', async () => {
    const path = join(dir, 'inactive-l1.qcow2');
    await qemuImgCreate(path, 1 << 20, { cluster_size: String(CLUSTER) });
    // The snapshot first, then the write: the active L2 table is the image's own (COPIED), so the
    // compressed write below allocates only its data cluster.
    await qemuImgSnapshot(path, 'create', 's1');
    await qemuIo(path, ['write -P 1 0 4k']);
    const made = new Uint8Array(await readFile(path));

    // The snapshot's L1 table, and its refcount zeroed: a corruption QEMU does not see at open.
    const [snapshot] = readSnapshots(beginTx(loadImage(made)));
    expect(snapshot).toBeDefined();
    const l1Cluster = snapshot!.l1TableOffset / BigInt(CLUSTER);
    const slot = refcountSlot(layoutOf(made), l1Cluster);
    expect(slot).toBeDefined();
    const poked = made.slice();
    writeField(poked, slot!.offset, slot!.bits, 0n, slot!.shift);
    // The premise: no cluster below it is free, so the allocator picks exactly this one.
    const tx = beginTx(loadImage(poked));
    for (let c = 0n; c < l1Cluster; c++) expect(getRefcount(tx, c), `cluster ${c}`).toBeGreaterThan(0n);
    await writeFile(path, poked);

    // QEMU: the compressed write of a whole unallocated cluster.
    const data = new Uint8Array(CLUSTER).fill(2);
    const dataPath = join(dir, 'data');
    await writeFile(dataPath, data);
    const q = await runTool('qemu-io', ['-f', 'qcow2', '-c', `write -c -s ${dataPath} 65536 ${CLUSTER}`, path]);
    const qemuSays = (q.stdout + q.stderr).split('\n').find((l) => l.includes('Marking image as corrupt'));
    expect(qemuSays).toContain('Preventing invalid write on metadata (overlaps with inactive L1 table)');

    // The model on the same bytes.
    const r = step(loadImage(poked), { kind: 'writeCompressed', offset: 65536n, data });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.code).toBe('corrupt');
    expect(qemuSays).toContain(r.error.message);
    const left = r.error.committed;
    expect(left).toBeDefined();
    expect(left!.image.header.incompatibleFeatures & INCOMPAT_CORRUPT).toBe(INCOMPAT_CORRUPT);
    // What QEMU left on disk, byte for byte (the snapshot's L1 table untouched in both).
    const qemuFile = new Uint8Array(await readFile(path));
    const ours = storeImage(left!.image);
    expect(Buffer.from(ours).equals(Buffer.from(qemuFile))).toBe(true);
    expect(Buffer.from(ours.subarray(Number(snapshot!.l1TableOffset), Number(snapshot!.l1TableOffset) + CLUSTER)))
      .toEqual(Buffer.from(made.subarray(Number(snapshot!.l1TableOffset), Number(snapshot!.l1TableOffset) + CLUSTER)));
  });
});
