/**
 * `qcow2-ref create [-f qcow2] [-o key=value,...] IMAGE [SIZE]`: writes the qcow2 image (and external
 * data file) that `qemu-img create -f qcow2` 7.2 writes, byte for byte, through the model's
 * createImage. Option names, option syntax (`key=value`, `,,` for a comma, `key` = `key=on`,
 * `nokey` = `key=off`, several `-o` accumulate, last value wins), SIZE syntax and error messages are
 * qemu-img's.
 *
 * Files are written atomically: each file goes to a temporary file in its own directory, is
 * fsync'ed, and is renamed over the target only when everything has been computed and written, so
 * a refused option set or a failed write never leaves a file (or a half-written one) behind. An
 * existing IMAGE (or data file) is replaced, as qemu-img create does.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { HEADER_MAGIC_U32, HeaderLayout } from '../../generated/qcow2.ts';
import { CreateError, createImage, type CreateOptions } from '../model/index.ts';
import type { HostFile } from '../model/index.ts';
import { EXIT_DECODE, EXIT_OK, UsageError, type CliIo, parseCommand, showHelp, errnoText } from './io.ts';
import { isValidOptionList, splitOptions } from './qemu-opts.ts';
import { writeHostFile } from '../io/index.ts';
import { tempPathBeside } from '../io/index.ts';

/** Help text of the create command. */
export const CREATE_HELP = `Usage: qcow2-ref create [-f qcow2] [-o OPTIONS] IMAGE [SIZE]

Creates the qcow2 image IMAGE exactly as \`qemu-img create -f qcow2\` (QEMU 7.2)
would: the same bytes, the same option names and the same error messages.
An existing IMAGE is replaced (as qemu-img does). The image is written to a
temporary file next to it and renamed into place, so a refused option set or a
failed write never leaves a partial file.

SIZE is the virtual size in bytes, optionally with a suffix k, M, G, T, P or E
(powers of 1024, case-insensitive; b/B = bytes), a decimal fraction with a
suffix (1.5G), or hexadecimal (0x100000). It is rounded up to a multiple of 512.
SIZE may instead be given as -o size=SIZE; with a backing file and no size the
backing image's virtual size is used.

Options:
  -f qcow2         Image format; only qcow2 is supported.
  -o OPTIONS       Comma-separated key=value list (a literal comma is written
                   ',,'; 'key' alone means key=on, 'nokey' key=off). May be
                   given several times. '-o help' lists the options:
      size=SIZE                  virtual size (instead of the SIZE argument)
      cluster_size=SIZE          512 .. 2M, a power of two (default 64k)
      compat=0.10|1.1|v2|v3      image version (default 1.1 = v3)
      refcount_bits=N            1, 2, 4, 8, 16, 32 or 64 (default 16; v3 only
                                 for other than 16)
      extended_l2=on|off         32 subclusters per cluster (v3, >= 16k clusters)
      compression_type=zlib|zstd (default zlib; zstd needs v3)
      lazy_refcounts=on|off      (v3 only)
      backing_file=NAME          backing image; a relative NAME is relative to
                                 IMAGE's directory (it is opened to check it)
      backing_fmt=FMT            backing image format (required with
                                 backing_file; qcow2 and raw can be checked)
      data_file=NAME             external data file (v3). The name is stored
                                 as given; the file is created relative to the
                                 current directory, as qemu-img does.
      data_file_raw=on|off       keep the data file a valid raw image (implies
                                 preallocation=metadata)
      preallocation=off|metadata (falloc and full are not modelled)
  -q, --quiet      Accepted for qemu-img compatibility (nothing is printed
                   on success anyway).
  -h, --help       Show this help.

Exit codes:
  0  the image was created
  1  qemu-img would refuse the options or SIZE (its message on stderr, as
     'qcow2-ref: IMAGE: MESSAGE', or 'qcow2-ref: MESSAGE' for a bad SIZE), or a
     file could not be written; no file is created or changed
  2  usage error (unknown command-line option, missing IMAGE, extra argument,
     a format other than qcow2)
`;

/** What `-o help` prints: qemu-img 7.2's list, restricted to the options the model implements. */
export const CREATE_OPTIONS_HELP = `Supported qcow2 options:
  backing_file=<str>     - File name of a base image
  backing_fmt=<str>      - Image format of the base image
  cluster_size=<size>    - qcow2 cluster size
  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])
  compression_type=<str> - Compression method used for image cluster compression
  data_file=<str>        - File name of an external data file
  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image
  extended_l2=<bool (on/off)> - Extended L2 tables
  lazy_refcounts=<bool (on/off)> - Postpone refcount updates
  preallocation=<str>    - Preallocation mode (allowed values: off, metadata)
  refcount_bits=<num>    - Width of a reference count entry in bits
  size=<size>            - Virtual disk size

Not modelled by qcow2-ref: encrypt.*, encryption, preallocation=falloc|full.
`;

