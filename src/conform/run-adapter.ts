/**
 * Runs one adapter process for the conformance harness: an argument vector, no shell, a working
 * directory, a time limit. The process gets its own process group, and the whole group is killed
 * (SIGKILL) when the time is up — an adapter that is a shell script running a hanging reader cannot
 * keep the harness waiting — and also when the adapter exits, so nothing it started lingers.
 * Output is kept only up to a bound (the tail of each stream), so a chatty adapter costs no memory.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';

/** How an adapter process ended. */
export interface AdapterRun {
  /** Exit code, or null when it was killed by a signal or could not start. */
  readonly code: number | null;
  /** The signal that ended it (SIGSEGV, SIGABRT, … or SIGKILL after a timeout), or null. */
  readonly signal: NodeJS.Signals | null;
  /** True when the harness killed it at the time limit. */
  readonly timedOut: boolean;
  /** Set when the harness killed it because the watched file grew past its limit: the bytes allocated then. */
  readonly overLimit?: bigint;
  /** Set when the process could not be started at all (e.g. ENOENT, EACCES). */
  readonly startError?: string;
  /** The last OUTPUT_TAIL bytes of stdout and stderr. */
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

/** Bytes of each output stream kept (the end of it). */
export const OUTPUT_TAIL = 16 * 1024;

/** Options of runAdapter. */
export interface RunAdapterOptions {
  readonly cwd: string;
  readonly timeoutMs: number;
  readonly env?: NodeJS.ProcessEnv;
  /**
   * A file the adapter writes (a reader's {raw}, a writer's image) and the most disk space it may
   * take: checked every WATCH_INTERVAL_MS, and the process group is killed when the file's allocated
   * bytes (st_blocks × 512: holes are free) exceed `maxBytes` — so an adapter that streams terabytes
   * of zeros for a bogus virtual size cannot fill the disk before the time limit.
   */
  readonly watch?: { readonly path: string; readonly maxBytes: bigint };
}

/** How often the watched file's size is checked. */
export const WATCH_INTERVAL_MS = 200;

function allocatedBytes(path: string): bigint {
  try {
    return statSync(path, { bigint: true }).blocks * 512n;
  } catch {
    return 0n; // not written yet
  }
}

/** Keeps the last `max` bytes written to it. */
class Tail {
  #chunks: Buffer[] = [];
  #bytes = 0;
  constructor(private readonly max: number) {}
  push(b: Buffer): void {
    this.#chunks.push(b);
    this.#bytes += b.length;
    while (this.#chunks.length > 1 && this.#bytes - this.#chunks[0]!.length >= this.max) this.#bytes -= this.#chunks.shift()!.length;
  }
  text(): string {
    const all = Buffer.concat(this.#chunks);
    return all.subarray(Math.max(0, all.length - this.max)).toString('utf8');
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group is already gone.
  }
}

/**
 * Runs `argv[0]` with `argv.slice(1)` in `opts.cwd` and resolves when it and its stdio are done, or
 * when `opts.timeoutMs` has passed (then the process group is killed and `timedOut` is true). Never
 * rejects: a process that cannot start is reported through `startError`. stdin is /dev/null.
 */
export function runAdapter(argv: readonly string[], opts: RunAdapterOptions): Promise<AdapterRun> {
  const started = performance.now();
  return new Promise((resolvePromise) => {
    const out = new Tail(OUTPUT_TAIL);
    const err = new Tail(OUTPUT_TAIL);
    let timedOut = false;
    let overLimit: bigint | undefined;
    let settled = false;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, so a timeout can kill everything it started
    });
    const finish = (r: Omit<AdapterRun, 'durationMs' | 'stdout' | 'stderr' | 'timedOut'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (watcher !== undefined) clearInterval(watcher);
      resolvePromise({
        ...r,
        timedOut,
        ...(overLimit !== undefined ? { overLimit } : {}),
        stdout: out.text(),
        stderr: err.text(),
        durationMs: performance.now() - started,
      });
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
      // A grandchild that escaped the group could hold the pipes open: do not wait for them.
      setTimeout(() => finish({ code: null, signal: exit?.signal ?? 'SIGKILL' }), 1000).unref();
    }, opts.timeoutMs);
    const watch = opts.watch;
    const watcher =
      watch === undefined
        ? undefined
        : setInterval(() => {
            if (overLimit !== undefined || exit !== undefined) return;
            const used = allocatedBytes(watch.path);
            if (used <= watch.maxBytes) return;
            overLimit = used;
            killGroup(child.pid);
          }, WATCH_INTERVAL_MS);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => finish({ code: null, signal: null, startError: `${e.code ?? 'error'}: ${e.message}` }));
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      // Whatever the adapter left running in its group goes with it.
      killGroup(child.pid);
    });
    child.on('close', (code, signal) => finish({ code: exit?.code ?? code, signal: exit?.signal ?? signal }));
  });
}

/**
 * Where `program` would be found when started without a shell in `cwd`: itself when it contains a
 * slash (relative to `cwd`), else the first executable regular file of that name on PATH. Undefined
 * when there is none — so the harness can refuse a misspelt adapter once instead of failing every case.
 */
export function findProgram(program: string, cwd: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const executable = (p: string): boolean => {
    try {
      if (!statSync(p).isFile()) return false;
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (program.includes('/')) {
    const p = isAbsolute(program) ? program : resolve(cwd, program);
    return executable(p) ? p : undefined;
  }
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, program);
    if (executable(p)) return p;
  }
  return undefined;
}
