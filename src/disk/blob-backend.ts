/**
 * A read-only DiskBackend over a Blob (a browser File, a Blob a fetch returned, or Node's global
 * Blob): each read is one `blob.slice(start, end).arrayBuffer()`. Blobs are immutable, so the size is
 * read once. A File whose underlying file changed since it was picked makes the browser reject the
 * read (NotReadableError); that, and any short result, is an EIO BackendError.
 */
import type { DiskBackend } from './backend.ts';
import { BackendError, numberRange } from './backend-errors.ts';

/** The part of the Blob API this backend uses (the project compiles without the DOM lib). */
export interface BlobLike {
  readonly size: number;
  slice(start?: number, end?: number): { arrayBuffer(): Promise<ArrayBuffer> };
}

/** A read-only backend reading `blob`. It has no write, truncate, flush or close. */
export function blobBackend(blob: BlobLike): DiskBackend {
  const size = blob.size;
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
      let bytes: ArrayBuffer;
      try {
        bytes = await blob.slice(start, end).arrayBuffer();
      } catch (cause) {
        throw new BackendError('blob', 'EIO', `read of [${start}, ${end}) failed: ${String(cause)}`, { offset, length, cause });
      }
      if (bytes.byteLength !== target.length) {
        throw new BackendError('blob', 'EIO', `read of [${start}, ${end}) returned ${bytes.byteLength} bytes`, { offset, length });
      }
      target.set(new Uint8Array(bytes));
    },
  };
}
