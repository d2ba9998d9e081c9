/**
 * `qcow2-ref convert [-f qcow2|raw] [-O raw|qcow2] [-o OPTIONS] [-c] [-p] IN OUT`: the arguments,
 * the -o target options, interruption, progress and messages of `qemu-img convert` (QEMU 7.2); the
 * streaming conversion itself is the I/O layer's (src/io/convert.ts).
 */
import { fsyncSync } from 'node:fs';
import { isQcow2FormatError } from '../codec/index.ts';
import { CreateError, type CreateOptions } from '../model/index.ts';
import { ModelError } from '../model/index.ts';
import { HostReaderError } from '../model/index.ts';
import { ConvertError, OUTPUT_CACHES, convertImage, type ConvertRequest, type OutputCache } from '../io/index.ts';
import { OPEN_POLICY_OPTIONS, OpenImageError, openPolicyFrom } from '../io/index.ts';
import { EXIT_DECODE, EXIT_OK, UsageError, processIo, type CliIo, parseCommand, showHelp, errnoText } from './io.ts';
import { parseQemuSize } from './create.ts';
import { startProgress, type Progress } from './progress.ts';
import { isValidOptionList, splitOptions } from './qemu-opts.ts';

/** Help text of the convert command. */
export const CONVERT_HELP = `Usage: qcow2-ref convert [-f qcow2|raw] [-O raw|qcow2] [-o OPTIONS] [-c] [-p] [-q]
                         [-t CACHE] [--allow-backing] [--allow-backing-path]
                         [--allow-data-file-path] IN OUT

Converts the disk image IN to OUT as 'qemu-img convert' (QEMU 7.2) does: the
guest content of OUT is that of IN. Formats: qcow2 to raw, raw to qcow2
(optionally compressed), qcow2 to qcow2 (and raw to raw).

Streaming: IN is read in chunks of at most 2 MiB and OUT is written as it
goes, so memory does not grow with the size of the image or of its data.
Ranges of IN that are unallocated or read as zeros (and runs of at least
4 KiB of zeros inside data, as qemu-img's default -S 4k) are not written: a
raw OUT is sparse there and a qcow2 OUT leaves them unallocated.

OUT is written to a temporary file in its directory and renamed over OUT
only when it is complete; if anything fails (or the command is interrupted)
the temporary file is removed and OUT is left as it was. An existing OUT is
replaced, as qemu-img does.

Options:
  -f FMT           Format of IN: qcow2 or raw (default: qcow2 when IN starts
                   with the qcow2 magic, else raw).
  -O FMT           Format of OUT: raw (default, as qemu-img) or qcow2.
  -o OPTIONS       qcow2 creation options of OUT, with the names and syntax of
                   'qcow2-ref create' (key=value,...; several -o accumulate):
                   cluster_size, compat, refcount_bits, extended_l2,
                   compression_type, lazy_refcounts, preallocation. OUT gets
                   IN's virtual size; backing and data files cannot be set.
  -c               Compress OUT (qcow2 only): every cluster that is not all
                   zeros is written compressed (a cluster that does not shrink
                   is stored normally, as QEMU does).
  -p               Show a progress bar on stderr when stderr is a terminal
                   (nothing is printed otherwise).
  -q               Quiet: no progress bar.
  -t CACHE         Cache mode of OUT, with qemu-img's names: unsafe (default,
                   as qemu-img convert) never syncs OUT, so after a power
                   failure OUT may be incomplete; writeback, writethrough,
                   directsync and none sync OUT to disk once, before the
                   rename. (qcow2-ref never opens OUT with O_DIRECT or
                   O_DSYNC: the modes differ only in that final sync.)
  --allow-backing  Read IN's backing files (needed when IN has one). Their
                   names are taken relative to the directory of the image
                   naming them; a name that is absolute, leads out of that
                   directory or names a protocol is refused unless
                   --allow-backing-path is also given.
  --allow-backing-path
                   Accept such backing file names (implies --allow-backing).
  --allow-data-file-path
                   Accept an external data file name of IN that is absolute
                   or leads out of IN's directory.
  -h, --help       Show this help.

Why backing files need a flag: an image's header names the files it refers to,
and whoever made the image chose those names. A tool that follows them reads
whatever file the image's author picked (CVE-2015-1851, CVE-2024-32498).

Differences from qemu-img: only qcow2 and raw; no -B/-n/-S/-l/--bitmaps; the
qcow2 OUT is built by the model (docs/layout-differences.md says where its
bytes may differ from qemu-img's).

Exit codes:
  0  OUT was written
  1  IN (or a file it refers to) could not be read or decoded, a file it
     refers to was refused, the model refused a write, OUT could not be
     written, or the command was interrupted; one line on stderr:
     qcow2-ref: FILE: PROBLEM   (OUT is unchanged)
  2  usage error (unknown option, wrong number of files, bad format or cache
     mode, -c or -o without -O qcow2)
`;

