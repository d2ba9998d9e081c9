/**
 * Typed drivers for qemu-img and qemu-io (QEMU 7.2). Each function builds one argument vector,
 * runs it through `runTool`, and either returns parsed, validated output or throws a
 * `QemuCommandError` naming the command line and stderr. JSON is parsed with `parseQemuJson`, which
 * keeps every integer exact: integers that fit in a double stay `number`, larger ones become
 * `bigint` (never silently rounded). Fields that are bounded by the format (cluster size, refcount
 * width, counts of bitmaps …) are typed `number` and validated as such; byte sizes, offsets and
 * cluster counts that could exceed 2^53 on a huge image are typed `QemuInt` (number | bigint).
 */
import { QemuCommandError, runTool, type QemuTool, type RunOptions, type RunResult } from './run.ts';

// ---------------------------------------------------------------------------------------------
// JSON that keeps big integers

/** An integer as printed by QEMU: a `number` when it is a safe integer, otherwise a `bigint`. */
export type QemuInt = number | bigint;

/** A parsed JSON value in which integers beyond Number.MAX_SAFE_INTEGER are `bigint`. */
export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | { [key: string]: JsonValue };

/** Thrown when QEMU prints something that is not the JSON shape this module expects. */
export class QemuOutputError extends Error {
  override readonly name = 'QemuOutputError';
}

/**
 * Parses JSON text exactly: an integer literal (no fraction, no exponent) becomes a `number` if it is
 * a safe integer and a `bigint` otherwise; other numbers become `number`. Strings, arrays and objects
 * are as in JSON.parse (duplicate keys: last wins). Throws QemuOutputError on malformed input.
 */
export function parseQemuJson(text: string): JsonValue {
  // Sticky (y) regexes match exactly at lastIndex; the string grammar is JSON's, so JSON.parse can decode the literal.
  const NUMBER = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
  const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
  let i = 0;
  const fail = (what: string): never => {
    throw new QemuOutputError(`invalid JSON at character ${i}: ${what} (text starts: ${JSON.stringify(text.slice(0, 80))})`);
  };
  const skipWs = (): void => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\n' || text[i] === '\r' || text[i] === '\t')) i++;
  };
  /** The members of an object or array from its opening bracket (at `i`) past `close`, each read by `member`. */
  const members = (close: '}' | ']', member: () => void): void => {
    i++;
    skipWs();
    if (text[i] === close) {
      i++;
      return;
    }
    for (;;) {
      member();
      skipWs();
      if (text[i] === ',') {
        i++;
        continue;
      }
      if (text[i] === close) {
        i++;
        return;
      }
      fail(`expected ',' or '${close}'`);
    }
  };
  const value = (): JsonValue => {
    skipWs();
    const c = text[i];
    if (c === '{') {
      const obj: { [key: string]: JsonValue } = {};
      members('}', () => {
        skipWs();
        if (text[i] !== '"') fail('expected a key');
        const key = string();
        skipWs();
        if (text[i] !== ':') fail("expected ':'");
        i++;
        obj[key] = value();
      });
      return obj;
    }
    if (c === '[') {
      const arr: JsonValue[] = [];
      members(']', () => arr.push(value()));
      return arr;
    }
    if (c === '"') return string();
    if (text.startsWith('true', i)) {
      i += 4;
      return true;
    }
    if (text.startsWith('false', i)) {
      i += 5;
      return false;
    }
    if (text.startsWith('null', i)) {
      i += 4;
      return null;
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m === null) return fail('unexpected character');
    i += m[0].length;
    if (m[2] === undefined && m[3] === undefined) {
      const n = Number(m[0]);
      return Number.isSafeInteger(n) ? n : BigInt(m[0]);
    }
    return Number(m[0]);
  };
  const string = (): string => {
    STRING.lastIndex = i;
    const m = STRING.exec(text);
    if (m === null) return fail('bad string');
    i += m[0].length;
    return JSON.parse(m[0]) as string;
  };
  const result = value();
  skipWs();
  if (i !== text.length) fail('trailing characters');
  return result;
}

/** Converts a QemuInt to bigint (exact). */
export function toBigInt(v: QemuInt): bigint {
  return typeof v === 'bigint' ? v : BigInt(v);
}

