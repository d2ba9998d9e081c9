/**
 * The vocabulary of host operations `step` returns: the writes, zeroings, discards, truncations and
 * flush barriers a driver must apply to the image file (and its external data file) in order.
 */

/**
 * Which file a host operation addresses: the qcow2 file itself (the default, `target` absent) or the
 * image's external data file (`target: 'data'`, incompatible bit 2). A flush is a barrier for both.
 */
export type HostTarget = 'image' | 'data';

/**
 * One host operation, in the order a crash-safe driver must issue them. A write's `bytes` must not
 * be modified: they may be the guest's buffer or an array shared between writes (sharedZeros).
 */
export type HostIO =
  | { readonly kind: 'write'; readonly offset: bigint; readonly bytes: Uint8Array; readonly target?: 'data' }
  /** Zero `length` bytes at `offset` (extending the file like a write; fallocate on a real file). */
  | { readonly kind: 'zero'; readonly offset: bigint; readonly length: bigint; readonly target?: 'data' }
  /** Punch a hole: the range reads as zeros afterwards, the file length does not change. */
  | { readonly kind: 'discard'; readonly offset: bigint; readonly length: bigint; readonly target?: 'data' }
  /**
   * A barrier. `ordersLater`: the writes before it must also reach the disk before any write of a
   * later operation — set on the barrier between an unmapping and the refcount decrease that frees
   * the clusters (a later operation may reuse them); a writer that issues each operation's I/O before
   * the next one's keeps it anyway, a write-back scheduler must (src/disk/writeback.ts).
   */
  | { readonly kind: 'flush'; readonly ordersLater?: true }
  | { readonly kind: 'truncate'; readonly length: bigint; readonly target?: 'data' };

/** The file `op` addresses ('image' unless it says 'data'; flushes address both). */
export function hostTargetOf(op: HostIO): HostTarget {
  return op.kind !== 'flush' && op.target === 'data' ? 'data' : 'image';
}
