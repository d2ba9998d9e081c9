/**
 * The driver's own typed error. Everything else that escapes Qcow2Disk is typed too: the model's
 * refusals (ModelError, QEMU's errno and message), QEMU's open-time refusals (OpenError) and
 * undecodable structures (Qcow2FormatError).
 */

/** Why a disk operation failed. Codes are stable; new ones may be added. */
export type DiskErrorCode =
  /** A write, zero, discard, flush-with-changes, resize or snapshot change on a disk opened read-only. */
  | 'read-only'
  /** The disk was closed. */
  | 'closed'
  /** The backend failed (`cause` holds its error; `errno` its code when it had one, e.g. 'EIO', 'ENOSPC'). */
  | 'io'
  /**
   * An earlier backend failure left the file behind the model: the disk refuses everything but
   * close (which writes nothing). The file is a crash-consistent state of the image (the model's
   * writes are issued in crash-safe order), which QEMU opens; leaked clusters are possible.
   */
  | 'failed'
  /** A request outside the virtual disk, or an invalid argument. */
  | 'range'
  /** The image names a backing file or data file the caller did not supply, or one that could not be opened. */
  | 'backing'
  | 'data-file'
  /** A driver invariant broke (a bug in qcow2-ref: please report it). */
  | 'internal';

/** A typed failure of a Qcow2Disk operation. */
export class DiskError extends Error {
  override readonly name = 'DiskError';
  /** The backend's error code ('EIO', 'ENOSPC', ...) for code 'io', when it had one. */
  readonly errno?: string;

  constructor(
    readonly code: DiskErrorCode,
    message: string,
    options: { cause?: unknown; errno?: string } = {},
  ) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    if (options.errno !== undefined) this.errno = options.errno;
  }
}

/** Whether `e` is a DiskError (also across copies of the module). */
export function isDiskError(e: unknown): e is DiskError {
  return e instanceof DiskError || (e instanceof Error && e.name === 'DiskError' && typeof (e as { code?: unknown }).code === 'string');
}

/** A backend failure during `what` of `length` bytes at `offset`, as DiskError('io') keeping the cause and its code. */
export function backendError(what: string, offset: bigint, length: number | bigint, cause: unknown): DiskError {
  const code = typeof (cause as { code?: unknown } | null)?.code === 'string' ? (cause as { code: string }).code : undefined;
  const text = cause instanceof Error ? cause.message : String(cause);
  return new DiskError('io', `backend ${what} of ${length} byte(s) at ${offset} failed: ${text}`, {
    cause,
    ...(code !== undefined ? { errno: code } : {}),
  });
}
