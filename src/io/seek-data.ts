/**
 * How real files are stored on the file system — `stat`'s st_blocks and the data/hole ranges
 * SEEK_DATA/SEEK_HOLE report — for `mapImage`'s host-allocation option (src/model/block-status.ts): QEMU's
 * `qemu-img map` consults the same information (metadata-preallocation detection, file-posix block
 * status), so the same facts give the same extents.
 *
 * Node has no SEEK_DATA/SEEK_HOLE, so the ranges come from a few lines of Python run with `python3`
 * (one process for any number of files). The Python only opens the files read-only and seeks; it
 * never reads their contents.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { statSync } from 'node:fs';
import type { HostAllocation } from '../model/index.ts';

/** The interpreter used for the probe (looked up in PATH). */
export const DEFAULT_PYTHON = 'python3';

/**
 * The probe: per line of standard input, a JSON list of paths; per request, one JSON line out with
 * each file's length, st_blocks and `[data_start, hole_start]` pairs (decimal strings: exact above
 * 2^53). Used one-shot (one request, then end of input) and as a long-lived server.
 */
const SCRIPT = `
import os, sys, json
for line in sys.stdin:
    out = []
    for path in json.loads(line):
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            end = st.st_size
            ranges = []
            pos = 0
            while pos < end:
                try:
                    d = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break
                h = os.lseek(fd, d, os.SEEK_HOLE)
                ranges.append([str(d), str(h)])
                pos = h
            out.append({'length': str(end), 'blocks': str(st.st_blocks), 'data': ranges})
        finally:
            os.close(fd)
    sys.stdout.write(json.dumps(out) + '\\n')
    sys.stdout.flush()
`;

/** One answer line of the probe, decoded. */
function parseAnswer(line: string, count: number): HostAllocation[] {
  let parsed: { length: string; blocks: string; data: [string, string][] }[];
  try {
    parsed = JSON.parse(line) as typeof parsed;
  } catch {
    throw new HostProbeError('cannot probe file allocation: unexpected probe output');
  }
  if (!Array.isArray(parsed) || parsed.length !== count) throw new HostProbeError('cannot probe file allocation: unexpected probe output');
  return parsed.map((p) => ({ length: BigInt(p.length), allocatedBytes: BigInt(p.blocks) * 512n, data: p.data.map(([a, b]) => [BigInt(a), BigInt(b)] as const) }));
}

/** The python3 probe could not be run (interpreter missing, or it failed). */
export class HostProbeError extends Error {
  override readonly name = 'HostProbeError';
}

function statFacts(path: string): { length: bigint; allocatedBytes: bigint } {
  const st = statSync(path, { bigint: true });
  return { length: st.size, allocatedBytes: st.blocks * 512n };
}

/**
 * The allocation of each file of `paths` (same order), from one python3 process: the length and
 * st_blocks × 512 from `stat`, the data ranges from SEEK_DATA/SEEK_HOLE. Throws HostProbeError when
 * python3 cannot be run or fails, and the fs error when a file cannot be stat'ed.
 */
