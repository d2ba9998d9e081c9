/**
 * The one place that starts QEMU processes. `runTool` runs `qemu-img` or `qemu-io` with an argument
 * vector (no shell, so no quoting problems) and hands back the exit status and both output streams;
 * `spawnTool` starts one with piped streams for interactive use (a qemu-io session).
 * A missing binary is never a skip: it is a `QemuToolMissingError` that says what to install.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';

/** The QEMU tools this project drives. */
export type QemuTool = 'qemu-img' | 'qemu-io';

/** The package that provides both tools on Debian/Ubuntu. */
export const QEMU_PACKAGE = 'qemu-utils';

/** What a finished process produced. */
export interface RunResult {
  /** Exit code, or null when the process was killed by a signal (e.g. `qemu-io -c abort`). */
  readonly code: number | null;
  /** The signal that ended the process (e.g. 'SIGABRT'), or null when it exited normally. */
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options for `runTool`. */
export interface RunOptions {
  /**
   * Environment for the child (replaces process.env entirely). The binary is looked up in this
   * environment's PATH, which is how tests simulate a machine without QEMU.
   */
  readonly env?: NodeJS.ProcessEnv;
  /** Working directory of the child (default: the current one). */
  readonly cwd?: string;
  /** Kill the child after this many milliseconds (default 120 000). */
  readonly timeoutMs?: number;
  /**
   * Starts the process instead of `runTool` (which then only delegates): e.g. a helper process that
   * spares a busy test process Node's synchronous fork/exec (test/support/tool-servers.ts). It
   * must behave as runTool does: resolve with the exit status and output, reject with
   * QemuToolMissingError when the tool is missing.
   */
  readonly runner?: ToolRunner;
}

/** Something that runs a QEMU tool the way `runTool` does. */
export type ToolRunner = (cmd: QemuTool, args: readonly string[], opts: RunOptions) => Promise<RunResult>;

/** Thrown when qemu-img or qemu-io cannot be found. The message says what to install. */
export class QemuToolMissingError extends Error {
  override readonly name = 'QemuToolMissingError';
  /** The binary that was not found. */
  readonly tool: QemuTool;

  constructor(tool: QemuTool, searchedPath: string | undefined) {
    super(
      `${tool} was not found (searched PATH=${searchedPath ?? '<unset>'}). ` +
        `qcow2-ref uses QEMU's qemu-img and qemu-io (version 7.2) as its format oracle; ` +
        `install them with: apt-get install ${QEMU_PACKAGE}`,
    );
    this.tool = tool;
  }
}

/**
 * Thrown when a QEMU command exits with a status the caller did not accept. The message holds the
 * command line (shell-quoted, so it can be pasted into a terminal), the exit status and stderr.
 */
export class QemuCommandError extends Error {
  override readonly name = 'QemuCommandError';
  readonly tool: QemuTool;
  readonly args: readonly string[];
  readonly result: RunResult;

