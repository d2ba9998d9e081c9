/**
 * The driver's backend for a local file (Node's FileHandle): positioned reads and writes on libuv's
 * thread pool (or, with syncIo, on the JavaScript thread), fdatasync at flush barriers (as QEMU's
 * file-posix), ftruncate.
 */
import { fdatasyncSync, fstatSync, ftruncateSync, readSync, writeSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { DiskBackend } from '../disk/index.ts';

/** A DiskBackend over an open file, with what the file system says about it. */
export interface FileBackend extends DiskBackend {
  /** The path opened. */
  readonly path: string;
  /** st_dev and st_ino of the file opened (chains refuse a file that appears twice). */
  readonly dev: bigint;
  readonly ino: bigint;
  /** st_blocks × 512 when the backend was opened. */
  readonly allocatedBytes: bigint;
}

/** The fs interface takes positions as doubles: offsets past 2^53 are refused, not rounded. */
function position(offset: bigint, length: number): number {
  if (offset < 0n || offset + BigInt(length) > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw Object.assign(new RangeError(`offset ${offset} is beyond what the file system interface can address`), { code: 'EFBIG' });
  }
  return Number(offset);
}

/** The error of a read that met the end of the file. */
function shortRead(at: number, length: number, offset: bigint): Error {
  return Object.assign(new Error(`the file ended at ${at}, reading ${length} byte(s) at ${offset} (was it changed?)`), { code: 'EIO' });
}

/** A synchronous read of target.length bytes at `offset`, continued until complete. */
function readFully(calls: SyncFileCalls, offset: bigint, target: Uint8Array): void {
  const at = position(offset, target.length);
  let done = 0;
  while (done < target.length) {
    const n = calls.read(target, done, target.length - done, at + done);
    if (n === 0) throw shortRead(at + done, target.length, offset);
    done += n;
  }
}

/** How fileBackend opens and accesses a file. */
export interface FileBackendOptions {
  /** Default true: no write/truncate/zero. */
  readonly readOnly?: boolean;
  /**
   * Issue reads, writes and flushes as synchronous system calls on the JavaScript thread instead of
   * on libuv's thread pool. The driver issues one call at a time anyway, so the pool only adds a
   * round trip (tens of microseconds) to every call; for a file in the page cache the synchronous
   * call is several times faster. The price: the event loop waits while a call runs (a disk read
   * that misses the cache, an fdatasync). `qcow2-ref serve` uses it; the default is the pool.
   */
  readonly syncIo?: boolean;
}

/** The system calls a file backend makes: on libuv's pool (async) or on the JavaScript thread (sync). */
interface FileCalls {
  stat(): Promise<{ size: bigint; dev: bigint; ino: bigint; blocks: bigint; isDirectory(): boolean }>;
  /** Bytes read into target[pos, pos + n) from file position `at` (0 at the end of the file). */
  read(target: Uint8Array, pos: number, n: number, at: number): Promise<number> | number;
  /** Bytes written from data[pos, pos + n) at file position `at`. */
  write(data: Uint8Array, pos: number, n: number, at: number): Promise<number> | number;
  truncate(length: number): Promise<void> | void;
  datasync(): Promise<void> | void;
}

function asyncCalls(fh: FileHandle): FileCalls {
  return {
    stat: () => fh.stat({ bigint: true }),
    read: async (t, pos, n, at) => (await fh.read(t, pos, n, at)).bytesRead,
    write: async (d, pos, n, at) => (await fh.write(d, pos, n, at)).bytesWritten,
    truncate: (length) => fh.truncate(length),
    datasync: () => fh.datasync(),
  };
}

/** FileCalls whose reads complete on the JavaScript thread. */
interface SyncFileCalls extends FileCalls {
  read(target: Uint8Array, pos: number, n: number, at: number): number;
}

function syncCalls(fh: FileHandle): SyncFileCalls {
  const fd = fh.fd;
  return {
    stat: async () => fstatSync(fd, { bigint: true }),
    read: (t, pos, n, at) => readSync(fd, t, pos, n, at),
    write: (d, pos, n, at) => writeSync(fd, d, pos, n, at),
    truncate: (length) => ftruncateSync(fd, length),
    datasync: () => fdatasyncSync(fd),
  };
}

/**
 * Opens the file at `path` as a backend: read-only (no write/truncate/zero) unless `readOnly` is
 * false. Throws the file system's error (ENOENT, EACCES, EISDIR...). Reads past the end of the file
 * fail (the driver never asks for them); a short read or write is continued until complete.
 */
export async function fileBackend(path: string, opts: FileBackendOptions = {}): Promise<FileBackend> {
  const readOnly = opts.readOnly !== false;
  const fh: FileHandle = await open(path, readOnly ? 'r' : 'r+');
  const sync = opts.syncIo === true ? syncCalls(fh) : undefined;
  const calls = sync ?? asyncCalls(fh);
  let st;
  try {
    st = await calls.stat();
    if (st.isDirectory()) throw Object.assign(new Error(`EISDIR: illegal operation on a directory, open '${path}'`), { code: 'EISDIR' });
  } catch (e) {
    await fh.close();
    throw e;
  }
  let closed = false;
  const backend: FileBackend = {
    path,
    dev: st.dev,
    ino: st.ino,
    allocatedBytes: st.blocks * 512n,
    size: async () => (await calls.stat()).size,
    read: async (offset, target) => {
      const at = position(offset, target.length);
      let done = 0;
      while (done < target.length) {
        const n = await calls.read(target, done, target.length - done, at + done);
        if (n === 0) throw shortRead(at + done, target.length, offset);
        done += n;
      }
    },
    ...(sync !== undefined ? { readSync: (offset: bigint, target: Uint8Array) => readFully(sync, offset, target) } : {}),
    close: async () => {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
  if (readOnly) return backend;
  return {
    ...backend,
    write: async (offset, data) => {
      const at = position(offset, data.length);
      let done = 0;
      while (done < data.length) {
        const n = await calls.write(data, done, data.length - done, at + done);
        if (n <= 0) throw Object.assign(new Error(`a write at ${at + done} wrote nothing`), { code: 'EIO' });
        done += n;
      }
    },
    truncate: async (length) => calls.truncate(position(length, 0)),
    // fdatasync, as QEMU's file-posix flushes: the data and what is needed to read it back (the length).
    flush: async () => calls.datasync(),
  };
}
