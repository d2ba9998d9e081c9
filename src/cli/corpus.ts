/**
 * `qcow2-ref corpus --out DIR [--seed S] [--count N] [--families a,b] [--max-size BYTES] [--verify]
 * [--flat] [--minimize] [--output=human|json]`: generates a qcow2 conformance and fuzzing corpus
 * (src/corpus): valid images of every feature class and invalid ones of every rejection class, each
 * with a manifest entry saying what a reader must do with it. Same seed and generator version ⇒
 * byte-identical output.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { QemuToolMissingError, requireQemu } from '../qemu/index.ts';
import {
  ALL_FAMILIES,
  checkCorpusDir,
  CORPUS_GENERATOR_VERSION,
  generateCorpus,
  prepareCorpusDir,
  selectFamilies,
  SIZE_ATTEMPTS,
  writeCaseFiles,
  writeCorpusIndex,
  writeFlatCorpus,
  type FlatFile,
  type SkippedCase,
} from '../corpus/index.ts';
import type { GeneratedCase } from '../corpus/index.ts';
import { minimizeCases } from '../corpus/index.ts';
import { verifyCases } from '../corpus/index.ts';
import { parseQemuSize } from './create.ts';
import { EXIT_OK, UsageError, outputFormat, parseCommand, type CliIo } from './io.ts';
import { NO_PROGRESS, startCountProgress, type Progress, type ProgressTarget } from './progress.ts';

/** Exit code: the corpus could not be made, or --verify found a case QEMU disagrees with (it was left out). */
export const EXIT_CORPUS_FAILED = 1;
/** Exit code: --verify was asked for and qemu-img or qemu-io is missing. */
export const EXIT_CORPUS_NO_QEMU = 3;

/** Most cases per family. */
const MAX_COUNT = 10000;

/** Help text of the corpus command. */
export const CORPUS_HELP = `Usage: qcow2-ref corpus --out DIR [--seed S] [--count N] [--families LIST]
                        [--max-size BYTES] [--verify] [--flat] [--minimize]
                        [--output=human|json]
       qcow2-ref corpus --list-families [--output=human|json]

Generates a corpus of qcow2 images for conformance testing and fuzzing: valid
images of every feature class (cluster sizes, refcount widths, v2/v3, extended
L2, zlib/zstd compression, zero clusters, backing chains, snapshots, external
data files, bitmaps, lazy refcounts, unknown extensions and feature bits,
header lengths, multi-cluster L1 and grown refcount tables), and invalid ones
of every rejection class (each open-time check QEMU makes, the CVE classes:
oversized tables, size arithmetic overflow, offsets past EOF, metadata
overlap, escaping backing/data-file names; and every corruption qemu-img check
reports). Valid images are built by the model from qemu-img create options and
an op script, so they are what QEMU 7.2 writes for the same commands.

DIR receives one directory per case (image.qcow2, backing-N.qcow2|raw,
data.raw) and manifest.jsonl: one JSON object per case with its id, family,
features, create options, files and expected outcome — the SHA-256 of the guest
content and the qemu-img check result for valid images; "reject-open" with
QEMU's message, or "reject-check" with the check counts, for invalid ones.
corpus.json records the parameters. Commands on a case must run in the case's
directory (QEMU 7.2 opens a relative data file name relative to its working
directory). DIR must be empty, new, or hold a corpus made before (which is
replaced; other files such as a README stay).

The same seed, count, families, --max-size and generator version give
byte-identical files.

Options:
  --out DIR        Where to write the corpus (required).
  --seed S         Seed of the random choices (any text; default 1).
  --count N        Cases per family (default 1, at most ${MAX_COUNT}).
  --families LIST  Comma-separated families: names, 'valid', 'invalid', or a
                   prefix ending in '*' (e.g. 'invalid/*,cluster-*'). Default:
                   all (see --list-families).
  --max-size BYTES Leave out cases whose files add up to more than BYTES
                   (suffixes k, M, G as for qemu-img); each such case is tried
                   with ${SIZE_ATTEMPTS} random streams before it is left out.
  --verify         Confirm every expectation against qemu-img/qemu-io 7.2
                   before writing the manifest (check result and guest content
                   via 'qemu-img convert -O raw'; open errors via
                   'qemu-io -r -c quit'). A case QEMU disagrees with is left out
                   and reported (exit 1); a recorded, deliberate difference
                   ("qemuDifference") is confirmed instead.
  --flat           Write a flat seed corpus for libFuzzer/AFL instead: every
                   qcow2 file (images and qcow2 backing files) once, named by
                   its SHA-256, nothing else.
  --minimize       Keep only cases that add V8 code coverage of the parser and
                   checker (generated/, src/format, src/open/open.ts,
                   src/check/check.ts), selected greedily like afl-cmin.
  --list-families  List the families and what each holds.
  --output=human   A summary (default); --output=json: the same as JSON.
  -h, --help       Show this help.

A progress bar is drawn on stderr when it is a terminal.

Exit codes:
  0  the corpus was written
  1  a case could not be generated, the coverage probe failed, or --verify
     found a case QEMU disagrees with (the others were written)
  2  usage error
  3  --verify was given and qemu-img or qemu-io is missing
`;

