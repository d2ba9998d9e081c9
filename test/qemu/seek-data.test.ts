/**
 * The SEEK_DATA probe (src/io/seek-data.ts), one-shot and as a long-lived server, against files whose
 * holes are made here. Needs python3 (installed by scripts/setup.sh); a missing one fails loudly.
 */
import { mkdtempSync, rmSync, writeFileSync, openSync, writeSync, ftruncateSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HostProbeError, probeHostAllocation, SeekDataProbeServer } from '../../src/io/seek-data.ts';

const dir = mkdtempSync(join(tmpdir(), 'qcow2-seek-data-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A 4 MiB file with data only in its first and last MiB (a hole in between, where the file system allows). */
function sparseFile(name: string): string {
  const path = join(dir, name);
  const fd = openSync(path, 'w');
  ftruncateSync(fd, 4 << 20);
  writeSync(fd, new Uint8Array(1 << 20).fill(1), 0, 1 << 20, 0);
  writeSync(fd, new Uint8Array(1 << 20).fill(2), 0, 1 << 20, 3 << 20);
  closeSync(fd);
  return path;
}

describe('SEEK_DATA probe', () => {
  it('one-shot and server agree on a sparse file, and the data covers exactly what was written', async () => {
    const path = sparseFile('sparse');
    const once = probeHostAllocation(path);
    expect(once.length).toBe(4n << 20n);
    const covered = (a: bigint): boolean => once.data.some(([s, e]) => s <= a && a < e);
    expect(covered(0n) && covered((4n << 20n) - 1n)).toBe(true);
    const server = new SeekDataProbeServer();
    try {
      expect(await server.probe([path])).toEqual([once]);
    } finally {
      server.close();
    }
  });

  // Regression: the server kept one pending-answer slot for all its processes, so a process killed by
  // close() answered, when it exited, the first request made to its replacement — with an error.
  it('after close(), a new request is answered by the new process, never by the old one exiting', async () => {
    const path = sparseFile('again');
    const server = new SeekDataProbeServer();
    try {
      for (let i = 0; i < 10; i++) {
        await server.probe([path]);
        server.close();
        const [a] = await server.probe([path]);
        expect(a!.length).toBe(4n << 20n);
        server.close();
      }
    } finally {
      server.close();
    }
  });

  it('a missing file or interpreter is a HostProbeError, and the server recovers', async () => {
    const server = new SeekDataProbeServer();
    try {
      await expect(server.probe([join(dir, 'no-such-file')])).rejects.toThrow(HostProbeError);
      writeFileSync(join(dir, 'small'), 'x');
      const [a] = await server.probe([join(dir, 'small')]);
      expect(a!.length).toBe(1n);
    } finally {
      server.close();
    }
    await expect(new SeekDataProbeServer('no-such-python').probe([join(dir, 'small')])).rejects.toThrow(/no-such-python not found/);
  });
});
