/**
 * What the disk driver (Qcow2Disk) needs from the storage under an image: positioned async reads and
 * writes, a durable flush, truncation. Small on purpose, so that a user can put an image anywhere
 * (an HTTP range reader, a database blob) by implementing five methods.
 */

/**
 * A byte store the driver reads and writes an image file through. Offsets and lengths are exact
 * bigints (files past 2^53 bytes are valid). The driver never asks for bytes past `size()` and never
 * issues two calls at once on one backend (it serialises its own work), so implementations need no
 * locking. Errors an implementation throws reach the driver's caller wrapped in a DiskIOError that
 * keeps them as `cause`; an `errno`-like `code` property ('EIO', 'ENOSPC', ...) is kept as its code.
 */
export interface DiskBackend {
  /** Length of the store in bytes. */
  size(): Promise<bigint>;
  /** Fills `target` with the bytes at [offset, offset + target.length), all inside the store. */
  read(offset: bigint, target: Uint8Array): Promise<void>;
  /**
   * Optional: the same as `read`, completed before it returns (a file read on the calling thread, an
   * OPFS sync access handle). With it, guest data reads go straight into the caller's buffer instead
   * of through the driver's chunk cache and a second pass of the model. Errors are thrown as by `read`.
   */
  readSync?(offset: bigint, target: Uint8Array): void;
  /**
   * Stores `data` at `offset`, extending the store (with zeros between the old end and `offset`) when
   * it ends past it. Absent on a read-only backend. The driver does not keep or change `data` after
   * the returned promise settles, and the backend must not change it.
   */
  write?(offset: bigint, data: Uint8Array): Promise<void>;
  /** Sets the length, cutting or extending with zeros. Required when `write` is present. */
  truncate?(length: bigint): Promise<void>;
  /**
   * Makes every completed write durable (fsync): returns only once they would survive a power loss.
   * A backend without durability (memory) may omit it.
   */
  flush?(): Promise<void>;
  /**
   * Optional: makes [offset, offset + length) read as zeros without changing the length beyond
   * `offset + length` (a punched hole or fallocate's zero range). Without it the driver writes zeros.
   */
  zero?(offset: bigint, length: bigint): Promise<void>;
  /** Releases what the backend holds (a file handle). Called once, by Qcow2Disk.close. */
  close?(): Promise<void>;
}
