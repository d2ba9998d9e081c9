/**
 * Corruption-injection property (test/support/injection-campaign.ts has the details): a valid
 * image made by the model from a random configuration and command sequence of the model-commands
 * property, one corruption of the catalog (src/corrupt/catalog.ts), then our check against
 * `qemu-img check` (same exit code, corruption and leak counts), our repair against qemu-img's on
 * copies (`-r all` and `-r leaks`: same results; both repaired files through `qemu-img check` alike),
 * and every guest cluster the corruption cannot affect reads back as the raw-disk oracle from both
 * repaired images.
 *
 * Runs: QCOW2_INJECTION_RUNS (default 40, about 70 s on 2 cores) cases over every corruption of the catalog. The seed is
 * fc-setup's (QCOW2_FC_SEED); fast-check prints seed, path and the command list's replayPath on
 * failure; replay with QCOW2_FC_SEED=<seed> QCOW2_FC_PATH=<path>. Needs qemu-img (fails loudly).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CORRUPTION_CATEGORIES } from '../../src/corrupt/catalog.ts';
import { requireQemu } from '../../src/qemu/run.ts';
import { corruptionNames, INJECTION_MAX_COMMANDS, injectionCaseArb, injectionProperty, InjectionStats, InjectionWorkspace } from '../support/injection-campaign.ts';

const NUM_RUNS = Number(process.env['QCOW2_INJECTION_RUNS'] ?? 40);
/** The property's whole run (shrinking included) stops there; the test's own timeout is above it. */
const RUN_TIME_LIMIT_MS = Number(process.env['QCOW2_INJECTION_RUN_MS'] ?? 240_000);

let ws: InjectionWorkspace;

beforeAll(async () => {
  await requireQemu();
  ws = await InjectionWorkspace.create();
});

afterAll(async () => {
  await ws?.remove();
});

describe('corruption injection', () => {
  it('our check and repair agree with qemu-img on corrupted model images; intact data survives both repairs', async () => {
    const stats = new InjectionStats();
    const path = process.env['QCOW2_FC_PATH'];
    await fc.assert(injectionProperty(ws, injectionCaseArb(corruptionNames(), INJECTION_MAX_COMMANDS), stats), {
      numRuns: NUM_RUNS,
      interruptAfterTimeLimit: RUN_TIME_LIMIT_MS,
      markInterruptAsFailure: true,
      ...(path !== undefined ? { path } : {}),
    });
    console.log(stats.summary());
    // Not vacuous: most cases applied a corruption, most categories were met, QEMU found something.
    expect(stats.notApplicable).toBeLessThan(stats.cases / 4);
    if (NUM_RUNS >= 40) expect(stats.byCategory.size).toBeGreaterThanOrEqual(CORRUPTION_CATEGORIES.length - 2);
    expect([...stats.checkCodes.keys()].some((code) => code !== 0)).toBe(true);
    expect(stats.clustersCompared).toBeGreaterThan(0);
  }, RUN_TIME_LIMIT_MS + 60_000);
});
