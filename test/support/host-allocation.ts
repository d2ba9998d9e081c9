/**
 * How a real file is stored on the file system — `stat` st_blocks and the data/hole ranges
 * SEEK_DATA/SEEK_HOLE report — for `mapImage`'s host-allocation option (src/model/map.ts), so our map
 * can be compared with `qemu-img map`, which consults the same information. Node has no SEEK_DATA,
 * so the ranges come from a few lines of Python (python3 is part of every Debian with qemu-utils'
 * test dependencies here); a missing python3 fails loudly.
 */
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import type { HostAllocation } from '../../src/model/map.ts';

const SCRIPT = `
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
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
`;

/** The allocation of the file at `path` (throws if python3 is missing or the file cannot be read). */
export function probeHostAllocation(path: string): HostAllocation {
  const st = statSync(path, { bigint: true });
  const out = execFileSync('/usr/bin/python3', ['-c', SCRIPT, path], { encoding: 'utf8' });
  const data = out.trim() === '' ? [] : out.trim().split('\n').map((l) => {
    const [a, b] = l.split(' ');
    return [BigInt(a!), BigInt(b!)] as const;
  });
  return { length: st.size, allocatedBytes: st.blocks * 512n, data };
}
