/**
 * One reader test: run a reader adapter on a copy of a corpus case and judge what it did against the
 * case's expectation (src/corpus/manifest.ts):
 * - `content` (a valid image): exit 0 and `{raw}` holding exactly the guest content — its size the
 *   virtual size and its SHA-256 the manifest's. Refusing a valid image fails.
 * - `reject-open` (an image QEMU refuses to open): a non-zero exit. A reader that "succeeds" on it
 *   has read garbage and fails.
 * - `reject-check` (an image QEMU opens but `qemu-img check` finds corrupt): the reader may read it or
 *   refuse it — there is no one right content — but must do either within the time limit.
 * Always a failure, whatever the case: not starting, timing out, or crashing (a signal).
 *
 * When the content is wrong, the judge finds the first differing byte by comparing with what
 * `qemu-img convert` reads from the same image (only when QEMU's reading matches the manifest, which
 * it does except for a recorded QEMU difference), so the report says where the reader went wrong.
 */
import { dirname, join } from 'node:path';
import { match } from 'ts-pattern';
import type { CorpusCase } from '../corpus/index.ts';
import { fileReader } from '../io/index.ts';
import { qemuImgConvert } from '../qemu/index.ts';
import { formatCommandLine } from '../qemu/index.ts';
import type { Adapter } from './adapter.ts';
import { expandTemplate } from './command-template.ts';
import { runAdapter, type AdapterRun } from './run-adapter.ts';
import { abnormalEnd, describeExit, type TestOutcome } from './test-result.ts';
import { copyCaseFiles, describeDifference, fileSize, firstDifference, makeWorkspace, scrubPaths, sha256File, type Workspace } from './workspace.ts';

/** What every test of a run shares. */
export interface TestContext {
  /** The corpus directory, absolute. */
  readonly corpusDir: string;
  readonly timeoutMs: number;
  /** The most disk space one file an adapter writes may take (see RunAdapterOptions.watch). */
  readonly maxOutputBytes: bigint;
  /** Where the tests' private directories are made. */
  readonly workRoot: string;
  /**
   * The corpus's shared files: regular files at its top level besides the manifest (e.g. the target
   * the "escaping reference" cases name as `../escape-target.raw`), copied into every reader test so
   * a reader that follows such a name finds what it would find in the corpus.
   */
  readonly sharedFiles: readonly string[];
}

/** The corpus-relative paths of every file of a case. */
export function caseFiles(c: CorpusCase): string[] {
  return [c.files.image, ...(c.files.backing ?? []), ...(c.files.dataFile !== undefined ? [c.files.dataFile] : [])];
}

/**
 * Runs the reader `adapter` on case `c` in a fresh workspace (returned with the outcome, for the
 * caller to remove or keep) and judges it (see the module comment). Never throws for anything the
 * adapter does; a failure to set up the workspace (copying the case's files) is thrown.
 */
export async function runReaderTest(c: CorpusCase, adapter: Adapter, ctx: TestContext): Promise<{ outcome: TestOutcome; workspace: Workspace }> {
  const ws = makeWorkspace(ctx.workRoot, `reader-${c.id}`);
  copyCaseFiles(ctx.corpusDir, [...new Set([...caseFiles(c), ...ctx.sharedFiles])], ws);
  const image = join(ws.filesDir, c.files.image);
  const raw = join(ws.outDir, 'guest.raw');
  const argv = expandTemplate(adapter.template, { image, raw, dir: dirname(image) });
  // A reader writes at most the virtual size (1 MiB of slack for block rounding), and never more than the cap.
  const declared = c.virtualSize !== undefined ? BigInt(c.virtualSize) + (1n << 20n) : ctx.maxOutputBytes;
  const maxBytes = declared < ctx.maxOutputBytes ? declared : ctx.maxOutputBytes;
  const run = await runAdapter(argv, { cwd: dirname(image), timeoutMs: ctx.timeoutMs, watch: { path: raw, maxBytes } });
  const judged = await judgeReader(c, run, image, raw, ctx);
  const outcome = { ...judged, detail: scrubPaths(judged.detail, ws) };
  const result: TestOutcome = outcome.status === 'fail' ? { ...outcome, reproduce: reproduceReader(c, adapter, ctx) } : outcome;
  return { outcome: result, workspace: ws };
}

