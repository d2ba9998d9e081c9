/**
 * `qcow2-ref conform`: runs a corpus (qcow2-ref corpus, src/corpus) against an implementation through
 * a reader and/or writer adapter (src/conform) and reports a verdict per family. The exit code is 0
 * only when nothing unexpected happened: no failure missing from the expected-failures list and no
 * entry on the list that passed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { relative, resolve } from 'node:path';
import { formatCommandLine, QemuToolMissingError } from '../qemu/index.ts';
import {
  adapterFromTemplate,
  BUILTIN_DESCRIPTIONS,
  BUILTIN_IMPLS,
  builtinAdapters,
  builtinProblem,
  isBuiltinImpl,
  repoRoot,
  type Adapter,
} from '../conform/index.ts';
import { TemplateError } from '../conform/index.ts';
import { ExpectedFailuresError, globToRegExp, parseExpectedFailures, type ExpectedFailure, type TestRole } from '../conform/index.ts';
import { DEFAULT_MAX_OUTPUT_BYTES, HarnessError, runConformance } from '../conform/index.ts';
import { parseQemuSize } from './create.ts';
import { formatHumanReport, reportJson } from '../conform/index.ts';
import { EXIT_OK, UsageError, outputFormat, parseCommand, showHelp, type CliIo } from './io.ts';
import { NO_PROGRESS, startCountProgress, type ProgressTarget } from './progress.ts';
import { runCrashConform } from './conform-crash.ts';

/** Exit code: the run had an unexpected failure or an unexpected pass. */
export const EXIT_CONFORM_FAILED = 1;
/** Exit code: the run could not be made (corpus unreadable, QEMU or the implementation missing, no tests). */
export const EXIT_CONFORM_CANNOT_RUN = 3;

const DEFAULT_TIMEOUT_S = 60;
/** The implementation run when none is named. */
const DEFAULT_IMPL = 'qemu-img';

