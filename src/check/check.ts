/**
 * `qemu-img check` of a qcow2 image, following QEMU 7.2 step by step (docs/format/check.md, docs/format/overlap-checks.md, docs/format/iotests.md#test-060-cases):
 * the contract (CheckFinding, CheckResult, checkImage, checkExitCode) and one pass of
 * qcow2_co_check_locked (block/qcow2.c), which runs, in QEMU's order:
 *
 * 1. the snapshot table, read again from the header (QEMU's check-mode open skips it): limits, extra
 *    data, v3 entries with less than 16 bytes of extra data — src/check/snapshots.ts;
 * 2. qcow2_check_refcounts — src/check/refcounts.ts: references counted into an in-memory
 *    table independently of the allocator (header, active L1 / L2 / data with the per-entry checks,
 *    snapshot L1 tables and what they reach, snapshot table, refcount table, LUKS header, bitmaps —
 *    src/check/bitmaps.ts — and refcount blocks), compared with the on-disk refcounts
 *    (`ERROR cluster N refcount=A reference=B`, `Leaked cluster ...`), OFLAG_COPIED checked;
 * 3. with -r all, the snapshot table rewritten when it had corruptions;
 * 4. with fix flags and no corruption left, the dirty and corrupt bits cleared.
 *
 * The same pass runs with QEMU's fix flags for `qemu-img check -r` (src/check/repair.ts drives it,
 * src/check/rebuild-refcounts.ts rebuilds): repairs are written through a transaction
 * (src/model/tx.ts) in QEMU's order, each after QEMU's metadata overlap check
 * (src/check/overlap.ts); refcount changes go through QEMU's refcount-block cache, which
 * decides whether they ever reach the file (src/check/refblocks.ts). What the passes share —
 * the context, the session, reading the file as the block layer does, the in-memory reference
 * count — is src/check/context.ts; the in-memory reftable and L1 table src/check/tables.ts.
 *
 * Bounded on hostile input: every loop runs over entries inside the file (entries past its end read
 * as zeros and are skipped, exactly as QEMU skips zero entries), the reference table is sparse, the
 * snapshot loop stops at QEMU's limits (65536 entries, 64 MiB), and the comparison visits only
 * clusters with a reference or a non-zero on-disk refcount — except where QEMU reports every
 * cluster of a range (an unreadable refcount block), bounded by the file's cluster count, which is
 * itself at most INT_MAX (a larger file is QEMU's EFBIG).
 */
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY, freshSession, type Image } from '../model/index.ts';
import { beginTx, hostFlush, setHeaderFields, type Tx } from '../model/index.ts';
import { CheckAbort, Transcript, newCheckContext, newCheckSession, zeroCounters, type CheckContext, type CheckSession, type Counters, type FixMode, type RebuildRefcounts } from './context.ts';
import { ENOMEDIUM, strerror } from '../model/index.ts';
import { checkRefcounts } from './refcounts.ts';
import { cacheWrite } from './refblocks.ts';
import { checkFixSnapshotTable, checkReadSnapshotTable } from './snapshots.ts';

export { newCheckSession, type CheckSession, type FixMode } from './context.ts';
export { MAX_FILE_BYTES } from './refcounts.ts';

// ---------------------------------------------------------------------------------------------
// The contract (scratch/BRIEF.md "API contracts")

export interface CheckFinding {
  readonly kind: 'corruption' | 'leak' | 'check-error';
  /**
   * The line qemu-img check prints for it, text for text, e.g. "ERROR cluster 3 refcount=1 reference=3"
   * or "Leaked cluster 9 refcount=2 reference=1". Lines QEMU prints next to a finding without
   * counting them (the hint after a refcount overflow or a snapshot-table error, the one-time
   * "qcow2: Image is corrupt: ..." before the first unreadable refcount) are part of that finding's
   * message, one per line, in the order QEMU prints them. In a repairing pass (RepairResult.first)
   * the "Repairing ..." lines are findings too, of the kind they fix; RepairResult.log has every
   * line as printed.
   */
  readonly message: string;
}

export interface CheckResult {
  readonly corruptions: number;
  readonly leaks: number;
  readonly checkErrors: number;
  /** 0 for a plain check. */
  readonly corruptionsFixed: number;
  /** 0 for a plain check. */
  readonly leaksFixed: number;
  readonly imageEndOffset: bigint;
  readonly totalClusters: bigint;
  readonly allocatedClusters: bigint;
  readonly fragmentedClusters: bigint;
  readonly compressedClusters: bigint;
  /** In the order qemu-img prints them (stderr). */
  readonly findings: readonly CheckFinding[];
  /** A referenced cluster has on-disk refcount 0 (or the refcount structure is broken): -r all rebuilds. */
  readonly needsRebuild: boolean;
  /**
   * Set when the check itself failed (QEMU's check function returned an error): the strerror text
   * qemu-img prints in `Check failed: <text>` — e.g. "Input/output error" after `-r leaks` met a
   * refcount of 0. qemu-img then prints no result (no JSON) and exits 1. The counters hold what the
   * check had counted when it stopped.
   */
  readonly failure?: string;
}

