/**
 * The contract between `npm run fuzz` (scripts/fuzz.ts) and its campaigns: what a campaign offers
 * (classes, batches), what a batch returns, and how a fast-check failure is reported. It lives beside
 * the campaigns so that they do not import the runner that imports them.
 */
import fc from 'fast-check';

/** One class of a campaign: a name to select it with `--classes`, and what it covers. */
export interface CampaignClass {
  readonly name: string;
  readonly title: string;
}

/** What one batch did. */
export interface BatchResult {
  /** Sequences (property runs) executed before the batch ended or failed, the failing one included. */
  readonly sequences: number;
  /** Ops given to the system under test in those sequences (shrinking replays not counted). */
  readonly ops: number;
  /** QEMU processes those sequences ran (campaigns that run QEMU). */
  readonly qemuCalls?: number;
  /** Sequences whose files were compared with QEMU's byte for byte, and how many were identical. */
  readonly layout?: { readonly compared: number; readonly identical: number };
  readonly failure?: Failure;
}

/** A property failure, with everything needed to replay it. */
export interface Failure {
  readonly campaign: string;
  readonly cls: string;
  /** The seed of the batch (give it to fc.assert / fc.check as `seed`). */
  readonly seed: number;
  /** fast-check's path of the shrunk counterexample (`path`). */
  readonly path: string;
  /** The replayPath of the shrunk command list (`fc.commands(…, { replayPath })`), when there is one. */
  readonly replayPath?: string;
  /** The shrunk counterexample as fast-check prints it. */
  readonly counterexample: string;
  /** The error the counterexample raised. */
  readonly error: string;
  /** How to replay it, as a line of code. */
  readonly replay: string;
}

/** Parameters of one batch. */
export interface BatchParams {
  readonly seed: number;
  readonly numRuns: number;
  /** Overrides the class's own maximum number of commands per sequence. */
  readonly maxCommands?: number;
}

/** A named property family that the fuzzer runs class by class. */
export interface Campaign {
  readonly name: string;
  readonly classes: readonly CampaignClass[];
  /** Runs `numRuns` sequences of class `cls` from `seed`; reports a property failure, never throws one. */
  runBatch(cls: string, params: BatchParams): BatchResult | Promise<BatchResult>;
  /** Lines printed under the table (e.g. cases run, typed errors by code, the slowest case). */
  summary?(): string;
  /** Releases what the campaign holds (worker threads, temporary files); called once after the run. */
  close?(): Promise<void>;
}

/** The replayPath fast-check prints in a command list's string form (`/*replayPath="…"*\/`). */
export function replayPathOf(printed: string): string | undefined {
  return /replayPath="([^"]*)"/.exec(printed)?.[1];
}

/**
 * The Failure of a failed fc.check (undefined when it passed): seed, path, the replayPath a command
 * list prints, the shrunk counterexample and its error, and `replay(path, replayPath)` as the line
 * of code that replays it.
 */
export function failureOf<Ts>(d: fc.RunDetails<Ts>, campaign: string, cls: string, replay: (path: string, replayPath: string | undefined) => string): Failure | undefined {
  if (!d.failed) return undefined;
  const counterexample = d.counterexample !== null ? fc.stringify(d.counterexample) : '(none)';
  const path = d.counterexamplePath ?? '';
  const replayPath = replayPathOf(counterexample);
  const err = d.errorInstance;
  return {
    campaign,
    cls,
    seed: d.seed,
    path,
    ...(replayPath !== undefined ? { replayPath } : {}),
    counterexample,
    error: err instanceof Error ? err.message : String(err),
    replay: replay(path, replayPath),
  };
}