  constructor(tool: QemuTool, args: readonly string[], result: RunResult, what?: string) {
    const status = result.signal !== null ? `killed by ${result.signal}` : `exit code ${result.code}`;
    const stderr = result.stderr.trim();
    const stdout = result.stdout.trim();
    super(
      `${what ?? `${tool} failed`} (${status})\n` +
        `  command: ${formatCommandLine(tool, args)}\n` +
        `  stderr: ${stderr === '' ? '<empty>' : stderr}` +
        (stdout === '' ? '' : `\n  stdout: ${truncate(stdout, 2000)}`),
    );
    this.tool = tool;
    this.args = args;
    this.result = result;
  }
}

const DEFAULT_TIMEOUT_MS = 120_000;
/** map/check output of big images can be large; stay far above anything the tests produce. */
const MAX_BUFFER = 256 * 1024 * 1024;

/**
 * Runs `cmd args…` without a shell and resolves with its exit status and output, whatever the
 * status is (non-zero exits and signals are results, not errors). Rejects with
 * `QemuToolMissingError` when the binary is not on PATH (of `opts.env` if given), and with a plain
 * Error for any other failure to start or to collect the process (timeout, output too large).
 * With `opts.runner`, that runner starts the process instead.
 */
export function runTool(cmd: QemuTool, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  if (opts.runner !== undefined) {
    const { runner, ...rest } = opts;
    return runner(cmd, args, rest);
  }
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      [...args],
      {
        encoding: 'utf8',
        maxBuffer: MAX_BUFFER,
        timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        killSignal: 'SIGKILL',
        ...(opts.env !== undefined ? { env: opts.env } : {}),
        ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
      },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ code: 0, signal: null, stdout, stderr });
          return;
        }
        // execFile reports spawn failures with a string errno code, and exits with a numeric code.
        const errno = (error as NodeJS.ErrnoException).code as unknown;
        if (errno === 'ENOENT') {
          // spawn also says ENOENT when the working directory is missing; don't blame the tool then.
          if (opts.cwd !== undefined && !existsSync(opts.cwd)) {
            reject(new Error(`could not run ${formatCommandLine(cmd, args)}: working directory ${opts.cwd} does not exist`));
          } else {
            reject(new QemuToolMissingError(cmd, (opts.env ?? process.env).PATH));
          }
          return;
        }
        if (error.killed === true && (error as { signal?: unknown }).signal === 'SIGKILL') {
          reject(new Error(`${formatCommandLine(cmd, args)} timed out after ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`));
          return;
        }
        if (typeof errno === 'string') {
          // ERR_CHILD_PROCESS_STDIO_MAXBUFFER, EACCES, ...
          reject(new Error(`could not run ${formatCommandLine(cmd, args)}: ${error.message}`));
          return;
        }
        const signal = (error.signal ?? null) as NodeJS.Signals | null;
        resolve({ code: typeof errno === 'number' ? errno : null, signal, stdout, stderr });
      },
    );
  });
}

/**
 * Starts `cmd args…` without a shell, its stdin, stdout and stderr piped, for a caller that talks to
 * it (e.g. an interactive qemu-io). Resolves once the process has started; rejects with
 * `QemuToolMissingError` when the binary is not on PATH and with a plain Error for any other failure
 * to start. The caller owns the process: it must end it (close stdin, or kill it by its pid).
 */
export function spawnTool(cmd: QemuTool, args: readonly string[], opts: Pick<RunOptions, 'env' | 'cwd'> = {}): Promise<ChildProcessWithoutNullStreams> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.env !== undefined ? { env: opts.env } : {}),
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    });
    const onError = (error: NodeJS.ErrnoException): void => {
      if (error.code === 'ENOENT' && (opts.cwd === undefined || existsSync(opts.cwd))) reject(new QemuToolMissingError(cmd, (opts.env ?? process.env).PATH));
      else reject(new Error(`could not run ${formatCommandLine(cmd, args)}: ${error.message}`));
    };
    // Stays attached: after the start it only keeps a late 'error' event from going unhandled
    // (the promise is settled; the caller sees the process end).
    child.on('error', onError);
    child.once('spawn', () => resolve(child));
  });
}

/** Versions reported by `--version` of each tool (first line, e.g. `qemu-img version 7.2.22 (…)`). */
export interface QemuVersions {
  readonly qemuImg: string;
  readonly qemuIo: string;
}

let cachedCheck: Promise<QemuVersions> | undefined;

/**
 * Resolves once both qemu-img and qemu-io have answered `--version`, and rejects with
 * `QemuToolMissingError` if either is missing. The check runs once per process; later calls return
 * the same promise. Call it in a `beforeAll` so a machine without QEMU fails loudly, never skips.
 */
export function requireQemu(): Promise<QemuVersions> {
  cachedCheck ??= (async () => {
    const [img, io] = await Promise.all([runTool('qemu-img', ['--version']), runTool('qemu-io', ['--version'])]);
    for (const [tool, r] of [['qemu-img', img], ['qemu-io', io]] as const) {
      if (r.code !== 0) throw new QemuCommandError(tool, ['--version'], r, `${tool} --version failed`);
    }
    return { qemuImg: firstLine(img.stdout), qemuIo: firstLine(io.stdout) };
  })();
  // A failure is cached too: every later caller gets the same rejection without re-running.
  return cachedCheck;
}

/** Renders a command line with POSIX shell quoting, for error messages and logs. */
export function formatCommandLine(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map(shellQuote).join(' ');
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function firstLine(s: string): string {
  return s.split('\n', 1)[0]?.trim() ?? '';
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}… (${s.length - max} more characters)`;
}
