/**
 * The typed error of the built-in backends (memory, Blob, OPFS) and the range check they share.
 * Browser APIs take offsets as numbers, so a bigint offset past Number.MAX_SAFE_INTEGER cannot be
 * passed on exactly: it is refused with EFBIG instead of being rounded to another offset.
 */

/** errno names the built-in backends use; the driver keeps a backend error's `code` as its own. */
export type BackendErrorCode =
  /** An offset or length the underlying API cannot address exactly (past Number.MAX_SAFE_INTEGER). */
  | 'EFBIG'
  /** A negative offset or a read outside the store: the caller broke the DiskBackend contract. */
  | 'EINVAL'
  /** The underlying store failed or returned fewer bytes than asked for. */
  | 'EIO'
  /** The store is full (OPFS QuotaExceededError). */
  | 'ENOSPC'
  /** The memory backend could not allocate the buffer it needs. */
  | 'ENOMEM'
  /** The backend was used after close(). */
  | 'EBADF';

/** Which built-in backend an error comes from. */
export type BackendKind = 'memory' | 'blob' | 'opfs';

/** What a built-in backend throws: an errno-like `code`, the backend, the range asked for and the cause. */
export class BackendError extends Error {
  override readonly name = 'BackendError';
  readonly code: BackendErrorCode;
  readonly backend: BackendKind;
  /** The offset of the call that failed, when it had one. */
  readonly offset: bigint | undefined;
  /** The length of the call that failed, when it had one. */
  readonly length: bigint | undefined;

  constructor(
    backend: BackendKind,
    code: BackendErrorCode,
    message: string,
    opts: { offset?: bigint; length?: bigint; cause?: unknown } = {},
  ) {
    super(`${backend} backend: ${message}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.backend = backend;
    this.offset = opts.offset;
    this.length = opts.length;
  }
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * [offset, offset + length) as two exact numbers, for APIs that take numbers. Throws EINVAL for a
 * negative offset or length and EFBIG when the end is past Number.MAX_SAFE_INTEGER.
 */
export function numberRange(backend: BackendKind, what: string, offset: bigint, length: bigint | number): [start: number, end: number] {
  const len = BigInt(length);
  if (offset < 0n || len < 0n) {
    throw new BackendError(backend, 'EINVAL', `${what} at offset ${offset} of length ${len}: negative`, { offset, length: len });
  }
  const end = offset + len;
  if (end > MAX_SAFE) {
    throw new BackendError(backend, 'EFBIG', `${what} at offset ${offset} of length ${len}: ends past 2^53 - 1, which this backend's API cannot address`, {
      offset,
      length: len,
    });
  }
  return [Number(offset), Number(end)];
}
