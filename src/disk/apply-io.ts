/**
 * The model's host operations issued to backends, in order, with a durable flush at every barrier:
 * the crash-safety order `step` chose (refcount increase before the mapping that uses it, unmapping
 * before the refcount decrease) becomes the order the storage sees.
 */
import { hostTargetOf, type HostIO, type HostTarget } from '../model/index.ts';
import type { DiskBackend } from './backend.ts';
import { BackendReader } from './backend-reader.ts';
import { DiskError, backendError, isDiskError } from './errors.ts';

/** Zeros are written in pieces of at most this many bytes when a backend has no `zero`. */
const ZERO_CHUNK = 1 << 20;
let zeroChunk: Uint8Array | undefined;

/** One file the I/O may address: its backend and the reader whose cache must follow it. */
export interface IoTarget {
  readonly backend: DiskBackend;
  readonly reader: BackendReader;
}

/** What apply issued (counts for tests and cost reports). */
export interface IoCounts {
  hostWrites: number;
  bytesWritten: number;
  flushes: number;
}

/**
 * Issues `io` to the targets in order: 'write' as a write, 'zero' as backend.zero (or written zeros;
 * it extends the file like a write), 'discard' as zeros clipped to the current end (never extending
 * it), 'truncate' as truncate; a flush barrier flushes every target written since the previous one.
 * Each reader's cache and length are updated after its backend call succeeded. On a failure the
 * range the failed call addressed is forgotten by the reader (its content is unknown) and
 * DiskError('io') is thrown; what was issued before stays issued.
 */
export async function applyIo(io: readonly HostIO[], targets: Partial<Record<HostTarget, IoTarget>>, counts: IoCounts, dirty: Set<HostTarget>): Promise<void> {
  for (const op of io) {
    if (op.kind === 'flush') {
      if (dirty.size === 0) continue;
      for (const t of [...dirty]) {
        const b = targets[t]!.backend;
        try {
          await b.flush?.();
        } catch (e) {
          throw backendError('flush', 0n, 0, e);
        }
        dirty.delete(t);
      }
      counts.flushes++;
      continue;
    }
    const t = hostTargetOf(op);
    const target = targets[t];
    if (target === undefined) throw new DiskError('internal', `the model's host I/O addresses the ${t} file, which is not open`);
    const { backend, reader } = target;
    if (backend.write === undefined || backend.truncate === undefined) throw new DiskError('read-only', `the ${t} backend is read-only`);
    dirty.add(t);
    switch (op.kind) {
      case 'write':
        try {
          await backend.write(op.offset, op.bytes);
        } catch (e) {
          reader.forget(op.offset, op.bytes.length);
          throw backendError('write', op.offset, op.bytes.length, e);
        }
        reader.applyWrite(op.offset, op.bytes);
        counts.bytesWritten += op.bytes.length;
        break;
      case 'zero':
        await zeros(target, op.offset, op.length, counts);
        reader.applyZero(op.offset, op.length, true);
        break;
      case 'discard': {
        const end = op.offset + op.length < reader.length ? op.offset + op.length : reader.length;
        if (end > op.offset) {
          await zeros(target, op.offset, end - op.offset, counts);
          reader.applyZero(op.offset, end - op.offset, false);
        }
        break;
      }
      case 'truncate':
        try {
          await backend.truncate(op.length);
        } catch (e) {
          reader.forget(op.length < reader.length ? op.length : reader.length, 1);
          throw backendError('truncate', op.length, 0, e);
        }
        reader.applyTruncate(op.length);
        break;
    }
    counts.hostWrites++;
  }
}

/**
 * Zeros at [offset, offset + count) of the target. The part at or past the current end of the file
 * is made by extending the file (truncate: a hole, which reads as zeros — the common case, a new
 * cluster's copy-on-write area at the end of the file); the part inside it by backend.zero, else by
 * writes of a shared zero buffer. The reader is updated by the caller.
 */
async function zeros(target: IoTarget, offset: bigint, count: bigint, counts: IoCounts): Promise<void> {
  const { backend, reader } = target;
  const end = offset + count;
  const insideEnd = end < reader.length ? end : reader.length;
  if (end > reader.length) {
    try {
      await backend.truncate!(end);
    } catch (e) {
      throw backendError('truncate', end, 0, e);
    }
  }
  if (insideEnd <= offset) return;
  const inside = insideEnd - offset;
  if (backend.zero !== undefined) {
    try {
      await backend.zero(offset, inside);
    } catch (e) {
      throw backendError('zero', offset, inside, e);
    }
    return;
  }
  zeroChunk ??= new Uint8Array(ZERO_CHUNK);
  for (let pos = offset; pos < insideEnd;) {
    const left = insideEnd - pos;
    const n = left < BigInt(ZERO_CHUNK) ? Number(left) : ZERO_CHUNK;
    try {
      await backend.write!(pos, zeroChunk.subarray(0, n));
    } catch (e) {
      throw backendError('write', pos, n, e);
    }
    pos += BigInt(n);
    counts.bytesWritten += n;
  }
}

/**
 * Issues host I/O computed without a driver — a repair, a whole op script planned on the pure model,
 * a conversion's steps — to backends, exactly as Qcow2Disk issues its own (applyIo: in order, a
 * durable flush of every backend written since the previous barrier at each flush barrier; a backend
 * without `flush` makes barriers free, for a caller that makes the file durable another way). The
 * backends must be writable and hold what the model read when it computed the I/O.
 */
export class HostIoIssuer {
  /** What was issued so far. */
  readonly counts: IoCounts = { hostWrites: 0, bytesWritten: 0, flushes: 0 };
  private readonly dirty = new Set<HostTarget>();

  private constructor(private readonly targets: Partial<Record<HostTarget, IoTarget>>) {}

  /** An issuer to `backends` (the image file and, when the I/O may address it, the data file). */
  static async open(backends: Partial<Record<HostTarget, DiskBackend>>): Promise<HostIoIssuer> {
    const targets: Partial<Record<HostTarget, IoTarget>> = {};
    for (const t of ['image', 'data'] as const) {
      const backend = backends[t];
      if (backend === undefined) continue;
      let length: bigint;
      try {
        length = await backend.size();
      } catch (e) {
        throw isDiskError(e) ? e : backendError('size', 0n, 0, e);
      }
      // Nothing is read through it: a reader of no capacity only follows the length the writes leave.
      targets[t] = { backend, reader: new BackendReader(backend, length, 0) };
    }
    return new HostIoIssuer(targets);
  }

  /** Issues `io` in order (see applyIo for the errors). */
  issue(io: readonly HostIO[]): Promise<void> {
    return applyIo(io, this.targets, this.counts, this.dirty);
  }

  /** Flushes every backend written since the last barrier (not counted in `counts.flushes`). */
  async flush(): Promise<void> {
    for (const t of [...this.dirty]) {
      try {
        await this.targets[t]!.backend.flush?.();
      } catch (e) {
        throw backendError('flush', 0n, 0, e);
      }
      this.dirty.delete(t);
    }
  }

  /** The length of file `target` as the writes left it. */
  length(target: HostTarget = 'image'): bigint {
    const t = this.targets[target];
    if (t === undefined) throw new DiskError('internal', `the ${target} file is not open`);
    return t.reader.length;
  }
}