/** Returns `v` as a number, throwing if it is a bigint (i.e. beyond 2^53 and not exactly representable). */
export function toSafeNumber(v: QemuInt, what = 'value'): number {
  if (typeof v === 'bigint') throw new RangeError(`${what} = ${v} does not fit in a safe integer`);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Output types (qemu-img 7.2 key names, verbatim)

/** One internal snapshot as listed by `qemu-img info --output=json`. */
export interface QemuSnapshotInfo {
  readonly id: string;
  readonly name: string;
  readonly 'vm-state-size': QemuInt;
  readonly 'date-sec': QemuInt;
  readonly 'date-nsec': number;
  readonly 'vm-clock-sec': QemuInt;
  readonly 'vm-clock-nsec': number;
  /** Present in 7.2 output (0 when written by qemu-img). */
  readonly icount?: QemuInt;
  readonly [key: string]: unknown;
}

/** One persistent dirty bitmap as listed in format-specific data. */
export interface QemuBitmapInfo {
  readonly name: string;
  readonly granularity: number;
  /** e.g. ['auto'], ['in-use', 'auto']. */
  readonly flags: readonly string[];
  readonly [key: string]: unknown;
}

/**
 * `format-specific.data` of a qcow2 image. compat 0.10 images carry only compat, compression-type
 * and refcount-bits; the v3-only keys are then absent.
 */
export interface Qcow2FormatSpecificData {
  readonly compat: string;
  readonly 'compression-type'?: string;
  readonly 'lazy-refcounts'?: boolean;
  readonly 'refcount-bits': number;
  readonly corrupt?: boolean;
  readonly 'extended-l2'?: boolean;
  /** The external data file name exactly as stored in the header extension. */
  readonly 'data-file'?: string;
  readonly 'data-file-raw'?: boolean;
  readonly bitmaps?: readonly QemuBitmapInfo[];
  /** LUKS/AES details (format, cipher-alg, slots, payload-offset, …), kept as printed. */
  readonly encrypt?: { readonly format: string; readonly [key: string]: unknown };
  readonly [key: string]: unknown;
}

/** `qemu-img info --output=json` for one image. Keys qemu-img 7.2 prints are typed; others are kept. */
export interface QemuImgInfo {
  readonly 'virtual-size': QemuInt;
  readonly filename: string;
  readonly format: string;
  /** Absent for formats without clusters (raw). */
  readonly 'cluster-size'?: number;
  readonly 'actual-size'?: QemuInt;
  readonly 'dirty-flag'?: boolean;
  readonly encrypted?: boolean;
  /** For qcow2, use `qcow2Specific(info)` to get the typed data. */
  readonly 'format-specific'?: { readonly type: string; readonly data: { readonly [key: string]: unknown } };
  readonly snapshots?: readonly QemuSnapshotInfo[];
  readonly 'backing-filename'?: string;
  readonly 'full-backing-filename'?: string;
  readonly 'backing-filename-format'?: string;
  readonly [key: string]: unknown;
}

/** One extent of `qemu-img map --output=json` (7.2 has no `compressed` key; newer QEMU adds it). */
export interface QemuMapExtent {
  readonly start: QemuInt;
  readonly length: QemuInt;
  /** Number of backing layers descended to find the owner of the range (0 = top image). */
  readonly depth: number;
  readonly present: boolean;
  readonly zero: boolean;
  readonly data: boolean;
  /** Host offset in the owning layer's data file; absent for compressed/encrypted/unallocated. */
  readonly offset?: QemuInt;
  readonly compressed?: boolean;
  readonly [key: string]: unknown;
}

/**
 * `qemu-img check --output=json`. In 7.2 every counter whose value is 0 is OMITTED; only
 * check-errors, filename and format are always present. Use `checkCounter` to read a counter.
 */
export interface QemuCheckJson {
  readonly filename: string;
  readonly format: string;
  readonly 'check-errors': number;
  readonly 'image-end-offset'?: QemuInt;
  readonly 'total-clusters'?: QemuInt;
  readonly 'allocated-clusters'?: QemuInt;
  readonly 'fragmented-clusters'?: QemuInt;
  readonly 'compressed-clusters'?: QemuInt;
  readonly corruptions?: QemuInt;
  readonly leaks?: QemuInt;
  readonly 'corruptions-fixed'?: QemuInt;
  readonly 'leaks-fixed'?: QemuInt;
  readonly [key: string]: unknown;
}

/** The numeric counters of a check report. */
export type QemuCheckCounter =
  | 'image-end-offset'
  | 'total-clusters'
  | 'allocated-clusters'
  | 'fragmented-clusters'
  | 'compressed-clusters'
  | 'corruptions'
  | 'leaks'
  | 'corruptions-fixed'
  | 'leaks-fixed'
  | 'check-errors';

/**
 * Result of `qemu-img check`: the exit code (0 clean, 1 check failed, 2 corruptions, 3 leaks only,
 * 63 format cannot be checked) and the JSON report when qemu-img printed one (it prints none when
 * the check itself failed).
 */
export interface QemuCheckResult {
  readonly code: number;
  readonly json?: QemuCheckJson;
  readonly stdout: string;
  readonly stderr: string;
}

// ---------------------------------------------------------------------------------------------
// How an image is opened

/** How qemu-img/qemu-io open the image given as `path`. */
export interface QemuOpenOptions extends RunOptions {
  /** Format passed with `-f` (default 'qcow2'). Ignored when the image is opened with image-opts. */
  readonly format?: string;
  /** Values for `--object` (one flag each), e.g. `secret,id=sec0,data=123456`. */
  readonly objects?: readonly string[];
  /** If true, `path` is an `--image-opts` string (e.g. `driver=qcow2,file.filename=a.qcow2`), passed as is. */
  readonly imageOpts?: boolean;
  /**
   * Convenience for LUKS-encrypted qcow2: opens `path` (a file name) with a secret object holding
   * this passphrase and `--image-opts driver=qcow2,file.filename=…,encrypt.key-secret=…`.
   */
  readonly luksSecret?: string;
}

const LUKS_SECRET_ID = 'qcow2ref-luks-secret';

/** Escapes a value for QEMU's option syntax (`key=value,key=value`): a comma is written twice. */
export function escapeQemuOptionValue(v: string): string {
  return v.replace(/,/g, ',,');
}

/** The arguments that name and open one image, filename last (all qemu-img subcommands and qemu-io accept this order). */
function openArgs(path: string, opts: QemuOpenOptions, defaultFormat: string | undefined): string[] {
  const args: string[] = [];
  for (const o of opts.objects ?? []) args.push('--object', o);
  if (opts.luksSecret !== undefined) {
    args.push('--object', `secret,id=${LUKS_SECRET_ID},data=${escapeQemuOptionValue(opts.luksSecret)}`);
    args.push(
      '--image-opts',
      `driver=${opts.format ?? 'qcow2'},file.filename=${escapeQemuOptionValue(path)},encrypt.key-secret=${LUKS_SECRET_ID}`,
    );
    return args;
  }
  if (opts.imageOpts === true) {
    args.push('--image-opts', path);
    return args;
  }
  const format = opts.format ?? defaultFormat;
  if (format !== undefined) args.push('-f', format);
  args.push(path);
  return args;
}

/**
 * Like openArgs, for subcommands without `-f` (qemu-img 7.2 `snapshot` only probes): a format is
 * forced with `--image-opts driver=<format>,file.filename=<path>` instead of being probed.
 */
function openArgsNoFormatFlag(path: string, opts: QemuOpenOptions, defaultFormat: string): string[] {
  if (opts.luksSecret !== undefined || opts.imageOpts === true) return openArgs(path, opts, undefined);
  const args: string[] = [];
  for (const o of opts.objects ?? []) args.push('--object', o);
  args.push('--image-opts', `driver=${opts.format ?? defaultFormat},file.filename=${escapeQemuOptionValue(path)}`);
  return args;
}

function runOpts(opts: RunOptions): RunOptions {
  return {
    ...(opts.env !== undefined ? { env: opts.env } : {}),
    ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    ...(opts.runner !== undefined ? { runner: opts.runner } : {}),
  };
}

async function runOk(tool: QemuTool, args: string[], opts: RunOptions, what: string): Promise<RunResult> {
  const r = await runTool(tool, args, runOpts(opts));
  if (r.code !== 0) throw new QemuCommandError(tool, args, r, what);
  return r;
}

// ---------------------------------------------------------------------------------------------
// qemu-img create

/**
 * Message qemu 7.2 gives when its LUKS PBKDF2 benchmark (first round: 2^15 iterations, a few ms)
 * measures 0 ms of thread user time via getrusage(RUSAGE_THREAD), which has tick granularity on
 * some kernels. Observed on the dev VM in about half of all LUKS creates; a failed attempt costs ~10 ms.
 */
const FLAKY_LUKS_BENCHMARK = 'Unable to get accurate CPU usage';
const CREATE_ATTEMPTS = 20;

/**
 * The argument vector `qemuImgCreate` runs (after `qemu-img`), for logs and replay:
 * `create -q -f <format> [-o k=v,…] [extraArgs…] path size`. Throws RangeError for a size that is a
 * number but not a non-negative safe integer (pass a string for anything larger).
 */
export function qemuImgCreateArgs(
  path: string,
  sizeBytes: number | string,
  options: Readonly<Record<string, string>>,
  extraArgs: readonly string[] = [],
  format = 'qcow2',
): string[] {
  if (typeof sizeBytes === 'number' && !(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0)) {
    throw new RangeError(`qemuImgCreate: size must be a non-negative safe integer, got ${sizeBytes}`);
  }
  const o = Object.entries(options)
    .map(([k, v]) => `${k}=${escapeQemuOptionValue(v)}`)
    .join(',');
  return ['create', '-q', '-f', format, ...(o === '' ? [] : ['-o', o]), ...extraArgs, path, String(sizeBytes)];
}

/**
 * Creates an image with `qemu-img create -q -f <format> [-o k=v,…] [extraArgs…] path size`.
 * `options` are the `-o` options in the order given (values are comma-escaped), e.g.
 * `{ cluster_size: '4096', refcount_bits: '1' }`. `sizeBytes` is a byte count or a qemu size string
 * ('64M'). `extraArgs` go before the file name (e.g. `['--object', 'secret,id=sec0,data=…']`).
 * Throws QemuCommandError on failure. Retries only when qemu 7.2's LUKS key-derivation benchmark
 * fails with "Unable to get accurate CPU usage", which is a timing artefact, not an image problem.
 */
export async function qemuImgCreate(
  path: string,
  sizeBytes: number | string,
  options: Readonly<Record<string, string>>,
  extraArgs: readonly string[] = [],
  format = 'qcow2',
  runOptions: RunOptions = {},
): Promise<void> {
  const args = qemuImgCreateArgs(path, sizeBytes, options, extraArgs, format);
  for (let attempt = 1; ; attempt++) {
    const r = await runTool('qemu-img', args, runOpts(runOptions));
    if (r.code === 0) return;
    if (attempt < CREATE_ATTEMPTS && r.stderr.includes(FLAKY_LUKS_BENCHMARK)) continue;
    throw new QemuCommandError('qemu-img', args, r, `qemu-img create of ${path} failed`);
  }
}

// ---------------------------------------------------------------------------------------------
// qemu-img info

/** Options for qemuImgInfo. */
export interface QemuInfoOptions extends QemuOpenOptions {
  /** Pass `--backing-chain` and return every layer, top first. */
  readonly backingChain?: boolean;
}

/**
 * Runs `qemu-img info --output=json` (with `-f qcow2` unless `format`/image-opts say otherwise) and
 * returns the validated report. With `backingChain: true` returns one report per layer, top image
 * first. Throws QemuCommandError on non-zero exit, QemuOutputError on unexpected JSON.
 */
export async function qemuImgInfo(path: string, opts: QemuInfoOptions & { backingChain: true }): Promise<QemuImgInfo[]>;
export async function qemuImgInfo(path: string, opts?: QemuInfoOptions & { backingChain?: false }): Promise<QemuImgInfo>;
export async function qemuImgInfo(path: string, opts: QemuInfoOptions = {}): Promise<QemuImgInfo | QemuImgInfo[]> {
  const args = ['info', '--output=json', ...(opts.backingChain === true ? ['--backing-chain'] : []), ...openArgs(path, opts, 'qcow2')];
  const r = await runOk('qemu-img', args, opts, `qemu-img info of ${path} failed`);
  const json = parseQemuJson(r.stdout);
  if (opts.backingChain === true) {
    if (!Array.isArray(json)) throw new QemuOutputError(`qemu-img info --backing-chain: expected an array, got ${r.stdout.slice(0, 200)}`);
    return json.map((j, n) => validateInfo(j, `info[${n}]`));
  }
  return validateInfo(json, 'info');
}

/** Returns the typed qcow2 `format-specific.data` of an info report; throws if the image is not qcow2. */
export function qcow2Specific(info: QemuImgInfo): Qcow2FormatSpecificData {
  const fs = info['format-specific'];
  if (fs === undefined || fs.type !== 'qcow2') {
    throw new QemuOutputError(`${info.filename}: no qcow2 format-specific data (format ${info.format})`);
  }
  return fs.data as Qcow2FormatSpecificData;
}

// ---------------------------------------------------------------------------------------------
// qemu-img map

/**
 * Runs `qemu-img map --output=json` and returns the extents in order, validated. The extents of a
 * readable image cover [0, virtual size) contiguously. Throws QemuCommandError on non-zero exit.
 */
export async function qemuImgMap(path: string, opts: QemuOpenOptions = {}): Promise<QemuMapExtent[]> {
  const args = ['map', '--output=json', ...openArgs(path, opts, 'qcow2')];
  const r = await runOk('qemu-img', args, opts, `qemu-img map of ${path} failed`);
  const json = parseQemuJson(r.stdout);
  if (!Array.isArray(json)) throw new QemuOutputError(`qemu-img map: expected an array, got ${r.stdout.slice(0, 200)}`);
  return json.map((e, n) => validateMapExtent(e, `map[${n}]`));
}

// ---------------------------------------------------------------------------------------------
// qemu-img check

/** Options for qemuImgCheck. */
export interface QemuCheckOptions extends QemuOpenOptions {
  /** `-r leaks` or `-r all` (opens the image read-write and may modify it). Default: no repair. */
  readonly repair?: 'leaks' | 'all';
}

/**
 * Runs `qemu-img check --output=json` and returns the exit code with the parsed report (when one
 * was printed). Never throws for a non-zero exit: the code is the answer (0 clean, 1 check failed,
 * 2 corruptions, 3 leaks only, 63 unsupported format). Throws only if the tool is missing, was
 * killed by a signal (a crash), or printed malformed JSON.
 */
export async function qemuImgCheck(path: string, opts: QemuCheckOptions = {}): Promise<QemuCheckResult> {
  const args = ['check', '--output=json', ...(opts.repair !== undefined ? ['-r', opts.repair] : []), ...openArgs(path, opts, 'qcow2')];
  const r = await runTool('qemu-img', args, runOpts(opts));
  if (r.code === null) throw new QemuCommandError('qemu-img', args, r, `qemu-img check of ${path} crashed`);
  const text = r.stdout.trim();
  // With --output=json the report is the only thing on stdout; diagnostics go to stderr.
  const jsonStart = text.indexOf('{');
  if (jsonStart < 0) return { code: r.code, stdout: r.stdout, stderr: r.stderr };
  const json = validateCheck(parseQemuJson(text.slice(jsonStart)), 'check');
  return { code: r.code, json, stdout: r.stdout, stderr: r.stderr };
}

/** Reads a check counter, returning 0 when qemu-img omitted it (7.2 omits zero-valued counters). */
export function checkCounter(json: QemuCheckJson, key: QemuCheckCounter): QemuInt {
  const v = json[key];
  return v === undefined ? 0 : v;
}

// ---------------------------------------------------------------------------------------------
// qemu-img compare / convert

/** Options for qemuImgCompare. */
export interface QemuCompareOptions extends RunOptions {
  /** Format of the first image (`-f`, default qcow2). */
  readonly formatA?: string;
  /** Format of the second image (`-F`, default raw). */
  readonly formatB?: string;
  /** `-s`: images of different sizes differ, and an allocated-zero area differs from an unallocated one. */
  readonly strict?: boolean;
}

/** What `qemu-img compare` said: exit code 0 identical, 1 different, 2 error; stdout names the first difference. */
export interface QemuCompareResult {
  readonly identical: boolean;
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `qemu-img compare [-s] -f A -F B a b`. Returns identical (exit 0) or different (exit 1) with
 * QEMU's message ("Content mismatch at offset N!" / "Image size mismatch!"); throws QemuCommandError
 * for exit 2 (an image could not be opened or read) or a crash.
 */
export async function qemuImgCompare(a: string, b: string, opts: QemuCompareOptions = {}): Promise<QemuCompareResult> {
  const args = ['compare', ...(opts.strict === true ? ['-s'] : []), '-f', opts.formatA ?? 'qcow2', '-F', opts.formatB ?? 'raw', a, b];
  const r = await runTool('qemu-img', args, runOpts(opts));
  if (r.code !== 0 && r.code !== 1) throw new QemuCommandError('qemu-img', args, r, `qemu-img compare of ${a} and ${b} failed`);
  return { identical: r.code === 0, code: r.code, stdout: r.stdout, stderr: r.stderr };
}

/** Options for qemuImgConvert. */
export interface QemuConvertOptions extends RunOptions {
  /** Input format (`-f`, default qcow2). */
  readonly inFormat?: string;
  /** Output format (`-O`, default raw). */
  readonly outFormat?: string;
  /** `-c`: compress the output (qcow2 only). */
  readonly compress?: boolean;
  /** `-o` creation options of the output, in order. */
  readonly options?: Readonly<Record<string, string>>;
}

/** Runs `qemu-img convert -q -f IN -O OUT [-c] [-o …] in out`; throws QemuCommandError on failure. */
export async function qemuImgConvert(input: string, output: string, opts: QemuConvertOptions = {}): Promise<void> {
  const o = Object.entries(opts.options ?? {}).map(([k, v]) => `${k}=${escapeQemuOptionValue(v)}`).join(',');
  const args = ['convert', '-q', '-f', opts.inFormat ?? 'qcow2', '-O', opts.outFormat ?? 'raw',
    ...(opts.compress === true ? ['-c'] : []), ...(o === '' ? [] : ['-o', o]), input, output];
  await runOk('qemu-img', args, opts, `qemu-img convert of ${input} to ${output} failed`);
}

/** Runs `qemu-img resize [--shrink] -f qcow2 path size`; throws QemuCommandError on failure. */
export async function qemuImgResize(path: string, size: bigint, opts: QemuOpenOptions & { readonly shrink?: boolean } = {}): Promise<void> {
  const args = ['resize', '-q', ...(opts.shrink === true ? ['--shrink'] : []), ...openArgs(path, opts, 'qcow2'), String(size)];
  await runOk('qemu-img', args, opts, `qemu-img resize of ${path} to ${size} failed`);
}

// ---------------------------------------------------------------------------------------------
// qemu-img snapshot / bitmap

/**
 * Runs `qemu-img snapshot -c|-a|-d name` on a qcow2 image (create, apply, delete an internal
 * snapshot). 7.2's snapshot subcommand has no `-f`, so the format is forced through `--image-opts`
 * (never probed). Throws QemuCommandError on failure (e.g. refcount_bits=1, external data file).
 */
export async function qemuImgSnapshot(
  path: string,
  op: 'create' | 'apply' | 'delete',
  name: string,
  opts: QemuOpenOptions = {},
): Promise<void> {
  const flag = op === 'create' ? '-c' : op === 'apply' ? '-a' : '-d';
  const args = ['snapshot', flag, name, ...openArgsNoFormatFlag(path, opts, 'qcow2')];
  await runOk('qemu-img', args, opts, `qemu-img snapshot ${flag} ${name} on ${path} failed`);
}

/** Options for qemuImgBitmapAdd. */
export interface QemuBitmapAddOptions extends QemuOpenOptions {
  /** Bitmap granularity in bytes (`-g`); default: QEMU's choice (the cluster size, min 64 KiB cap rules apply). */
  readonly granularity?: number;
  /** Create the bitmap disabled (`--disable`): it then records no writes. */
  readonly disabled?: boolean;
}

/**
 * Runs `qemu-img bitmap --add [-g granularity] [--disable] path name`, adding a persistent dirty
 * bitmap. Throws QemuCommandError on failure (e.g. the name exists, compat 0.10).
 */
export async function qemuImgBitmapAdd(path: string, name: string, opts: QemuBitmapAddOptions = {}): Promise<void> {
  const args = [
    'bitmap',
    '--add',
    ...(opts.granularity !== undefined ? ['-g', String(opts.granularity)] : []),
    ...(opts.disabled === true ? ['--disable'] : []),
    ...openArgs(path, opts, 'qcow2'),
    name,
  ];
  await runOk('qemu-img', args, opts, `qemu-img bitmap --add ${name} on ${path} failed`);
}

// ---------------------------------------------------------------------------------------------
// qemu-io

/** Options for qemuIo. */
export interface QemuIoOptions extends QemuOpenOptions {
  /**
   * The commands end with `abort` on purpose: succeed only if qemu-io died of SIGABRT (the image is
   * left exactly as a crash would leave it), and throw if it exited normally.
   */
  readonly expectAbort?: boolean;
}

/** The argument vector `qemuIo` runs (after `qemu-io`): `-c cmd…` then the open arguments, image last. */
export function qemuIoArgs(path: string, commands: readonly string[], opts: QemuOpenOptions = {}): string[] {
  return [...commands.flatMap((c) => ['-c', c]), ...openArgs(path, opts, 'qcow2')];
}

/**
 * Runs all `commands` in ONE qemu-io process (`qemu-io [-f qcow2] -c cmd1 -c cmd2 … path`), in order,
 * and returns its output. qemu-io 7.2 exits 1 if any command failed (and runs the rest anyway);
 * that, or any other non-zero exit, throws QemuCommandError. See `expectAbort` for crash simulation.
 */
export async function qemuIo(path: string, commands: readonly string[], opts: QemuIoOptions = {}): Promise<RunResult> {
  const args = qemuIoArgs(path, commands, opts);
  const r = await runTool('qemu-io', args, runOpts(opts));
  if (opts.expectAbort === true) {
    if (r.signal !== 'SIGABRT') throw new QemuCommandError('qemu-io', args, r, `qemu-io on ${path} was expected to abort`);
    return r;
  }
  if (r.code !== 0) throw new QemuCommandError('qemu-io', args, r, `qemu-io on ${path} failed`);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Validation of parsed JSON

type JsonObject = { [key: string]: JsonValue };

function asObject(v: JsonValue | undefined, where: string): JsonObject {
  if (v === null || v === undefined || typeof v !== 'object' || Array.isArray(v)) {
    throw new QemuOutputError(`${where}: expected an object, got ${describe(v)}`);
  }
  return v;
}

function describe(v: JsonValue | undefined): string {
  if (v === undefined) return 'nothing';
  if (typeof v === 'bigint') return `${v}n`;
  return JSON.stringify(v)?.slice(0, 100) ?? String(v);
}

type Kind = 'string' | 'boolean' | 'int' | 'small-int' | 'array' | 'object';

function checkField(o: JsonObject, key: string, kind: Kind, required: boolean, where: string): void {
  const v = o[key];
  if (v === undefined) {
    if (required) throw new QemuOutputError(`${where}: missing key '${key}'`);
    return;
  }
  const ok =
    kind === 'string'
      ? typeof v === 'string'
      : kind === 'boolean'
        ? typeof v === 'boolean'
        : kind === 'int'
          ? (typeof v === 'number' && Number.isInteger(v)) || typeof v === 'bigint'
          : kind === 'small-int'
            ? typeof v === 'number' && Number.isSafeInteger(v)
            : kind === 'array'
              ? Array.isArray(v)
              : v !== null && typeof v === 'object' && !Array.isArray(v);
  if (!ok) throw new QemuOutputError(`${where}: key '${key}' should be ${kind}, got ${describe(v)}`);
}

function validateInfo(v: JsonValue, where: string): QemuImgInfo {
  const o = asObject(v, where);
  checkField(o, 'virtual-size', 'int', true, where);
  checkField(o, 'filename', 'string', true, where);
  checkField(o, 'format', 'string', true, where);
  checkField(o, 'cluster-size', 'small-int', false, where);
  checkField(o, 'actual-size', 'int', false, where);
  checkField(o, 'dirty-flag', 'boolean', false, where);
  checkField(o, 'encrypted', 'boolean', false, where);
  checkField(o, 'backing-filename', 'string', false, where);
  checkField(o, 'full-backing-filename', 'string', false, where);
  checkField(o, 'backing-filename-format', 'string', false, where);
  checkField(o, 'snapshots', 'array', false, where);
  (o['snapshots'] as JsonValue[] | undefined)?.forEach((s, n) => {
    const w = `${where}.snapshots[${n}]`;
    const so = asObject(s, w);
    checkField(so, 'id', 'string', true, w);
    checkField(so, 'name', 'string', true, w);
    checkField(so, 'vm-state-size', 'int', true, w);
    checkField(so, 'date-sec', 'int', true, w);
    checkField(so, 'date-nsec', 'small-int', true, w);
    checkField(so, 'vm-clock-sec', 'int', true, w);
    checkField(so, 'vm-clock-nsec', 'small-int', true, w);
    checkField(so, 'icount', 'int', false, w);
  });
  checkField(o, 'format-specific', 'object', false, where);
  const fs = o['format-specific'];
  if (fs !== undefined) {
    const w = `${where}.format-specific`;
    const fso = asObject(fs, w);
    checkField(fso, 'type', 'string', true, w);
    checkField(fso, 'data', 'object', true, w);
    if (fso['type'] === 'qcow2') validateQcow2Data(asObject(fso['data'], `${w}.data`), `${w}.data`);
  }
  return o as unknown as QemuImgInfo;
}

function validateQcow2Data(o: JsonObject, where: string): void {
  checkField(o, 'compat', 'string', true, where);
  checkField(o, 'compression-type', 'string', false, where);
  checkField(o, 'lazy-refcounts', 'boolean', false, where);
  checkField(o, 'refcount-bits', 'small-int', true, where);
  checkField(o, 'corrupt', 'boolean', false, where);
  checkField(o, 'extended-l2', 'boolean', false, where);
  checkField(o, 'data-file', 'string', false, where);
  checkField(o, 'data-file-raw', 'boolean', false, where);
  checkField(o, 'encrypt', 'object', false, where);
  if (o['encrypt'] !== undefined) checkField(asObject(o['encrypt'], `${where}.encrypt`), 'format', 'string', true, `${where}.encrypt`);
  checkField(o, 'bitmaps', 'array', false, where);
  (o['bitmaps'] as JsonValue[] | undefined)?.forEach((b, n) => {
    const w = `${where}.bitmaps[${n}]`;
    const bo = asObject(b, w);
    checkField(bo, 'name', 'string', true, w);
    checkField(bo, 'granularity', 'small-int', true, w);
    checkField(bo, 'flags', 'array', true, w);
  });
}

function validateMapExtent(v: JsonValue, where: string): QemuMapExtent {
  const o = asObject(v, where);
  checkField(o, 'start', 'int', true, where);
  checkField(o, 'length', 'int', true, where);
  checkField(o, 'depth', 'small-int', true, where);
  checkField(o, 'present', 'boolean', true, where);
  checkField(o, 'zero', 'boolean', true, where);
  checkField(o, 'data', 'boolean', true, where);
  checkField(o, 'offset', 'int', false, where);
  checkField(o, 'compressed', 'boolean', false, where);
  return o as unknown as QemuMapExtent;
}

function validateCheck(v: JsonValue, where: string): QemuCheckJson {
  const o = asObject(v, where);
  checkField(o, 'filename', 'string', true, where);
  checkField(o, 'format', 'string', true, where);
  checkField(o, 'check-errors', 'small-int', true, where);
  for (const k of [
    'image-end-offset',
    'total-clusters',
    'allocated-clusters',
    'fragmented-clusters',
    'compressed-clusters',
    'corruptions',
    'leaks',
    'corruptions-fixed',
    'leaks-fixed',
  ]) {
    checkField(o, k, 'int', false, where);
  }
  return o as unknown as QemuCheckJson;
}
