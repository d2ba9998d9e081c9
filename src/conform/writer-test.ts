/**
 * One writer test: the harness makes a fresh image the way the case was made — `qemu-img create -f
 * qcow2 -o <the case's options> IMAGE <virtual size>` next to a copy of the case's backing files —
 * hands it with the case's op script (docs/op-script.md) to the writer adapter, and judges the image
 * the writer left:
 * 1. the writer exits 0;
 * 2. `qemu-img check` finds nothing (exit 0: no corruption, no leak, no check error);
 * 3. our own check (checkImage, src/check/check.ts) finds nothing either;
 * 4. the guest content, as QEMU reads it, equals the raw-disk oracle's (src/oracle/raw-disk.ts) after
 *    the same script: the same virtual size (`qemu-img info`), the same bytes (`qemu-img compare`).
 * Every problem found is reported, not only the first. The oracle is configured from what QEMU says
 * about the fresh image (`qemu-img info`: size, cluster size, compat, extended L2) and its backing
 * file's content as `qemu-img convert` reads it — nothing of it comes from our model.
 *
 * A case whose setup fails (qemu-img create refuses its options, its script does not parse or fails
 * on the oracle) is skipped with the reason: it says nothing about the writer.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { CorpusCase } from '../corpus/index.ts';
import { fileReader, type FileReader } from '../io/index.ts';
import { OpenImageError, withOpenImageFile } from '../io/index.ts';
import { checkImage } from '../check/index.ts';
import type { Op } from '../model/index.ts';
import { parseScript } from '../script/index.ts';
import { RawDisk, RawDiskError, writeRawFile } from '../oracle/index.ts';
import { checkCounter, qcow2Specific, qemuImgCheck, qemuImgCompare, qemuImgConvert, qemuImgCreate, qemuImgInfo, toBigInt } from '../qemu/index.ts';
import { QemuCommandError } from '../qemu/index.ts';
import type { Adapter } from './adapter.ts';
import { expandTemplate } from './command-template.ts';
import type { TestContext } from './reader-test.ts';
import { runAdapter } from './run-adapter.ts';
import { abnormalEnd, describeExit, lastLine, type TestOutcome } from './test-result.ts';
import { copyCaseFiles, describeDifference, firstDifference, makeWorkspace, scrubPaths, type Workspace } from './workspace.ts';

/** Whether case `c` is a writer test: a valid case with the script that made it and a virtual size. */
export function isWriterCase(c: CorpusCase): boolean {
  return c.valid && c.script !== undefined && c.virtualSize !== undefined;
}

/** The fresh image, the script and the oracle's expectation for one writer test. */
interface WriterSetup {
  readonly image: string;
  readonly scriptPath: string;
  readonly oracle: RawDisk;
  /** Readers to close when the test is over (the oracle's backing). */
  readonly readers: readonly FileReader[];
}

/** Why a setup step failed, as a skip reason. */
class SetupSkip extends Error {}

function message(e: unknown): string {
  return lastLine((e as Error).message ?? String(e), 300);
}

async function setUp(c: CorpusCase, ws: Workspace, ctx: TestContext): Promise<WriterSetup> {
  copyCaseFiles(ctx.corpusDir, c.files.backing ?? [], ws);
  const image = join(ws.filesDir, c.files.image);
  const cwd = dirname(image);
  mkdirSync(cwd, { recursive: true });
  const run = { cwd, timeoutMs: ctx.timeoutMs };
  let ops: Op[];
  try {
    ops = parseScript(c.script!);
  } catch (e) {
    throw new SetupSkip(`the case's script is not a valid op script: ${message(e)}`);
  }
  try {
    await qemuImgCreate(image, c.virtualSize!, c.options, [], 'qcow2', run);
  } catch (e) {
    // Only a refusal by qemu-img is about the case; anything else (no qemu-img, …) is the harness's problem.
    if (e instanceof QemuCommandError) throw new SetupSkip(`qemu-img create refused the case's options: ${message(e)}`);
    throw e;
  }
  const info = await qemuImgInfo(image, run);
  const spec = qcow2Specific(info);
  const clusterSize = BigInt(info['cluster-size'] ?? 65536);
  const readers: FileReader[] = [];
  let backing: { size: bigint; read(offset: bigint, length: number): Uint8Array } | undefined;
  const backingName = info['full-backing-filename'];
  if (backingName !== undefined) {
    // The backing's guest content as QEMU reads it (through its own chain), as a raw file.
    const backingRaw = join(ws.outDir, 'backing.raw');
    const format = info['backing-filename-format'];
    if (format === undefined) throw new SetupSkip('the fresh image names a backing file without a format');
    await qemuImgConvert(backingName, backingRaw, { ...run, inFormat: format });
    const r = fileReader(backingRaw);
    readers.push(r);
    backing = { size: r.length, read: (offset, length) => r.read(offset, length) };
  }
  const oracle = new RawDisk({
    size: toBigInt(info['virtual-size']),
    version: spec.compat === '0.10' ? 2 : 3,
    clusterSize,
    subclusterSize: spec['extended-l2'] === true ? clusterSize / 32n : clusterSize,
    ...(backing !== undefined ? { backing } : {}),
  });
  for (let i = 0; i < ops.length; i++) {
    try {
      oracle.apply(ops[i]!);
    } catch (e) {
      if (e instanceof RawDiskError) throw new SetupSkip(`the case's script fails on the raw-disk oracle at op ${i}: ${e.message}`);
      throw e;
    }
  }
  const scriptPath = join(ws.outDir, 'script.json');
  writeFileSync(scriptPath, c.script!);
  return { image, scriptPath, oracle, readers };
}

