/**
 * The I/O edge of lazily loaded images: a HostReader (src/model/host-file.ts) over a real file, read
 * with positioned synchronous reads (pread). The model stays free of fs; this is what the CLI hands it.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { HostReaderError, type HostReader } from '../model/index.ts';

/** A HostReader over an open file, with the means to close it and a count of the bytes read. */
export interface FileReader extends HostReader {
  /** The file descriptor read from. */
  readonly fd: number;
  /** Bytes handed out by `read` and `readInto` so far (for tests and cost reports). */
  readonly bytesRead: number;
  /** `read` into `target[pos, pos + count)` (see HostReader.readInto); same errors. */
  readInto(offset: bigint, target: Uint8Array, pos: number, count: number): void;
  /**
   * Closes the descriptor when this reader opened it (from a path); a reader over a descriptor the
   * caller passed leaves it open. Reading after close throws HostReaderError('io').
   */
  close(): void;
}

/**
 * A HostReader of the file at `source` (a path, opened read-only, or an open descriptor). `length`
 * is the file's size when the reader is made; the file must not change while HostFiles built on
 * the reader are used (see HostReader) — in particular, a driver that writes the file must stop
 * using every Image read through this reader before its first write, or rebase onto a new reader
 * after the writes (rebaseHostFile). Opening a path can throw the usual fs errors (ENOENT, EACCES);
 * `read` throws HostReaderError: 'io' for an I/O error, 'short-read' when the file ended early.
 */
export function fileReader(source: number | string): FileReader {
  const owned = typeof source === 'string';
  const fd = owned ? openSync(source, 'r') : source;
  let length: bigint;
  try {
    length = BigInt(fstatSync(fd, { bigint: true }).size);
  } catch (e) {
    if (owned) closeSync(fd);
    throw e;
  }
  let closed = false;
  let bytesRead = 0;
  const readInto = (offset: bigint, out: Uint8Array, pos: number, count: number): void => {
    if (closed) throw new HostReaderError('io', 'read from a closed file reader');
    if (!(pos >= 0 && count >= 0 && pos + count <= out.length)) throw new RangeError(`target of ${out.length} bytes cannot take ${count} bytes at ${pos}`);
    let done = 0;
    while (done < count) {
      let n: number;
      try {
        // A bigint position is exact at any offset.
        n = readSync(fd, out, pos + done, count - done, offset + BigInt(done));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        throw new HostReaderError('io', `read of ${count} byte(s) at 0x${offset.toString(16)} failed: ${err.code ?? err.message}`);
      }
      if (n === 0) throw new HostReaderError('short-read', `the file ended at 0x${(offset + BigInt(done)).toString(16)}, reading ${count} byte(s) at 0x${offset.toString(16)} (was it changed?)`);
      done += n;
    }
    bytesRead += count;
  };
  return {
    fd,
    length,
    get bytesRead() {
      return bytesRead;
    },
    read(offset: bigint, count: number): Uint8Array {
      const out = new Uint8Array(count);
      readInto(offset, out, 0, count);
      return out;
    },
    readInto,
    close(): void {
      if (closed) return;
      closed = true;
      if (owned) closeSync(fd);
    },
  };
}
