/**
 * `qcow2-ref check [-r leaks|all] [--output=human|json] [-f qcow2] [-q] IMAGE`: what `qemu-img check`
 * of QEMU 7.2 does to a qcow2 image (qemu-img.c img_check; docs/format/check.md), with its output and exit
 * codes, so that it can stand in for `qemu-img check` in a script:
 *
 * - stderr: the lines the check prints (ERROR / Leaked / Repairing ...), then `Check failed...` when
 *   it failed; stdout: the report — human (dump_human_image_check) or JSON (the ImageCheck QObject in
 *   QEMU's key order, zero-valued counters left out); with -r and anything fixed, the human report
 *   is preceded by "The following inconsistencies were found and repaired: ..." and is the result of
 *   the second ("Double checking") pass;
 * - exit code: 0 clean, 1 the check could not run or complete (bad command line, the image cannot
 *   be opened, internal errors), 2 corruptions remain, 3 only leaks remain, 63 the format has no
 *   check (raw).
 *
 * The model (src/check/check.ts, src/check/repair.ts) decides everything; this file opens the image
 * (src/io/open-file.ts in check mode, read-write with -r), prints, and with -r writes the repair's
 * host operations to the file in order (src/io/host-io-file.ts applyHostIOToPaths: the disk layer's
 * applier, src/disk/apply-io.ts) after the check has run to its end in memory. Lines qemu-img prints with its program name ("qemu-img: ...") are printed
 * with this program's.
 */
import { open } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { checkExitCode, type CheckResult } from '../check/index.ts';
import { HostReaderError } from '../model/index.ts';
import { type HostIO } from '../model/index.ts';
import type { Image } from '../model/index.ts';
import { repairImage, type RepairMode } from '../check/index.ts';
import { checkImage } from '../check/index.ts';
import type { QObject } from '../views/index.ts';
import { qemuJsonPretty } from './info.ts';
import { errnoText, type CliIo } from './io.ts';
import { OpenImageError, withOpenImageFile, type OpenFileOptions } from '../io/index.ts';
import { applyHostIOToPaths } from '../io/index.ts';
import { exactFraction, roundHalfEven } from './exact-decimal.ts';

/** Help text of the check command. */
export const CHECK_HELP = `Usage: qcow2-ref check [-r leaks|all] [--output=human|json] [-f qcow2] [-q] IMAGE

Checks the qcow2 image IMAGE for consistency exactly as 'qemu-img check'
(QEMU 7.2) does, and with -r repairs it as 'qemu-img check -r' does: the same
findings (ERROR / Leaked / Repairing lines on stderr), the same report on
stdout and the same exit code.

Options:
  -r, --repair leaks|all
                   Repair leaked clusters (leaks), or leaks and corruptions
                   (all: raises too-low refcounts, rebuilds the refcount
                   structure when a referenced cluster has refcount 0, fixes
                   COPIED flags, the snapshot table, ...). IMAGE is written.
  --output=human   qemu-img's text report (default).
  --output=json    qemu-img's JSON report (counters that are 0 left out).
  -f, --format FMT qcow2 (default: probed; raw is reported as having no check).
  -q, --quiet      Print no report (errors are still printed).
  -h, --help       Show this help.

IMAGE's backing file is not opened (the check does not need it; qemu-img check
fails when it cannot open it). An external data file must exist; its name is
taken relative to IMAGE's directory and must stay inside it.

Exit codes (as qemu-img check):
  0   no errors (after -r: none left)
  1   the check could not run or complete: bad command line, IMAGE could not
      be opened, or internal errors during the check
  2   corruptions were found (and remain)
  3   only leaked clusters were found (and remain)
  63  the image format has no check (raw)
`;

const EXIT_FAILED = 1;
const EXIT_NO_CHECK = 63;

/** qemu-img's program-name prefix on a line, replaced by ours. */
function ownLine(line: string): string {
  return line.startsWith('qemu-img: ') ? `qcow2-ref: ${line.slice('qemu-img: '.length)}` : line;
}

/** `x` (a finite double ≥ 0) as glibc's printf("%0.2f") prints it: exact value, ties to even. */
export function formatFixed2(x: number): string {
  const { num, den } = exactFraction(x);
  const s = roundHalfEven(num * 100n, den).toString().padStart(3, '0');
  return `${s.slice(0, -2)}.${s.slice(-2)}`;
}