/** Help text of the conform command. */
export const CONFORM_HELP = `Usage: qcow2-ref conform [--corpus DIR] [--impl NAME | --reader TEMPLATE | --writer TEMPLATE]
                         [--expected-failures FILE] [--only PATTERN]... [--name NAME]
                         [--output=human|json] [--jobs N] [--timeout S]
                         [--max-output BYTES] [--keep-work]
       qcow2-ref conform --crash [--corpus DIR] [--crash-writer NAME]... [--writer TEMPLATE]
                         [--only PATTERN]... [--exhaustive N] [--samples N] [--torn]
                         [--seed S] [--qemu-check-every N] [--keep DIR] [--output=human|json]

Runs every case of a qcow2 corpus (made by 'qcow2-ref corpus'; DIR holds
manifest.jsonl) against an implementation and reports, per family of cases,
how many tests pass, fail, fail as expected, or were skipped. Without
options: --impl ${DEFAULT_IMPL} on the corpus checked in with qcow2-ref.

Readers: --reader TEMPLATE is a command that reads the qcow2 image {image}
and writes its guest content as a raw file of the virtual size to {raw},
exiting 0, or exits non-zero to refuse the image. A valid case passes when
{raw} has the expected SHA-256; an invalid case QEMU refuses to open passes
when the reader refuses it (exit non-zero), and fails when it "reads" it; a
case QEMU opens but 'qemu-img check' finds corrupt passes either way. A
timeout or a crash (a signal) always fails.
  --reader 'qemu-img convert -f qcow2 -O raw {image} {raw}'

Writers: --writer TEMPLATE is a command that applies the op script {script}
(docs/op-script.md) to the qcow2 image {image} in place. For each valid case
with a script, the harness creates a fresh image with 'qemu-img create' and
the case's options (next to copies of its backing files), runs the writer,
and requires: exit 0, a clean 'qemu-img check', a clean qcow2-ref check, and
guest content equal to the raw-disk oracle's after the same script.
  --writer '/usr/local/bin/my-writer --image {image} --ops {script}'

Templates are split into arguments without a shell: spaces separate
arguments, '...' quotes literally, "..." quotes with \\" and \\\\ escapes, a
backslash outside quotes escapes the next character. Nothing else is special
($VAR, globs, pipes, redirections: use a script). {image}, {raw}, {script}
and {dir} (the image's directory) are replaced inside any argument after
splitting, so paths with spaces stay one argument; {{ and }} are literal
braces. The command runs in the image's directory (QEMU 7.2 resolves an
external data file relative to its current directory), so give other paths
absolute; a relative program path is made absolute for you. Every test works
on a private copy of the case's files.

Built-in implementations (--impl NAME):
${BUILTIN_IMPLS.map((n) => `  ${n.padEnd(10)} ${BUILTIN_DESCRIPTIONS[n]}`).join('\n')}
  --impl uses conform/expected-failures/NAME.txt of this repository when
  it exists (unless --expected-failures is given).

Options:
  --corpus DIR     The corpus directory (default: qcow2-ref's own corpus/).
  --impl NAME      A built-in implementation (above; default ${DEFAULT_IMPL});
                   not with --reader/--writer.
  --reader TEMPLATE, --writer TEMPLATE
                   Adapter commands (either or both).
  --name NAME      The implementation's name in the report (default: custom).
  --expected-failures FILE
                   Known failures, one case id or family pattern per line
                   ('*' any characters, '?' one; 'reader:'/'writer:' prefix to
                   restrict the role; '#' comments). A listed failure does not
                   fail the run; an entry whose tests all pass does.
  --only PATTERN   Run only cases whose id or family matches (repeatable).
  --output=human   Table, first failure of each family with a reproduction
                   command, verdict (default).
  --output=json    The report as JSON, with every test's result.
  --jobs N         Tests run at the same time (default: the number of CPUs).
  --timeout S      Time limit of one adapter run in seconds (default ${DEFAULT_TIMEOUT_S});
                   the adapter's whole process group is killed at the limit.
  --max-output BYTES
                   Disk space one file the adapter writes may take (default
                   8G; suffixes k, M, G, T); a reader may in any case write no
                   more than the case's virtual size (+1 MiB). Holes in sparse
                   files are free. Past the limit the adapter is killed and
                   the test fails.
  --keep-work      Keep every test's directory (the copied or created image,
                   the raw output, the script) and print where.
  -h, --help       Show this help.

Crash consistency (--crash): each writer case's script runs on a fresh image
while the writer's host writes are logged; every crash state of the log (all
that persisted before the last completed flush, and any subset of what was
issued after it) must open in QEMU, check without corruption (leaks are
allowed; a dirty lazy-refcounts image is repaired first, as QEMU does), and
read back every write a completed flush covered, each other sector entirely
old or new. Every n-th state also goes to 'qemu-img check', whose verdict our
check must match. Report: per writer and family, the states judged, those
violating (the first with its files when --keep is given), those in QEMU's
own snapshot COPIED window (docs/format/snapshots.md), and disagreements.
  --crash-writer NAME
                   A built-in writer (repeatable; default all): model (the
                   pure model's host I/O), driver, driver-writeback (Qcow2Disk
                   on recording backends), qemu-io (QEMU 7.2 through its
                   blklogwrites driver).
  --writer TEMPLATE
                   A third-party writer: applies {script} to {image} and
                   writes a dm-log-writes log of its writes to {log}, with a
                   mark entry after each op (docs/crash.md).
  --exhaustive N   Every subset of an unflushed epoch of up to N host
                   operations (default 6; at most 16).
  --samples N      Random subsets of a larger epoch, besides its prefixes
                   (default 12).
  --torn           Tear writes in the random subsets at 512-byte sectors.
  --seed S         Seed of the random subsets (default 1).
  --qemu-check-every N
                   Give every N-th state to qemu-img check (default 25; 0 never).
  --keep DIR       Keep the first violating state of each row under DIR.
  Known violations of a built-in writer are listed in
  conform/expected-failures/crash-NAME.txt (QEMU's own, for qemu-io);
  --expected-failures FILE lists those of the --writer writer. A listed
  family's violations do not fail the run; an entry that no longer
  violates does.

A progress bar is drawn on stderr when it is a terminal.

Exit codes:
  0  no unexpected result (failures, if any, are all on the expected list)
  1  an unexpected failure, or an expected-failure entry whose tests passed
  2  usage error (bad option, template or expected-failures file)
  3  the run could not be made: the corpus cannot be read, qemu-img/qemu-io
     or the built-in implementation is missing, or no test was selected
`;

/** Where conform runs: the I/O sinks and the terminal facts (injectable for tests). */
export interface ConformEnv {
  readonly progress?: ProgressTarget;
  readonly cwd?: string;
}

function quoteArg(s: string): string {
  return formatCommandLine(s, []);
}

