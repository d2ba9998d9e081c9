/**
 * Runs model ops (src/model/ops.ts) on a qcow2 image with real QEMU 7.2 while QEMU's blklogwrites
 * driver logs every operation on the image file, and returns that log as HostIO with, for each op,
 * the exact range of it the op issued: the host write log of QEMU itself, for the crash simulator
 * (issue 15) to judge by the same rules as the model's.
 *
 * How. The image is opened as `driver=qcow2,file.driver=blklogwrites,file.file.filename=IMG,
 * file.log.filename=LOG,file.log-append=on,file.log-super-update-interval=1` (blkLogWritesImageOpts):
 * - data ops and flushes run as commands of ONE interactive qemu-io process, translated exactly as
 *   planQemuSteps translates them (QemuOpTranslator), one command at a time: after each, this module
 *   waits for qemu-io to finish it and reads the log's entry count from its superblock, which the
 *   update interval of 1 makes blklogwrites rewrite after every entry. An op's range is the entries
 *   logged between the count before and after its command, so ranges are exact;
 * - snapshot ops run as `qemu-img snapshot -c|-a|-d NAME --image-opts …` and resizes as
 *   `qemu-img resize -q [--shrink] --image-opts … SIZE`, each its own process, appending to the same
 *   log (`log-append=on`); their range is the whole process, opening and closing included, and they
 *   end the qemu-io session, as in planQemuSteps (a new session afterwards: fresh allocation hint and
 *   compressed cursor). qemu-io's `truncate` would resize too (measured: it shrinks without asking),
 *   but inside the session, which is not what planQemuSteps — and the model's tests — do;
 * - what a qemu-io process writes when it opens the image (repairing an image left dirty, say) and
 *   when it closes it (writing back QEMU's caches, clearing a lazy-refcounts dirty bit) belongs to no
 *   op: those entries lie between the ranges.
 * A failed command is not an error: qemu-io prints its message (on stdout for failed requests and bad
 * arguments, on stderr for others) and carries on; the op is `ok: false` with that message. Every
 * command is written with `-q` (or prints nothing on success, as `flush`), so any output is an error
 * message. To know that all of a command's stderr has been read, each command is followed by an
 * unknown command whose "not found" message on stderr marks the end. Commands are written one line at
 * a time, each after the previous prompt (qemu-io reads stdin with fgets when poll says it is readable).
 *
 * What the log cannot show (docs/format/blklogwrites.md): truncations of the image file (qcow2 grows
 * and shrinks it on resize and snapshot apply); a replay of the log therefore gets the right bytes
 * up to the real file's length but may be longer where QEMU shrank the file. Write_zeroes requests to
 * the image file appear as writes of zeros.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import type { HostIO, Op } from '../model/index.ts';
import { LOG_SUPER_SIZE, parseBlkLogWrites, parseBlkLogWritesSuperblock } from './blklogwrites.ts';
import { escapeQemuOptionValue, qcow2Specific, qemuImgInfo, qemuImgResize, qemuImgSnapshot, toBigInt, type QemuOpenOptions } from './qemu-img.ts';
import { DATA_DIR, QemuOpTranslator, type QemuImgStep } from './qemu-steps.ts';
import { QemuCommandError, spawnTool } from './run.ts';

/** QEMU's write log of a run of ops. */
export interface QemuWriteLog {
  /** Host operations on the image file, in log order. */
  readonly host: readonly HostIO[];
  /** Each guest op with the half-open range [start, end) of `host` it issued; ok=false when QEMU refused it (message). */
  readonly guest: readonly { readonly op: Op; readonly start: number; readonly end: number; readonly ok: boolean; readonly message?: string }[];
}

/** Options of runQemuLogged. */
export interface QemuLoggedRunOptions {
  /** Where to keep the blklogwrites log (created, or emptied, first). Default: a temporary file, removed afterwards. */
  readonly logPath?: string;
  /** Hang detector: the longest a command (or a qemu-img process) may take, in ms (default 60 000). */
  readonly commandTimeoutMs?: number;
  /**
   * qemu-io's cache mode (`-t`). Default: qemu-io's own, writethrough, as planQemuSteps runs it —
   * every write, zero write and flush is followed by a flush of the image file, discards and
   * compressed writes are not. 'writeback' leaves metadata in QEMU's caches until a flush.
   */
  readonly cache?: 'writethrough' | 'writeback';
}

