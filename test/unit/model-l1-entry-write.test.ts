/**
 * How the model writes one L1 entry (qcow2_write_l1_entry). QEMU 7.2 writes a buffer of
 * MAX(8, MIN(request_alignment, cluster_size)) bytes; on a file opened without O_DIRECT (qemu-img,
 * qemu-io, `cache=writeback`, the default) file-posix's request_alignment is 1, so the write is the
 * 8-byte entry alone (strace of qemu-io: `pwrite64(fd, "\200\0\0\0\0\0@\0", 8, 12288)`).
 *
 * Bug found by test/qemu/qemu-reverse.test.ts (class lazy-refcounts, multi-process+compress; file
 * 535,040 bytes from the model, 534,536 from QEMU): the model wrote the whole 512-byte chunk of the L1
 * table holding the entry. That gives the same bytes while the chunk lies inside the L1 cluster, but
 * after a resize places a grown L1 table (not a multiple of 512 bytes) at the end of the file, the
 * chunk ran past QEMU's end of file and the model's file came out longer.
 */
import { describe, expect, it } from 'vitest';
import { closeImage } from '../../src/model/close.ts';
import { createImage } from '../../src/model/create.ts';
import { storeImage } from '../../src/model/load-store.ts';
import { step } from '../../src/model/step.ts';

describe('writing an L1 entry (qcow2_write_l1_entry)', () => {
  it('writes the 8-byte entry only, so an L1 table at the end of the file does not extend it', () => {
    // Reproduction (QEMU 7.2): qemu-img create -f qcow2 -o cluster_size=512 q.qcow2 4M;
    // qemu-img resize q.qcow2 4194816; qemu-io -c 'write -P 7 4194304 1' q.qcow2 → 3592 bytes.
    // The resize moves the L1 table (129 entries, 1032 bytes) to 0xa00, at the end of the file; the
    // write reuses two clusters of the old L1 table for its L2 table and data cluster and sets L1[128].
    let img = createImage({ size: 4n << 20n, clusterSize: 512 }).image;
    for (const op of [
      { kind: 'resize', size: 4194816n },
      { kind: 'write', offset: 4194304n, data: Uint8Array.of(7) },
    ] as const) {
      const r = step(img, op);
      if (!r.ok) throw r.error;
      img = r.image;
    }
    expect(img.header.l1TableOffset).toBe(0xa00n);
    expect(img.header.l1Size).toBe(129);
    const file = storeImage(closeImage(img).image);
    expect(file.length).toBe(3592); // QEMU's file: 0xa00 + 129 * 8
  });
});
