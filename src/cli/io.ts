/**
 * What the CLI commands share: exit codes, the usage error, argument parsing, the report of an image
 * that cannot be opened, and the output sinks (so commands can run in-process in tests).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { OpenImageError } from '../io/index.ts';
import { HostReaderError } from '../model/index.ts';

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
  /**
   * Optional: resolves once stdout has taken what was written (a command that prints a long report
   * waits on it between pieces, so a slow reader of a pipe does not make the report pile up in memory).
   */
  readonly drain?: () => Promise<void>;
}

/** CliIo writing to the process's stdout and stderr. */
export const processIo: CliIo = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
  drain: () => {
    const out = process.stdout;
    if (!out.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        out.off('drain', done).off('close', done).off('error', done);
        resolve();
      };
      out.on('drain', done).on('close', done).on('error', done);
    });
  },
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

/** The option every command takes. */
const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const;

/**
 * A command's arguments parsed strictly (node:util parseArgs) with its `options` and -h/--help;
 * positional arguments only when `positionals`. An unknown option, a missing value or a stray
 * argument is a UsageError (exit code 2) with parseArgs' message.
 */
export function parseCommand<const O extends NonNullable<ParseArgsConfig['options']>, const P extends boolean>(args: readonly string[], options: O, positionals: P) {
  return parseUsage(() => parseArgs({ args: [...args], options: { ...options, ...HELP_OPTION }, allowPositionals: positionals, strict: true }));
}

/** Prints a command's help text on stdout; returns EXIT_OK. */
export function showHelp(io: CliIo, help: string): number {
  io.stdout(help);
  return EXIT_OK;
}

/** The IMAGE of a command that takes exactly one positional argument; otherwise a UsageError. */
export function oneImage(positionals: readonly string[]): string {
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'missing IMAGE' : `takes one IMAGE, got ${positionals.length}`);
  return positionals[0]!;
}

/**
 * Reports on stderr that `image` could not be opened (OpenImageError: the file and QEMU's detail) or
 * read (HostReaderError: a file changed or failed under its reader after it was opened), and
 * returns EXIT_DECODE; any other error is rethrown.
 */
export function reportOpenFailure(io: CliIo, image: string, e: unknown): number {
  if (e instanceof OpenImageError) io.stderr(`qcow2-ref: ${e.file}: ${e.detail}\n`);
  else if (e instanceof HostReaderError) io.stderr(`qcow2-ref: ${image}: ${e.message}\n`);
  else throw e;
  return EXIT_DECODE;
}

/** The value of `--output`: 'human' (the default) or 'json'; anything else is a UsageError. */
export function outputFormat(value: string | undefined): 'human' | 'json' {
  const output = value ?? 'human';
  if (output !== 'human' && output !== 'json') throw new UsageError(`--output must be 'human' or 'json', not '${output}'`);
  return output;
}

export { errnoText } from '../model/index.ts';