// ---------------------------------------------------------------------------------------------
// Target options

const TARGET_OPTION_TYPES: Readonly<Record<string, 'size' | 'num' | 'bool' | 'str'>> = {
  cluster_size: 'size',
  compat: 'str',
  compression_type: 'str',
  extended_l2: 'bool',
  lazy_refcounts: 'bool',
  preallocation: 'str',
  refcount_bits: 'num',
};
const NOT_FOR_CONVERT = new Set(['size', 'backing_file', 'backing_fmt', 'data_file', 'data_file_raw']);

/** The option pairs of a convert -o list (qemu-opts.ts), with the target and refused option names known. */
function splitConvertOptions(list: string): Array<[string, string]> {
  return splitOptions(list, (name) => Object.hasOwn(TARGET_OPTION_TYPES, name) || NOT_FOR_CONVERT.has(name));
}

/**
 * The createImage options (without size) of the -o lists `lists`, with qemu-img's messages for bad
 * values. Throws ConvertError (message without a file name) for an invalid list, unknown or
 * unsupported option, or a value of the wrong type.
 */
export function parseTargetOptions(lists: readonly string[]): Omit<CreateOptions, 'size'> {
  for (const l of lists) if (!isValidOptionList(l)) throw new ConvertError(`Invalid option list: ${l}`);
  const o: Record<string, unknown> = {};
  for (const [name, raw] of splitConvertOptions(lists.join(','))) {
    if (NOT_FOR_CONVERT.has(name)) throw new ConvertError(`Parameter '${name}' is not supported by qcow2-ref convert (OUT gets IN's size and no backing or data file)`);
    const type = TARGET_OPTION_TYPES[name];
    if (!Object.hasOwn(TARGET_OPTION_TYPES, name) || type === undefined) throw new ConvertError(`Invalid parameter '${name}'`);
    switch (type) {
      case 'str':
        o[name] = raw;
        break;
      case 'bool':
        if (['on', 'yes', 'true', 'y'].includes(raw)) o[name] = true;
        else if (['off', 'no', 'false', 'n'].includes(raw)) o[name] = false;
        else throw new ConvertError(`Parameter '${name}' expects 'on' or 'off'`);
        break;
      case 'num': {
        if (!/^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.test(raw)) throw new ConvertError(`Parameter '${name}' expects a number`);
        const v = /^0[xX]/.test(raw) ? BigInt(raw) : raw.length > 1 && raw.startsWith('0') ? BigInt(`0o${raw.slice(1)}`) : BigInt(raw);
        if (v >= 1n << 64n) throw new ConvertError(`Parameter '${name}' expects a number`);
        o[name] = v;
        break;
      }
      case 'size': {
        const v = parseQemuSize(raw);
        if (typeof v !== 'bigint') throw new ConvertError(`Parameter '${name}' expects a non-negative number below 2^64`);
        o[name] = v;
        break;
      }
    }
  }
  const out: Record<string, unknown> = {
    clusterSize: o.cluster_size !== undefined ? Number(o.cluster_size as bigint) : undefined,
    compat: o.compat,
    refcountBits: o.refcount_bits !== undefined ? Number(o.refcount_bits as bigint) : undefined,
    extendedL2: o.extended_l2,
    compressionType: o.compression_type,
    lazyRefcounts: o.lazy_refcounts,
    preallocation: o.preallocation,
  };
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out as Omit<CreateOptions, 'size'>;
}

// ---------------------------------------------------------------------------------------------
// The command

/** What runConvert needs to know about its environment besides the output sinks. */
export interface ConvertEnv {
  /** stderr is a terminal (the progress bar is drawn only then). */
  readonly stderrIsTTY?: boolean;
  /** Terminal width for the progress bar. */
  readonly columns?: number;
  /** Install SIGINT/SIGTERM handlers that stop the copy and remove the temporary file. */
  readonly handleSignals?: boolean;
  /** Replaces fsyncSync for the final flush of OUT (tests count the calls). */
  readonly fsync?: (fd: number) => void;
}

