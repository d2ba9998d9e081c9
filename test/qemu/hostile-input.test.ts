/**
 * Hostile-input fuzzing, bounded for `npm test` (`npm run fuzz` runs the same property open-ended:
 * hostileCampaign in test/support/hostile-campaign.ts). Seed images (model-made, plus two made
 * by qemu-img: persistent bitmaps and LUKS) get one to three mutations from src/corrupt/mutate.ts —
 * bit flips in metadata regions, boundary values (0, 1, 2^31-1, 2^31, 2^32-1, 2^53+1, 2^63-1, 2^63,
 * 2^64-1, the file length and cluster edges around it) in every size, count and offset field of the
 * header, extensions, L1/L2/refcount-table/refcount-block entries, snapshot entries and bitmap
 * directory entries, truncation (weighted to structure boundaries), extension lengths and backing
 * names running past cluster 0 — and each goes through load, open (read-only, from a reader,
 * writable, no-I/O, check mode), info, map, a read of every cluster (bounded), check, and repair
 * (leaks, all). Every case must:
 *  - let only typed errors escape (Qcow2FormatError, ModelError, OpenError; see hostile-harness.ts);
 *  - do work bounded by the file's size (workLimit: bytes read and fields decoded, src/codec/work-meter.ts;
 *    a case still running after HANG_MS is ended as a hang);
 *  - keep its heap growth below HEAP_CEILING_BYTES (the bounds are justified in hostile-campaign.ts).
 *
 * Runs: QCOW2_HOSTILE_RUNS (default 300). Replay a failure with QCOW2_FC_SEED=<seed> and
 * QCOW2_FC_PATH=<path> as printed. Needs qemu-img for two seed images: fails loudly without it.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireQemu } from '../../src/qemu/run.ts';
import { HOSTILE_STAGES } from '../support/hostile-harness.ts';
import { hostileCaseArb, hostilePool, hostileProperty, HostileRunner, HostileStats, type HostilePoolEntry } from '../support/hostile-campaign.ts';

const NUM_RUNS = Number(process.env['QCOW2_HOSTILE_RUNS'] ?? 300);
/** The property's whole run (shrinking included) stops there; the test's own timeout is above it. */
const RUN_TIME_LIMIT_MS = Number(process.env['QCOW2_HOSTILE_RUN_MS'] ?? 240_000);

let pool: HostilePoolEntry[] = [];
let runner: HostileRunner;

beforeAll(async () => {
  await requireQemu();
  pool = await hostilePool(true);
  runner = new HostileRunner(pool);
  await runner.start();
}, 120_000);

afterAll(async () => {
  await runner?.close();
});

describe('hostile input', () => {
  it('mutated images: only typed errors, within the time and heap bounds', async () => {
    const stats = new HostileStats();
    // The seed is fc-setup's (QCOW2_FC_SEED); fast-check prints seed and path on failure.
    const path = process.env['QCOW2_FC_PATH'];
    console.log(`hostile-input: ${NUM_RUNS} runs over ${pool.length} seed images, seed ${process.env['QCOW2_FC_SEED'] ?? '(fc-setup default)'}${path !== undefined ? ` path ${path}` : ''}`);
    // A bound on the whole run, shrinking included: past it fast-check stops and reports a failure.
    await fc.assert(hostileProperty(runner, hostileCaseArb(pool), stats), {
      numRuns: NUM_RUNS,
      interruptAfterTimeLimit: RUN_TIME_LIMIT_MS,
      markInterruptAsFailure: true,
      ...(path !== undefined ? { path } : {}),
    });
    console.log(stats.summary());
    // The generator reached every kind of mutation, and cases were both refused and accepted.
    for (const k of ['flip', 'write', 'truncate']) expect(stats.mutationKinds.get(k) ?? 0).toBeGreaterThan(0);
    expect(stats.errors.size).toBeGreaterThan(3);
    expect(stats.ok.get('read') ?? 0).toBeGreaterThan(0);
    expect(stats.ok.get('map') ?? 0).toBeGreaterThan(0);
    // Every stage ran (not skipped) somewhere.
    for (const st of HOSTILE_STAGES) expect(stats.ok.get(st) ?? 0, st).toBeGreaterThan(0);
  }, RUN_TIME_LIMIT_MS + 60_000);
});
