/**
 * Counters of the work done on an image: bytes the model reads from host files
 * (src/model/host-file.ts readHost, viewHost, hostPage, hostSpot — holes and bytes past the end of
 * the file included), bytes it writes to them (src/model/tx.ts hostWrite), and fields the generated
 * decoders read (src/codec/byte-reader.ts), and bytes it zeroed (tx.ts hostZero, dataZero). Every walk over a table reads the table's bytes and
 * decodes its entries through these, so the counters grow with the work however it is spent; tests
 * bound them by the file's size (test/regressions), which a wall clock on a shared machine cannot do
 * reliably. Counting only: nothing in the library reads them.
 */

/** The counters (monotonic, process-wide; take differences around the work to measure). */
export interface WorkCounts {
  /** Bytes asked of host files (a read past the end of the file or of a hole counts too). */
  hostBytes: number;
  /** Host-file reads made (calls of the read functions). */
  hostReads: number;
  /** Bytes the model wrote to qcow2 files (tx.ts hostWrite; zeroing and discarding not counted). */
  hostWritten: number;
  /**
   * Bytes the model zeroed in host files with write_zeroes requests (tx.ts hostZero, dataZero). A
   * large table written as zeros plus its set entries (check/rebuild-refcounts.ts) is bytes the file
   * now holds and a later pass reads back, as it would after one plain write of the same table.
   */
  hostZeroed: number;
  /** Fields (whole-byte reads) the generated decoders made. */
  decodedFields: number;
}

/** The live counters. Incremented by host-file.ts, tx.ts and byte-reader.ts; never reset. */
export const WORK: WorkCounts = { hostBytes: 0, hostReads: 0, hostWritten: 0, hostZeroed: 0, decodedFields: 0 };

/** A copy of the counters now. */
export function workSnapshot(): WorkCounts {
  return { hostBytes: WORK.hostBytes, hostReads: WORK.hostReads, hostWritten: WORK.hostWritten, hostZeroed: WORK.hostZeroed, decodedFields: WORK.decodedFields };
}

/** The work done since `before` (a workSnapshot). */
export function workSince(before: WorkCounts): WorkCounts {
  return {
    hostBytes: WORK.hostBytes - before.hostBytes,
    hostReads: WORK.hostReads - before.hostReads,
    hostWritten: WORK.hostWritten - before.hostWritten,
    hostZeroed: WORK.hostZeroed - before.hostZeroed,
    decodedFields: WORK.decodedFields - before.decodedFields,
  };
}
