/**
 * A read-only DiskBackend over a Blob (a browser File, a Blob a fetch returned, or Node's global
 * Blob). Blobs are immutable, so the size is read once. A File whose underlying file changed since
 * it was picked makes the browser reject the read (NotReadableError); that, and any short result,
 * is an EIO BackendError.
 *
 * Each Blob read (`blob.slice(start, end).arrayBuffer()`) is a round trip to the browser's blob
 * store costing about a millisecond whatever its size (Chromium 156: ~50 MiB/s in 64 KiB slices,
 * ~300 MiB/s in 1 MiB slices). So a read that starts where the previous one ended — a sequential
 * stream — fetches `readAhead` bytes at once and keeps them as one window that later reads are
 * served from; other reads fetch exactly what they ask for and leave the window as it is (so an
 * interleaved metadata read does not spoil a stream). Memory: one window.
 */
import type { DiskBackend } from './backend.ts';
import { BackendError, numberRange } from './backend-errors.ts';

/** The part of the Blob API this backend uses (the project compiles without the DOM lib). */
export interface BlobLike {
  readonly size: number;
  slice(start?: number, end?: number): { arrayBuffer(): Promise<ArrayBuffer> };
}

/** Options of blobBackend. */
export interface BlobBackendOptions {
  /** Bytes a sequential read fetches at once (default 2 MiB, qcow2's largest cluster); 0 turns read-ahead off. */
  readonly readAhead?: number;
}

const DEFAULT_READ_AHEAD = 2 << 20;

/** A read-only backend reading `blob`. It has no write, truncate, flush or close. */
export function blobBackend(blob: BlobLike, options: BlobBackendOptions = {}): DiskBackend {
  const size = blob.size;
  const readAhead = options.readAhead ?? DEFAULT_READ_AHEAD;
  let window: { start: number; bytes: Uint8Array } | undefined;
  let lastEnd = -1;

  const fetchRange = async (start: number, end: number, offset: bigint, length: bigint): Promise<Uint8Array> => {
    let bytes: ArrayBuffer;
    try {
      bytes = await blob.slice(start, end).arrayBuffer();
    } catch (cause) {
      throw new BackendError('blob', 'EIO', `read of [${start}, ${end}) failed: ${String(cause)}`, { offset, length, cause });
    }
    if (bytes.byteLength !== end - start) {
      throw new BackendError('blob', 'EIO', `read of [${start}, ${end}) returned ${bytes.byteLength} bytes`, { offset, length });
    }
    return new Uint8Array(bytes);
  };

  return {
    async size() {
      return BigInt(size);
    },
    async read(offset, target) {
      const [start, end] = numberRange('blob', 'read', offset, target.length);
      const length = BigInt(target.length);
      if (end > size) {
        throw new BackendError('blob', 'EINVAL', `read of [${start}, ${end}) past the end of the blob (${size} bytes)`, { offset, length });
      }
      if (start === end) return;
      const sequential = start === lastEnd;
      lastEnd = end;
      if (window !== undefined && start >= window.start && end <= window.start + window.bytes.length) {
        target.set(window.bytes.subarray(start - window.start, end - window.start));
        return;
      }
      const fetchEnd = sequential ? Math.min(size, Math.max(end, start + readAhead)) : end;
      const bytes = await fetchRange(start, fetchEnd, offset, length);
      if (fetchEnd > end) window = { start, bytes };
      target.set(fetchEnd > end ? bytes.subarray(0, target.length) : bytes);
    },
  };
}