/** Why a logged run could not be done (a refused op is not one of these: it is `ok: false`). */
export type QemuLoggedRunErrorCode =
  /** The image is not a qcow2 file. */
  | 'not-qcow2'
  /** The image has an external data file, whose writes blklogwrites would not see. */
  | 'data-file'
  /** qemu-io could not open the image (it exited before its first prompt). */
  | 'open-failed'
  /** A command or process took longer than the time limit; the process was killed. */
  | 'hang'
  /** A QEMU process died of a signal or exited in the middle of a session. */
  | 'crashed'
  /** qemu-io printed something while closing the image (e.g. a failed cache write-back). */
  | 'close-failed'
  /** A QEMU process could not be run or collected. */
  | 'process';

/** Thrown by runQemuLogged when the run cannot be done or completed; `code` says why. */
export class QemuLoggedRunError extends Error {
  override readonly name = 'QemuLoggedRunError';
  readonly code: QemuLoggedRunErrorCode;

  constructor(code: QemuLoggedRunErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;
const PROMPT = 'qemu-io> ';

/**
 * The `--image-opts` string that opens `image` as qcow2 over blklogwrites logging to `log` (an
 * existing file; empty for a new log): appending to the log, with its superblock rewritten after
 * every entry. File names are escaped for QEMU's option syntax.
 */
export function blkLogWritesImageOpts(image: string, log: string): string {
  return [
    'driver=qcow2',
    'file.driver=blklogwrites',
    `file.file.filename=${escapeQemuOptionValue(image)}`,
    `file.log.filename=${escapeQemuOptionValue(log)}`,
    'file.log-append=on',
    'file.log-super-update-interval=1',
  ].join(',');
}

/**
 * Runs `ops` in order on the qcow2 image `image` (no external data file: refused with
 * QemuLoggedRunError) through blklogwrites, changing the image as QEMU does, and returns the log:
 * every operation QEMU performed on the image file, and for each op the exact range of it the op
 * issued (empty for a zero-length write, which is not run). An op QEMU refuses is `ok: false` with
 * QEMU's message and the run goes on. Throws QemuLoggedRunError when a process cannot open the
 * image, hangs past the time limit, crashes, or fails to close; QemuToolMissingError without QEMU;
 * BlkLogWritesError if the log QEMU wrote cannot be parsed.
 */
export async function runQemuLogged(image: string, ops: readonly Op[], opts: QemuLoggedRunOptions = {}): Promise<QemuWriteLog> {
  const timeoutMs = opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  const initialSize = await checkImage(image, timeoutMs);
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-ref-logged-run-'));
  const logPath = opts.logPath ?? join(dir, 'writes.log');
  writeFileSync(logPath, new Uint8Array(0));
  const imageOpts = blkLogWritesImageOpts(image, logPath);
  const translator = new QemuOpTranslator(initialSize);
  const ranges: { op: Op; start: number; end: number; ok: boolean; message?: string }[] = [];
  let session: QemuIoSession | undefined;
  try {
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      const t = translator.translate(op, `d${i}.bin`);
      if (t.tool === 'none') {
        const n = logEntryCount(logPath);
        ranges.push({ op, start: n, end: n, ok: true });
        continue;
      }
      if (t.tool === 'qemu-io') {
        if (t.dataFile !== undefined) writeFileSync(join(dir, t.dataFile.name), t.dataFile.bytes);
        session ??= await QemuIoSession.start(imageOpts, opts.cache, timeoutMs);
        const start = logEntryCount(logPath);
        const message = await session.run(t.command.replace(DATA_DIR, dir));
        const end = logEntryCount(logPath);
        ranges.push(message === '' ? { op, start, end, ok: true } : { op, start, end, ok: false, message });
        continue;
      }
      if (session !== undefined) {
        await session.quit();
        session = undefined;
      }
      const start = logEntryCount(logPath);
      const message = await runQemuImgStep(imageOpts, t, timeoutMs);
      const end = logEntryCount(logPath);
      ranges.push(message === undefined ? { op, start, end, ok: true } : { op, start, end, ok: false, message });
    }
    if (session !== undefined) {
      await session.quit();
      session = undefined;
    }
    const file = readFileSync(logPath);
    // Plain Uint8Array views (not Buffers) for the writes' bytes, as every other HostIO source gives.
    const log = parseBlkLogWrites(new Uint8Array(file.buffer, file.byteOffset, file.byteLength));
    const hostIndex = (entry: number): number => {
      const h = log.hostStart[entry];
      if (h === undefined) throw new QemuLoggedRunError('process', `the log holds ${log.entries.length} entries, a range ends at entry ${entry}`);
      return h;
    };
    const guest = ranges.map((r) => ({ ...r, start: hostIndex(r.start), end: hostIndex(r.end) }));
    return { host: log.host, guest };
  } finally {
    session?.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The virtual size of `image` after checking it is a qcow2 file without an external data file —
 * qemu-img info with `-f qcow2` refuses anything else ("Image is not in qcow2 format").
 */
async function checkImage(image: string, timeoutMs: number): Promise<bigint> {
  let info;
  try {
    info = await qemuImgInfo(image, { timeoutMs });
  } catch (e) {
    if (e instanceof QemuCommandError) throw new QemuLoggedRunError('not-qcow2', `${image} cannot be opened: ${e.message.split('\n')[0]}`);
    throw e;
  }
  const dataFile = qcow2Specific(info)['data-file'];
  if (dataFile !== undefined) {
    throw new QemuLoggedRunError('data-file', `${image} has an external data file (${dataFile}); blklogwrites would log only the qcow2 file`);
  }
  return toBigInt(info['virtual-size']);
}

/** Entries the log at `path` holds, from its superblock (0 while the log is empty). */
function logEntryCount(path: string): number {
  const sb = new Uint8Array(LOG_SUPER_SIZE);
  const fd = openSync(path, 'r');
  let n: number;
  try {
    n = readSync(fd, sb, 0, LOG_SUPER_SIZE, 0);
  } finally {
    closeSync(fd);
  }
  return Number(parseBlkLogWritesSuperblock(sb.subarray(0, n)).nrEntries);
}

/** Runs one qemu-img step on the logged image; returns QEMU's message when it refused the op. */
async function runQemuImgStep(imageOpts: string, step: QemuImgStep, timeoutMs: number): Promise<string | undefined> {
  const open: QemuOpenOptions = { imageOpts: true, timeoutMs };
  try {
    if (step.action === 'resize') await qemuImgResize(imageOpts, step.size, { ...open, shrink: step.shrink });
    else await qemuImgSnapshot(imageOpts, step.action === 'snapshot-create' ? 'create' : step.action === 'snapshot-apply' ? 'apply' : 'delete', step.name, open);
    return undefined;
  } catch (e) {
    if (e instanceof QemuCommandError) {
      if (e.result.signal !== null) throw new QemuLoggedRunError('crashed', e.message);
      const text = `${e.result.stdout}${e.result.stderr}`.trim();
      return text === '' ? `qemu-img exited with code ${e.result.code}` : text;
    }
    // runTool rejects with a plain Error when it kills a process at the time limit or cannot run it.
    if (e instanceof Error && e.name === 'Error') throw new QemuLoggedRunError(e.message.includes(' timed out after ') ? 'hang' : 'process', e.message);
    throw e;
  }
}

/**
 * One interactive qemu-io process on the logged image: commands are written to its stdin one at a
 * time, and each is complete when qemu-io prints its next prompt.
 */
class QemuIoSession {
  private stdout = '';
  private stderr = '';
  private exited = false;
  private exitStatus = '';
  /** Called after every change of the buffers or the process state (one wait at a time). */
  private onChange: (() => void) | undefined;
  private markers = 0;

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly timeoutMs: number,
  ) {
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      this.stdout += s;
      this.onChange?.();
    });
    child.stderr.on('data', (s: string) => {
      this.stderr += s;
      this.onChange?.();
    });
    // A write to the stdin of a process that died is reported by the exit, not by this error.
    child.stdin.on('error', () => undefined);
    child.on('error', () => undefined);
    child.on('close', (code, signal) => {
      this.exited = true;
      this.exitStatus = signal !== null ? `killed by ${signal}` : `exit code ${code}`;
      this.onChange?.();
    });
  }

