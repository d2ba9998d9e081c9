/**
 * The op vocabulary: everything a guest (or `qemu-img` / `qemu-io`) can do to a disk that the model,
 * the raw-disk oracle (src/oracle/raw-disk.ts) and the JSON op script (src/script/script.ts) share.
 *
 * Semantics are stated from the user's point of view: what a read of the disk returns afterwards.
 * Where QEMU's behaviour depends on the image configuration (version, backing file, cluster size),
 * the doc comment says so; src/oracle/raw-disk.ts is the executable form of these sentences.
 *
 * All offsets, lengths and sizes are bigint (exact over the whole 64-bit range). An op whose range
 * ends past the virtual size fails like QEMU's block layer does (EIO, "beyond end of device") and
 * changes nothing. A failed op never changes the disk.
 */

/**
 * Write `data` at `offset`. Afterwards a read of `[offset, offset + data.length)` returns `data`;
 * nothing else changes. Any alignment and length (0 is a no-op that still checks the range).
 */
export interface WriteOp {
  readonly kind: 'write';
  readonly offset: bigint;
  readonly data: Uint8Array;
}

/**
 * Zero `[offset, offset + length)` (qemu-io `write -z`, `-u` when `unmap`). Afterwards the range reads
 * as zeros in every configuration — v2 or v3, with or without a backing file; `unmap` only lets the
 * image free the host clusters (docs/format/allocation.md#write_zeroes) and never changes what a read returns.
 */
export interface WriteZeroesOp {
  readonly kind: 'writeZeroes';
  readonly offset: bigint;
  readonly length: bigint;
  readonly unmap: boolean;
  /**
   * BDRV_REQ_NO_FALLBACK (an NBD client's NBD_CMD_FLAG_FAST_ZERO): fail with -ENOTSUP instead of
   * writing a buffer of zeros where the image cannot zero by metadata alone (v2 images always; v3
   * when an unaligned piece's subcluster does not already read as zero). As in QEMU, pieces zeroed
   * before the failing one stay zeroed (the error's `committed`).
   */
  readonly noFallback?: boolean;
}

/**
 * Discard `[offset, offset + length)` (qemu-io `discard`). The guest gives up the content; what a read
 * returns afterwards is QEMU 7.2's choice (docs/format/allocation.md#discard, docs/format/surprises.md items 8/9):
 * - only whole clusters inside the range are affected (clusters clipped to the virtual size, so the
 *   partial last cluster of an unaligned image counts when the range reaches the end); the bytes of
 *   partially covered clusters are unchanged;
 * - v3 (any backing), or v2 without a backing file: the affected clusters read as zeros;
 * - v2 with a backing file: nothing changes (QEMU refuses, because it could only expose backing data).
 * Backing data is therefore never exposed by a discard.
 */
export interface DiscardOp {
  readonly kind: 'discard';
  readonly offset: bigint;
  readonly length: bigint;
}

/**
 * Write `data` compressed (qemu-io `write -c`, `qemu-img convert -c`). Afterwards reads return `data`
 * exactly as for `write`. QEMU accepts only cluster-aligned whole clusters (a partial last cluster at
 * the end of the image is allowed) whose target is unallocated, and refuses it with an external data
 * file; those refusals are the model's typed errors, not part of the data semantics.
 */
export interface WriteCompressedOp {
  readonly kind: 'writeCompressed';
  readonly offset: bigint;
  readonly data: Uint8Array;
}

/**
 * Create an internal snapshot called `name` (`qemu-img snapshot -c`). Reads do not change; the content
 * and virtual size at this moment are what `snapshotApply(name)` brings back.
 */
export interface SnapshotCreateOp {
  readonly kind: 'snapshotCreate';
  readonly name: string;
  /**
   * Creation time recorded in the snapshot table (seconds and nanoseconds since the epoch) and the
   * guest clock; the model has no clock, so the caller supplies them (default 0, as is the
   * instruction count `qemu-img snapshot -c` records).
   */
  readonly dateSec?: number;
  readonly dateNsec?: number;
  readonly vmClockNsec?: bigint;
}

/**
 * Revert to snapshot `name` (`qemu-img snapshot -a`). Afterwards every read returns exactly what it
 * returned when the snapshot was created, and the virtual size is the size at that time (QEMU 7.2
 * resizes the disk to the snapshot's size first, as `qemu-img resize` would, and fails where that
 * resize fails, e.g. a version 2 image with snapshots). The snapshot itself stays and can be applied
 * again.
 */
export interface SnapshotApplyOp {
  readonly kind: 'snapshotApply';
  readonly name: string;
}

/** Delete snapshot `name` (`qemu-img snapshot -d`). Reads do not change. */
export interface SnapshotDeleteOp {
  readonly kind: 'snapshotDelete';
  readonly name: string;
}

/**
 * Change the virtual size to `size` (`qemu-img resize`, `--shrink` when smaller, preallocation off).
 * QEMU refuses sizes that are 0, not a multiple of 512 or too large, and version 2 images with internal
 * snapshots. Growing: the new range reads as zeros when a backing file longer than the old size would
 * show through (QEMU zero-fills it; a version 2 image cannot, and the resize fails); otherwise it reads
 * what QEMU's last cluster holds past the old end — zeros, except after a shrink to a size that is not
 * a multiple of the cluster size, whose partial last cluster keeps its old bytes and shows them again.
 * Shrinking: bytes past the new size are gone except that tail. src/oracle/raw-disk.ts states the exact
 * rules (which ops zero the tail).
 */
export interface ResizeOp {
  readonly kind: 'resize';
  readonly size: bigint;
}

/** Flush (`qemu-io flush`). Reads do not change; the model emits its flush barrier. */
export interface FlushOp {
  readonly kind: 'flush';
}

/** One operation on a disk. Dispatch with ts-pattern `match(op).with({ kind: … }).exhaustive()`. */
export type Op =
  | WriteOp
  | WriteZeroesOp
  | DiscardOp
  | WriteCompressedOp
  | SnapshotCreateOp
  | SnapshotApplyOp
  | SnapshotDeleteOp
  | ResizeOp
  | FlushOp;

/** The discriminants of Op, in a fixed order. */
export type OpKind = Op['kind'];

/** Every OpKind once, in the order of the Op union. */
export const OP_KINDS: readonly OpKind[] = [
  'write',
  'writeZeroes',
  'discard',
  'writeCompressed',
  'snapshotCreate',
  'snapshotApply',
  'snapshotDelete',
  'resize',
  'flush',
];

/**
 * The guest range an op addresses, `{ offset, length }`, or undefined for ops without one (snapshots,
 * resize, flush). Promises: the returned range is exactly the one whose reads the op may change
 * (for discard: a superset of it), so properties can compare reads over it after each step.
 */
export function opRange(op: Op): { readonly offset: bigint; readonly length: bigint } | undefined {
  switch (op.kind) {
    case 'write':
    case 'writeCompressed':
      return { offset: op.offset, length: BigInt(op.data.length) };
    case 'writeZeroes':
    case 'discard':
      return { offset: op.offset, length: op.length };
    case 'snapshotCreate':
    case 'snapshotApply':
    case 'snapshotDelete':
    case 'resize':
    case 'flush':
      return undefined;
  }
}
