/**
 * The conformance run: every test of a corpus against one implementation's adapters (a reader, a
 * writer, or both), a bounded number at a time, each in its own directory, then the verdicts held
 * against the expected-failures list. The result is a ConformReport (src/conform/report.ts formats
 * it); `ok` is true only without unexpected failures and without stale expected-failure entries.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { MANIFEST_FILE, readManifest, type CorpusCase } from '../corpus/index.ts';
import { requireQemu } from '../qemu/index.ts';
import type { Adapter } from './adapter.ts';
import { entryUsage, findExpectedFailure, type EntryUsage, type ExpectedFailure, type TestRole } from './expected-failures.ts';
import { runReaderTest, type TestContext } from './reader-test.ts';
import type { TestOutcome, TestResult } from './test-result.ts';
import { isWriterCase, runWriterTest } from './writer-test.ts';

/** What to run. */
export interface HarnessOptions {
  /** The corpus directory (holding manifest.jsonl). */
  readonly corpusDir: string;
  /** The implementation's name, for the report. */
  readonly impl: string;
  readonly adapters: readonly Adapter[];
  /** The expected-failures entries ([] for none) and the file they came from. */
  readonly expected: readonly ExpectedFailure[];
  readonly expectedSource?: string;
  /** Tests run at the same time (>= 1). */
  readonly jobs: number;
  /** Time limit of one adapter process, in milliseconds. */
  readonly timeoutMs: number;
  /** The most disk space one file an adapter writes may take (default DEFAULT_MAX_OUTPUT_BYTES). */
  readonly maxOutputBytes?: bigint;
  /** Run only the cases whose id or family matches one of these (all when absent or empty). */
  readonly only?: readonly RegExp[];
  /** Keep every test's directory (under workRoot) instead of removing it. */
  readonly keepWork?: boolean;
  /** Where test directories are made (default: a new directory under the OS temp dir). */
  readonly workRoot?: string;
  /** The command line that reruns one case, for writer failures' reproduction. */
  readonly rerun: (role: TestRole, caseId: string) => string;
  /** Called with 0 and the total before the first test, then after each finished test with the number done. */
  readonly onProgress?: (done: number, total: number) => void;
}

/** One row of the family table. */
export interface FamilyRow {
  readonly role: TestRole;
  readonly family: string;
  readonly pass: number;
  /** Failures not on the expected-failures list. */
  readonly fail: number;
  /** Failures on the list. */
  readonly known: number;
  readonly skip: number;
  /** The first failing test of the family (unexpected failures first), if any. */
  readonly firstFailure?: TestResult;
  /** The first skipped test, if any (for its reason). */
  readonly firstSkip?: TestResult;
}

/** Everything a run found. */
export interface ConformReport {
  readonly impl: string;
  readonly corpus: string;
  readonly cases: number;
  readonly adapters: readonly { readonly role: TestRole; readonly command: string }[];
  readonly expectedFailures?: string;
  readonly results: readonly TestResult[];
  readonly families: readonly FamilyRow[];
  /** Entries that matched tests which all passed: unexpected passes (each fails the run). */
  readonly staleEntries: readonly EntryUsage[];
  /** Entries that matched no test that ran. */
  readonly unusedEntries: readonly EntryUsage[];
  readonly totals: { readonly pass: number; readonly fail: number; readonly known: number; readonly skip: number; readonly unexpectedPasses: number };
  /** No unexpected failure and no unexpected pass. */
  readonly ok: boolean;
  /** Where the tests' directories were kept (with keepWork). */
  readonly keptWork?: string;
}

/** Default cap on the disk space of one file an adapter writes: 8 GiB. */
export const DEFAULT_MAX_OUTPUT_BYTES = 8n << 30n;

/** A corpus or selection that cannot be run (the CLI reports it and exits 3). */
export class HarnessError extends Error {
  override readonly name = 'HarnessError';
}

interface PlannedTest {
  readonly adapter: Adapter;
  readonly c: CorpusCase;
}

/** The regular files at the top of the corpus directory besides the manifest, sorted (see TestContext.sharedFiles). */
export function sharedFiles(corpusDir: string): string[] {
  return readdirSync(corpusDir, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name !== MANIFEST_FILE)
    .map((e) => e.name)
    .sort();
}

/** The tests of `cases` for `adapters`: every case for a reader, the cases with a script for a writer. */
export function planTests(cases: readonly CorpusCase[], adapters: readonly Adapter[], only: readonly RegExp[] = []): PlannedTest[] {
  const selected = only.length === 0 ? cases : cases.filter((c) => only.some((r) => r.test(c.id) || r.test(c.family)));
  const tests: PlannedTest[] = [];
  for (const adapter of adapters) {
    for (const c of selected) if (adapter.role === 'reader' || isWriterCase(c)) tests.push({ adapter, c });
  }
  return tests;
}

/**
 * Runs every planned test (see the module comment) and returns the report. Requires qemu-img and
 * qemu-io (QemuToolMissingError otherwise: never a silent skip). Throws HarnessError for a corpus
 * that cannot be read or a selection without tests; a harness failure inside a test (not something
 * the adapter did) stops the run and is thrown.
 */
