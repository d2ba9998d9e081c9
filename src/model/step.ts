/**
 * The model's single entry point: `step(image, op)` applies one operation of src/model/ops.ts to an
 * immutable Image and returns the new Image and the ordered host I/O a driver must issue (with flush
 * barriers), or the typed error QEMU's behaviour implies — in which case nothing changed.
 *
 * Pure: no I/O, no clock, no randomness; `image` is never mutated (the persistent HostFile shares every
 * page the op did not touch).
 */
import { checkNotDirtyOnLoad } from './close.ts';
import { EIO, ModelError } from './errors.ts';
import type { HostIO } from './host-io.ts';
import { INCOMPAT_CORRUPT, type Image } from './image.ts';
import type { Op } from './ops.ts';
import { guestWriteCompressed } from './compress.ts';
import { resize } from './resize.ts';
import { snapshotApply, snapshotCreate, snapshotDelete } from './snapshot.ts';
import { beginTx, hostFlush, type Tx } from './tx.ts';
import { guestWrite } from './write.ts';
import { guestDiscard, guestWriteZeroes } from './zero-discard.ts';

/** The outcome of one step. */
export type StepResult =
  | { readonly ok: true; readonly image: Image; readonly io: readonly HostIO[] }
  /**
   * `image` is the input unless QEMU changes the file despite the failure (then `io` says how; e.g.
   * a fatal corruption marks the image corrupt).
   */
  | { readonly ok: false; readonly error: ModelError; readonly image: Image; readonly io: readonly HostIO[] };

/** The block layer's range check: a request must lie inside the virtual disk (QEMU: EIO). */
function checkRange(img: Image, offset: bigint, length: bigint, what: string): void {
  if (offset < 0n || length < 0n || offset + length > img.header.size) {
    throw new ModelError('out-of-range', EIO,
      `${what} of ${length} bytes at ${offset} is beyond the end of the ${img.header.size}-byte disk`);
  }
}

/**
 * A corrupt image takes no writes (QEMU refuses to open it read/write, docs/format/open-validation.md#qemus-order #9), and an
 * image loaded dirty takes none until its refcounts are repaired (close.ts).
 */
function checkWritable(tx: Tx, op: Op): void {
  if (op.kind === 'flush') return;
  if ((tx.img.header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n) {
    throw new ModelError('corrupt', EIO, 'qcow2: Image is corrupt; cannot be opened read/write');
  }
  checkNotDirtyOnLoad(tx, op.kind);
}

/**
 * One handler per op kind. The mapped type makes the table exactly as exhaustive as ts-pattern's
 * `match(...).exhaustive()`: an Op kind without a handler (or a handler for a kind that does not
 * exist) does not compile. A table rather than `match` because this is the hottest dispatch of the
 * model, and the match chain builds its matcher objects and closures on every step.
 */
const HANDLERS: { readonly [K in Op['kind']]: (tx: Tx, op: Extract<Op, { kind: K }>) => void } = {
  write: (tx, o) => {
    checkRange(tx.img, o.offset, BigInt(o.data.length), 'write');
    guestWrite(tx, o.offset, o.data);
  },
  writeZeroes: (tx, o) => {
    checkRange(tx.img, o.offset, o.length, 'write_zeroes');
    guestWriteZeroes(tx, o.offset, o.length, o.unmap, o.noFallback === true);
  },
  discard: (tx, o) => {
    checkRange(tx.img, o.offset, o.length, 'discard');
    guestDiscard(tx, o.offset, o.length);
  },
  writeCompressed: (tx, o) => {
    checkRange(tx.img, o.offset, BigInt(o.data.length), 'compressed write');
    guestWriteCompressed(tx, o.offset, o.data);
  },
  snapshotCreate: (tx, o) => snapshotCreate(tx, o.name, {
    ...(o.dateSec !== undefined ? { dateSec: o.dateSec } : {}),
    ...(o.dateNsec !== undefined ? { dateNsec: o.dateNsec } : {}),
    ...(o.vmClockNsec !== undefined ? { vmClockNsec: o.vmClockNsec } : {}),
  }),
  snapshotApply: (tx, o) => snapshotApply(tx, o.name),
  snapshotDelete: (tx, o) => snapshotDelete(tx, o.name),
  resize: (tx, o) => resize(tx, o.size),
  flush: (tx) => hostFlush(tx),
};

function apply(tx: Tx, op: Op): void {
  checkWritable(tx, op);
  // The cast only widens the handler's parameter to the union; HANDLERS[op.kind] is the one for op.
  (HANDLERS[op.kind] as (tx: Tx, op: Op) => void)(tx, op);
}

/**
 * Applies `op` to `image`. On success returns the new image and the host I/O in the order a
 * crash-safe driver must issue it; on failure returns the ModelError (QEMU's errno and message) and
 * the caller keeps `image`, which is unchanged.
 */
export function step(image: Image, op: Op): StepResult {
  const tx = beginTx(image);
  try {
    apply(tx, op);
  } catch (e) {
    if (e instanceof ModelError) {
      return { ok: false, error: e, image: e.committed?.image ?? image, io: e.committed?.io ?? [] };
    }
    throw e;
  }
  return { ok: true, image: tx.img, io: tx.io };
}
