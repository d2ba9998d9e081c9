/**
 * The check's in-memory L1 and refcount tables (src/check/tables.ts) follow the repairs' writes at a
 * cost bounded by what was written, and stay exact.
 *
 * Found by hostile-input fuzzing (`npm run fuzz -- --seconds 420 --seed 2026 --classes
 * hostile-input/mixed`): the LUKS seed with header.l1_size = 2359288 and bit 0 of byte 64 flipped.
 * The active L1 table then reaches over 256 KiB of key material, and `-r all` repairs the COPIED flag
 * of ~16 000 of those "L1 entries" (check_oflag_copied), each write followed by QEMU's metadata
 * overlap check — which read the whole in-file L1 table again (270 336 entries) and rebuilt the
 * sorted set of L2 offsets, every time: the case never finished (the worker was ended after 15 s).
 * Now a write that changes only flag bits of an entry is patched into the view in place.
 *
 * Work is counted with src/codec/work-meter.ts (bytes read from host files), never timed; the
 * vitest timeout is the hang detector. test/regressions/hostile-regressions.test.ts replays the case
 * itself through the fuzzing harness.
 */
import { describe, expect, it } from 'vitest';
import { workSince, workSnapshot } from '../../src/codec/work-meter.ts';
import { activeL1View, reftableView, viewWord } from '../../src/check/tables.ts';
import { L1EntryMasks } from '../../generated/qcow2.ts';
import { createImage } from '../../src/model/create.ts';
import { readHost } from '../../src/model/host-file.ts';
import { step } from '../../src/model/step.ts';
import { beginTx, hostWrite, type Tx } from '../../src/model/tx.ts';
import type { Image } from '../../src/model/image.ts';

const COPIED = L1EntryMasks.copied;

/** 512-byte clusters, a 64 MiB disk (L1: 2048 entries, 16 KiB), `n` L2 tables allocated by writes 32 KiB apart. */
function imageWithL2Tables(n: number): Image {
  let image = createImage({ size: 64n << 20n, clusterSize: 512 }).image;
  for (let i = 0; i < n; i++) {
    const r = step(image, { kind: 'write', offset: BigInt(i) * 32768n, data: new Uint8Array(512).fill(1 + (i % 255)) });
    if (!r.ok) throw new Error(r.error.message);
    image = r.image;
  }
  return image;
}

/** The active L1 table's words as the file holds them now (the oracle: a plain read). */
function fileL1(tx: Tx): bigint[] {
  const h = tx.img.header;
  const raw = readHost(tx.img.file, h.l1TableOffset, h.l1Size * 8);
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Array.from({ length: h.l1Size }, (_v, i) => dv.getBigUint64(8 * i));
}

function writeWord(tx: Tx, offset: bigint, word: bigint): void {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, word);
  hostWrite(tx, offset, b);
}

describe('the check table views follow repair writes', () => {
  it('a COPIED-flag write per L1 entry is patched in: bytes read bounded by the bytes written, the view exact', () => {
    const image = imageWithL2Tables(1500);
    const tx = beginTx(image);
    const h = tx.img.header;
    const first = activeL1View(tx);
    expect(first.indexes.length).toBe(1500);
    const before = workSnapshot();
    let writes = 0;
    for (let k = 0; k < first.indexes.length; k++) {
      const i = first.indexes[k]!;
      const at = h.l1TableOffset + BigInt(i) * 8n;
      writeWord(tx, at, fileL1(tx)[i]! ^ COPIED);
      writes++;
      // What the overlap check asks after each repair write (overlap.ts metadataOverlap).
      activeL1View(tx);
      reftableView(tx);
    }
    const work = workSince(before);
    // The oracle reads (fileL1: 16 KiB per write) are not the view's: subtract them.
    const viewBytes = work.hostBytes - writes * h.l1Size * 8;
    // Each patch reads the 8 bytes written; a re-read would be 16 KiB per write (24 MiB here).
    expect(viewBytes).toBeLessThanOrEqual(16 * writes);
    const view = activeL1View(tx);
    expect(view).toBe(first);
    const words = fileL1(tx);
    for (let i = 0; i < h.l1Size; i++) expect(viewWord(view, i)).toBe(words[i]);
  });

  it('a write that moves an L2 table, or zeroes an entry, makes a new view that matches the file', () => {
    const image = imageWithL2Tables(8);
    const tx = beginTx(image);
    const h = tx.img.header;
    const first = activeL1View(tx);
    const i0 = first.indexes[0]!;
    // Pointer bits changed: the set of L2 offsets derived from the view would be stale.
    writeWord(tx, h.l1TableOffset + BigInt(i0) * 8n, fileL1(tx)[i0]! + 512n);
    const moved = activeL1View(tx);
    expect(moved).not.toBe(first);
    expect(viewWord(moved, i0)).toBe(fileL1(tx)[i0]);
    // An entry zeroed: it leaves the view.
    const i1 = moved.indexes[1]!;
    writeWord(tx, h.l1TableOffset + BigInt(i1) * 8n, 0n);
    const zeroed = activeL1View(tx);
    expect(zeroed.indexes).not.toContain(i1);
    // An entry that was zero becomes non-zero: it joins the view.
    const fresh = 2000;
    writeWord(tx, h.l1TableOffset + BigInt(fresh) * 8n, 0x8000000000001000n);
    const joined = activeL1View(tx);
    expect(viewWord(joined, fresh)).toBe(0x8000000000001000n);
    const words = fileL1(tx);
    for (let i = 0; i < h.l1Size; i++) expect(viewWord(joined, i), `entry ${i}`).toBe(words[i]);
  });
});
