/**
 * `qemu-img check -r leaks|all` of a qcow2 image (qemu-img.c img_check; docs/format/check.md#repair-modes), pure: the
 * image is opened read-write in check mode, checked with QEMU's fix flags — the engine of
 * src/check/check.ts writes its repairs through a transaction in QEMU's order (leaks lowered, too-low
 * refcounts raised, the refcount structure rebuilt into free space when a referenced cluster has
 * refcount 0 or the structure is broken, COPIED flags fixed, refcount blocks past the end of the
 * file brought inside it, unaligned preallocated zero clusters made plain zero clusters, the snapshot
 * table rewritten without excess snapshots or extra data, the dirty and corrupt bits cleared when no
 * corruption remains) — and, when anything was fixed, checked again without fixing ("Double checking
 * the fixed image now..."), whose result qemu-img prints with the first pass's fixed counters; then
 * closed, which writes QEMU's refcount-block cache back. Refcount repairs still in that cache when
 * the image dies — a write-back that fails the metadata overlap check kills it — never reach the
 * file (src/check/refblocks.ts).
 */
import { runCheckPass, newCheckSession, type CheckResult, type FixMode } from './check.ts';
import { Transcript, pendingRefblockWrites, type CheckContext, type CheckSession } from './context.ts';
import { strerror } from '../model/index.ts';
import { cacheWrite } from './refblocks.ts';
import { applyHostIO } from '../model/index.ts';
import { type HostIO } from '../model/index.ts';
import { INCOMPAT_DIRTY, freshSession, type Image } from '../model/index.ts';
import { rebuildRefcountStructure } from './rebuild-refcounts.ts';
import { beginTx, checkpointImg, hostFlush, setHeaderFields, type Tx } from '../model/index.ts';

export type RepairMode = 'leaks' | 'all';

/** How repairImage ends. */
export interface RepairOptions {
  /**
   * Close the image afterwards as qemu-img does (default true): closing a read-write image clears the
   * dirty bit whatever the check found. False for the repair a writable open runs on a dirty image
   * (qcow2_do_open calls the check alone; the image stays open).
   */
  readonly close?: boolean;
}

export interface RepairResult {
  readonly image: Image;
  /** The host operations of the repair, in the order a crash-safe driver issues them. */
  readonly io: readonly HostIO[];
  /** First pass, with corruptionsFixed/leaksFixed set as qemu-img reports them. */
  readonly first: CheckResult;
  /** The "Double checking the fixed image now..." pass (qemu-img's printed result). */
  readonly result: CheckResult;
  /** Lines qemu-img prints while repairing ("Repairing cluster 1 refcount=1 reference=0", "Rebuilding refcount structure", ...). */
  readonly log: readonly string[];
}

/**
 * `qemu-img check -r <mode>` of `image`: the repaired image, the host writes that make the file so,
 * both passes' results and every line printed to stderr in order (the first pass's, then the double
 * check's). `result` is `first` when nothing was fixed or the first pass failed (qemu-img then checks
 * no second time); otherwise the second pass with the first pass's fixed counters, as qemu-img
 * reports it. Never throws for a decodable image; a failed check has `failure` set.
 */
export function repairImage(image: Image, mode: RepairMode, opts: RepairOptions = {}): RepairResult {
  const fix: FixMode = mode === 'all' ? 3 : 1;
  const session = newCheckSession(true);
  const tx = beginTx({ ...image, session: freshSession() });
  const first = runCheckPass(tx, fix, session, rebuildRefcountStructure);
  let result = first;
  if (first.failure === undefined && (first.corruptionsFixed > 0 || first.leaksFixed > 0)) {
    const again = runCheckPass(tx, 0, session);
    result = { ...again, corruptionsFixed: first.corruptionsFixed, leaksFixed: first.leaksFixed };
  }
  const closing = opts.close !== false;
  if (closing && !session.dead) closeImage(tx, session);
  // Refcount changes still in QEMU's cache never reach the file when the image dies (or fails to
  // write them back while closing); a repair that leaves the image open keeps them for later.
  const lost = closing || session.dead ? pendingRefblockWrites(session) : new Set<HostIO>();
  for (const w of session.droppedWrites) lost.add(w);
  if (lost.size === 0) return { image: checkpointImg(tx), io: tx.io, first, result, log: session.lines };
  const io = tx.io.filter((op) => !lost.has(op));
  const done = checkpointImg(tx);
  return { image: { ...done, file: applyHostIO(image.file, io) }, io, first, result, log: session.lines };
}

/**
 * What closing the image does after the check (blk_unref → bdrv_close): bdrv_flush writes the
 * caches back — the refcount blocks only when refcounts must be accurate (no dirty bit) — and, if
 * the image is still usable, qcow2_close → qcow2_inactivate flushes them again and marks the image
 * clean (clears the dirty bit, whatever the check found [7.2]) unless that flush failed. A write-back
 * that fails the overlap check kills the image (its pending changes are lost).
 */
function closeImage(tx: Tx, session: CheckSession): void {
  const last = session.lastContext;
  if (last === undefined) return;
  const c: CheckContext = { ...last, out: new Transcript(session) };
  if ((tx.img.header.incompatibleFeatures & INCOMPAT_DIRTY) === 0n) cacheWrite(c, 'previous');
  // bs->drv = NULL: qcow2_close never runs.
  if (session.dead) return;
  hostFlush(tx);
  const errno = cacheWrite(c, 'previous');
  if (errno !== 0) {
    c.out.note(`qemu-img: Failed to flush the refcount block cache: ${strerror(errno)}`, 'previous');
    return;
  }
  if ((tx.img.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) {
    setHeaderFields(tx, { incompatibleFeatures: tx.img.header.incompatibleFeatures & ~INCOMPAT_DIRTY });
    hostFlush(tx);
  }
}
