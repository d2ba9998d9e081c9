/**
 * scripts/fuzz.ts (`npm run fuzz`): argument parsing, the time-boxed round-robin loop, the summary,
 * and that a failure is reported with a seed and path that really replay it.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Image } from '../../src/model/image.ts';
import type { Op } from '../../src/model/ops.ts';
import { step } from '../../src/model/step.ts';
import { commandsProperty, CONFIG_CLASSES, configArb, type StepFn } from '../support/model-commands.ts';
import { batchSeed, fuzzMain, modelCommandsCampaign, formatQemuStats, parseFuzzArgs, qemuCampaign, runFuzz, FuzzUsageError, type FuzzIO, type FuzzReport } from '../../scripts/fuzz.ts';
import { type Campaign } from '../support/campaign.ts';

/** Captures what fuzzMain prints. */
function capture(isTTY = false): FuzzIO & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return { stdout: (s) => void (out += s), stderr: (s) => void (err += s), isTTY, out: () => out, err: () => err };
}

/** Writes all but the last byte of every write of two bytes or more (a broken system). */
const dropsLastByte: StepFn = (image: Image, op: Op) =>
  op.kind === 'write' && op.data.length > 1 ? step(image, { ...op, data: op.data.subarray(0, op.data.length - 1) }) : step(image, op);

