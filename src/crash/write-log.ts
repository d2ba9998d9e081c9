/**
 * A writer's run as the crash simulator takes it: the host operations it issued, in order, with its
 * completed flush barriers, and where each guest op's host operations start and end — the same shape
 * whichever writer produced it (the pure model, the driver, the NBD server, QEMU through blklogwrites,
 * or a third-party writer handing over its log, docs/crash.md).
 */
import type { HostIO, LoadOptions, Op } from '../model/index.ts';
import type { RawDisk } from '../oracle/index.ts';

/** One guest op of a run and the half-open range `[start, end)` of the host log it issued. */
export interface GuestEvent {
  readonly op: Op;
  readonly start: number;
  readonly end: number;
  /** False when the writer refused the op (it then changed nothing the guest can see). */
  readonly ok: boolean;
  readonly message?: string;
}

/** What a writer did, from a known starting image. */
export interface WriteLog {
  /** Who wrote it ("model", "driver", "qemu-io", or a third party's name): reports name it. */
  readonly writer: string;
  /** The image file before the run. */
  readonly base: Uint8Array;
  /** The external data file before the run, when the image has one. */
  readonly baseData?: Uint8Array;
  /** Host operations in issue order; a `flush` is a barrier the writer waited for. */
  readonly host: readonly HostIO[];
  /** The guest ops in order, each with its range of `host`. */
  readonly guest: readonly GuestEvent[];
}

/** A run to judge: its log, the oracle's disk before it, and how to open the crash states. */
export interface CrashRun {
  readonly log: WriteLog;
  /** The raw-disk oracle as the guest saw the disk before the first op (configured for the image). */
  readonly initial: RawDisk;
  /** How to open a crash state: its backing file (the data file comes from the crash state). */
  readonly load?: Omit<LoadOptions, 'dataFile'>;
}

/** A write log that breaks its own rules (ranges out of order or outside the host log). */
export class WriteLogError extends Error {
  override readonly name = 'WriteLogError';
}

/**
 * Throws WriteLogError unless every guest event's range lies inside the host log, ranges follow one
 * another without overlap (a guest op ends before the next begins: the writers serialise them), and
 * every host operation is a known kind with non-negative offsets and lengths.
 */
export function validateWriteLog(log: WriteLog): void {
  let at = 0;
  log.guest.forEach((g, i) => {
    if (!Number.isInteger(g.start) || !Number.isInteger(g.end) || g.start < at || g.end < g.start || g.end > log.host.length) {
      throw new WriteLogError(`${log.writer}: guest op ${i} (${g.op.kind}) has host range [${g.start}, ${g.end}), expected inside [${at}, ${log.host.length}]`);
    }
    at = g.end;
  });
  log.host.forEach((h, i) => {
    switch (h.kind) {
      case 'write':
        if (h.offset < 0n) throw new WriteLogError(`${log.writer}: host op ${i}: write at negative offset ${h.offset}`);
        return;
      case 'zero':
      case 'discard':
        if (h.offset < 0n || h.length < 0n) throw new WriteLogError(`${log.writer}: host op ${i}: ${h.kind} of ${h.length} bytes at ${h.offset}`);
        return;
      case 'truncate':
        if (h.length < 0n) throw new WriteLogError(`${log.writer}: host op ${i}: truncate to ${h.length}`);
        return;
      case 'flush':
        return;
      default:
        throw new WriteLogError(`${log.writer}: host op ${i}: unknown kind ${String((h as { kind: unknown }).kind)}`);
    }
  });
}
