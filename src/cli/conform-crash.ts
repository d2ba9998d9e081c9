/**
 * `qcow2-ref conform --crash`: the crash-consistency half of conform (src/conform/crash-conform.ts) —
 * its options, and its report as a table or as JSON.
 */
import { existsSync, readFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import {
  CRASH_WRITERS, ExpectedFailuresError, globToRegExp, parseExpectedFailures, parseTemplate, repoRoot, requirePlaceholders, runCrashConformance, TemplateError,
  type CrashReport, type CrashWriter, type CrashWriterName, type ExpectedFailure,
} from '../conform/index.ts';
import { readManifest } from '../corpus/index.ts';
import { requireQemu } from '../qemu/index.ts';
import { EXIT_OK, UsageError, type CliIo } from './io.ts';
import { NO_PROGRESS, startCountProgress, type ProgressTarget } from './progress.ts';

/** Exit codes shared with conform. */
const EXIT_CONFORM_FAILED = 1;
const EXIT_CONFORM_CANNOT_RUN = 3;

/** The parsed options `conform --crash` takes (conform's parser reads them). */
export interface CrashCliOptions {
  readonly corpusDir: string;
  readonly writers: readonly string[];
  readonly writerTemplate?: string;
  readonly name?: string;
  /** Known violations of the --writer template's writer (built-in writers use conform/expected-failures/crash-NAME.txt). */
  readonly expectedFailures?: string;
  readonly only: readonly string[];
  readonly exhaustive?: string;
  readonly samples?: string;
  readonly torn: boolean;
  readonly seed?: string;
  readonly qemuCheckEvery?: string;
  readonly keep?: string;
  readonly timeoutMs: number;
  readonly output: 'human' | 'json';
  readonly cwd: string;
  readonly progress: ProgressTarget;
}

function intOption(text: string | undefined, what: string, min: number, max: number, dflt: number): number {
  if (text === undefined) return dflt;
  if (!/^[0-9]{1,9}$/.test(text) || Number(text) < min || Number(text) > max) throw new UsageError(`${what} must be an integer from ${min} to ${max}, not '${text}'`);
  return Number(text);
}

/** The report as a table (human output). */
export function formatCrashReport(r: CrashReport): string {
  const head = ['writer', 'family', 'cases', 'skipped', 'states', 'violating', 'qemu window', 'qemu-img checked', 'disagree'];
  const rows = r.rows.map((x) => [x.writer, x.family, String(x.cases), String(x.skipped), String(x.states), String(x.violating), String(x.known), String(x.qemuChecked), String(x.disagreements)]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  const out = [line(head), ...rows.map(line)];
  for (const x of r.rows) {
    if (x.first !== undefined) {
      out.push('', `${x.knownFailure !== undefined ? 'expected violation' : 'first violation'}, ${x.writer} on ${x.first.caseId}: crash in host operations [${x.first.point.epochStart}, ${x.first.point.epochEnd}), persisted ${JSON.stringify(x.first.point.persisted)}`);
      for (const v of x.first.violations) out.push(`  ${v.kind}: ${v.message}`);
      if (x.first.kept !== undefined) out.push(`  files: ${x.first.kept} (state.qcow2, base.qcow2, script.json, log.jsonl, point.json)`);
      if (x.knownFailure !== undefined) out.push(`  listed: ${x.knownFailure}`);
    }
    if (x.firstDisagreement !== undefined) out.push('', `check disagreement, ${x.writer}: ${x.firstDisagreement}`);
    if (x.firstWriterFailure !== undefined) out.push('', `writer failed, ${x.writer} (${x.writerFailures} run(s)): ${x.firstWriterFailure}`);
  }
  const { ours, oursCheck, qemuImgCheck } = r.statesPerMinute;
  const speed = qemuImgCheck !== undefined && oursCheck !== undefined ? `; on the states qemu-img checked: our open and check ${oursCheck} states/min, qemu-img check ${qemuImgCheck} (ours ${(oursCheck / qemuImgCheck).toFixed(1)}× as fast)` : '';
  out.push('', `judged ${r.totals.states} crash states: ${r.totals.violating} violating, ${r.totals.known} in QEMU's snapshot COPIED window, ${r.totals.disagreements} of ${r.totals.qemuChecked} check verdicts differing from qemu-img's`);
  out.push(`judging speed: our whole judgement (open, check, every sector) ${ours} states/min${speed}`);
  for (const e of r.staleEntries) out.push(`expected failure that did not happen (remove it): ${e}`);
  out.push(`unexpected: ${r.unexpected} (violating rows not listed as expected, check disagreements, failed writer runs)`);
  out.push(r.ok ? 'verdict: ok' : 'verdict: FAILED');
  return `${out.join('\n')}\n`;
}

/** The JSON report: rows, totals, speeds (a torn-write map becomes an object; every count is a small number). */
function crashReportJson(r: CrashReport): unknown {
  return JSON.parse(JSON.stringify(r, (_, v) => (v instanceof Map ? Object.fromEntries(v) : v)));
}

/** Runs `conform --crash` with options already parsed; returns the exit code. */
export async function runCrashConform(o: CrashCliOptions, io: CliIo): Promise<number> {
  const writers: CrashWriter[] = [];
  for (const w of o.writers) {
    if (!(CRASH_WRITERS as readonly string[]).includes(w)) throw new UsageError(`unknown crash writer '${w}' (known: ${CRASH_WRITERS.join(', ')})`);
    writers.push({ kind: 'builtin', name: w as CrashWriterName });
  }
  if (o.writerTemplate !== undefined) {
    try {
      const template = parseTemplate(o.writerTemplate);
      requirePlaceholders(template, ['image', 'script', 'log'], 'crash writer');
      writers.push({ kind: 'template', name: o.name ?? 'custom', template });
    } catch (e) {
      if (e instanceof TemplateError) throw new UsageError(e.message);
      throw e;
    }
  }
  if (writers.length === 0) for (const w of CRASH_WRITERS) writers.push({ kind: 'builtin', name: w });
  const exhaustiveUpTo = intOption(o.exhaustive, '--exhaustive', 0, 16, 6);
  const samples = intOption(o.samples, '--samples', 0, 100000, 12);
  const seed = intOption(o.seed, '--seed', 0, 2 ** 30, 1);
  const qemuCheckEvery = intOption(o.qemuCheckEvery, '--qemu-check-every', 0, 1_000_000, 25);
  // Known violations: conform/expected-failures/crash-NAME.txt for a built-in writer, --expected-failures for --writer.
  const expected = new Map<string, { source: string; entries: ExpectedFailure[] }>();
  const load = (writer: string, path: string): void => {
    const source = relative(o.cwd, path) || path;
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read the expected failures ${path}: ${(e as Error).message}`);
    }
    try {
      expected.set(writer, { source, entries: parseExpectedFailures(text, source) });
    } catch (e) {
      if (e instanceof ExpectedFailuresError) throw new UsageError(e.message);
      throw e;
    }
  };
  for (const w of writers) {
    if (w.kind === 'builtin') {
      const path = resolve(repoRoot(), 'conform/expected-failures', `crash-${w.name}.txt`);
      if (existsSync(path)) load(w.name, path);
    } else if (o.expectedFailures !== undefined) load(w.name, resolve(o.cwd, o.expectedFailures));
  }
  let cases;
  try {
    cases = readManifest(o.corpusDir);
  } catch (e) {
    io.stderr(`qcow2-ref: conform: cannot read the corpus in ${o.corpusDir}: ${(e as Error).message}\n`);
    return EXIT_CONFORM_CANNOT_RUN;
  }
  const only = o.only.map(globToRegExp);
  cases = cases.filter((c) => c.valid && c.script !== undefined && (only.length === 0 || only.some((re) => re.test(c.id) || re.test(c.family))));
  if (cases.length === 0) {
    io.stderr('qcow2-ref: conform: no writer case selected\n');
    return EXIT_CONFORM_CANNOT_RUN;
  }
  try {
    await requireQemu();
  } catch (e) {
    io.stderr(`qcow2-ref: conform: ${(e as Error).message}\n`);
    return EXIT_CONFORM_CANNOT_RUN;
  }
  let progress = NO_PROGRESS;
  const report = await runCrashConformance({
    corpusDir: o.corpusDir,
    cases,
    writers,
    states: { exhaustiveUpTo, samples, seed, tornWrites: o.torn },
    qemuCheckEvery,
    expected,
    ...(o.keep !== undefined ? { keepDir: resolve(o.cwd, o.keep) } : {}),
    timeoutMs: o.timeoutMs,
    onProgress: (done, total) => {
      if (done <= 1) progress = startCountProgress('conform --crash', total, 'runs', o.progress, true);
      progress.update(done);
    },
  }).finally(() => progress.stop());
  io.stdout(o.output === 'json' ? `${JSON.stringify(crashReportJson(report), null, 2)}\n` : formatCrashReport(report));
  return report.ok ? EXIT_OK : EXIT_CONFORM_FAILED;
}