describe('parseFuzzArgs', () => {
  it('has the documented defaults, and a random seed only when none is given', () => {
    const o = parseFuzzArgs([], () => 0.25);
    expect(o).toMatchObject({ seconds: 60, seed: 1 << 30, randomSeed: true, output: 'table', help: false });
    expect(o.classes).toBeUndefined();
    expect(o.maxCommands).toBeUndefined();
    const p = parseFuzzArgs(['--seconds', '2.5', '--seed=-7', '--classes', 'backing,model-commands/preallocated', '--max-commands=12', '--output=json'], () => {
      throw new Error('random must not be used when --seed is given');
    });
    expect(p).toMatchObject({ seconds: 2.5, seed: -7, randomSeed: false, classes: ['backing', 'model-commands/preallocated'], maxCommands: 12, output: 'json' });
    // Seeds above 2^31 wrap to the same 32-bit value fast-check uses.
    expect(parseFuzzArgs(['--seed', '4294967295']).seed).toBe(-1);
    expect(parseFuzzArgs(['--help']).help).toBe(true);
  });

  it('refuses malformed input with a FuzzUsageError naming the problem', () => {
    const cases: [string[], RegExp][] = [
      [['--seconds', '0'], /--seconds needs a positive number/],
      [['--seconds', 'x'], /--seconds needs a positive number/],
      [['--seed', '1.5'], /--seed needs an integer/],
      [['--seed'], /--seed needs a value/],
      [['--max-commands', '0'], /--max-commands needs an integer in \[1,/],
      [['--output=xml'], /--output must be table or json/],
      [['--classes='], /at least one class/],
      [['--frobnicate'], /unknown argument '--frobnicate'/],
    ];
    for (const [argv, msg] of cases) expect(() => parseFuzzArgs(argv), argv.join(' ')).toThrow(msg);
    expect(() => parseFuzzArgs(['--frobnicate'])).toThrow(FuzzUsageError);
  });
});

describe('batchSeed', () => {
  it('is deterministic, differs between batches and between run seeds, and is a 32-bit integer', () => {
    const a = Array.from({ length: 100 }, (_v, k) => batchSeed(12345, k));
    expect(Array.from({ length: 100 }, (_v, k) => batchSeed(12345, k))).toEqual(a);
    expect(new Set(a).size).toBe(100);
    expect(a.every((s) => Number.isInteger(s) && s >= -(2 ** 31) && s < 2 ** 31)).toBe(true);
    expect(batchSeed(12346, 0)).not.toBe(batchSeed(12345, 0));
  });
});

describe('npm run fuzz', () => {
  it('--help prints the usage and exits 0; a bad argument or class exits 2', async () => {
    const h = capture();
    expect(await fuzzMain(['--help'], h)).toBe(0);
    expect(h.out()).toMatch(/--seconds N[\s\S]*--seed S[\s\S]*--classes[\s\S]*--max-commands[\s\S]*--output=json/);
    const bad = capture();
    expect(await fuzzMain(['--classes', 'no-such-class'], bad)).toBe(2);
    expect(bad.err()).toMatch(/unknown class no-such-class; known: model-commands\/small-clusters/);
  });

  it('a 3-second run of every class ends near the deadline with a table and exit 0', async () => {
    const io = capture(true);
    const t0 = Date.now();
    const code = await fuzzMain(['--seconds', '3', '--seed', '99', '--max-commands', '20'], io);
    const seconds = (Date.now() - t0) / 1000;
    expect(code, io.out()).toBe(0);
    // The deadline is the feature under test, so these bounds are on time: at least the deadline,
    // and not running on — the upper bound is a hang detector, more than 10 × the usual 4-5 s.
    expect(seconds).toBeGreaterThanOrEqual(3);
    expect(seconds).toBeLessThan(60);
    const out = io.out();
    expect(out).toMatch(/^fuzz: seed 99, \d+\.\d s of 3 s, max 20 commands/);
    expect(out).toMatch(/campaign\s+class\s+sequences\s+ops\s+qemu calls\s+failures\s+layout identical\s+seq\/min/);
    // The model campaign runs no QEMU and compares no layouts: 0 calls, "-".
    for (const c of CONFIG_CLASSES) expect(out).toMatch(new RegExp(`model-commands\\s+${c.cls}\\s+\\d+\\s+\\d+\\s+0\\s+0\\s+-\\s+(\\d+|-)\\n`));
    const total = /total\s+(\d+)\s+(\d+)\s+\d+\s+0\s/.exec(out);
    expect(total, out).not.toBeNull();
    expect(Number(total![1])).toBeGreaterThan(0);
    expect(Number(total![2])).toBeGreaterThan(0);
    // On a TTY the progress line was drawn on stderr and cleared.
    expect(io.err()).toMatch(/fuzz: seed 99, 3 s/);
    expect(io.err()).toMatch(/\r\x1b\[K$/);
  }, 120_000);

  it('runs only the selected classes, round-robin, and counts sequences and ops', async () => {
    let clock = 0;
    const calls: { cls: string; seed: number; numRuns: number; maxCommands?: number }[] = [];
    const fake: Campaign = {
      name: 'fake',
      classes: [{ name: 'a', title: 'A' }, { name: 'b', title: 'B' }, { name: 'c', title: 'C' }],
      runBatch(cls, p) {
        calls.push({ cls, ...p });
        clock += 100 * p.numRuns; // 100 ms per sequence
        return { sequences: p.numRuns, ops: 7 * p.numRuns };
      },
    };
    const report = await runFuzz({ seconds: 10, seed: 5, randomSeed: false, classes: ['a', 'fake/c'], maxCommands: 9, output: 'table', help: false }, [fake], { now: () => clock });
    expect(calls.map((c) => c.cls).slice(0, 4)).toEqual(['a', 'c', 'a', 'c']);
    expect(calls.every((c) => c.maxCommands === 9)).toBe(true);
    expect(calls.map((c) => c.seed)).toEqual(calls.map((_c, k) => batchSeed(5, k)));
    // Batches grow to ~2 s once the speed is known, and the loop stops at the deadline.
    expect(calls[2]!.numRuns).toBe(20);
    expect(clock).toBeGreaterThanOrEqual(10_000);
    expect(report.units.map((u) => u.cls)).toEqual(['a', 'c']);
    const seqs = report.units.reduce((s, u) => s + u.sequences, 0);
    expect(seqs).toBe(calls.reduce((s, c) => s + c.numRuns, 0));
    expect(report.units.reduce((s, u) => s + u.ops, 0)).toBe(7 * seqs);
  });

  it('reports a failure of a broken system with seed, path, replayPath and counterexample, exits 1, and the seed and path replay it', async () => {
    const campaigns = [modelCommandsCampaign(dropsLastByte, 'dropsLastByte')];
    const io = capture();
    const code = await fuzzMain(['--seconds', '2', '--seed', '7', '--classes', 'small-clusters', '--max-commands', '20'], io, campaigns);
    expect(code).toBe(1);
    const out = io.out();
    expect(out).toMatch(/model-commands\s+small-clusters\s+\d+\s+\d+\s+0\s+[1-9]/);
    expect(out).toMatch(/failure 1: model-commands\/small-clusters\n {2}seed: -?\d+, path: "\d+(:\d+)*", replayPath: "[^"]+"/);
    expect(out).toMatch(/ {2}error: Write\(.*reads differ/);
    expect(out).toMatch(/ {2}counterexample: .*clusterBits.*Write\(/);

    // The same run as JSON, and the reported seed and path reproduce the failure exactly.
    const j = capture();
    expect(await fuzzMain(['--seconds', '2', '--seed', '7', '--classes', 'small-clusters', '--max-commands', '20', '--output=json'], j, campaigns)).toBe(1);
    const report = JSON.parse(j.out()) as FuzzReport;
    expect(report.seed).toBe(7);
    const f = report.failures[0]!;
    expect(f).toMatchObject({ campaign: 'model-commands', cls: 'small-clusters' });
    expect(f.replay).toContain(`seed: ${f.seed}, path: '${f.path}'`);
    expect(f.replay).toContain(`replayPath: '${f.replayPath}'`);
    const replay = { maxCommands: 20, compressed: true, replayPath: f.replayPath! };
    const replayed = fc.check(commandsProperty(configArb('small-clusters'), dropsLastByte, replay), { seed: f.seed, path: f.path, endOnFailure: true });
    expect(replayed.failed).toBe(true);
    expect(fc.stringify(replayed.counterexample)).toBe(f.counterexample);
    // …and the correct model passes the same case.
    const fixed = fc.check(commandsProperty(configArb('small-clusters'), step, replay), { seed: f.seed, path: f.path, endOnFailure: true });
    expect(fixed.failed).toBe(false);
  }, 300_000);

  it('qemu-forward / qemu-reverse campaigns: batches run real QEMU, count its processes and the layout-identical share', async () => {
    const forward = qemuCampaign('forward');
    const reverse = qemuCampaign('reverse');
    expect(forward.classes.map((c) => c.name)).toContain('data-file');
    const f = await forward.runBatch('small-clusters', { seed: 11, numRuns: 2, maxCommands: 8 });
    expect(f.failure).toBeUndefined();
    expect(f.sequences).toBe(2);
    // check, compare, map, info (and qemu-io read) per sequence.
    expect(f.qemuCalls).toBeGreaterThanOrEqual(2 * 4);
    expect(forward.stats.qemuCalls).toBe(f.qemuCalls);
    expect(f.layout).toBeUndefined();
    const r = await reverse.runBatch('lazy-refcounts', { seed: 12, numRuns: 2, maxCommands: 8 });
    expect(r.failure).toBeUndefined();
    expect(r.sequences).toBe(2);
    expect(r.qemuCalls).toBeGreaterThan(0);
    expect(r.layout?.compared).toBe(2);
    const out = formatQemuStats([forward, reverse]);
    expect(out).not.toMatch(/qemu-forward: layout/);
    expect(out).toMatch(/qemu-reverse: layout-identical sequences by category[\s\S]*lazy-refcounts\s+.*\d+\/\d+ \(\d+ %\)/);
    // Through the command line: per class sequences, ops, qemu calls, failures, the layout share
    // (reverse only) and sequences per minute, then the table by category.
    const io = capture();
    expect(await fuzzMain(['--seconds', '1', '--seed', '5', '--classes', 'qemu-forward/backing,qemu-reverse/backing', '--max-commands', '6'], io, [forward, reverse])).toBe(0);
    const fwd = /qemu-forward\s+backing\s+(\d+)\s+\d+\s+(\d+)\s+0\s+-\s+\d+\n/.exec(io.out());
    expect(fwd, io.out()).not.toBeNull();
    expect(Number(fwd![2])).toBeGreaterThanOrEqual(4 * Number(fwd![1]));
    const rev = /qemu-reverse\s+backing\s+(\d+)\s+\d+\s+[1-9]\d*\s+0\s+(\d+)\/(\d+) \(\d+ %\)\s+\d+\n/.exec(io.out());
    expect(rev, io.out()).not.toBeNull();
    expect(Number(rev![3])).toBe(Number(rev![1]));
    expect(io.out()).toMatch(/qemu-reverse: layout-identical sequences by category/);
  }, 300_000);
});
