/**
 * Check and repair stay within the hostile-input bounds on inputs that once broke them — further
 * shrunk cases of test/qemu/hostile-input.test.ts besides those in test/regressions/hostile-regressions.test.ts,
 * run through the same harness and worker (test/support/hostile-campaign.ts): only typed
 * errors, work within workLimit (bounded by the file's size: src/codec/work-meter.ts), heap growth
 * below HEAP_CEILING_BYTES, no hang. ~7 s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mutationTargets, type Mutation } from '../../src/corrupt/mutate.ts';
import { caseFailure, HostileRunner, type HostilePoolEntry } from '../support/hostile-campaign.ts';
import { modelPool } from '../support/hostile-pool.ts';

let runner: HostileRunner;
let pool: HostilePoolEntry[] = [];

beforeAll(async () => {
  pool = modelPool().filter((p) => ['v3-2m-refcount2', 'v2-64k-snapshots', 'v3-512-refcount1', 'v3-512-refcount4', 'v3-1k-refcount8-prealloc'].includes(p.name)).map((p) => ({ ...p, targets: mutationTargets(p.bytes) }));
  runner = new HostileRunner(pool);
  await runner.start();
}, 120_000);

afterAll(async () => {
  await runner?.close();
});

/** A write of `value` into the field `name` of seed `image` (its offset and width as the mutator knows them). */
function fieldWrite(image: string, name: string, value: bigint): Mutation {
  const f = pool.find((p) => p.name === image)!.targets.fields.find((x) => x.name === name);
  if (f === undefined) throw new Error(`no field ${name} in ${image}`);
  return { kind: 'write', field: f.name, offset: f.offset, width: f.width, value };
}

async function expectBounded(image: string, mutations: Mutation[]): Promise<void> {
  const r = await runner.run({ image, mutations });
  expect(caseFailure(r)).toBeUndefined();
}

describe('check and repair bounds', () => {
  // The hostile property's shrunk case: refcount table entry 0 of the 2 MiB / 2-bit image gets bit 56
  // set, so its refcount block is out of reach and `-r all` rebuilds. The rebuild built every 8 Mi-entry
  // refcount block as an array of 8 Mi refcounts for the generated encoder (src/check/imrt.ts
  // refblockBytes): 3.5 s, up to 252 MiB of heap. Now only the non-zero bytes are encoded.
  it('2 MiB clusters, 2-bit refcounts, a refcount table entry out of reach: the rebuild', async () => {
    await expectBounded('v3-2m-refcount2', [{ kind: 'flip', region: 'refcount-table', offset: 2097152, bit: 0 }]);
  });

  // Snapshot 1's L1 table said to have 1441784 entries, reaching over L2 tables and data: `-r all`
  // repairs thousands of entries, and each repair write's overlap check read and decoded the whole
  // refcount table and active L1 table again, entry by entry (src/check/refcounts.ts
  // fixL2EntryByZero → check/overlap.ts checkMetadataOverlap → reftableWord): 12.8 s. Now the tables are decoded once per version
  // (src/check/tables.ts) and the overlap check searches sorted intervals.
  it('a snapshot L1 table of 1441784 entries in a version 2 image', async () => {
    await expectBounded('v2-64k-snapshots', [fieldWrite('v2-64k-snapshots', 'snapshot[1].l1_size', 1441784n)]);
  });

  // The hour-long hostile campaign of 2026-12-07 (seeds 647113944 and 142964328): a 512-byte, 1-bit
  // image whose refcount table is said to be 511 or 512 clusters, with one flipped bit. `-r all`
  // grows the file for a refcount block out of place, and compare_refcounts then prints "Can't get
  // refcount for cluster N" for 1.6 million clusters — as QEMU does — which the repair kept as
  // strings: 281 MiB of heap. Now a session keeps MAX_KEPT_LINES lines and counts the rest.
  it('512-byte clusters, 1-bit refcounts, a 512-cluster refcount table: the repair log', async () => {
    await expectBounded('v3-512-refcount1', [
      { kind: 'flip', region: 'l1-table', offset: 3410, bit: 0 },
      fieldWrite('v3-512-refcount1', 'header.refcount_table_clusters', 512n),
    ]);
    await expectBounded('v3-512-refcount1', [
      { kind: 'flip', region: 'refcount-block', offset: 1130, bit: 0 },
      fieldWrite('v3-512-refcount1', 'header.refcount_table_clusters', 511n),
    ]);
  });

  // The second hour-long campaign (seed 998476541): a truncated 512-byte, 4-bit image whose refcount
  // table entry gets a high bit, so one used cluster lies 8 TiB out. `-r all` rebuilt a reftable
  // of 2^24 entries as a dense array and a dense buffer: 276 MiB of heap for a 64 KB file. The
  // rebuild's table is sparse now, and a large one is written as zeros plus its set entries.
  it('512-byte clusters, 4-bit refcounts, a used cluster 8 TiB out: the rebuilt reftable', async () => {
    await expectBounded('v3-512-refcount4', [{ kind: 'truncate', length: 64112 }, { kind: 'flip', region: 'refcount-table', offset: 762, bit: 3 }]);
  });

  // The third campaign (seed 14, 25 min): small-cluster images whose flipped refcount-table bits put
  // a used cluster 2-4 TiB out. `-r all` rebuilds a reftable of 4-8 Mi entries, written as zeros
  // plus its set entries, and the check pass after the rebuild reads that 32-64 MiB table back —
  // as QEMU's qcow2_refcount_init does. The work counted the read but not the zeroing (the campaign
  // allows 4 × what a stage wrote), so these failed at up to 2.3 × the limit. The meter now counts
  // zeroed bytes (src/codec/work-meter.ts hostZeroed), and these pass well inside the limit.
  it('small clusters, a used cluster terabytes out: reading back the rebuilt reftable', async () => {
    await expectBounded('v3-512-refcount4', [
      { kind: 'flip', region: 'refcount-table', offset: 514, bit: 1 },
      { kind: 'flip', region: 'refcount-table', offset: 520, bit: 0 },
    ]);
    await expectBounded('v3-512-refcount4', [
      { kind: 'flip', region: 'refcount-table', offset: 850, bit: 1 },
      { kind: 'flip', region: 'header-cluster', offset: 59, bit: 1 },
    ]);
    await expectBounded('v3-1k-refcount8-prealloc', [
      { kind: 'flip', region: 'refcount-table', offset: 1026, bit: 3 },
      { kind: 'flip', region: 'header-cluster', offset: 63, bit: 0 },
    ]);
  });
});
