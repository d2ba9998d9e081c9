/**
 * The `qcow2-ref` command: dispatches to a subcommand (dump, create, run, info, map, convert, check, serve, corpus, conform). Exit codes: 0 ok, 1 the
 * image could not be decoded / the operation was refused, 2 usage error.
 */
import { parseArgs } from 'node:util';
import { CHECK_HELP, runCheck } from './check.ts';
import { CONFORM_HELP, runConform } from './conform.ts';
import { CONVERT_HELP, runConvertCommand } from './convert.ts';
import { CORPUS_HELP, runCorpus } from './corpus.ts';
import { CREATE_HELP, runCreate } from './create.ts';
import { DUMP_HELP, runDump } from './dump.ts';
import { INFO_HELP, runInfo } from './info.ts';
import { EXIT_OK, EXIT_USAGE, UsageError, processIo, type CliIo } from './io.ts';
import { MAP_HELP, runMap } from './map.ts';
import { RUN_HELP, runRun } from './run.ts';
import { SERVE_HELP, runServe } from './serve.ts';
// Node's faster inflate for the model's codecs (installed on import; src/io/node-compression.ts).
import '../io/index.ts';

/** Help text of the qcow2-ref command. */
export const MAIN_HELP = `Usage: qcow2-ref COMMAND [OPTIONS] [ARGS]

A reference implementation of QEMU's qcow2 disk image format.

Commands:
  dump IMAGE [--output=human|json]
                   Decode and print every structure of a qcow2 image.
  create [-f qcow2] [-o OPTIONS] IMAGE [SIZE]
                   Create a qcow2 image exactly as \`qemu-img create\` does.
  info [--output=human|json] [--backing-chain] [--allow-backing] IMAGE
                   What 'qemu-img info' prints, text for text (backing files
                   are opened only with --allow-backing).
  map [--output=human|json] [--allow-backing] IMAGE
                   What 'qemu-img map' prints, text for text, through the
                   backing chain (opened only with --allow-backing).
  convert [-f qcow2|raw] [-O raw|qcow2] [-o OPTIONS] [-c] [-p] [--allow-backing] IN OUT
                   Convert IN to OUT as 'qemu-img convert' does (qcow2 <-> raw,
                   qcow2 -> qcow2, -c compressed), streamed in bounded memory;
                   OUT is replaced only once it is complete.
  check [-r leaks|all] [--output=human|json] [-f qcow2] [-q] IMAGE
                   What 'qemu-img check' (with -r, 'check -r') prints and
                   returns, text for text; exit codes 0/1/2/3/63 as qemu-img.
  run [--output=human|json] [--quiet] [--allow-data-file-path] IMAGE SCRIPT
                   Apply a JSON op script (docs/op-script.md) to an image
                   (and its external data file) through the model, then close
                   it as QEMU does; nothing is written unless every op
                   succeeds.
  serve [-k PATH | -p PORT [-b ADDR]] [-r] [-x NAME] [-e NUM] [-t] [-A]
        [--discard=MODE] [--detect-zeroes=MODE] [--allow-backing] IMAGE
                   Serve IMAGE over NBD as 'qemu-nbd' does, with its option
                   names (for qemu-img, qemu-io, nbdinfo, nbdcopy, fio...).
  corpus --out DIR [--seed S] [--count N] [--families LIST] [--max-size BYTES]
         [--verify] [--flat] [--minimize] [--output=human|json]
                   Generate a qcow2 conformance/fuzzing corpus: valid images of
                   every feature class and invalid ones of every rejection
                   class, with a manifest of expected outcomes (same seed,
                   same bytes; --verify checks them against QEMU).
  conform [--corpus DIR] [--impl NAME | --reader TEMPLATE | --writer TEMPLATE]
          [--expected-failures FILE] [--output=human|json] [--jobs N] [--timeout S]
                   Run a qcow2 corpus (default: the checked-in one) against an
                   implementation (default: qemu-img) and report per family.

Options:
  -h, --help       Show this help (\`qcow2-ref COMMAND --help\` for a command's help).

Exit codes:
  0  success
  1  the image could not be decoded (or read); create: qemu-img would refuse
     the options; run: an op failed (the image is left unchanged); info, map,
     convert: a file the image refers to was refused; convert: OUT could not
     be written (it is left unchanged); conform: an unexpected failure or
     unexpected pass
  2  usage error (unknown command or option, missing argument); run: the
     script is invalid
  3  corpus --verify: qemu-img/qemu-io missing; conform: the run could not
     be made (corpus, QEMU or implementation missing)
  serve: 0 when it stops (its last client left, or a signal), 1 when IMAGE
  cannot be opened or the server cannot listen
  check uses qemu-img check's codes instead: 0 clean, 1 the check could not
  be made (or bad arguments), 2 corruptions, 3 only leaks, 63 not qcow2.
`;

interface Command {
  readonly help: string;
  readonly run: (args: readonly string[], io: CliIo) => Promise<number>;
}

const COMMANDS: Readonly<Record<string, Command>> = {
  dump: { help: DUMP_HELP, run: runDump },
  create: { help: CREATE_HELP, run: runCreate },
  run: { help: RUN_HELP, run: (args, io) => runRun(args, io) },
  info: { help: INFO_HELP, run: runInfo },
  map: { help: MAP_HELP, run: runMap },
  convert: { help: CONVERT_HELP, run: runConvertCommand },
  check: { help: CHECK_HELP, run: runCheck },
  serve: { help: SERVE_HELP, run: runServe },
  corpus: { help: CORPUS_HELP, run: (args, io) => runCorpus(args, io) },
  conform: { help: CONFORM_HELP, run: (args, io) => runConform(args, io) },
};

/**
 * Runs the CLI with `argv` (without node and script) and returns the exit code; writes only
 * through `io`. A usage error prints `qcow2-ref: PROBLEM` and a hint on stderr and returns 2.
 */
export async function main(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const usage = (msg: string): number => {
    io.stderr(`qcow2-ref: ${msg}\nTry 'qcow2-ref --help' for more information.\n`);
    return EXIT_USAGE;
  };
  const first = argv[0];
  if (first === undefined) return usage('missing COMMAND');
  if (first.startsWith('-')) {
    // Only global options may come before the command.
    let parsed;
    try {
      parsed = parseArgs({ args: [...argv], options: { help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
    } catch (e) {
      return usage((e as Error).message);
    }
    if (parsed.values.help === true) {
      io.stdout(MAIN_HELP);
      return EXIT_OK;
    }
    return usage(`unexpected option '${first}'`);
  }
  if (!Object.hasOwn(COMMANDS, first)) return usage(`unknown command '${first}'`);
  const command = COMMANDS[first]!;
  try {
    return await command.run(argv.slice(1), io);
  } catch (e) {
    if (e instanceof UsageError) return usage(`${first}: ${e.message}`);
    throw e;
  }
}