/** Runs `convert` with the arguments after the command name; returns the exit code. */
export async function runConvert(args: readonly string[], io: CliIo, env: ConvertEnv = {}): Promise<number> {
  const parsed = parseCommand(args, {
    format: { type: 'string', short: 'f' },
    'target-format': { type: 'string', short: 'O' },
    options: { type: 'string', short: 'o', multiple: true },
    compress: { type: 'boolean', short: 'c' },
    progress: { type: 'boolean', short: 'p' },
    quiet: { type: 'boolean', short: 'q' },
    cache: { type: 'string', short: 't' },
    ...OPEN_POLICY_OPTIONS,
  }, true);
  const v = parsed.values;
  if (v.help === true) return showHelp(io, CONVERT_HELP);
  const inFormat = v.format;
  if (inFormat !== undefined && inFormat !== 'qcow2' && inFormat !== 'raw') throw new UsageError(`-f must be 'qcow2' or 'raw', not '${inFormat}'`);
  const outFormat = v['target-format'] ?? 'raw';
  if (outFormat !== 'qcow2' && outFormat !== 'raw') throw new UsageError(`-O must be 'raw' or 'qcow2', not '${outFormat}'`);
  const cache = v.cache ?? 'unsafe';
  if (!(OUTPUT_CACHES as readonly string[]).includes(cache)) throw new UsageError(`-t must be one of ${OUTPUT_CACHES.join(', ')}, not '${cache}'`);
  const compressed = v.compress === true;
  if (compressed && outFormat !== 'qcow2') throw new UsageError('-c (compression) needs -O qcow2');
  const lists = v.options ?? [];
  if (lists.length > 0 && outFormat !== 'qcow2') throw new UsageError('-o needs -O qcow2');
  if (parsed.positionals.length !== 2) {
    throw new UsageError(parsed.positionals.length < 2 ? `missing ${parsed.positionals.length === 0 ? 'IN and OUT' : 'OUT'}` : `takes IN and OUT, got ${parsed.positionals.length} files`);
  }
  const [input, output] = parsed.positionals as [string, string];
  let targetOptions: Omit<CreateOptions, 'size'>;
  try {
    targetOptions = parseTargetOptions(lists);
  } catch (e) {
    if (e instanceof ConvertError) {
      io.stderr(`qcow2-ref: ${output}: ${e.message}\n`);
      return EXIT_DECODE;
    }
    throw e;
  }
  const req: ConvertRequest = {
    input,
    output,
    inFormat,
    outFormat,
    targetOptions,
    compressed,
    cache: cache as OutputCache,
    policy: openPolicyFrom(v),
  };

  // Interruption: the handlers only record the signal; the copy loop notices it between chunks.
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupted = sig;
  };
  if (env.handleSignals === true) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  let lastYield = Date.now();
  const checkpoint = async (): Promise<void> => {
    if (Date.now() - lastYield >= 50) {
      await new Promise<void>((r) => setImmediate(r));
      lastYield = Date.now();
    }
    if (interrupted !== undefined) throw new ConvertError(`${output}: interrupted by ${interrupted}; nothing was written`);
  };
  const showProgress = v.progress === true && v.quiet !== true && env.stderrIsTTY === true;
  const progressTarget = (total: number): Progress =>
    startProgress('convert', total, { write: io.stderr, isTTY: env.stderrIsTTY === true, ...(env.columns !== undefined ? { columns: env.columns } : {}) }, showProgress);
  try {
    await convertImage(req, { checkpoint, showProgress, progressTarget, fsync: env.fsync ?? fsyncSync }, (line) => io.stderr(`qcow2-ref: warning: ${line}\n`));
  } catch (e) {
    const line = describeFailure(e, req);
    if (line === undefined) throw e;
    io.stderr(`qcow2-ref: ${line}\n`);
    return EXIT_DECODE;
  } finally {
    if (env.handleSignals === true) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
  return EXIT_OK;
}

/** The one-line message for a failure of `convert`, or undefined for an unexpected error (a bug). */
function describeFailure(e: unknown, req: ConvertRequest): string | undefined {
  const oneLine = (s: string): string => s.replace(/\r?\n/g, ' ');
  if (e instanceof OpenImageError) return `${e.file}: ${e.detail}`;
  if (e instanceof ConvertError) return oneLine(e.message);
  if (e instanceof CreateError) return `${req.output}: ${oneLine(e.message)}`;
  // Failed reads of IN are ConvertErrors naming IN (readingInput), and the model's refusals of
  // writes are ConvertErrors naming OUT; what is left of these comes from the output's reader.
  if (e instanceof ModelError || isQcow2FormatError(e) || e instanceof HostReaderError) return `${req.output}: ${oneLine(e.message)}`;
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.code === 'string' && err.syscall !== undefined) {
    // The temporary file's name means nothing to the user: name OUT.
    return `${req.output}: Could not write '${req.output}': ${errnoText(e)}`;
  }
  return undefined;
}

/** The command table entry: runConvert told about the real process's stderr. */
export function runConvertCommand(args: readonly string[], io: CliIo): Promise<number> {
  const real = io === processIo;
  return runConvert(args, io, {
    stderrIsTTY: real && process.stderr.isTTY === true,
    ...(real && process.stderr.columns !== undefined ? { columns: process.stderr.columns } : {}),
    handleSignals: real,
  });
}