  /** Starts qemu-io on `imageOpts` and waits for its first prompt (QemuLoggedRunError 'open-failed' if it exits first). */
  static async start(imageOpts: string, cache: 'writethrough' | 'writeback' | undefined, timeoutMs: number): Promise<QemuIoSession> {
    const args = [...(cache === undefined ? [] : ['-t', cache]), '--image-opts', imageOpts];
    const session = new QemuIoSession(await spawnTool('qemu-io', args), timeoutMs);
    const ok = await session.until(() => session.stdout.includes(PROMPT), 'the first prompt');
    if (!ok) throw new QemuLoggedRunError('open-failed', `qemu-io could not open the image (${session.exitStatus}): ${(session.stdout + session.stderr).trim()}`);
    session.stdout = session.stdout.slice(session.stdout.indexOf(PROMPT) + PROMPT.length);
    return session;
  }

  /**
   * Runs `command` and returns what qemu-io printed for it (stdout, then stderr), trimmed: '' when
   * it succeeded silently. Throws QemuLoggedRunError when qemu-io exits or hangs.
   */
  async run(command: string): Promise<string> {
    // One line at a time: qemu-io reads stdin with fgets when poll says it is readable, so a second
    // line already in its stdio buffer would wait for more input that never comes.
    this.child.stdin.write(`${command}\n`);
    if (!(await this.until(() => this.stdout.includes(PROMPT), `command '${command}'`))) {
      throw new QemuLoggedRunError('crashed', `qemu-io ended (${this.exitStatus}) during '${command}': ${(this.stdout + this.stderr).trim()}`);
    }
    const marker = `qcow2-ref-end-of-command-${++this.markers}`;
    const markerLine = `command "${marker}" not found\n`;
    this.child.stdin.write(`${marker}\n`);
    const done = (): boolean => countOf(this.stdout, PROMPT) >= 2 && this.stderr.includes(markerLine);
    if (!(await this.until(done, `command '${command}'`))) {
      throw new QemuLoggedRunError('crashed', `qemu-io ended (${this.exitStatus}) after '${command}': ${(this.stdout + this.stderr).trim()}`);
    }
    const first = this.stdout.indexOf(PROMPT);
    const second = this.stdout.indexOf(PROMPT, first + PROMPT.length);
    const at = this.stderr.indexOf(markerLine);
    const message = (this.stdout.slice(0, first) + this.stderr.slice(0, at)).trim();
    this.stdout = this.stdout.slice(second + PROMPT.length);
    this.stderr = this.stderr.slice(at + markerLine.length);
    return message;
  }

