/**
 * A read-write DiskBackend in memory: one growing byte array (capacity doubles, so a sequence of
 * appends costs amortised O(1) per byte). For tests, for images built in a browser before they are
 * saved, and as the simplest example of the DiskBackend contract. Nothing is durable, so there is no
 * flush; `bytes()` hands back a copy of the content.
 */
import type { DiskBackend } from './backend.ts';
import { BackendError, numberRange } from './backend-errors.ts';

/** A memory backend: a DiskBackend whose write and truncate are always present, plus its content. */
export interface MemoryBackend extends DiskBackend {
  write(offset: bigint, data: Uint8Array): Promise<void>;
  truncate(length: bigint): Promise<void>;
  /** A copy of the store's current content (its length is `size()`). */
  bytes(): Uint8Array;
}

/** A memory backend holding a copy of `initial` (empty without it). */
export function memoryBackend(initial?: Uint8Array): MemoryBackend {
  // Invariant: buf[length, buf.length) is all zeros, so growing needs no clearing.
  let buf: Uint8Array = new Uint8Array(initial === undefined ? 0 : initial.length);
  if (initial !== undefined) buf.set(initial);
  let length = buf.length;

  /** Makes the capacity at least `end`, keeping the content. */
  const reserve = (end: number, offset: bigint, len: bigint): void => {
    if (end <= buf.length) return;
    const capacity = Math.max(end, Math.min(buf.length * 2, Number.MAX_SAFE_INTEGER), 4096);
    let next: Uint8Array;
    try {
      next = new Uint8Array(capacity);
    } catch (cause) {
      try {
        next = new Uint8Array(end); // doubling may be what failed
      } catch {
        throw new BackendError('memory', 'ENOMEM', `cannot grow the store to ${end} bytes`, { offset, length: len, cause });
      }
    }
    next.set(buf.subarray(0, length));
    buf = next;
  };

  return {
    async size() {
      return BigInt(length);
    },
    async read(offset, target) {
      const [start, end] = numberRange('memory', 'read', offset, target.length);
      if (end > length) {
        throw new BackendError('memory', 'EINVAL', `read of [${start}, ${end}) past the end of the store (${length} bytes)`, {
          offset,
          length: BigInt(target.length),
        });
      }
      target.set(buf.subarray(start, end));
    },
    async write(offset, data) {
      const [start, end] = numberRange('memory', 'write', offset, data.length);
      if (data.length === 0) return; // as pwrite: an empty write does not extend the store
      reserve(end, offset, BigInt(data.length));
      buf.set(data, start);
      if (end > length) length = end;
    },
    async truncate(newLength) {
      const [, end] = numberRange('memory', 'truncate', newLength, 0);
      if (end < length) buf.fill(0, end, length);
      else reserve(end, newLength, 0n);
      length = end;
    },
    bytes() {
      return buf.slice(0, length);
    },
  };
}
