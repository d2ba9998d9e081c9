/**
 * Regressions found by hostile-input fuzzing (test/qemu/hostile-input.test.ts): each is the shrunk
 * case — a seed image and the fields poked into it — run through the same harness and worker
 * (test/support/hostile-campaign.ts), so the same bounds apply: only typed errors, within
 * CASE_TIME_LIMIT_MS, heap growth below HEAP_CEILING_BYTES. The comment on each case says what it
 * found and where.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mutationTargets, type Mutation } from '../../src/corrupt/mutate.ts';
import { createImage } from '../../src/model/create.ts';
import { storeImage } from '../../src/model/load-store.ts';
import { step } from '../../src/model/step.ts';
import { caseFailure, HostileRunner, type HostilePoolEntry } from '../support/hostile-campaign.ts';
import { modelPool } from '../support/hostile-pool.ts';

let runner: HostileRunner;

/** A 64 MiB image whose first three data clusters (host 0x50000..0x80000) hold 0x11 bytes; L1 at 0x30000. */
function onesImage(): Uint8Array {
  let image = createImage({ size: 64n << 20n }).image;
  const r = step(image, { kind: 'write', offset: 0n, data: new Uint8Array(3 * 65536).fill(0x11) });
  if (!r.ok) throw new Error(r.error.message);
  image = r.image;
  return storeImage(image);
}

beforeAll(async () => {
  const seeds = [...modelPool().filter((p) => ['v3-2m-refcount2', 'v2-64k-snapshots', 'v3-64k-snapshots'].includes(p.name)), { name: 'ones-64k', bytes: onesImage() }];
  const pool: HostilePoolEntry[] = seeds.map((p) => ({ ...p, targets: mutationTargets(p.bytes) }));
  runner = new HostileRunner(pool);
  await runner.start();
}, 120_000);

afterAll(async () => {
  await runner?.close();
});

const write = (field: string, offset: number, width: 1 | 2 | 4 | 8, value: bigint): Mutation => ({ kind: 'write', field, offset, width, value });

/** Runs one case and expects it to keep every bound. */
async function expectBounded(image: string, mutations: Mutation[]): Promise<void> {
  const r = await runner.run({ image, mutations });
  expect(caseFailure(r)).toBeUndefined();
}

describe('hostile-input regressions', () => {
  // 2 MiB clusters with refcount_bits 2: one refcount block holds 8 Mi refcounts. check decodes every
  // block whole through the generated codec (src/check/context.ts, the refcount block read)
  // where the file needs a handful of them: ~1.5 s per check pass on the unmutated image, 3-6 s for
  // check + both repairs.
  it('2 MiB clusters, 2-bit refcounts: check and repair of the unmutated image', async () => {
    await expectBounded('v3-2m-refcount2', []);
  });

  // The same image with refcount_table_clusters 1 → 0 (header byte 59, bit 0): `-r all` rebuilds the
  // refcount structure, building and encoding whole 8 Mi-entry blocks (src/check/imrt.ts
  // refblockBytes: an 8 Mi-element array per block; 2-4 s, ~240 MiB of heap).
  it('2 MiB clusters, 2-bit refcounts, no refcount table: the rebuild', async () => {
    await expectBounded('v3-2m-refcount2', [{ kind: 'flip', region: 'header-cluster', offset: 59, bit: 0 }]);
  });

  // l1_size raised to 1 Mi entries (QEMU accepts up to 4 Mi): the entries past the real table are
  // whatever follows it in the file (L2 tables, data), ~300 000 corruptions. check visits each entry
  // through per-entry host reads (src/check/refcounts.ts checkRefcountsL1, checkOflagCopied):
  // ~4 s per pass.
  it('a 1 Mi-entry active L1 table over other structures', async () => {
    await expectBounded('v3-64k-snapshots', [write('header.l1_size', 36, 4, 1048576n)]);
  });

  // Found as: v2-64k-snapshots truncated to 518832 bytes, l1_size 65535, truncated to 1104642:
  // 95 000 corruptions; check 1-2.5 s, `-r leaks` (two passes) 3-4 s.
  it('a 64 Ki-entry L1 table in a truncated version 2 image', async () => {
    await expectBounded('v2-64k-snapshots', [{ kind: 'truncate', length: 518832 }, write('header.l1_size', 36, 4, 65535n), { kind: 'truncate', length: 1104642 }]);
  });

  // Found on the qemu-img bitmaps seed (refcount-table flip, backing_file_size, L1 flip): an L1 entry
  // moved to 0x58000, inside data full of 0x11 bytes, so its "L2 table" holds 8192 preallocated zero
  // entries with unaligned offsets. `-r all` repairs each one, and each repair write runs the
  // metadata-overlap check, which re-reads and decodes the whole refcount table every time
  // (src/check/refcounts.ts fixL2EntryByZero → check-overlap.ts metadataOverlap →
  // check-context.ts reftableWord): 7-14 s. Also found as v2-64k-snapshots with snapshot[1].l1_size
  // 1441784 (12.8 s).
  it('an L1 entry into data full of preallocated-zero-looking words: -r all', async () => {
    await expectBounded('ones-64k', [write('l1[0]', 0x30000, 8, 0x8000000000058000n)]);
  });
});