/** A refusal with qemu-img's message; `image` false when qemu-img prints no file name. */
export class CreateCliError extends Error {
  override readonly name = 'CreateCliError';
  constructor(message: string, readonly withImage = true) {
    super(message);
  }
}

type OptType = 'str' | 'size' | 'num' | 'bool';

/** qemu-img 7.2's qcow2 create options and their QemuOpts types. */
const OPTION_TYPES: Readonly<Record<string, OptType>> = {
  size: 'size',
  backing_file: 'str',
  backing_fmt: 'str',
  cluster_size: 'size',
  compat: 'str',
  compression_type: 'str',
  data_file: 'str',
  data_file_raw: 'bool',
  extended_l2: 'bool',
  lazy_refcounts: 'bool',
  preallocation: 'str',
  refcount_bits: 'num',
};

/** qemu-img options that exist but are not modelled. */
const UNMODELLED = new Set([
  'encryption',
  'encrypt.format',
  'encrypt.key-secret',
  'encrypt.cipher-alg',
  'encrypt.cipher-mode',
  'encrypt.ivgen-alg',
  'encrypt.ivgen-hash-alg',
  'encrypt.hash-alg',
  'encrypt.iter-time',
]);

const SIZE_SUFFIX_MESSAGE =
  'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.';

const SUFFIX_SHIFT: Readonly<Record<string, bigint>> = { b: 0n, k: 10n, m: 20n, g: 30n, t: 40n, p: 50n, e: 60n };

/**
 * qemu_strtosz (QEMU 7.2 util/cutils.c) with default suffix B: decimal integer, or `0x` hex (no
 * fraction, no suffix), optional fraction (only with a suffix other than B; rounded half up),
 * optional suffix b k m g t p e (any case). Returns the byte count, 'invalid' for bad syntax, or
 * 'range' above 2^64-1.
 */
export function parseQemuSize(text: string): bigint | 'invalid' | 'range' {
  const m = /^([0-9]+)(.*)$/s.exec(text);
  if (m === null) return 'invalid';
  let rest = m[2]!;
  let val = BigInt(m[1]!);
  let frac = '';
  if (val === 0n && /^[xX]/.test(rest)) {
    const h = /^[xX]([0-9a-fA-F]+)$/.exec(rest);
    if (h === null) return 'invalid';
    val = BigInt(`0x${h[1]!}`);
    return val >= 1n << 64n ? 'range' : val;
  }
  if (rest.startsWith('.')) {
    const f = /^\.([0-9]*)(.*)$/s.exec(rest)!;
    frac = f[1]!;
    rest = f[2]!;
    if (/^[eE][+-]?[0-9]/.test(rest)) return 'invalid'; // an exponent makes the whole input invalid
  }
  let shift = 0n;
  if (rest.length > 0) {
    const s = SUFFIX_SHIFT[rest[0]!.toLowerCase()];
    if (s === undefined || rest.length > 1) return 'invalid';
    shift = s;
  }
  if (shift === 0n) {
    if (/[1-9]/.test(frac)) return 'invalid'; // a fraction needs a scale
    return val >= 1n << 64n ? 'range' : val;
  }
  // Exact: (val + 0.frac) * 2^shift, rounded half up.
  let result = val << shift;
  if (frac.length > 0) {
    const denom = 10n ** BigInt(frac.length);
    const num = BigInt(frac) << shift;
    result += (2n * num + denom) / (2n * denom);
  }
  return result >= 1n << 64n ? 'range' : result;
}

/** qemu_strtou64 with base 0 (decimal, 0x hex, 0 octal; a leading '-' wraps like strtoull). */
function parseQemuNumber(text: string): bigint | undefined {
  const m = /^(-?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (m === null) return undefined;
  const body = m[2]!;
  let v = /^0[xX]/.test(body) ? BigInt(body) : body.length > 1 && body.startsWith('0') ? BigInt(`0o${body.slice(1)}`) : BigInt(body);
  if (v >= 1n << 64n) return undefined;
  if (m[1] === '-') v = ((1n << 64n) - v) & ((1n << 64n) - 1n);
  return v;
}

/** The option pairs of a create -o list (qemu-opts.ts), with create's option names known. */
function splitCreateOptions(list: string): Array<[string, string]> {
  return splitOptions(list, (name) => Object.hasOwn(OPTION_TYPES, name));
}

function hasHelpOption(list: string): boolean {
  return splitCreateOptions(list).some(([n, v]) => v === 'on' && (n === 'help' || n === '?'));
}

function parseBool(name: string, v: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(v)) return true;
  if (['off', 'no', 'false', 'n'].includes(v)) return false;
  throw new CreateCliError(`Parameter '${name}' expects 'on' or 'off'`);
}