/** dump_human_image_check. */
function humanReport(r: CheckResult): string {
  let out = '';
  if (r.corruptions === 0 && r.leaks === 0 && r.checkErrors === 0) {
    out += 'No errors were found on the image.\n';
  } else {
    if (r.corruptions !== 0) {
      out += `\n${r.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (r.leaks !== 0) {
      out += `\n${r.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    }
    if (r.checkErrors !== 0) out += `\n${r.checkErrors} internal errors have occurred during the check.\n`;
  }
  if (r.totalClusters !== 0n && r.allocatedClusters !== 0n) {
    const a = Number(r.allocatedClusters);
    out += `${r.allocatedClusters}/${r.totalClusters} = ${formatFixed2((a * 100.0) / Number(r.totalClusters))}% allocated, `
      + `${formatFixed2((Number(r.fragmentedClusters) * 100.0) / a)}% fragmented, `
      + `${formatFixed2((Number(r.compressedClusters) * 100.0) / a)}% compressed clusters\n`;
  }
  if (r.imageEndOffset !== 0n) out += `Image end offset: ${r.imageEndOffset}\n`;
  return out;
}

/**
 * The ImageCheck QObject qemu-img prints with --output=json: members in their QAPI declaration
 * order (the printed order is the QDict's), optional counters absent when 0.
 */
export function checkQObject(r: CheckResult, filename: string): QObject {
  const int = (v: bigint | number): QObject => ({ kind: 'int', value: BigInt(v) });
  const optional = (key: string, v: bigint | number): (readonly [string, QObject])[] => (BigInt(v) === 0n ? [] : [[key, int(v)]]);
  return {
    kind: 'dict',
    entries: [
      ['filename', { kind: 'string', value: filename }],
      ['format', { kind: 'string', value: 'qcow2' }],
      ['check-errors', int(r.checkErrors)],
      ...optional('image-end-offset', r.imageEndOffset),
      ...optional('corruptions', r.corruptions),
      ...optional('leaks', r.leaks),
      ...optional('corruptions-fixed', r.corruptionsFixed),
      ...optional('leaks-fixed', r.leaksFixed),
      ...optional('total-clusters', r.totalClusters),
      ...optional('allocated-clusters', r.allocatedClusters),
      ...optional('fragmented-clusters', r.fragmentedClusters),
      ...optional('compressed-clusters', r.compressedClusters),
    ],
  };
}

/** What the command line asks for, or the message qemu-img prints for a bad one. */
type CheckArgs =
  | { readonly ok: true; readonly image: string; readonly repair?: RepairMode; readonly output: 'human' | 'json'; readonly format?: string; readonly quiet: boolean; readonly help: boolean }
  | { readonly ok: false; readonly message: string; readonly tryHelp: boolean };

function parseCheckArgs(args: readonly string[]): CheckArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: {
        repair: { type: 'string', short: 'r' },
        output: { type: 'string' },
        format: { type: 'string', short: 'f' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    return { ok: false, message: (e as Error).message, tryHelp: true };
  }
  const v = parsed.values;
  if (v.help === true) return { ok: true, image: '', output: 'human', quiet: false, help: true };
  let repair: RepairMode | undefined;
  if (v.repair !== undefined) {
    if (v.repair !== 'leaks' && v.repair !== 'all') {
      return { ok: false, message: `Unknown option value for -r (expecting 'leaks' or 'all'): ${v.repair}`, tryHelp: true };
    }
    repair = v.repair;
  }
  const output = v.output ?? 'human';
  if (output !== 'human' && output !== 'json') {
    return { ok: false, message: '--output must be used with human or json as argument.', tryHelp: false };
  }
  if (parsed.positionals.length !== 1) return { ok: false, message: 'Expecting one image file name', tryHelp: true };
  return {
    ok: true,
    image: parsed.positionals[0]!,
    ...(repair !== undefined ? { repair } : {}),
    output,
    ...(v.format !== undefined ? { format: v.format } : {}),
    quiet: v.quiet === true,
    help: false,
  };
}

/** Whether the file at `path` starts with the qcow2 magic (qemu-img probes the format so). */
async function looksLikeQcow2(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = new Uint8Array(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && b[0] === 0x51 && b[1] === 0x46 && b[2] === 0x49 && b[3] === 0xfb;
  } finally {
    await fh.close();
  }
}

/**
 * Runs `qcow2-ref check ARGS`: prints through `io` and returns the exit code (never throws for a
 * bad command line or image: those are exit code 1 with qemu-img's message).
 */
export async function runCheck(args: readonly string[], io: CliIo): Promise<number> {
  const a = parseCheckArgs(args);
  if (!a.ok) {
    io.stderr(`qcow2-ref: ${a.message}\n${a.tryHelp ? "Try 'qcow2-ref check --help' for more information\n" : ''}`);
    return EXIT_FAILED;
  }
  if (a.help) {
    io.stdout(CHECK_HELP);
    return 0;
  }
  try {
    if (a.format !== undefined && a.format !== 'qcow2' && a.format !== 'raw') {
      io.stderr(`qcow2-ref: Could not open '${a.image}': Unknown driver '${a.format}'\n`);
      return EXIT_FAILED;
    }
    const format = a.format ?? ((await looksLikeQcow2(a.image)) ? 'qcow2' : 'raw');
    if (format === 'raw') {
      io.stderr('qcow2-ref: This image format does not support checks\n');
      return EXIT_NO_CHECK;
    }
  } catch (e) {
    // file-posix's open error, inside the block layer's ("Could not open 'X': Could not open 'X': ...").
    io.stderr(`qcow2-ref: Could not open '${a.image}': Could not open '${a.image}': ${errnoText(e)}\n`);
    return EXIT_FAILED;
  }
  // QEMU opens with BDRV_O_CHECK (the snapshot table and an empty refcount table are left to the
  // check) and, with -r, read-write (BDRV_O_RDWR).
  const opts: OpenFileOptions = { dataFile: 'stat', writable: a.repair !== undefined, checkMode: true };
  let report: CheckReport;
  try {
    report = await withOpenImageFile(a.image, {}, opts, (top) =>
      checkReport(top.image!, { filename: a.image, output: a.output, ...(a.repair !== undefined ? { repair: a.repair } : {}), openIo: top.openIo ?? [] }));
  } catch (e) {
    if (e instanceof OpenImageError) {
      io.stderr(`qcow2-ref: Could not open '${a.image}': ${e.detail}\n`);
      return EXIT_FAILED;
    }
    if (e instanceof HostReaderError) {
      io.stderr(`qcow2-ref: ${a.image}: ${e.message}\n`);
      return EXIT_FAILED;
    }
    throw e;
  }
  if (report.io.length > 0) {
    // The check ran to its end in memory; now its writes go to the file, in order.
    await applyHostIOToPaths({ image: a.image }, report.io);
  }
  io.stderr(report.stderr);
  if (!a.quiet) io.stdout(report.stdout);
  return report.exitCode;
}

/** What `qcow2-ref check` prints and returns for one opened image, and the writes it makes. */
export interface CheckReport {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
  /** The host operations to issue to the image file (empty without -r). */
  readonly io: readonly HostIO[];
}

/** What checkReport needs besides the image. */
export interface CheckReportOptions {
  /** The image's name as given on the command line (the JSON report's "filename"). */
  readonly filename: string;
  readonly output: 'human' | 'json';
  readonly repair?: RepairMode;
  /** Writes the (read-write) open already made, issued before the repair's. */
  readonly openIo?: readonly HostIO[];
}

/**
 * The check (or with `repair`, the repair) of an opened qcow2 `image` as qemu-img check reports it:
 * stderr (the check's lines, then `Check failed...`), stdout (the report), the exit code, and the
 * host writes of a repair. Pure.
 */
export function checkReport(image: Image, opts: CheckReportOptions): CheckReport {
  let stderr = '';
  let stdout = '';
  const printLines = (lines: readonly string[]): void => {
    for (const l of lines) stderr += `${ownLine(l)}\n`;
  };
  let first: CheckResult;
  let final: CheckResult;
  let io: readonly HostIO[] = [];
  if (opts.repair === undefined) {
    first = checkImage(image);
    final = first;
    printLines(first.findings.flatMap((f) => f.message.split('\n')));
  } else {
    const r = repairImage(image, opts.repair);
    first = r.first;
    final = r.result;
    io = [...(opts.openIo ?? []), ...r.io];
    // The first pass's lines, then the second's (the log holds both, in order).
    printLines(r.log);
  }
  const fixedSomething = first.failure === undefined && (first.corruptionsFixed > 0 || first.leaksFixed > 0);
  if (fixedSomething && opts.output === 'human') {
    stdout += `The following inconsistencies were found and repaired:\n\n    ${first.leaksFixed} leaked clusters\n    ${first.corruptionsFixed} corruptions\n\nDouble checking the fixed image now...\n`;
  }
  if (final.failure === undefined) {
    stdout += opts.output === 'json' ? `${qemuJsonPretty(checkQObject(final, opts.filename))}\n` : humanReport(final);
  }
  let exitCode: number = checkExitCode(final);
  if (final.failure !== undefined || final.checkErrors > 0) {
    stderr += final.failure !== undefined ? `qcow2-ref: Check failed: ${final.failure}\n` : 'qcow2-ref: Check failed\n';
    exitCode = EXIT_FAILED;
  }
  return { stdout, stderr, exitCode, io };
}
