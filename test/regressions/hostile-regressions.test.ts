/**
 * Regressions found by hostile-input fuzzing (test/qemu/hostile-input.test.ts, `npm run fuzz`): each
 * is the shrunk case — a seed image and the fields poked into it — run through the same harness and
 * worker (test/support/hostile-campaign.ts), so the same bounds apply: only typed errors, work (bytes
 * read from host files and fields decoded, src/codec/work-meter.ts) within workLimit — bounded by the
 * file's size, never by wall-clock time — heap growth below HEAP_CEILING_BYTES, and no hang (HANG_MS,
 * a hang detector only). The comment on each case says what it found and where; some also bound the
 * work of the stage that was slow more tightly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mutationTargets, type Mutation } from '../../src/corrupt/mutate.ts';
import { createImage } from '../../src/model/create.ts';
import { storeImage } from '../../src/model/load-store.ts';
import { step } from '../../src/model/step.ts';
import { caseFailure, HostileRunner, type HostilePoolEntry } from '../support/hostile-campaign.ts';
import type { CaseReport } from '../support/hostile-harness.ts';
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
  const seeds = [...modelPool().filter((p) => ['v3-2m-refcount2', 'v2-64k-snapshots', 'v3-64k-snapshots', 'v3-backing-name'].includes(p.name)), { name: 'ones-64k', bytes: onesImage() }];
  const pool: HostilePoolEntry[] = seeds.map((p) => ({ ...p, targets: mutationTargets(p.bytes) }));
  runner = new HostileRunner(pool);
  await runner.start();
}, 120_000);

afterAll(async () => {
  await runner?.close();
});

const write = (field: string, offset: number, width: 1 | 2 | 4 | 8, value: bigint): Mutation => ({ kind: 'write', field, offset, width, value });

/** Runs one case, expects it to keep every bound, and returns its report. */
async function expectBounded(image: string, mutations: Mutation[]): Promise<CaseReport> {
  const r = await runner.run({ image, mutations });
  expect(caseFailure(r)).toBeUndefined();
  if (typeof r === 'string' || 'crashed' in r) throw new Error('unreachable: caseFailure accepted a hang or crash');
  return r;
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

  // Found with --seed 2026 (as v3-backing-name truncated to 56920 bytes, a refcount-block flip,
  // nb_snapshots 16384: 18 MiB of work, 2 s): a snapshot table past the end of the file. Every stage
  // that reads the table (each open, info, check and repair) read and decoded each of its entries —
  // 40 zero bytes apiece, up to 65536 of them — from past the end of the file (src/model/snapshot.ts
  // snapshotTableEntries, src/check/snapshots.ts readSnapshots). Now an entry wholly past the end is
  // one shared decoding of zeros and is not read: no stage reads more than a few times the file.
  it('65536 snapshot entries past the end of the file', async () => {
    const r = await expectBounded('v3-backing-name', [{ kind: 'truncate', length: 56920 }, write('header.nb_snapshots', 60, 4, 65536n)]);
    expect(r.stages.find((st) => st.stage === 'info')!.outcome).toBe('ok');
    for (const st of r.stages) expect(st.work.hostBytes, st.stage).toBeLessThanOrEqual(4 * r.fileBytes + 4 * r.clusterSize);
  });
});