/** The typed value of each -o option (last one wins), checked in order like qemu_opts_do_parse. */
function parseOptionValues(list: string): Map<string, string | bigint | boolean> {
  const values = new Map<string, string | bigint | boolean>();
  for (const [name, raw] of splitCreateOptions(list)) {
    if (UNMODELLED.has(name)) throw new CreateCliError(`Parameter '${name}' is not supported by qcow2-ref (encryption is not modelled)`);
    if (!Object.hasOwn(OPTION_TYPES, name)) throw new CreateCliError(`Invalid parameter '${name}'`);
    const type = OPTION_TYPES[name]!;
    if (type === 'str') values.set(name, raw);
    else if (type === 'bool') values.set(name, parseBool(name, raw));
    else if (type === 'num') {
      const n = parseQemuNumber(raw);
      if (n === undefined) throw new CreateCliError(`Parameter '${name}' expects a number`);
      values.set(name, n);
    } else {
      const n = parseQemuSize(raw);
      if (typeof n !== 'bigint') throw new CreateCliError(`Parameter '${name}' expects a non-negative number below 2^64\n${SIZE_SUFFIX_MESSAGE}`);
      values.set(name, n);
    }
  }
  return values;
}

/** qemu's path_combine: a relative `name` is taken relative to the directory of `base`. */
function relativeTo(base: string, name: string): string {
  if (isAbsolute(name)) return name;
  const slash = base.lastIndexOf('/');
  return slash < 0 ? name : `${base.slice(0, slash + 1)}${name}`;
}

const QCOW2_MAGIC = HEADER_MAGIC_U32;

/**
 * What bdrv_img_create does with a backing file before qcow2 sees the options: open it (a relative
 * name relative to IMAGE's directory), probe or check its format, and take its virtual size when no
 * size was given.
 */
async function inspectBacking(image: string, backing: string, fmt: string | undefined): Promise<bigint> {
  const path = relativeTo(image, backing);
  let head: Buffer;
  let length: bigint;
  try {
    const fh = await open(path, 'r');
    try {
      head = Buffer.alloc(32);
      const { bytesRead } = await fh.read(head, 0, 32, 0);
      head = head.subarray(0, bytesRead);
      length = BigInt((await fh.stat()).size);
    } finally {
      await fh.close();
    }
  } catch (e) {
    const why = errnoText(e);
    throw new CreateCliError(`Could not open '${path}': ${why}\nCould not open backing image.`);
  }
  const isQcow2 = head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC;
  if (fmt === undefined) {
    throw new CreateCliError(`Backing file specified without backing format\nDetected format of ${isQcow2 ? 'qcow2' : 'raw'}.`);
  }
  if (fmt === 'qcow2') {
    const size = HeaderLayout.size;
    if (!isQcow2 || head.length < size.offset + size.size) throw new CreateCliError('Image is not in qcow2 format\nCould not open backing image.');
    return head.readBigUInt64BE(size.offset);
  }
  if (fmt === 'raw') return length;
  return -1n; // another format: qcow2-ref cannot read its size
}

