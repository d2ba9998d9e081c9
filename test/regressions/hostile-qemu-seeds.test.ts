/**
 * Regressions found by hostile-input fuzzing on the seed images qemu-img makes (test/support/hostile-pool.ts
 * qemuPool: persistent bitmaps, LUKS), replayed through the same harness and worker as
 * test/regressions/hostile-regressions.test.ts, with the same bounds (only typed errors, work within
 * workLimit — bounded by the file's size, src/codec/work-meter.ts —, heap, and HANG_MS as a hang
 * detector only). Needs qemu-img to make the seeds: fails, never skips, without it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Mutation } from '../../src/corrupt/mutate.ts';
import { requireQemu } from '../../src/qemu/run.ts';
import { caseFailure, hostilePool, HostileRunner } from '../support/hostile-campaign.ts';

let runner: HostileRunner;

beforeAll(async () => {
  await requireQemu();
  runner = new HostileRunner((await hostilePool(true)).filter((p) => p.name.startsWith('qemu-')));
  await runner.start();
}, 120_000);

afterAll(async () => {
  await runner?.close();
});

describe('hostile-input regressions on qemu-img seeds', () => {
  // `npm run fuzz -- --seconds 420 --seed 2026 --classes hostile-input/mixed`: 18 of 7772 cases did
  // not finish within 15 s, e.g. this one. l1_size 2359288 makes the active L1 table reach over the
  // LUKS key material (256 KiB of random words); `-r all` repairs the COPIED flag of ~16 000 of those
  // "entries", and each repair write's metadata overlap check read the whole in-file table again
  // (270 336 entries) and rebuilt the sorted set of L2 offsets (src/check/tables.ts,
  // src/check/overlap.ts): quadratic, hours. Now flag-only writes are patched into the table view.
  it('an L1 table of 2.3 Mi entries over LUKS key material: -r all', async () => {
    const mutations: Mutation[] = [
      { kind: 'write', field: 'header.l1_size', offset: 36, width: 4, value: 2359288n },
      { kind: 'flip', region: 'header-cluster', offset: 64, bit: 0 },
    ];
    const r = await runner.run({ image: 'qemu-luks', mutations });
    expect(caseFailure(r)).toBeUndefined();
    if (typeof r === 'string' || 'crashed' in r) throw new Error('unreachable');
    const repair = r.stages.find((s) => s.stage === 'repair-all')!;
    expect(repair.outcome).toBe('ok');
    // Three check passes over a 2.3 MiB file, not one reading of the table per repaired entry (~36 GB).
    expect(repair.work.hostBytes).toBeLessThanOrEqual(8 * r.fileBytes);
  });
});
