/**
 * HostIO to real files for the commands that compute their I/O before issuing it (run, check -r):
 * issued through the disk layer's applier (src/disk/apply-io.ts, HostIoIssuer — the one place
 * the model's host operations become writes, the same code Qcow2Disk issues its own with) over file
 * backends, so the crash-safety order the model chose is the order the disk sees. Also the byte
 * helpers convert's raw output writes with, and writeHostFile for a new image's first bytes.
 */
import { write, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { HostIoIssuer, isDiskError, writeHostFileTo } from '../disk/index.ts';
import type { HostFile } from '../model/index.ts';
import { hostTargetOf, type HostIO } from '../model/index.ts';
import { fileBackend, type FileBackend } from './file-backend.ts';

/** Counts of what applyHostIOToPaths issued. */
export interface HostIOStats {
  /** Host operations other than flush barriers. */
  readonly hostWrites: number;
  /** Bytes written (data and zeros). */
  readonly bytesWritten: number;
  /** Barriers that synced at least one file. */
  readonly flushes: number;
}

/** A file offset the fs interface can take (Node's positions are doubles). */
function position(offset: bigint, length: number): number {
  if (offset + BigInt(length) > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`a write at ${offset} is beyond what the file system interface can address`);
  }
  return Number(offset);
}

/** Writes all of `bytes` at `offset` of `fd` (repeating short writes); a write of nothing throws. */
export function writeFully(fd: number, bytes: Uint8Array, offset: bigint): void {
  const at = position(offset, bytes.length);
  let done = 0;
  while (done < bytes.length) {
    const n = writeSync(fd, bytes, done, bytes.length - done, at + done);
    if (n <= 0) throw new Error(`a write at ${offset + BigInt(done)} wrote nothing`);
    done += n;
  }
}

/** writeFully on libuv's thread pool: resolves once every byte is written. */
export async function writeFullyAsync(fd: number, bytes: Uint8Array, offset: bigint): Promise<void> {
  const at = position(offset, bytes.length);
  let done = 0;
  while (done < bytes.length) {
    const from = done;
    const n = await new Promise<number>((resolve, reject) => {
      write(fd, bytes, from, bytes.length - from, at + from, (err, written) => (err ? reject(err) : resolve(written)));
    });
    if (n <= 0) throw new Error(`a write at ${offset + BigInt(from)} wrote nothing`);
    done += n;
  }
}

/**
 * Opens the files at `paths` read-write, issues `io` (every flush barrier an fsync of the files
 * written since the previous one), fsyncs what was written after the last barrier, and closes them.
 * The data file is opened only when `io` writes to it. A file system error is thrown as it came
 * (its `code`: ENOSPC, EIO...), after the writes issued before it.
 */
export async function applyHostIOToPaths(paths: { readonly image: string; readonly data?: string }, io: readonly HostIO[]): Promise<HostIOStats> {
  const writesData = io.some((x) => x.kind !== 'flush' && hostTargetOf(x) === 'data');
  if (writesData && paths.data === undefined) throw new Error('the host I/O writes a data file that was not named');
  const opened: FileBackend[] = [];
  try {
    const image = await fileBackend(paths.image, { readOnly: false });
    opened.push(image);
    const data = writesData ? await fileBackend(paths.data!, { readOnly: false }) : undefined;
    if (data !== undefined) opened.push(data);
    const issuer = await HostIoIssuer.open(data !== undefined ? { image, data } : { image });
    await issuer.issue(io);
    await issuer.flush();
    return { ...issuer.counts };
  } catch (e) {
    // The file system's own error (with its errno code) for the caller's message.
    throw isDiskError(e) && e.cause !== undefined ? e.cause : e;
  } finally {
    for (const b of opened) await b.close!();
  }
}

/**
 * Writes the sparse HostFile `file` to a new file at `path` (which must not exist): only its
 * non-zero pages, then the length, then an fsync (src/disk/write-host-file.ts). Holes stay holes,
 * so a large preallocated image costs only its metadata.
 */
export async function writeHostFile(path: string, file: HostFile): Promise<void> {
  const created = await open(path, 'wx', 0o644);
  await created.close();
  const backend = await fileBackend(path, { readOnly: false });
  try {
    await writeHostFileTo(backend, file);
  } finally {
    await backend.close!();
  }
}