export async function runConformance(opts: HarnessOptions): Promise<ConformReport> {
  await requireQemu();
  const corpusDir = resolve(opts.corpusDir);
  let cases: CorpusCase[];
  try {
    cases = readManifest(corpusDir);
  } catch (e) {
    throw new HarnessError(`cannot read the corpus in ${opts.corpusDir}: ${(e as Error).message}`);
  }
  const tests = planTests(cases, opts.adapters, opts.only);
  if (tests.length === 0) {
    throw new HarnessError(
      cases.length === 0 ? `the corpus in ${opts.corpusDir} has no cases` : `no test to run (${cases.length} cases; --only and the adapters' roles selected none)`,
    );
  }
  const workRoot = opts.workRoot ?? mkdtempSync(join(tmpdir(), 'qcow2-ref-conform-'));
  const ctx: TestContext = {
    corpusDir,
    timeoutMs: opts.timeoutMs,
    maxOutputBytes: opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
    workRoot,
    sharedFiles: sharedFiles(corpusDir),
  };
  const results: TestResult[] = new Array(tests.length);
  let next = 0;
  let done = 0;
  let failure: unknown;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < tests.length) {
      const i = next++;
      const { adapter, c } = tests[i]!;
      const started = performance.now();
      try {
        const { outcome, workspace } =
          adapter.role === 'reader' ? await runReaderTest(c, adapter, ctx) : await runWriterTest(c, adapter, ctx, opts.rerun('writer', c.id));
        if (opts.keepWork !== true) rmSync(workspace.root, { recursive: true, force: true });
        results[i] = toResult(adapter.role, c, outcome, performance.now() - started, opts, opts.keepWork === true ? workspace.root : undefined);
      } catch (e) {
        failure ??= e;
        return;
      }
      done++;
      opts.onProgress?.(done, tests.length);
    }
  };
  opts.onProgress?.(0, tests.length);
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.jobs, tests.length)) }, worker));
  } finally {
    if (opts.workRoot === undefined && opts.keepWork !== true) rmSync(workRoot, { recursive: true, force: true });
  }
  if (failure !== undefined) throw failure;
  const report = buildReport(opts, corpusDir, cases.length, results);
  return opts.keepWork === true ? { ...report, keptWork: workRoot } : report;
}

function toResult(role: TestRole, c: CorpusCase, outcome: TestOutcome, durationMs: number, opts: HarnessOptions, workDir: string | undefined): TestResult {
  const entry = outcome.status === 'fail' ? findExpectedFailure(opts.expected, { role, caseId: c.id, family: c.family }) : undefined;
  return {
    role,
    caseId: c.id,
    family: c.family,
    ...outcome,
    ...(workDir !== undefined ? { workDir } : {}),
    durationMs: Math.round(durationMs),
    ...(entry !== undefined ? { knownFailure: `${opts.expectedSource ?? 'expected failures'}:${entry.line} ${entry.role !== undefined ? `${entry.role}:` : ''}${entry.pattern}` } : {}),
  };
}

/** The report of finished `results` (in test order): family rows, entry usage, totals, ok. */
export function buildReport(opts: Pick<HarnessOptions, 'impl' | 'adapters' | 'expected' | 'expectedSource'>, corpus: string, cases: number, results: readonly TestResult[]): ConformReport {
  const rows = new Map<string, { role: TestRole; family: string; pass: number; fail: number; known: number; skip: number; firstUnexpected?: TestResult; firstKnown?: TestResult; firstSkip?: TestResult }>();
  for (const r of results) {
    const key = `${r.role}\u0000${r.family}`;
    let row = rows.get(key);
    if (row === undefined) {
      row = { role: r.role, family: r.family, pass: 0, fail: 0, known: 0, skip: 0 };
      rows.set(key, row);
    }
    if (r.status === 'pass') row.pass++;
    else if (r.status === 'skip') {
      row.skip++;
      row.firstSkip ??= r;
    } else if (r.knownFailure !== undefined) {
      row.known++;
      row.firstKnown ??= r;
    } else {
      row.fail++;
      row.firstUnexpected ??= r;
    }
  }
  const families: FamilyRow[] = [...rows.values()]
    .sort((a, b) => (a.role === b.role ? (a.family < b.family ? -1 : a.family > b.family ? 1 : 0) : a.role === 'reader' ? -1 : 1))
    .map(({ firstUnexpected, firstKnown, firstSkip, ...counts }) => {
      const firstFailure = firstUnexpected ?? firstKnown;
      return { ...counts, ...(firstFailure !== undefined ? { firstFailure } : {}), ...(firstSkip !== undefined ? { firstSkip } : {}) };
    });
  const usage = entryUsage(opts.expected, results);
  const staleEntries = usage.filter((u) => u.stale);
  const unusedEntries = usage.filter((u) => u.matched === 0);
  const sum = (k: 'pass' | 'fail' | 'known' | 'skip'): number => families.reduce((n, f) => n + f[k], 0);
  const totals = { pass: sum('pass'), fail: sum('fail'), known: sum('known'), skip: sum('skip'), unexpectedPasses: staleEntries.length };
  return {
    impl: opts.impl,
    corpus,
    cases,
    adapters: opts.adapters.map((a) => ({ role: a.role, command: a.template.source })),
    ...(opts.expectedSource !== undefined ? { expectedFailures: opts.expectedSource } : {}),
    results,
    families,
    staleEntries,
    unusedEntries,
    totals,
    ok: totals.fail === 0 && totals.unexpectedPasses === 0,
  };
}
