/**
 * Errors of the model: an operation QEMU would refuse returns (throws) a ModelError with a stable
 * code, the errno QEMU reports for it, and a message in QEMU's words where it has one.
 */
import type { HostIO } from './host-io.ts';
import type { Image } from './image.ts';

export type ModelErrorCode =
  /** A refcount would exceed 2^refcount_bits - 1 or drop below 0 (QEMU: -EINVAL). */
  | 'refcount-overflow'
  /** The image would need more refcount table than QEMU allows (8 MiB) or offsets past 2^63 (-EFBIG). */
  | 'too-big'
  /** The request is outside the virtual disk (-EIO, "beyond end of device"). */
  | 'out-of-range'
  /** The operation is not possible with this image's features (-ENOTSUP / -EINVAL). */
  | 'unsupported'
  /** The image's metadata is inconsistent in a way the operation cannot work around (-EIO). */
  | 'corrupt'
  /** The image has an external data file (incompatible bit 2) but the caller supplied none (-EIO). */
  | 'no-data-file'
  /**
   * The image was loaded with the dirty bit set (lazy refcounts, no clean close): QEMU repairs its
   * refcounts on a writable open, the model refuses to change it until it is repaired (-ENOTSUP).
   */
  | 'dirty';

export class ModelError extends Error {
  override readonly name = 'ModelError';
  readonly code: ModelErrorCode;
  /** The negative errno QEMU returns for the same situation (-EIO, -EINVAL, …). */
  readonly errno: number;
  /**
   * What QEMU leaves on disk despite the failure, when that is not "nothing": e.g. a fatal
   * corruption sets the corrupt bit after metadata that was already flushed (docs/format/overlap-checks.md#corruption-signalling).
   */
  committed?: { readonly image: Image; readonly io: readonly HostIO[] };

  /** `errno` is the positive errno number (src/model/errno.ts); the error holds it negated, as QEMU returns it. */
  constructor(code: ModelErrorCode, errno: number, message: string) {
    super(message);
    this.code = code;
    this.errno = -Math.abs(errno);
  }
}

// The errno numbers ModelErrors carry, from the one errno table.
export { EFBIG, EINVAL, EIO, ENOTSUP } from './errno.ts';