  /** Quits qemu-io (it closes the image) and waits for it to exit; throws if it printed anything while closing or died. */
  async quit(): Promise<void> {
    this.child.stdin.end('quit\n');
    await this.until(() => false, 'quit');
    const rest = (this.stdout + this.stderr).trim();
    if (this.exitStatus.startsWith('killed')) throw new QemuLoggedRunError('crashed', `qemu-io was ${this.exitStatus} while closing the image: ${rest}`);
    if (rest !== '') throw new QemuLoggedRunError('close-failed', `qemu-io printed while closing the image: ${rest}`);
  }

  /** Kills the process if it is still running (after an error). */
  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }

  /**
   * Waits until `done()` holds (true) or the process has exited (false), for at most the time limit,
   * after which the process is killed and QemuLoggedRunError 'hang' is thrown.
   */
  private until(done: () => boolean, what: string): Promise<boolean> {
    return new Promise((resolve, reject) => {
      const finish = (): boolean => {
        if (done()) resolve(true);
        else if (this.exited) resolve(false);
        else return false;
        clearTimeout(timer);
        this.onChange = undefined;
        return true;
      };
      const timer = setTimeout(() => {
        this.onChange = undefined;
        this.kill();
        reject(new QemuLoggedRunError('hang', `qemu-io did not complete ${what} within ${this.timeoutMs} ms (killed); output so far: ${(this.stdout + this.stderr).trim()}`));
      }, this.timeoutMs);
      if (!finish()) this.onChange = finish;
    });
  }
}

/** How many times `needle` occurs in `s` (bounded by s.length / needle.length). */
function countOf(s: string, needle: string): number {
  let n = 0;
  for (let at = s.indexOf(needle); at >= 0; at = s.indexOf(needle, at + needle.length)) n++;
  return n;
}

