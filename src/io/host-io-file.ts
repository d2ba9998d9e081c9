/**
 * The one place where the model's host operations become writes to real files: `step` and the
 * check/repair return ordered HostIO with flush barriers, and every command that changes a file
 * (run, check -r, convert, create) issues them here, so the crash-safety order the model chose is
 * the order the disk sees.
 */
import { closeSync, fstatSync, fsyncSync, ftruncateSync, openSync, write, writeSync } from 'node:fs';
import type { HostFile } from '../model/index.ts';
import { hostTargetOf, type HostIO, type HostTarget } from '../model/index.ts';

/** Counts of what a HostIOFileWriter issued. */
export interface HostIOStats {
  /** Host operations other than flush barriers. */
  readonly hostWrites: number;
  /** Bytes written (data and zeros). */
  readonly bytesWritten: number;
  /** Barriers that synced at least one file. */
  readonly flushes: number;
}

/** Open file descriptors of the files a HostIO list may address. */
export interface HostIOFiles {
  /** The qcow2 file. */
  readonly image: number;
  /** The external data file, when the image has one and the I/O may address it. */
  readonly data?: number;
}

/** Zeros are written in pieces of at most this many bytes. */
const ZERO_CHUNK = 1 << 20;
let zeroChunk: Uint8Array | undefined;

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
 * Issues HostIO lists to open files, in order: writes as writes, 'zero' as writes of zeros
 * (extending the file like a write), 'discard' as zeros clipped to the current end of the file
 * (never extending it), 'truncate' as ftruncate. A flush barrier fsyncs every file written since the
 * previous barrier (`barriers: 'fsync'`), or is passed over (`'skip'`: a caller that makes the file
 * durable some other way, like convert's temp-file-and-rename). Throws when the I/O addresses a file
 * it was not given, and passes on the file system's errors.
 */
export class HostIOFileWriter {
  private readonly lengths: Partial<Record<HostTarget, bigint>> = {};
  private readonly dirty = new Set<HostTarget>();
  private counts = { hostWrites: 0, bytesWritten: 0, flushes: 0 };

  constructor(
    private readonly files: HostIOFiles,
    private readonly barriers: 'fsync' | 'skip',
    private readonly fsync: (fd: number) => void = fsyncSync,
  ) {
    for (const t of ['image', 'data'] as const) {
      const fd = files[t];
      if (fd !== undefined) this.lengths[t] = BigInt(fstatSync(fd).size);
    }
  }

  /** What has been issued so far. */
  get stats(): HostIOStats {
    return { ...this.counts };
  }

  /** The current length of the file `target` as the writes left it. */
  length(target: HostTarget = 'image'): bigint {
    const n = this.lengths[target];
    if (n === undefined) throw new Error(`the ${target} file is not open`);
    return n;
  }

  /** Issues `io` in order. */
  apply(io: readonly HostIO[]): void {
    for (const op of io) {
      if (op.kind === 'flush') {
        if (this.barriers === 'fsync' && this.sync()) this.counts.flushes++;
        continue;
      }
      const target = hostTargetOf(op);
      const fd = this.files[target];
      if (fd === undefined) throw new Error(`host I/O addresses the ${target} file, which is not open`);
      let length = this.lengths[target]!;
      switch (op.kind) {
        case 'write':
          writeFully(fd, op.bytes, op.offset);
          this.counts.bytesWritten += op.bytes.length;
          if (op.offset + BigInt(op.bytes.length) > length) length = op.offset + BigInt(op.bytes.length);
          break;
        case 'zero':
          this.zeros(fd, op.offset, op.length);
          if (op.offset + op.length > length) length = op.offset + op.length;
          break;
        case 'discard': {
          const end = op.offset + op.length < length ? op.offset + op.length : length;
          if (end > op.offset) this.zeros(fd, op.offset, end - op.offset);
          break;
        }
        case 'truncate':
          ftruncateSync(fd, position(op.length, 0));
          length = op.length;
          break;
      }
      this.lengths[target] = length;
      this.counts.hostWrites++;
      this.dirty.add(target);
    }
  }

  /** fsyncs every file written since the last barrier; false when there was none. */
  sync(): boolean {
    if (this.dirty.size === 0) return false;
    for (const t of this.dirty) this.fsync(this.files[t]!);
    this.dirty.clear();
    return true;
  }

  private zeros(fd: number, offset: bigint, count: bigint): void {
    zeroChunk ??= new Uint8Array(ZERO_CHUNK);
    for (let pos = offset; pos < offset + count;) {
      const left = offset + count - pos;
      const n = left < BigInt(ZERO_CHUNK) ? Number(left) : ZERO_CHUNK;
      writeFully(fd, zeroChunk.subarray(0, n), pos);
      pos += BigInt(n);
      this.counts.bytesWritten += n;
    }
  }
}

/**
 * Opens the files at `paths` read-write, issues `io` with every barrier an fsync, fsyncs what was
 * written after the last barrier, and closes them. The data file is opened only when `io` writes to it.
 */
export function applyHostIOToPaths(paths: { readonly image: string; readonly data?: string }, io: readonly HostIO[]): HostIOStats {
  const writesData = io.some((x) => x.kind !== 'flush' && hostTargetOf(x) === 'data');
  if (writesData && paths.data === undefined) throw new Error('the host I/O writes a data file that was not named');
  const image = openSync(paths.image, 'r+');
  let data: number | undefined;
  try {
    if (writesData) data = openSync(paths.data!, 'r+');
    const w = new HostIOFileWriter(data !== undefined ? { image, data } : { image }, 'fsync');
    w.apply(io);
    w.sync();
    return w.stats;
  } finally {
    if (data !== undefined) closeSync(data);
    closeSync(image);
  }
}

/**
 * Writes the sparse HostFile `file` to a new file at `path` (which must not exist): only its
 * non-zero pages (contiguous pages coalesced, at most 1 MiB per write), then the length, then an
 * fsync. Holes stay holes, so a large preallocated image costs only its metadata.
 */
export function writeHostFile(path: string, file: HostFile): void {
  const fd = openSync(path, 'wx', 0o644);
  try {
    const PAGE = 4096;
    const MAX_RUN = 256;
    const keys = [...file.pages.keys()].sort((a, b) => a - b);
    const buf = new Uint8Array(MAX_RUN * PAGE);
    for (let i = 0; i < keys.length;) {
      let j = i + 1;
      while (j < keys.length && keys[j] === keys[j - 1]! + 1 && j - i < MAX_RUN) j++;
      for (let k = i; k < j; k++) buf.set(file.pages.get(keys[k]!)!, (k - i) * PAGE);
      const start = BigInt(keys[i]!) * BigInt(PAGE);
      // The last page may extend past the file's length: cut it there.
      const n = start + BigInt((j - i) * PAGE) > file.length ? Number(file.length - start) : (j - i) * PAGE;
      writeFully(fd, buf.subarray(0, n), start);
      i = j;
    }
    ftruncateSync(fd, position(file.length, 0));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