/** What runCorpus needs besides the output sinks. */
export interface CorpusEnv {
  /** Where the progress bar goes (default: the process's stderr). */
  readonly progress?: ProgressTarget;
  /** QEMU processes at a time for --verify (default: the number of CPUs). */
  readonly jobs?: number;
}

/** Parsed command line. */
interface CorpusArgs {
  readonly out?: string;
  readonly seed: string;
  readonly count: number;
  readonly families?: readonly string[];
  readonly maxSize?: number;
  readonly verify: boolean;
  readonly flat: boolean;
  readonly minimize: boolean;
  readonly list: boolean;
  readonly output: 'human' | 'json';
  readonly help: boolean;
}

function parseCorpusArgs(args: readonly string[]): CorpusArgs {
  const { values, positionals } = parseCommand(args, {
    out: { type: 'string' },
    seed: { type: 'string' },
    count: { type: 'string' },
    families: { type: 'string' },
    'max-size': { type: 'string' },
    verify: { type: 'boolean' },
    flat: { type: 'boolean' },
    minimize: { type: 'boolean' },
    'list-families': { type: 'boolean' },
    output: { type: 'string' },
  }, true);
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const countText = values.count ?? '1';
  if (!/^[0-9]+$/.test(countText) || Number(countText) < 1 || Number(countText) > MAX_COUNT) {
    throw new UsageError(`--count must be an integer from 1 to ${MAX_COUNT}, not '${countText}'`);
  }
  let maxSize: number | undefined;
  if (values['max-size'] !== undefined) {
    const v = parseQemuSize(values['max-size']);
    if (typeof v !== 'bigint' || v < 1n || v > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`--max-size must be a positive size, not '${values['max-size']}'`);
    maxSize = Number(v);
  }
  const seed = values.seed ?? '1';
  if (seed === '') throw new UsageError('--seed must not be empty');
  let families: string[] | undefined;
  if (values.families !== undefined) {
    families = values.families.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (families.length === 0) throw new UsageError('--families needs at least one family');
    try {
      selectFamilies(families);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  return {
    ...(values.out !== undefined ? { out: values.out } : {}),
    seed,
    count: Number(countText),
    ...(families !== undefined ? { families } : {}),
    ...(maxSize !== undefined ? { maxSize } : {}),
    verify: values.verify === true,
    flat: values.flat === true,
    minimize: values.minimize === true,
    list: values['list-families'] === true,
    output: outputFormat(values.output),
    help: values.help === true,
  };
}

/** The summary printed at the end (also the --output=json object). */
export interface CorpusSummary {
  readonly out: string;
  readonly generatorVersion: number;
  readonly seed: string;
  readonly count: number;
  readonly families: number;
  readonly cases: number;
  readonly valid: number;
  readonly invalid: number;
  readonly bytes: number;
  readonly skipped: readonly SkippedCase[];
  readonly verify?: { readonly checked: number; readonly agreed: number; readonly dropped: readonly { readonly id: string; readonly reason: string }[] };
  readonly minimize?: { readonly before: number; readonly after: number; readonly features: number };
  readonly flat?: { readonly files: readonly FlatFile[] };
}

function humanSummary(s: CorpusSummary): string {
  const lines = [
    `${s.cases} case(s) (${s.valid} valid, ${s.invalid} invalid) in ${s.families} famil${s.families === 1 ? 'y' : 'ies'}, ${s.bytes} bytes, written to ${s.out}${s.flat !== undefined ? ` as ${s.flat.files.length} flat seed file(s)` : ''}`,
    `seed ${s.seed}, ${s.count} per family, generator version ${s.generatorVersion}`,
  ];
  for (const k of s.skipped) lines.push(`skipped ${k.id}: ${k.reason}`);
  if (s.verify !== undefined) {
    lines.push(`verified against QEMU: ${s.verify.agreed} of ${s.verify.checked} agree`);
    for (const d of s.verify.dropped) lines.push(`left out ${d.id}: ${d.reason}`);
  }
  if (s.minimize !== undefined) lines.push(`minimized: kept ${s.minimize.after} of ${s.minimize.before} case(s), ${s.minimize.features} coverage feature(s)`);
  return lines.join('\n') + '\n';
}

/** Removes the case directories and shared files written into `dir`. */
function removeWritten(dir: string, cases: readonly GeneratedCase[], shared: readonly string[]): void {
  for (const c of cases) rmSync(join(dir, c.entry.id), { recursive: true, force: true });
  for (const s of shared) rmSync(join(dir, s), { force: true });
}

/** A count progress bar on `target` (nothing unless it is a terminal). */
function bar(label: string, total: number, target: ProgressTarget): Progress {
  return total > 0 ? startCountProgress(label, total, 'cases', target, true) : NO_PROGRESS;
}

/**
 * Runs the corpus command with `args` (after the command name). Returns the exit code. Throws
 * UsageError for a bad command line (main prints it and exits 2).
 */
export async function runCorpus(args: readonly string[], io: CliIo, env: CorpusEnv = {}): Promise<number> {
  const a = parseCorpusArgs(args);
  if (a.help) {
    io.stdout(CORPUS_HELP);
    return EXIT_OK;
  }
  if (a.list) {
    if (a.output === 'json') {
      io.stdout(JSON.stringify(ALL_FAMILIES.map((f) => ({ name: f.name, valid: f.valid, doc: f.doc })), null, 2) + '\n');
    } else {
      const width = Math.max(...ALL_FAMILIES.map((f) => f.name.length));
      io.stdout(ALL_FAMILIES.map((f) => `${f.name.padEnd(width)}  ${f.valid ? 'valid  ' : 'invalid'}  ${f.doc}`).join('\n') + '\n');
    }
    return EXIT_OK;
  }
  if (a.out === undefined) throw new UsageError('missing --out DIR');
  const out = resolve(a.out);
  const target: ProgressTarget = env.progress ?? { write: (t) => io.stderr(t), isTTY: process.stderr.isTTY === true, ...(process.stderr.columns !== undefined ? { columns: process.stderr.columns } : {}) };
  const fail = (msg: string): number => {
    io.stderr(`qcow2-ref corpus: ${msg}\n`);
    return EXIT_CORPUS_FAILED;
  };

  if (!a.flat) {
    try {
      checkCorpusDir(out);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  if (a.verify) {
    // Before generating anything: --verify without QEMU cannot keep its promise.
    try {
      await requireQemu();
    } catch (e) {
      if (!(e instanceof QemuToolMissingError)) throw e;
      io.stderr(`qcow2-ref corpus: --verify needs QEMU: ${e.message}\n`);
      return EXIT_CORPUS_NO_QEMU;
    }
  }

  // 1. Generate, in memory.
  let progress = bar('generating', selectFamilies(a.families).length * a.count, target);
  let generated;
  try {
    generated = generateCorpus({ seed: a.seed, count: a.count, ...(a.families !== undefined ? { families: a.families } : {}), ...(a.maxSize !== undefined ? { maxSize: a.maxSize } : {}) },
      (done) => progress.update(done));
  } catch (e) {
    return fail((e as Error).message);
  } finally {
    progress.stop();
  }

  // 2. Write the case files: into DIR, or (flat) into a staging directory.
  const staging = a.flat ? mkdtempSync(join(tmpdir(), 'qcow2-ref-corpus-')) : out;
  try {
    if (!a.flat) prepareCorpusDir(out, generated.shared.map((s) => s.path));
    writeCaseFiles(staging, generated.cases, generated.shared);
    let cases: GeneratedCase[] = [...generated.cases];
    const drop = (ids: ReadonlySet<string>): void => {
      for (const c of cases) if (ids.has(c.entry.id)) rmSync(join(staging, c.entry.id), { recursive: true, force: true });
      cases = cases.filter((c) => !ids.has(c.entry.id));
    };

    // 3. Verify against QEMU.
    let verify: CorpusSummary['verify'];
    if (a.verify) {
      progress = bar('verifying', cases.length, target);
      let verdicts;
      try {
        verdicts = await verifyCases(staging, cases.map((c) => c.entry), env.jobs ?? Math.max(1, availableParallelism()), (done) => progress.update(done));
      } catch (e) {
        // QEMU could not be run at all (it answered --version above): leave nothing half-made behind.
        if (!a.flat) removeWritten(staging, generated.cases, generated.shared.map((f) => f.path));
        throw e;
      } finally {
        progress.stop();
      }
      const dropped = verdicts.flatMap((v) => (v.ok ? [] : [{ id: v.id, reason: v.reason }]));
      drop(new Set(dropped.map((d) => d.id)));
      verify = { checked: verdicts.length, agreed: verdicts.length - dropped.length, dropped };
    }

    // 4. Minimize by coverage.
    let minimize: CorpusSummary['minimize'];
    if (a.minimize) {
      const before = cases.length;
      let m;
      try {
        m = minimizeCases(staging, cases.map((c) => c.entry));
      } catch (e) {
        // Leave nothing half-made behind: a directory of cases without a manifest.
        if (!a.flat) removeWritten(staging, generated.cases, generated.shared.map((f) => f.path));
        return fail((e as Error).message);
      }
      const kept = new Set(m.kept);
      drop(new Set(cases.map((c) => c.entry.id).filter((id) => !kept.has(id))));
      minimize = { before, after: cases.length, features: m.features };
    }

    // 5. The manifest, or the flat corpus.
    let flat: CorpusSummary['flat'];
    if (a.flat) {
      flat = { files: writeFlatCorpus(out, cases) };
    } else {
      writeCorpusIndex(out, cases.map((c) => c.entry), {
        generator: 'qcow2-ref corpus',
        version: CORPUS_GENERATOR_VERSION,
        seed: a.seed,
        count: a.count,
        families: a.families ?? null,
        maxSize: a.maxSize ?? null,
        minimized: a.minimize,
        cases: cases.length,
      });
    }

    const summary: CorpusSummary = {
      out,
      generatorVersion: CORPUS_GENERATOR_VERSION,
      seed: a.seed,
      count: a.count,
      families: new Set(cases.map((c) => c.entry.family)).size,
      cases: cases.length,
      valid: cases.filter((c) => c.entry.valid).length,
      invalid: cases.filter((c) => !c.entry.valid).length,
      bytes: cases.reduce((n, c) => n + c.files.reduce((m, f) => m + f.bytes.length, 0), 0),
      skipped: generated.skipped,
      ...(verify !== undefined ? { verify } : {}),
      ...(minimize !== undefined ? { minimize } : {}),
      ...(flat !== undefined ? { flat } : {}),
    };
    io.stdout(a.output === 'json' ? JSON.stringify(summary, null, 2) + '\n' : humanSummary(summary));
    return verify !== undefined && verify.dropped.length > 0 ? EXIT_CORPUS_FAILED : EXIT_OK;
  } finally {
    if (a.flat) rmSync(staging, { recursive: true, force: true });
  }
}
