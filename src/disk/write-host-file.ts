/**
 * A new image's file (createImage's in-memory HostFile) written to empty storage: only its non-zero
 * pages, so a large preallocated image costs its metadata, not its size. One place for `create` and
 * `convert` (through src/io's writeHostFile) and for Qcow2Disk.create.
 */
import { hostPage, type HostFile } from '../model/index.ts';
import type { DiskBackend } from './backend.ts';
import { DiskError, backendError, isDiskError } from './errors.ts';

/**
 * Writes the in-memory HostFile `file` to the empty, writable `backend`: its non-zero pages,
 * contiguous ones coalesced into writes of at most 1 MiB, then the length, then a flush. Throws
 * DiskError ('range' for a backend that is not empty, 'io' for a backend failure).
 */
export async function writeHostFileTo(backend: DiskBackend, file: HostFile): Promise<void> {
  const PAGE = 4096;
  const MAX_RUN = 256;
  const keys = [...file.pages.keys()].sort((a, b) => a - b);
  const buf = new Uint8Array(MAX_RUN * PAGE);
  try {
    if ((await backend.size()) !== 0n) throw new DiskError('range', 'create needs an empty backend');
    for (let i = 0; i < keys.length;) {
      let j = i + 1;
      while (j < keys.length && keys[j] === keys[j - 1]! + 1 && j - i < MAX_RUN) j++;
      for (let k = i; k < j; k++) buf.set(hostPage(file, keys[k]!) ?? new Uint8Array(PAGE), (k - i) * PAGE);
      const start = BigInt(keys[i]!) * BigInt(PAGE);
      const n = start + BigInt((j - i) * PAGE) > file.length ? Number(file.length - start) : (j - i) * PAGE;
      await backend.write!(start, buf.slice(0, n));
      i = j;
    }
    await backend.truncate!(file.length);
    await backend.flush?.();
  } catch (e) {
    throw isDiskError(e) ? e : backendError('write', 0n, 0, e);
  }
}
