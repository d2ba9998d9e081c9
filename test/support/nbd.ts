/**
 * What the NBD tests share: starting `qcow2-ref serve` (the real command, bin/qcow2-ref.mjs) and
 * `qemu-nbd` on a Unix socket and waiting until they accept connections, stopping them with
 * SIGTERM, and running the client tools (qemu-img, qemu-io, nbdinfo, nbdcopy, fio) with a loud
 * failure when one is missing — the tests never skip for a missing tool (scripts/setup.sh --tests
 * installs them). Every wait has a generous bound that only detects a hang.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/qcow2-ref.mjs');

/** Hang detector for a server to start or stop (not a performance bound). */
const START_MS = 120_000;
const STOP_MS = 120_000;

/** Where each tool comes from, for the failure message. */
const PACKAGES: Record<string, string> = {
  'qemu-img': 'qemu-utils', 'qemu-io': 'qemu-utils', 'qemu-nbd': 'qemu-utils',
  nbdinfo: 'libnbd-bin', nbdcopy: 'libnbd-bin', fio: 'fio',
};

/** Throws (loudly) when `tool` cannot be run. */
export function requireTool(tool: string): void {
  const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined) {
    throw new Error(`${tool} is required by this test and could not be run (${r.error.message}); install Debian's ${PACKAGES[tool] ?? tool} (bash scripts/setup.sh --tests)`);
  }
}

/** Runs a tool to completion; a missing tool throws. */
export function runTool(tool: string, args: readonly string[], opts: { cwd?: string; input?: string; timeoutMs?: number } = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(tool, args, { encoding: 'utf8', cwd: opts.cwd, input: opts.input, timeout: opts.timeoutMs ?? 300_000, maxBuffer: 256 * 1024 * 1024 });
  if (r.error !== undefined) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') requireTool(tool);
    throw new Error(`${tool} ${args.join(' ')}: ${r.error.message}`);
  }
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a tool asynchronously (so an in-process server keeps running); a missing tool throws. */
export function runToolAsync(tool: string, args: readonly string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolveRun, reject) => {
    const p = spawn(tool, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => void (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => void (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
    p.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === 'ENOENT') {
        try {
          requireTool(tool);
        } catch (missing) {
          reject(missing as Error);
          return;
        }
      }
      reject(e);
    });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolveRun({ status: code ?? (signal !== null ? -1 : -1), stdout, stderr: signal !== null ? `${stderr}\n(killed by ${signal})` : stderr });
    });
  });
}

/** A running server on a Unix socket. */
export interface Served {
  readonly socket: string;
  readonly process: ChildProcess;
  /** The NBD URI of export `name` (default ''). */
  uri(name?: string): string;
  /** What it printed on stderr so far. */
  stderr(): string;
  /** SIGTERM, then waits for the exit; returns the exit code (null when killed by a signal) and stderr. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  /** Waits for the process to exit on its own (SIGKILL after the hang detector's bound). */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

/** Whether a connection to `socket` succeeds now. */
function canConnect(socket: string): Promise<boolean> {
  return new Promise((r) => {
    const c = createConnection(socket);
    c.once('connect', () => {
      c.destroy();
      r(true);
    });
    c.once('error', () => r(false));
  });
}

/** Starts `argv` and waits until `socket` accepts connections (the server started) or the process exits (it failed). */
async function startServer(argv: readonly string[], socket: string, cwd: string, what: string, pidFile?: string): Promise<Served> {
  const p = spawn(argv[0]!, argv.slice(1), { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => void (stderr += d));
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => p.on('exit', (code, signal) => r((exited = { code, signal }))));
  const spawnError = new Promise<Error>((r) => p.on('error', r));
  const started = Date.now();
  for (;;) {
    const failed = await Promise.race([spawnError, new Promise<undefined>((r) => setTimeout(() => r(undefined), 50))]);
    if (failed !== undefined) {
      if ((failed as NodeJS.ErrnoException).code === 'ENOENT') requireTool(argv[0]!);
      throw new Error(`${what} could not start: ${failed.message}`);
    }
    if (exited !== undefined) throw new Error(`${what} exited (${exited.code ?? exited.signal}) before listening: ${stderr.trim()}`);
    // A probe connection is a client: without -t, its disconnect would end the server. A server
    // started with --pid-file is ready when the file exists (written once it listens).
    if (pidFile !== undefined ? existsSync(pidFile) : existsSync(socket) && (await canConnect(socket))) break;
    if (Date.now() - started > START_MS) {
      p.kill('SIGKILL');
      throw new Error(`${what} did not listen on ${socket} within ${START_MS / 1000} s (hang detector): ${stderr.trim()}`);
    }
  }
  return {
    socket,
    process: p,
    uri: (name = '') => `nbd+unix:///${name}?socket=${socket}`,
    stderr: () => stderr,
    stop: async () => {
      if (exited === undefined) p.kill('SIGTERM');
      const timer = setTimeout(() => p.kill('SIGKILL'), STOP_MS);
      const r = await exit;
      clearTimeout(timer);
      return { ...r, stderr };
    },
    exited: async () => {
      const timer = setTimeout(() => p.kill('SIGKILL'), STOP_MS);
      const r = await exit;
      clearTimeout(timer);
      return { ...r, stderr };
    },
  };
}

/**
 * Starts `qcow2-ref serve -k SOCKET ARGS... IMAGE`. Readiness is probed by connecting unless
 * `pidFile` is given (then ARGS must hold `--pid-file=PIDFILE`): use that without `-t`, where the
 * probe's connection would be the server's only client.
 */
export function serveOurs(image: string, socket: string, args: readonly string[], cwd: string, pidFile?: string): Promise<Served> {
  return startServer([process.execPath, BIN, 'serve', '-k', socket, ...args, image], socket, cwd, 'qcow2-ref serve', pidFile);
}

/** Starts `qemu-nbd -k SOCKET -f qcow2 ARGS... IMAGE`. */
export function serveQemu(image: string, socket: string, args: readonly string[], cwd: string): Promise<Served> {
  requireTool('qemu-nbd');
  return startServer(['qemu-nbd', '-k', socket, '-f', 'qcow2', ...args, image], socket, cwd, 'qemu-nbd');
}
