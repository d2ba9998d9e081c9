/**
 * A DiskBackend wrapper that records every call and fails the n-th call of chosen kinds with an
 * errno-coded error (EIO, ENOSPC) — the driver's fault-injection tests run a sequence once to count
 * the calls, then once per call position with that call failing.
 */
import type { DiskBackend } from '../../src/disk/index.ts';

export type BackendCall = 'read' | 'write' | 'truncate' | 'flush' | 'zero';

export interface FaultPlan {
  /** Fail the call with this 1-based index among the calls of `kinds` (undefined: never fail). */
  readonly failAt?: number;
  readonly kinds: readonly BackendCall[];
  /** The error's code (default 'EIO'). */
  readonly errno?: string;
  /** Once failed, fail every later call of `kinds` too (a dead disk) — default true. */
  readonly sticky?: boolean;
}

/** The wrapper and what it saw. */
export interface FaultyBackend extends DiskBackend {
  /** Calls of the plan's kinds so far (the failed one included). */
  readonly counted: number;
  /** Whether the planned failure happened. */
  readonly failed: boolean;
  /** Every call, in order: kind and offset/length. */
  readonly log: readonly string[];
}

/** `inner` with the fault plan applied. */
export function faultyBackend(inner: DiskBackend, plan: FaultPlan): FaultyBackend {
  let counted = 0;
  let failed = false;
  const log: string[] = [];
  const gate = (kind: BackendCall, what: string): void => {
    log.push(`${kind} ${what}`);
    if (!plan.kinds.includes(kind)) return;
    counted++;
    if ((plan.failAt !== undefined && counted === plan.failAt) || (failed && plan.sticky !== false)) {
      failed = true;
      throw Object.assign(new Error(`injected ${plan.errno ?? 'EIO'} at ${kind} #${counted} (${what})`), { code: plan.errno ?? 'EIO' });
    }
  };
  const b: FaultyBackend = {
    get counted() {
      return counted;
    },
    get failed() {
      return failed;
    },
    log,
    size: () => inner.size(),
    read: async (offset, target) => {
      gate('read', `${offset}+${target.length}`);
      return inner.read(offset, target);
    },
    close: async () => inner.close?.(),
  };
  if (inner.write !== undefined) {
    Object.assign(b, {
      write: async (offset: bigint, data: Uint8Array) => {
        gate('write', `${offset}+${data.length}`);
        return inner.write!(offset, data);
      },
      truncate: async (length: bigint) => {
        gate('truncate', `${length}`);
        return inner.truncate!(length);
      },
      flush: async () => {
        gate('flush', '');
        return inner.flush?.();
      },
    });
  }
  return b;
}