async function judgeReader(c: CorpusCase, run: AdapterRun, image: string, raw: string, ctx: TestContext): Promise<TestOutcome> {
  const abnormal = abnormalEnd(run, ctx.timeoutMs);
  if (abnormal !== undefined) return { status: 'fail', detail: abnormal };
  const qemuNote = c.qemuDifference !== undefined ? ` [recorded QEMU difference: ${c.qemuDifference}]` : '';
  return match(c.expect)
    .with({ kind: 'content' }, async (e): Promise<TestOutcome> => {
      if (run.code !== 0) return { status: 'fail', detail: `refused a valid image (${describeExit(run)})${qemuNote}` };
      const size = fileSize(raw);
      if (size === undefined) return { status: 'fail', detail: `exit 0 but no raw output was written to {raw}${qemuNote}` };
      if (c.virtualSize !== undefined && size !== BigInt(c.virtualSize)) {
        return { status: 'fail', detail: `wrote ${size} bytes of raw output; the virtual size is ${c.virtualSize}${qemuNote}` };
      }
      const sha = sha256File(raw);
      if (sha === e.guestSha256) return { status: 'pass', detail: `content matches (sha256 ${sha.slice(0, 16)}…)` };
      const where = await locateDifference(image, raw, e.guestSha256, ctx);
      return { status: 'fail', detail: `wrong content: sha256 ${sha.slice(0, 16)}…, expected ${e.guestSha256.slice(0, 16)}…${where}${qemuNote}` };
    })
    .with({ kind: 'reject-open' }, (e): TestOutcome => {
      if (run.code === 0) {
        const why = e.qemuMessage === '' ? e.errorClass : `${e.errorClass}: ${e.qemuMessage}`;
        return { status: 'fail', detail: `read an invalid image without refusing it (expected refusal: ${why})${qemuNote}` };
      }
      return { status: 'pass', detail: `refused (${describeExit(run)})` };
    })
    .with({ kind: 'reject-check' }, (): TestOutcome => ({
      status: 'pass',
      detail: `${run.code === 0 ? 'read' : 'refused'} a check-level corrupt image without crashing or hanging (${describeExit(run)})`,
    }))
    .exhaustive();
}

/**
 * "; first difference at byte N (got 0x.., expected 0x..)" when QEMU's own reading of `image` has
 * the expected hash (so it can serve as the expected bytes), else ''.
 */
async function locateDifference(image: string, raw: string, expectedSha: string, ctx: TestContext): Promise<string> {
  const reference = join(dirname(raw), 'qemu-reference.raw');
  try {
    await qemuImgConvert(image, reference, { cwd: dirname(image), timeoutMs: ctx.timeoutMs });
  } catch {
    return '';
  }
  if (sha256File(reference) !== expectedSha) return '';
  const a = fileReader(raw);
  const b = fileReader(reference);
  try {
    const d = firstDifference(a, b);
    return d === undefined ? '' : `; ${describeDifference(d)}`;
  } finally {
    a.close();
    b.close();
  }
}

/** Shell commands that rerun the reader on the corpus's own files and show the verdict's evidence. */
function reproduceReader(c: CorpusCase, adapter: Adapter, ctx: TestContext): string {
  const image = join(ctx.corpusDir, c.files.image);
  const raw = `/tmp/${c.id}.raw`;
  const cmd = expandTemplate(adapter.template, { image, raw, dir: dirname(image) });
  const line = `cd ${formatCommandLine(dirname(image), []).trim()} && ${formatCommandLine(cmd[0]!, cmd.slice(1))}`;
  return match(c.expect)
    .with({ kind: 'content' }, (e) => `${line} && sha256sum ${raw}   # expected ${e.guestSha256}`)
    .with({ kind: 'reject-open' }, () => `${line}; echo "exit $?"   # expected a non-zero exit`)
    .with({ kind: 'reject-check' }, () => `${line}; echo "exit $?"   # expected to end without a crash or hang`)
    .exhaustive();
}
