/**
 * What one conformance test produced, and what the reader and writer judges share: the verdict of a
 * finished adapter process that is neither a success nor a clean refusal.
 */
import type { TestRole } from './expected-failures.ts';
import type { AdapterRun } from './run-adapter.ts';

/** pass: the implementation did what the case expects; fail: it did not; skip: the test could not be set up. */
export type TestStatus = 'pass' | 'fail' | 'skip';

/** The judge's verdict on one test. */
export interface TestOutcome {
  readonly status: TestStatus;
  /** One line: what went wrong, why it was skipped, or what passed. */
  readonly detail: string;
  /** Shell commands that redo the test by hand (set for failures). */
  readonly reproduce?: string;
  /** The test's directory, when the harness was asked to keep it. */
  readonly workDir?: string;
}

/** One test in a report. */
export interface TestResult extends TestOutcome {
  readonly role: TestRole;
  readonly caseId: string;
  readonly family: string;
  readonly durationMs: number;
  /** The expected-failures entry covering this test, if any ("file:line pattern"). */
  readonly knownFailure?: string;
}

/** The last non-empty line of `text`, cut to `max` characters ('' when there is none). */
export function lastLine(text: string, max = 200): string {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '');
  const l = lines[lines.length - 1] ?? '';
  return l.length <= max ? l : `${l.slice(0, max)}…`;
}

/**
 * The line of a program's error output that says what went wrong: the last non-empty line, skipping
 * the tail Node.js prints after an uncaught exception (stack frames `    at …` and `Node.js vNN`), so a
 * crashed Node adapter is described by its `Error: …` line. '' when there is none.
 */
export function errorLine(text: string, max = 200): string {
  const lines = text
    .split(/\r?\n/)
    .filter((l) => !/^\s+at /.test(l) && !/^Node\.js v\d/.test(l.trim()))
    .join('\n');
  return lastLine(lines, max);
}

/** "exit 1: <what stderr says went wrong>" or "exit 1" for a process that exited normally. */
export function describeExit(run: AdapterRun): string {
  const said = errorLine(run.stderr) || errorLine(run.stdout);
  return `exit ${run.code}${said === '' ? '' : `: ${said}`}`;
}

/**
 * The verdict for a run that did not end on its own with an exit code: it could not start, hit the
 * time limit, or died of a signal (a crash: an implementation must refuse bad input, not crash on
 * it) — also when an adapter script reports a crashed child as 128 + SIGILL/SIGABRT/SIGBUS/SIGFPE/
 * SIGSEGV. Undefined for a run that exited normally with any other code.
 */
export function abnormalEnd(run: AdapterRun, timeoutMs: number): string | undefined {
  if (run.startError !== undefined) return `could not start the adapter: ${run.startError}`;
  if (run.timedOut) return `timed out after ${timeoutMs / 1000} s (killed)`;
  if (run.overLimit !== undefined) return `killed after writing ${run.overLimit} bytes to one file, more than the test allows (--max-output)`;
  const said = errorLine(run.stderr);
  if (run.code === null) return `crashed: killed by ${run.signal ?? 'a signal'}${said === '' ? '' : ` (${said})`}`;
  // A shell (an adapter script) reports a child that died of signal N as exit status 128+N.
  const signal = CRASH_EXIT_STATUS[run.code];
  if (signal !== undefined) return `crashed: exit status ${run.code} (a child killed by ${signal})${said === '' ? '' : ` (${said})`}`;
  return undefined;
}

/** Exit statuses a shell gives a child killed by a crash signal (128 + signal number on Linux). */
const CRASH_EXIT_STATUS: Readonly<Record<number, string>> = {
  132: 'SIGILL',
  134: 'SIGABRT',
  135: 'SIGBUS',
  136: 'SIGFPE',
  139: 'SIGSEGV',
};