/**
 * qemu-img check (no repair) of `image`: pure, never throws for a decodable image (problems are
 * findings). Meant for an image QEMU opens in check mode (src/open/open.ts openImage with
 * `checkMode`); on one QEMU would refuse to open, the result is still bounded and typed but says what
 * this engine sees, not what QEMU prints.
 */
export function checkImage(image: Image): CheckResult {
  const tx = beginTx({ ...image, session: freshSession() });
  return runCheckPass(tx, 0, newCheckSession(false));
}

/**
 * The exit code qemu-img check returns for `result` (docs/format/check.md#exit-codes): 1 when the check failed or
 * had internal errors, else 2 when corruptions remain, else 3 when leaks remain, else 0.
 */
export function checkExitCode(result: CheckResult): 0 | 1 | 2 | 3 {
  if (result.failure !== undefined || result.checkErrors > 0) return 1;
  if (result.corruptions > 0) return 2;
  if (result.leaks > 0) return 3;
  return 0;
}


// ---------------------------------------------------------------------------------------------
// One pass (qcow2_co_check_locked)

/**
 * One pass of qcow2_co_check_locked with fix flags `fix` on the working image of `tx` (repairs are
 * written through `tx`). Never throws for a decodable image: a failing check returns a result with
 * `failure` set. The session collects every printed line.
 */
export function runCheckPass(tx: Tx, fix: FixMode, session: CheckSession, rebuild?: RebuildRefcounts): CheckResult {
  const out = new Transcript(session);
  const result = zeroCounters();
  const finish = (needsRebuild: boolean, failure?: number): CheckResult => ({
    ...result,
    findings: out.done(),
    needsRebuild,
    ...(failure !== undefined ? { failure: strerror(failure) } : {}),
  });
  // bdrv_check on a BlockDriverState a fatal corruption made unusable.
  if (session.dead) return finish(false, ENOMEDIUM);
  const c = newCheckContext(tx, fix, out, session, rebuild);
  session.lastContext = c;
  const snapshotRes = zeroCounters();
  const refcountRes = zeroCounters();
  const needsRebuild = { value: false };
  try {
    checkReadSnapshotTable(c, snapshotRes);
  } catch (e) {
    addCheckResult(result, snapshotRes, false);
    return finish(false, abortErrno(e));
  }
  try {
    checkRefcounts(c, refcountRes, needsRebuild);
  } catch (e) {
    addCheckResult(result, refcountRes, true);
    addCheckResult(result, snapshotRes, false);
    return finish(needsRebuild.value, abortErrno(e));
  }
  addCheckResult(result, refcountRes, true);
  try {
    checkFixSnapshotTable(c, snapshotRes);
  } catch (e) {
    addCheckResult(result, snapshotRes, false);
    return finish(needsRebuild.value, abortErrno(e));
  }
  addCheckResult(result, snapshotRes, false);
  if (fix !== 0 && result.checkErrors === 0 && result.corruptions === 0) {
    const errno = markCleanAndConsistent(c);
    if (errno !== 0) return finish(needsRebuild.value, errno);
  }
  return finish(needsRebuild.value);
}

function abortErrno(e: unknown): number {
  if (e instanceof CheckAbort) return e.errno;
  throw e;
}

/** qcow2_add_check_result. */
function addCheckResult(out: Counters, src: Counters, setAllocationInfo: boolean): void {
  out.corruptions += src.corruptions;
  out.leaks += src.leaks;
  out.checkErrors += src.checkErrors;
  out.corruptionsFixed += src.corruptionsFixed;
  out.leaksFixed += src.leaksFixed;
  if (setAllocationInfo) {
    out.imageEndOffset = src.imageEndOffset;
    out.totalClusters = src.totalClusters;
    out.allocatedClusters = src.allocatedClusters;
    out.fragmentedClusters = src.fragmentedClusters;
    out.compressedClusters = src.compressedClusters;
  }
}

/**
 * qcow2_mark_clean + qcow2_mark_consistent: clear the dirty bit, then the corrupt bit, when set —
 * each after qcow2_flush_caches, whose refcount-block write-back may fail (then the errno, and the
 * bits stay).
 */
function markCleanAndConsistent(c: CheckContext): number {
  const tx = c.tx;
  for (const bit of [INCOMPAT_DIRTY, INCOMPAT_CORRUPT]) {
    if ((tx.img.header.incompatibleFeatures & bit) === 0n) continue;
    const errno = cacheWrite(c, 'previous');
    if (errno !== 0) return errno;
    hostFlush(tx);
    setHeaderFields(tx, { incompatibleFeatures: tx.img.header.incompatibleFeatures & ~bit });
    hostFlush(tx);
  }
  return 0;
}
