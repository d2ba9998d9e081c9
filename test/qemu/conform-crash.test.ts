/**
 * `qcow2-ref conform --crash` (src/conform/crash-conform.ts, src/cli/conform-crash.ts) on cases of
 * the checked-in corpus: the built-in writers (the model, the driver write-through and write-back,
 * QEMU's qemu-io through blklogwrites) judged crash state by crash state, with qemu-img check sampled
 * against ours; QEMU's known lazy-refcounts violation found and reported as expected; a third-party
 * writer handing over a dm-log-writes log (test/support/dm-log-writes-writer.ts) passes, and the same
 * writer without its flushes is caught. Also the JSON report's shape and the usage errors.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runConform } from '../../src/cli/conform.ts';
import { UsageError } from '../../src/cli/io.ts';
import type { CrashReport } from '../../src/conform/index.ts';
import { requireQemu } from '../../src/qemu/index.ts';

const ROOT = resolve(import.meta.dirname, '../..');
// tsx by absolute URL: the writer runs in a temporary directory.
const WRITER = `${process.execPath} --import ${import.meta.resolve('tsx')} ${join(ROOT, 'test/support/dm-log-writes-writer.ts')} {image} {script} {log}`;
let keep = '';

beforeAll(async () => {
  await requireQemu();
  keep = mkdtempSync(join(tmpdir(), 'qcow2-conform-crash-'));
});
afterAll(() => rmSync(keep, { recursive: true, force: true }));

/** Runs conform with `args`; returns the exit code and what it printed. */
async function conform(args: readonly string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runConform(args, { stdout: (t) => void (out += t), stderr: (t) => void (err += t) }, { cwd: ROOT, progress: { write: () => {}, isTTY: false, columns: 80 } });
  return { code, out, err };
}

describe('conform --crash', () => {
  it('built-in writers: no violation but QEMU\'s listed lazy-refcounts one; qemu-img check agrees with ours', async () => {
    const r = await conform(['--crash', '--only', 'cluster-4k*', '--only', 'lazy-refcounts*', '--only', 'snapshots*', '--qemu-check-every', '5', '--keep', keep, '--output=json']);
    expect(r.code, r.err).toBe(0);
    const report = JSON.parse(r.out) as CrashReport;
    expect(new Set(report.rows.map((x) => x.writer))).toEqual(new Set(['model', 'driver', 'driver-writeback', 'qemu-io']));
    for (const row of report.rows) {
      expect(row.states, `${row.writer} ${row.family}`).toBeGreaterThan(0);
      expect(row.qemuChecked, `${row.writer} ${row.family}`).toBeGreaterThan(0);
      expect(row.disagreements, row.firstDisagreement).toBe(0);
      if (row.writer === 'qemu-io' && row.family === 'lazy-refcounts') {
        expect(row.violating).toBeGreaterThan(0);
        expect(row.knownFailure).toMatch(/crash-qemu-io\.txt:\d+ lazy-refcounts/);
        expect(row.first?.violations.map((v) => v.kind)).toContain('corruption');
        expect(readdirSync(row.first!.kept!).sort()).toEqual(['base.qcow2', 'log.jsonl', 'point.json', 'script.json', 'state.qcow2']);
      } else expect(row.violating, `${row.writer} ${row.family}: ${JSON.stringify(row.first)}`).toBe(0);
    }
    // Snapshots put states in QEMU's COPIED window for every writer that creates them.
    expect(report.rows.filter((x) => x.family === 'snapshots').every((x) => x.known > 0)).toBe(true);
    expect(report.statesPerMinute.ours).toBeGreaterThan(0);
    expect(report.statesPerMinute.qemuImgCheck).toBeGreaterThan(0);
  }, 300_000);

  it('a third-party writer\'s dm-log-writes log: judged and passing; without its flushes, caught', async () => {
    const good = await conform(['--crash', '--writer', WRITER, '--name', 'logger', '--only', 'cluster-4k*', '--only', 'v3*', '--qemu-check-every', '0']);
    expect(good.code, good.out + good.err).toBe(0);
    expect(good.out).toMatch(/^logger\s+cluster-4k\s+1\s+0\s+[1-9]\d*\s+0\s/m);
    const bad = await conform(['--crash', '--writer', `${WRITER} --no-flush`, '--name', 'no-flush', '--only', 'cluster-4k*', '--only', 'v3*', '--qemu-check-every', '0']);
    expect(bad.code, bad.out + bad.err).toBe(1);
    expect(bad.out).toMatch(/first violation, no-flush on /);
    expect(bad.out).toMatch(/(corruption|lost-flushed-write): /);
    expect(bad.out).toMatch(/verdict: FAILED/);
  }, 300_000);

  it('refuses options that do not go with --crash, and crash options without it', async () => {
    await expect(conform(['--crash', '--impl', 'qemu-img'])).rejects.toThrow(UsageError);
    await expect(conform(['--torn'])).rejects.toThrow(/--torn is an option of --crash/);
    await expect(conform(['--crash', '--crash-writer', 'nope'])).rejects.toThrow(/unknown crash writer 'nope'/);
    await expect(conform(['--crash', '--writer', 'tool {image} {script}'])).rejects.toThrow(/\{log\}/);
    await expect(conform(['--crash', '--exhaustive', '17'])).rejects.toThrow(/--exhaustive must be an integer from 0 to 16/);
  });
});