/** Runs `conform` with the arguments after the command name; returns the exit code. */
export async function runConform(args: readonly string[], io: CliIo, env: ConformEnv = {}): Promise<number> {
  const parsed = parseCommand(args, {
    corpus: { type: 'string' },
    impl: { type: 'string' },
    reader: { type: 'string' },
    writer: { type: 'string' },
    name: { type: 'string' },
    'expected-failures': { type: 'string' },
    only: { type: 'string', multiple: true },
    output: { type: 'string' },
    jobs: { type: 'string' },
    timeout: { type: 'string' },
    'max-output': { type: 'string' },
    'keep-work': { type: 'boolean' },
    crash: { type: 'boolean' },
    'crash-writer': { type: 'string', multiple: true },
    exhaustive: { type: 'string' },
    samples: { type: 'string' },
    torn: { type: 'boolean' },
    seed: { type: 'string' },
    'qemu-check-every': { type: 'string' },
    keep: { type: 'string' },
  }, false);
  const v = parsed.values;
  if (v.help === true) return showHelp(io, CONFORM_HELP);
  const cwd = env.cwd ?? process.cwd();
  const output = outputFormat(v.output);
  if (v.impl !== undefined && (v.reader !== undefined || v.writer !== undefined)) throw new UsageError('--impl cannot be combined with --reader or --writer');
  // The defaults: the embedded implementation (qemu-img) on this repository's checked-in corpus.
  const builtin = v.impl ?? (v.reader === undefined && v.writer === undefined ? DEFAULT_IMPL : undefined);
  const corpusArg = v.corpus ?? displayPath(resolve(repoRoot(), 'corpus'), cwd);
  if (builtin !== undefined && v.name !== undefined) throw new UsageError('--name is for --reader/--writer; --impl names itself');
  const jobs = v.jobs === undefined ? availableParallelism() : positiveInt(v.jobs, '--jobs');
  const timeoutS = v.timeout === undefined ? DEFAULT_TIMEOUT_S : positiveNumber(v.timeout, '--timeout');
  const maxOutput = v['max-output'] === undefined ? DEFAULT_MAX_OUTPUT_BYTES : byteCount(v['max-output'], '--max-output');
  const crashOnly = ['crash-writer', 'exhaustive', 'samples', 'torn', 'seed', 'qemu-check-every', 'keep'] as const;
  if (v.crash !== true) {
    const used = crashOnly.find((k) => v[k] !== undefined);
    if (used !== undefined) throw new UsageError(`--${used} is an option of --crash`);
  } else {
    if (v.impl !== undefined || v.reader !== undefined || v['keep-work'] === true) {
      throw new UsageError('--crash takes --crash-writer NAME or --writer TEMPLATE, not --impl, --reader or --keep-work');
    }
    if (v['expected-failures'] !== undefined && v.writer === undefined) throw new UsageError('with --crash, --expected-failures is for the --writer TEMPLATE writer (built-in writers use conform/expected-failures/crash-NAME.txt)');
    return runCrashConform({
      corpusDir: resolve(cwd, corpusArg),
      writers: v['crash-writer'] ?? [],
      ...(v.writer !== undefined ? { writerTemplate: v.writer } : {}),
      ...(v.name !== undefined ? { name: v.name } : {}),
      ...(v['expected-failures'] !== undefined ? { expectedFailures: v['expected-failures'] } : {}),
      only: v.only ?? [],
      ...(v.exhaustive !== undefined ? { exhaustive: v.exhaustive } : {}),
      ...(v.samples !== undefined ? { samples: v.samples } : {}),
      torn: v.torn === true,
      ...(v.seed !== undefined ? { seed: v.seed } : {}),
      ...(v['qemu-check-every'] !== undefined ? { qemuCheckEvery: v['qemu-check-every'] } : {}),
      ...(v.keep !== undefined ? { keep: v.keep } : {}),
      timeoutMs: Math.round(timeoutS * 1000),
      output,
      cwd,
      progress: env.progress ?? { write: (t) => io.stderr(t), isTTY: process.stderr.isTTY === true, columns: process.stderr.columns },
    }, io);
  }

  // The adapters.
  let adapters: Adapter[];
  let impl: string;
  try {
    if (builtin !== undefined) {
      if (!isBuiltinImpl(builtin)) throw new UsageError(`unknown implementation '${builtin}' (known: ${BUILTIN_IMPLS.join(', ')})`);
      impl = builtin;
      const problem = await builtinProblem(builtin);
      if (problem !== undefined) {
        io.stderr(`qcow2-ref: conform: ${problem}\n`);
        return EXIT_CONFORM_CANNOT_RUN;
      }
      adapters = builtinAdapters(builtin);
    } else {
      impl = v.name ?? 'custom';
      adapters = [];
      if (v.reader !== undefined) {
        adapters.push(adapterFromTemplate(impl, 'reader', v.reader, cwd));
      }
      if (v.writer !== undefined) {
        adapters.push(adapterFromTemplate(impl, 'writer', v.writer, cwd));
      }
    }
  } catch (e) {
    if (e instanceof TemplateError) throw new UsageError(e.message);
    throw e;
  }

  // The expected failures.
  let expected: ExpectedFailure[] = [];
  let expectedSource: string | undefined;
  const expectedPath =
    v['expected-failures'] !== undefined
      ? resolve(cwd, v['expected-failures'])
      : builtin !== undefined && existsSync(resolve(repoRoot(), 'conform/expected-failures', `${builtin}.txt`))
        ? resolve(repoRoot(), 'conform/expected-failures', `${builtin}.txt`)
        : undefined;
  if (expectedPath !== undefined) {
    let text: string;
    try {
      text = readFileSync(expectedPath, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read --expected-failures ${expectedPath}: ${(e as Error).message}`);
    }
    expectedSource = displayPath(expectedPath, cwd);
    try {
      expected = parseExpectedFailures(text, expectedSource);
    } catch (e) {
      if (e instanceof ExpectedFailuresError) throw new UsageError(e.message);
      throw e;
    }
  }

  const rerun = (role: TestRole, caseId: string): string => {
    const sel =
      builtin !== undefined
        ? ['--impl', builtin]
        : [...(v.name !== undefined ? ['--name', v.name] : []), ...(role === 'reader' ? ['--reader', v.reader!] : ['--writer', v.writer!])];
    const exp = v['expected-failures'] !== undefined ? ['--expected-failures', v['expected-failures']] : [];
    return ['qcow2-ref', 'conform', '--corpus', corpusArg, ...sel, ...exp, '--only', caseId, '--keep-work'].map(quoteArg).join(' ');
  };

  const target: ProgressTarget = env.progress ?? { write: (t) => io.stderr(t), isTTY: process.stderr.isTTY === true, columns: process.stderr.columns };
  let progress = NO_PROGRESS;
  let report;
  try {
    report = await runConformance({
      corpusDir: resolve(cwd, corpusArg),
      impl,
      adapters,
      expected,
      ...(expectedSource !== undefined ? { expectedSource } : {}),
      jobs,
      timeoutMs: Math.round(timeoutS * 1000),
      maxOutputBytes: maxOutput,
      only: (v.only ?? []).map(globToRegExp),
      keepWork: v['keep-work'] === true,
      rerun,
      onProgress: (done, total) => {
        if (done === 0) progress = startCountProgress(`conform ${impl}`, total, 'tests', target, true);
        progress.update(done);
      },
    });
  } catch (e) {
    progress.stop();
    if (e instanceof HarnessError || e instanceof QemuToolMissingError) {
      io.stderr(`qcow2-ref: conform: ${e.message}\n`);
      return EXIT_CONFORM_CANNOT_RUN;
    }
    throw e;
  }
  progress.stop();
  const shown = { ...report, corpus: displayPath(report.corpus, cwd) };
  io.stdout(output === 'json' ? `${JSON.stringify(reportJson(shown), null, 2)}\n` : formatHumanReport(shown));
  return report.ok ? EXIT_OK : EXIT_CONFORM_FAILED;
}

/** `path` relative to `cwd` when it is inside it, else absolute. */
function displayPath(path: string, cwd: string): string {
  const rel = relative(cwd, path);
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith('/') ? rel : path;
}

function positiveInt(text: string, what: string): number {
  if (!/^[1-9][0-9]{0,5}$/.test(text)) throw new UsageError(`${what} must be a positive integer, not '${text}'`);
  return Number(text);
}

function byteCount(text: string, what: string): bigint {
  const n = parseQemuSize(text);
  if (typeof n !== 'bigint' || n <= 0n) throw new UsageError(`${what} must be a positive byte count (suffixes k, M, G, T), not '${text}'`);
  return n;
}

function positiveNumber(text: string, what: string): number {
  const n = Number(text);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || !(n > 0) || n > 86400) throw new UsageError(`${what} must be a positive number of seconds (at most 86400), not '${text}'`);
  return n;
}
