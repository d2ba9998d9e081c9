/**
 * A progress bar for long-running commands (`convert -p`), drawn with the cli-progress package on a
 * terminal and not at all elsewhere: when the output is not a TTY (a pipe, a file, a CI log) nothing
 * is written, so logs never fill with redraws. Output goes through a CliIo-style sink so commands run
 * in-process (tests) can capture it.
 */
import { createRequire } from 'node:module';
import type * as CliProgress from 'cli-progress';

/**
 * cli-progress, loaded the first time a bar is drawn: loading it takes ~20 ms, which every command
 * would otherwise pay at start-up although a bar is drawn only on a terminal with -p.
 */
let cliProgressModule: typeof CliProgress | undefined;
function cliProgress(): typeof CliProgress {
  cliProgressModule ??= createRequire(import.meta.url)('cli-progress') as typeof CliProgress;
  return cliProgressModule;
}

/** Where and how the bar is drawn. */
export interface ProgressTarget {
  /** Writes raw text (escape sequences included) to the terminal, e.g. CliIo.stderr. */
  readonly write: (text: string) => void;
  /** Whether the sink is a terminal; when false the bar prints nothing at all. */
  readonly isTTY: boolean;
  /** Terminal width in columns (default 80). */
  readonly columns?: number;
}

/** A running progress display. */
export interface Progress {
  /** Reports that `done` of the total units are finished (monotonic; values past the total are clipped). */
  update(done: number): void;
  /** Draws the last reported state and ends the line (or does nothing when no bar is shown). Idempotent. */
  stop(): void;
}

/** A Progress that shows nothing. */
export const NO_PROGRESS: Progress = { update: () => undefined, stop: () => undefined };

const MIB = 1024 * 1024;

/**
 * A bar for a job of `totalBytes` bytes, labelled `label`, drawn on `target` when it is a TTY and
 * `enabled`; otherwise NO_PROGRESS (nothing is ever written). The bar shows the percentage, MiB done
 * of MiB total and an ETA, redraws at most 10 times a second (also during synchronous work: updates
 * redraw when due), and leaves one finished line behind after `stop`.
 */
export function startProgress(label: string, totalBytes: number, target: ProgressTarget, enabled: boolean): Progress {
  const mib = (bytes: number): string => (bytes / MIB).toFixed(1);
  return startBar(`${label} |{bar}| {percentage}% | {doneMiB}/{totalMiB} MiB | ETA {eta_formatted}`, totalBytes, target, enabled, (done) => ({
    doneMiB: mib(Math.min(done, totalBytes)),
    totalMiB: mib(totalBytes),
  }));
}

/**
 * Like startProgress, for a job of `total` countable items (e.g. tests): the bar shows the
 * percentage, `done/total <unit>` and an ETA. Same promises (nothing at all unless a TTY and `enabled`).
 */
export function startCountProgress(label: string, total: number, unit: string, target: ProgressTarget, enabled: boolean): Progress {
  return startBar(`${label} |{bar}| {percentage}% | {done}/{all} ${unit} | ETA {eta_formatted}`, total, target, enabled, (done) => ({
    done: String(Math.min(done, total)),
    all: String(total),
  }));
}

/** The bar both kinds share; `payload` gives the format's extra tokens for a done count. */
function startBar(format: string, totalUnits: number, target: ProgressTarget, enabled: boolean, payload: (done: number) => Record<string, string>): Progress {
  if (!enabled || !target.isTTY) return NO_PROGRESS;
  // cli-progress writes to a stream; this adapter forwards to the sink and says it is a terminal.
  const stream = {
    isTTY: true,
    columns: target.columns ?? 80,
    write(chunk: string): boolean {
      target.write(chunk);
      return true;
    },
  };
  const total = Math.max(totalUnits, 1);
  const bar = new (cliProgress().SingleBar)(
    {
      stream: stream as unknown as NodeJS.WritableStream,
      format,
      barCompleteChar: '#',
      barIncompleteChar: '-',
      hideCursor: true,
      clearOnComplete: false,
      fps: 10,
      etaBuffer: 50,
      gracefulExit: false,
    },
    cliProgress().Presets.legacy,
  );
  bar.start(total, 0, payload(0));
  let stopped = false;
  let last = 0;
  return {
    update(done: number): void {
      if (stopped) return;
      last = Math.min(Math.max(done, last), total);
      bar.update(last, payload(last));
    },
    stop(): void {
      if (stopped) return;
      stopped = true;
      bar.stop();
    },
  };
}