/**
 * Runs the writer `adapter` on a fresh image for case `c` (which must satisfy isWriterCase) in a new
 * workspace (returned for the caller to remove or keep) and judges the result (module comment).
 * Throws only for harness problems (qemu-img missing, a workspace that cannot be made).
 */
export async function runWriterTest(c: CorpusCase, adapter: Adapter, ctx: TestContext, rerun: string): Promise<{ outcome: TestOutcome; workspace: Workspace }> {
  const ws = makeWorkspace(ctx.workRoot, `writer-${c.id}`);
  let setup: WriterSetup;
  try {
    setup = await setUp(c, ws, ctx);
  } catch (e) {
    if (e instanceof SetupSkip) return { outcome: { status: 'skip', detail: scrubPaths(e.message, ws) }, workspace: ws };
    throw e;
  }
  try {
    const judged = await judgeWriter(c, adapter, setup, ws, ctx);
    const outcome = { ...judged, detail: scrubPaths(judged.detail, ws) };
    return { outcome: outcome.status === 'fail' ? { ...outcome, reproduce: rerun } : outcome, workspace: ws };
  } finally {
    for (const r of setup.readers) r.close();
  }
}

async function judgeWriter(c: CorpusCase, adapter: Adapter, s: WriterSetup, ws: Workspace, ctx: TestContext): Promise<TestOutcome> {
  const cwd = dirname(s.image);
  const argv = expandTemplate(adapter.template, { image: s.image, script: s.scriptPath, dir: cwd });
  const run = await runAdapter(argv, { cwd, timeoutMs: ctx.timeoutMs, watch: { path: s.image, maxBytes: ctx.maxOutputBytes } });
  const abnormal = abnormalEnd(run, ctx.timeoutMs);
  if (abnormal !== undefined) return { status: 'fail', detail: abnormal };
  if (run.code !== 0) return { status: 'fail', detail: `the writer failed (${describeExit(run)})` };

  const problems: string[] = [];
  // 2. qemu-img check.
  const qcheck = await qemuImgCheck(s.image, { cwd, timeoutMs: ctx.timeoutMs });
  if (qcheck.code !== 0) {
    const counts =
      qcheck.json !== undefined ? `${checkCounter(qcheck.json, 'corruptions')} corruption(s), ${checkCounter(qcheck.json, 'leaks')} leak(s)` : 'no report';
    const said = lastLine(qcheck.stderr);
    problems.push(`qemu-img check: exit ${qcheck.code}, ${counts}${said === '' ? '' : ` (${said})`}`);
  }
  // 3. Our check.
  problems.push(...(await ownCheck(s.image)));
  // 4. Content against the oracle.
  problems.push(...(await compareWithOracle(s.image, s.oracle, ws, ctx)));
  if (problems.length > 0) return { status: 'fail', detail: problems.join('; ') };
  return { status: 'pass', detail: 'script applied; qemu-img check and qcow2-ref check clean; content equals the oracle' };
}

/**
 * What checkImage finds in the image at `path` ([] when nothing): loaded as `qcow2-ref` loads images
 * (src/io/open-file.ts; the data file, if any, inside the image's directory; no backing needed).
 */
async function ownCheck(path: string): Promise<string[]> {
  let result;
  try {
    result = await withOpenImageFile(path, {}, { backing: false, dataFile: 'stat' }, (top) => checkImage(top.image!));
  } catch (e) {
    const what = e instanceof OpenImageError ? e.detail : message(e);
    return [`qcow2-ref could not load the result: ${what}`];
  }
  if (result.corruptions === 0 && result.leaks === 0 && result.checkErrors === 0) return [];
  const first = result.findings[0]?.message ?? '';
  return [`qcow2-ref check: ${result.corruptions} corruption(s), ${result.leaks} leak(s), ${result.checkErrors} check error(s)${first === '' ? '' : ` (${first})`}`];
}

/**
 * Problems with the guest content of the qcow2 image at `image` against the oracle ([] when equal):
 * the virtual size from `qemu-img info`, then `qemu-img compare` with the oracle written as a sparse
 * raw file (QEMU skips the holes of both, so a 4 GiB disk costs what is written). On a mismatch the
 * result is read as raw to say which bytes differ, from the offset qemu-img names.
 */
async function compareWithOracle(image: string, oracle: RawDisk, ws: Workspace, ctx: TestContext): Promise<string[]> {
  const run = { cwd: dirname(image), timeoutMs: ctx.timeoutMs };
  try {
    const size = toBigInt((await qemuImgInfo(image, run))['virtual-size']);
    if (size !== oracle.size) return [`virtual size ${size}, expected ${oracle.size}`];
    const expected = join(ws.outDir, 'expected.raw');
    writeRawFile(oracle, expected);
    const cmp = await qemuImgCompare(image, expected, { ...run, formatA: 'qcow2', formatB: 'raw' });
    if (cmp.identical) return [];
    const at = /offset (\d+)/.exec(cmp.stdout);
    const raw = join(ws.outDir, 'result.raw');
    await qemuImgConvert(image, raw, run);
    const r = fileReader(raw);
    const e = fileReader(expected);
    try {
      const d = firstDifference(r, e, at !== null ? BigInt(at[1]!) : 0n);
      return [`guest content differs from the oracle${d === undefined ? ` (${lastLine(cmp.stdout)})` : `: ${describeDifference(d)}`}`];
    } finally {
      r.close();
      e.close();
    }
  } catch (e) {
    return [`qemu-img could not read the result: ${message(e)}`];
  }
}
