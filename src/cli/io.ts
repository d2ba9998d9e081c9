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

/**
 * Runs a command-line parser (node:util parseArgs) and turns its complaint about an unknown option,
 * a missing value or a stray argument into a UsageError (exit code 2) with the same message.
 */
export function parseUsage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** The value of `--output`: 'human' (the default) or 'json'; anything else is a UsageError. */
export function outputFormat(value: string | undefined): 'human' | 'json' {
  const output = value ?? 'human';
  if (output !== 'human' && output !== 'json') throw new UsageError(`--output must be 'human' or 'json', not '${output}'`);
  return output;
}

export { errnoText } from '../model/errno.ts';
