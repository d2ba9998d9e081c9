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
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import type { HostAllocation } from '../model/block-status.ts';

/** The interpreter used for the probe (looked up in PATH). */
export const DEFAULT_PYTHON = 'python3';

/** Prints, per file argument, a line `#` then one `DATA_START HOLE_START` line per data extent. */
const SCRIPT = `
import os, sys
for path in sys.argv[1:]:
    print('#')
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        pos = 0
        while pos < end:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            print(d, h)
            pos = h
    finally:
        os.close(fd)
`;

/** The python3 probe could not be run (interpreter missing, or it failed). */
export class HostProbeError extends Error {
  override readonly name = 'HostProbeError';
}

function statFacts(path: string): { length: bigint; allocatedBytes: bigint } {
  const st = statSync(path, { bigint: true });
  return { length: st.size, allocatedBytes: st.blocks * 512n };
}

function parseRanges(block: string): (readonly [bigint, bigint])[] {
  const lines = block.split('\n').filter((l) => l.trim() !== '');
  return lines.map((l) => {
    const [a, b] = l.trim().split(' ');
    return [BigInt(a!), BigInt(b!)] as const;
  });
}

/**
 * The allocation of each file of `paths` (same order), from one python3 process: the length and
 * st_blocks × 512 from `stat`, the data ranges from SEEK_DATA/SEEK_HOLE. Throws HostProbeError when
 * python3 cannot be run or fails, and the fs error when a file cannot be stat'ed.
 */
export function probeHostAllocations(paths: readonly string[], python = DEFAULT_PYTHON): HostAllocation[] {
  if (paths.length === 0) return [];
  const facts = paths.map(statFacts);
  let out: string;
  try {
    out = execFileSync(python, ['-c', SCRIPT, ...paths], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    const why = err.code === 'ENOENT' ? `${python} not found` : (err.stderr ?? err.message).trim().split('\n').pop() ?? err.message;
    throw new HostProbeError(`cannot probe file allocation with SEEK_DATA/SEEK_HOLE: ${why}`);
  }
  const blocks = out.split('#\n').slice(1);
  if (blocks.length !== paths.length) throw new HostProbeError(`cannot probe file allocation: unexpected probe output`);
  return paths.map((_, i) => ({ ...facts[i]!, data: parseRanges(blocks[i]!) }));
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