/** The createImage options for a parsed command line; throws CreateCliError with qemu-img's message. */
async function resolveCreate(image: string, sizeArg: string | undefined, optionList: string): Promise<CreateOptions> {
  // img_create parses SIZE first (cvtnum_full: no file name in the message).
  let size = -1n;
  if (sizeArg !== undefined) {
    const s = parseQemuSize(sizeArg);
    if (s === 'invalid') {
      throw new CreateCliError(
        'Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nqcow2-ref: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
        false,
      );
    }
    if (s === 'range' || s > (1n << 63n) - 1n) {
      throw new CreateCliError('Invalid image size specified. Must be between 0 and 9223372036854775807.', false);
    }
    size = s;
  }
  // bdrv_img_create: -o options, size given twice, backing file checks, then the size.
  const v = optionList === '' ? new Map<string, string | bigint | boolean>() : parseOptionValues(optionList);
  if (v.has('size')) {
    if (size !== -1n) throw new CreateCliError('The image size must be specified only once');
    size = v.get('size') as bigint;
  }
  const backingFile = v.get('backing_file') as string | undefined;
  const backingFmt = v.get('backing_fmt') as string | undefined;
  if (backingFile !== undefined) {
    if (backingFile === image) throw new CreateCliError('Error: Trying to create an image with the same filename as the backing file');
    if (backingFile === '') throw new CreateCliError('Expected backing file name, got empty string');
    const backingSize = await inspectBacking(image, backingFile, backingFmt);
    if (size === -1n) {
      if (backingSize < 0n) throw new CreateCliError(`Cannot determine the size of a '${backingFmt}' backing image; give SIZE`);
      size = backingSize;
    }
  }
  if (size === -1n) throw new CreateCliError('Image creation needs a size parameter');
  if (size > (1n << 63n) - 1n) throw new CreateCliError('Invalid image size specified. Must be between 0 and 9223372036854775807.', false);
  const num = (k: string): number | undefined => (v.has(k) ? Number(v.get(k) as bigint) : undefined);
  const opt = <T>(k: string): T | undefined => v.get(k) as T | undefined;
  const o: Record<string, unknown> = {
    size,
    clusterSize: num('cluster_size'),
    compat: opt<string>('compat'),
    refcountBits: num('refcount_bits'),
    extendedL2: opt<boolean>('extended_l2'),
    compressionType: opt<string>('compression_type'),
    lazyRefcounts: opt<boolean>('lazy_refcounts'),
    backingFile,
    backingFmt,
    dataFile: opt<string>('data_file'),
    dataFileRaw: opt<boolean>('data_file_raw'),
    preallocation: opt<string>('preallocation'),
  };
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o as unknown as CreateOptions;
}


/** Runs `create` with the arguments after the command name; returns the exit code. */
export async function runCreate(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(args, {
    format: { type: 'string', short: 'f' },
    options: { type: 'string', short: 'o', multiple: true },
    quiet: { type: 'boolean', short: 'q' },
  }, true);
  if (parsed.values.help === true) return showHelp(io, CREATE_HELP);
  const format = parsed.values.format ?? 'qcow2';
  if (format !== 'qcow2') throw new UsageError(`only -f qcow2 is supported, not '${format}'`);
  // accumulate_options: each -o is checked, then they are joined with ','.
  const lists = parsed.values.options ?? [];
  for (const l of lists) {
    if (!isValidOptionList(l)) {
      io.stderr(`qcow2-ref: Invalid option list: ${l}\n`);
      return EXIT_DECODE;
    }
  }
  const optionList = lists.join(',');
  if (optionList !== '' && hasHelpOption(optionList)) {
    io.stdout(CREATE_OPTIONS_HELP);
    return EXIT_OK;
  }
  const pos = parsed.positionals;
  if (pos.length === 0) throw new UsageError('missing IMAGE');
  if (pos.length > 2) throw new UsageError(`unexpected argument: ${pos[2]}`);
  const image = pos[0]!;

  let result;
  let opts: CreateOptions;
  try {
    opts = await resolveCreate(image, pos[1], optionList);
    result = createImage(opts);
  } catch (e) {
    if (e instanceof CreateCliError) {
      io.stderr(e.withImage ? `qcow2-ref: ${image}: ${e.message}\n` : `qcow2-ref: ${e.message}\n`);
      return EXIT_DECODE;
    }
    if (e instanceof CreateError) {
      io.stderr(e.code === 'invalid-size' ? `qcow2-ref: ${e.message}\n` : `qcow2-ref: ${image}: ${e.message}\n`);
      return EXIT_DECODE;
    }
    throw e;
  }

  // Write every file to a temporary name first; rename only when all are complete.
  const dataName = opts.dataFile;
  const jobs: Array<{ target: string; temp: string; file: HostFile }> = [];
  if (result.dataFile !== undefined && dataName !== undefined) {
    // qemu-img creates the data file relative to the current directory (not IMAGE's directory).
    jobs.push({ target: dataName, temp: tempPathBeside(dataName), file: result.dataFile });
  }
  jobs.push({ target: image, temp: tempPathBeside(image), file: result.image.file });
  try {
    for (const j of jobs) {
      await refuseDirectory(j.target);
      await writeHostFile(j.temp, j.file);
    }
    for (const j of jobs) await rename(j.temp, j.target);
  } catch (e) {
    for (const j of jobs) await rm(j.temp, { force: true });
    const err = e as NodeJS.ErrnoException;
    io.stderr(`qcow2-ref: ${image}: Could not create '${err.path ?? image}': ${err.code ?? err.message}\n`);
    return EXIT_DECODE;
  }
  return EXIT_OK;
}

async function refuseDirectory(path: string): Promise<void> {
  const s = await stat(path).catch(() => undefined);
  if (s?.isDirectory() === true) {
    const e = new Error(`${path} is a directory`) as NodeJS.ErrnoException;
    e.code = 'EISDIR';
    e.path = path;
    throw e;
  }
}