export function probeHostAllocations(paths: readonly string[], python = DEFAULT_PYTHON): HostAllocation[] {
  if (paths.length === 0) return [];
  for (const p of paths) statFacts(p); // a file that cannot be stat'ed throws the fs error, as before
  let out: string;
  try {
    out = execFileSync(python, ['-S', '-c', SCRIPT], { input: JSON.stringify(paths) + '\n', encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    const why = err.code === 'ENOENT' ? `${python} not found` : (err.stderr ?? err.message).trim().split('\n').pop() ?? err.message;
    throw new HostProbeError(`cannot probe file allocation with SEEK_DATA/SEEK_HOLE: ${why}`);
  }
  return parseAnswer(out.trim(), paths.length);
}

/** The allocation of the file at `path` (throws HostProbeError if python3 is missing or fails). */
export function probeHostAllocation(path: string, python = DEFAULT_PYTHON): HostAllocation {
  return probeHostAllocations([path], python)[0]!;
}

/**
 * A file as if fully allocated (no holes): data over its whole length, allocated bytes at least its
 * length. What the model assumes when the real allocation cannot be probed.
 */
export function fullyAllocated(path: string): HostAllocation {
  const f = statFacts(path);
  const rounded = (f.length + 511n) & ~511n;
  return {
    length: f.length,
    allocatedBytes: f.allocatedBytes > rounded ? f.allocatedBytes : rounded,
    data: f.length > 0n ? [[0n, f.length]] : [],
  };
}

/**
 * probeHostAllocations, or — when python3 cannot be run — every file as fully allocated
 * (`fullyAllocated`) after calling `warn` once with a one-line explanation. File system errors
 * (a file that cannot be stat'ed) still throw.
 */
export function probeHostAllocationsOrFull(paths: readonly string[], warn: (line: string) => void, python = DEFAULT_PYTHON): HostAllocation[] {
  try {
    return probeHostAllocations(paths, python);
  } catch (e) {
    if (!(e instanceof HostProbeError)) throw e;
    warn(`${e.message}; treating the files as fully allocated (the map of sparse, metadata-preallocated images may then differ from qemu-img's)`);
    return paths.map(fullyAllocated);
  }
}

/**
 * The same probe as a long-lived python3, so that hundreds of probes (the QEMU properties) do not
 * each pay the interpreter's start-up. Requests are answered one at a time, in order; the process
 * does not keep Node's event loop alive while idle. A probe fails with HostProbeError when python3
 * cannot run or dies.
 */
export class SeekDataProbeServer {
  private server: ProbeProcess | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly python = DEFAULT_PYTHON) {}

  /** The allocation of each file of `paths` (same order). */
  async probe(paths: readonly string[]): Promise<HostAllocation[]> {
    if (paths.length === 0) return [];
    const run = this.queue.then(() => new Promise<string>((resolve) => {
      const p = this.start();
      hold(p.child, true);
      p.waiting = (line) => {
        hold(p.child, false);
        resolve(line);
      };
      p.child.stdin.write(JSON.stringify(paths) + '\n');
    }));
    this.queue = run.catch(() => undefined);
    const line = await run;
    if (line.startsWith('ERROR')) throw new HostProbeError(`host allocation probe (${this.python}) failed: ${line.slice(6)}`);
    return parseAnswer(line, paths.length);
  }

  /** Stops the process (a later probe starts a new one). */
  close(): void {
    this.server?.child.kill();
    this.server = undefined;
  }

  /**
   * The running process, started when there is none. Each process has its own pending answer, so a
   * process that exits after `close` can only answer a request made to it.
   */
  private start(): ProbeProcess {
    if (this.server !== undefined) return this.server;
    const child = spawn(this.python, ['-S', '-u', '-c', SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
    const p: ProbeProcess = { child, buffer: '' };
    let stderr = '';
    const answer = (line: string): void => {
      const w = p.waiting;
      delete p.waiting;
      w?.(line);
    };
    child.stderr.on('data', (b: Buffer) => void (stderr += b.toString()));
    child.stdout.on('data', (b: Buffer) => {
      p.buffer += b.toString();
      const nl = p.buffer.indexOf('\n');
      if (nl >= 0) {
        const line = p.buffer.slice(0, nl);
        p.buffer = p.buffer.slice(nl + 1);
        answer(line);
      }
    });
    const gone = (why: string): void => {
      if (this.server === p) this.server = undefined;
      answer(`ERROR ${why}`);
    };
    child.on('exit', () => gone(stderr.trim() || 'exited'));
    child.on('error', (e: NodeJS.ErrnoException) => gone(e.code === 'ENOENT' ? `${this.python} not found` : e.message));
    hold(child, false);
    this.server = p;
    return p;
  }
}

/** One python3 process of a SeekDataProbeServer and the answer it owes. */
interface ProbeProcess {
  readonly child: ChildProcessWithoutNullStreams;
  buffer: string;
  waiting?: (line: string) => void;
}

/** Keeps the event loop alive while a request is pending (and lets the process exit otherwise). */
function hold(child: ChildProcessWithoutNullStreams, on: boolean): void {
  for (const h of [child, child.stdin, child.stdout, child.stderr] as unknown as { ref?: () => void; unref?: () => void }[]) {
    if (on) h.ref?.();
    else h.unref?.();
  }
}
