/**
 * QEMU processes started by small helper processes instead of by the test process itself.
 *
 * Node starts a child synchronously on its event loop (fork/exec in `ChildProcess.spawn`), and in a
 * test process holding a few hundred MB that costs 5–20 ms of the single JS thread per process —
 * measured as the largest item (about 30 %) of the QEMU properties' profile, which start about
 * five QEMU processes per sequence. A long-lived python3 helper starts them instead (vfork/exec in
 * a small process) while the JS thread goes on; each helper runs one command at a time, so a pool of
 * N helpers is also the bound on concurrent QEMU processes.
 *
 * A helper returns exactly what `runTool` (src/qemu/run.ts) returns — exit code, signal, stdout and
 * stderr — and the QEMU drivers take it as their `runner` (RunOptions.runner), so their argument
 * building and output parsing are the same code either way. A missing tool is still a
 * QemuToolMissingError.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { QemuToolMissingError, type QemuTool, type RunOptions, type RunResult, type ToolRunner } from '../../src/qemu/run.ts';

const SERVER = `
import json, signal, subprocess, sys
for line in sys.stdin:
    req = json.loads(line)
    try:
        p = subprocess.run(req['argv'], cwd=req['cwd'], stdin=subprocess.DEVNULL, capture_output=True, timeout=req['timeout'])
        sig = None
        if p.returncode < 0:
            try:
                sig = signal.Signals(-p.returncode).name
            except ValueError:
                sig = 'SIG' + str(-p.returncode)
        out = {'code': p.returncode if p.returncode >= 0 else None, 'signal': sig,
               'stdout': p.stdout.decode('utf-8', 'replace'), 'stderr': p.stderr.decode('utf-8', 'replace')}
    except FileNotFoundError as e:
        out = {'error': 'ENOENT', 'message': str(e)}
    except subprocess.TimeoutExpired:
        out = {'error': 'timeout'}
    except Exception as e:
        out = {'error': 'other', 'message': repr(e)}
    sys.stdout.write(json.dumps(out) + '\\n')
    sys.stdout.flush()
`;

const DEFAULT_TIMEOUT_MS = 120_000;

interface Reply {
  readonly code?: number | null;
  readonly signal?: string | null;
  readonly stdout?: string;
  readonly stderr?: string;
  readonly error?: 'ENOENT' | 'timeout' | 'other';
  readonly message?: string;
}

/** One helper process: runs one command at a time. */
class ToolServer {
  private readonly child: ChildProcessWithoutNullStreams;
  private buffer = '';
  private waiting: ((line: string) => void) | undefined;
  private stderr = '';
  private exited = false;

  constructor() {
    this.child = spawn('python3', ['-S', '-u', '-c', SERVER], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8').on('data', (d: string) => {
      this.buffer += d;
      const nl = this.buffer.indexOf('\n');
      if (nl >= 0 && this.waiting !== undefined) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        const w = this.waiting;
        this.waiting = undefined;
        w(line);
      }
    });
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => void (this.stderr += d));
    const fail = (why: string): void => {
      this.exited = true;
      const w = this.waiting;
      this.waiting = undefined;
      w?.(JSON.stringify({ error: 'other', message: `tool helper (python3) ended: ${why} ${this.stderr}` }));
    };
    this.child.on('exit', (code, sig) => fail(`exit ${code ?? sig}`));
    this.child.on('error', (e) => fail(e.message));
    this.hold(false);
  }

  /** Keeps the event loop alive only while a command runs. */
  private hold(on: boolean): void {
    for (const h of [this.child, this.child.stdin, this.child.stdout, this.child.stderr] as unknown as { ref?: () => void; unref?: () => void }[]) {
      if (on) h.ref?.();
      else h.unref?.();
    }
  }

  /** Runs `cmd args` as runTool would (the caller makes sure one command runs at a time). */
  async run(cmd: QemuTool, args: readonly string[], opts: RunOptions): Promise<RunResult> {
    if (this.exited) throw new Error(`tool helper (python3) is not running: ${this.stderr}`);
    if (opts.env !== undefined) throw new Error('tool helper: a custom environment is not supported (it runs with the test process\'s)');
    const line = await new Promise<string>((resolve) => {
      this.waiting = resolve;
      this.hold(true);
      this.child.stdin.write(JSON.stringify({ argv: [cmd, ...args], cwd: opts.cwd ?? null, timeout: (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000 }) + '\n');
    });
    this.hold(false);
    const r = JSON.parse(line) as Reply;
    if (r.error === 'ENOENT') throw new QemuToolMissingError(cmd, process.env['PATH']);
    if (r.error === 'timeout') throw new Error(`${cmd} ${args.join(' ')} timed out after ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`);
    if (r.error !== undefined) throw new Error(`could not run ${cmd} ${args.join(' ')}: ${r.message ?? r.error}`);
    return { code: r.code ?? null, signal: (r.signal ?? null) as NodeJS.Signals | null, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  close(): void {
    this.child.kill();
  }
}

/**
 * A pool of `size` helpers. `use(fn)` waits for a free helper and calls `fn` with a ToolRunner bound
 * to it (for RunOptions.runner); the helper is free again when `fn` settles. At most `size` QEMU
 * processes run at once.
 */
export class ToolServerPool {
  private readonly free: ToolServer[] = [];
  private readonly all: ToolServer[] = [];
  private readonly waiters: ((s: ToolServer) => void)[] = [];
  private created = 0;

  constructor(private readonly size: number) {}

  async use<T>(fn: (runner: ToolRunner) => Promise<T>): Promise<T> {
    const server = await this.acquire();
    try {
      return await fn((cmd, args, opts) => server.run(cmd, args, opts));
    } finally {
      const next = this.waiters.shift();
      if (next !== undefined) next(server);
      else this.free.push(server);
    }
  }

  private acquire(): Promise<ToolServer> {
    const s = this.free.pop();
    if (s !== undefined) return Promise.resolve(s);
    if (this.created < this.size) {
      this.created++;
      const n = new ToolServer();
      this.all.push(n);
      return Promise.resolve(n);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Stops every helper (the pool starts new ones if used again). */
  close(): void {
    for (const s of this.all) s.close();
    this.all.length = 0;
    this.free.length = 0;
    this.created = 0;
  }
}
