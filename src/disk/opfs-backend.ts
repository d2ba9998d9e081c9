/**
 * A read-write DiskBackend over an Origin Private File System file, through the
 * FileSystemSyncAccessHandle a dedicated worker gets from `fileHandle.createSyncAccessHandle()`
 * (the only OPFS API with positioned reads and writes and a real flush). The handle's methods are
 * synchronous (Chromium 108+, Firefox 111+, Safari 16.4+); each call of this backend does its work
 * in one go and resolves. The File System standard makes a write past the end fill the gap with
 * zeros, as DiskBackend requires.
 *
 * Errors: QuotaExceededError becomes ENOSPC, any other failure of the handle EIO, an offset past
 * Number.MAX_SAFE_INTEGER EFBIG (the API takes numbers), a call after close() EBADF; each a
 * BackendError keeping the browser's exception as `cause`.
 */
import type { DiskBackend } from './backend.ts';
import { BackendError, numberRange, type BackendErrorCode } from './backend-errors.ts';

/** The part of FileSystemSyncAccessHandle this backend uses (the project compiles without the DOM lib). */
export interface SyncAccessHandleLike {
  read(buffer: Uint8Array, options?: { at?: number }): number;
  write(buffer: Uint8Array, options?: { at?: number }): number;
  truncate(newSize: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
}

/** An OPFS backend: a DiskBackend whose write, truncate, flush and close are always present. */
export interface OpfsBackend extends DiskBackend {
  write(offset: bigint, data: Uint8Array): Promise<void>;
  truncate(length: bigint): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** The errno for an exception a sync access handle threw. */
function codeOf(e: unknown): BackendErrorCode {
  const name = typeof e === 'object' && e !== null && 'name' in e ? (e as { name: unknown }).name : undefined;
  return name === 'QuotaExceededError' ? 'ENOSPC' : 'EIO';
}

/**
 * A backend reading and writing the OPFS file behind `handle`. It owns the handle from now on:
 * close() closes it (releasing the file's lock so that other contexts can open it).
 */
export function opfsBackend(handle: SyncAccessHandleLike): OpfsBackend {
  let closed = false;
  /** Runs `f` on the open handle, turning what it throws into a BackendError. */
  const call = <T>(what: string, range: { offset?: bigint; length?: bigint }, f: () => T): T => {
    if (closed) throw new BackendError('opfs', 'EBADF', `${what} after close()`, range);
    try {
      return f();
    } catch (cause) {
      if (cause instanceof BackendError) throw cause;
      throw new BackendError('opfs', codeOf(cause), `${what} failed: ${String(cause)}`, { ...range, cause });
    }
  };

  const backend: OpfsBackend = {
    async size() {
      return call('getSize', {}, () => BigInt(handle.getSize()));
    },
    async read(offset, target) {
      backend.readSync!(offset, target);
    },
    // The handle reads synchronously: the driver reads guest data straight into its buffers.
    readSync(offset, target) {
      const [start, end] = numberRange('opfs', 'read', offset, target.length);
      const range = { offset, length: BigInt(target.length) };
      call('read', range, () => {
        const size = handle.getSize();
        if (end > size) throw new BackendError('opfs', 'EINVAL', `read of [${start}, ${end}) past the end of the file (${size} bytes)`, range);
        // read() may return fewer bytes than asked; 0 before the end means the file shrank under us.
        for (let done = 0; done < target.length; ) {
          const got = handle.read(target.subarray(done), { at: start + done });
          if (got <= 0) throw new BackendError('opfs', 'EIO', `read of [${start}, ${end}) stopped after ${done} bytes`, range);
          done += got;
        }
      });
    },
    async write(offset, data) {
      const [start, end] = numberRange('opfs', 'write', offset, data.length);
      const range = { offset, length: BigInt(data.length) };
      call('write', range, () => {
        for (let done = 0; done < data.length; ) {
          const put = handle.write(data.subarray(done), { at: start + done });
          if (put <= 0) throw new BackendError('opfs', 'EIO', `write of [${start}, ${end}) stopped after ${done} bytes`, range);
          done += put;
        }
      });
    },
    async truncate(length) {
      const [, end] = numberRange('opfs', 'truncate', length, 0);
      call('truncate', { offset: length }, () => handle.truncate(end));
    },
    async flush() {
      call('flush', {}, () => handle.flush());
    },
    async close() {
      if (closed) return;
      try {
        handle.close();
      } catch (cause) {
        throw new BackendError('opfs', codeOf(cause), `close failed: ${String(cause)}`, { cause });
      } finally {
        closed = true; // a handle whose close failed is not used again
      }
    },
  };
  return backend;
}
