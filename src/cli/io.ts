/**
 * What the CLI commands share: exit codes, the usage error, and the output sinks (so commands can
 * run in-process in tests).
 */

/** Exit code: success. */
export const EXIT_OK = 0;
/** Exit code: the image (or part of it) could not be decoded or read. */
export const EXIT_DECODE = 1;
/** Exit code: bad command line. */
export const EXIT_USAGE = 2;

/** A bad command line; main prints `qcow2-ref: MESSAGE` and exits with EXIT_USAGE. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Where a command writes. */
export interface CliIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

/** CliIo writing to the process's stdout and stderr. */
export const processIo: CliIo = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
};
