/**
 * `qcow2-ref run IMAGE SCRIPT`: applies a JSON op script (docs/op-script.md) to a real qcow2 file
 * through the model and writes the model's host I/O to the file.
 *
 * All or nothing at the level of the script: the whole script is validated first (a bad script
 * exits 2 and the file is not opened for writing), then every op is applied to the in-memory Image
 * with `step`; if any op fails the command reports it and exits 1 without touching the file. Only
 * when every op succeeded is the collected host I/O issued to the file, in order, with an fsync at
 * each flush barrier the model emitted (so the crash-safety ordering of the model — refcount increase
 * before the mapping that uses it, mapping removal before the refcount decrease — holds on disk) and
 * one final fsync.
 *
 * After the last op the image is closed the way QEMU closes it (closeImage, src/model/close.ts):
 * caches flushed and, with lazy refcounts, the dirty bit the ops set is cleared. The file is
 * therefore what `qemu-io` leaves when it exits normally.
 *
 * Files the image refers to:
 * - external data file: the name in the header extension, resolved relative to IMAGE's directory.
 *   QEMU 7.2 opens it relative to its *current* directory (measured; the two agree when the command
 *   runs in IMAGE's directory). A name that is absolute or leads out of IMAGE's directory is refused
 *   before anything is read unless --allow-data-file-path is given: an image is data, and its header
 *   should not choose which file on the system `run` reads and writes. The data file is written
 *   with the image, only after every op succeeded, in the same ordered I/O stream (a flush barrier
 *   fsyncs both files).
 * - backing file: resolved relative to IMAGE's directory, as QEMU does; qcow2 (recursively) or raw
 *   (the format from the header, else probed as QEMU does), read only, wherever the header points —
 *   run continues what qemu-io would continue. Opening goes through src/io/open-file.ts, the same
 *   code (chain depth limit, loop detection) info, map and convert use.
 *
 * Files are not read into memory: the image, its data file and backing files are loaded through
 * HostReaders (src/io/file-reader.ts), so the model reads only the header and the metadata and
 * data the ops touch, and running a small script against a huge sparse image costs memory in
 * proportion to what it touches (and to what the script writes, which is held until it is issued).
 * `run` writes the host I/O into the very files those readers read,
 * which is safe because every read happens before the first write: planOps has produced all the
 * host I/O (plain bytes, holding no reference to the readers) and the readers are closed before
 * the files are opened for writing; the Images built on them are never used after that point.
 *
 * The I/O is issued by the disk layer's applier (src/disk/apply-io.ts through
 * src/io/host-io-file.ts applyHostIOToPaths), the code Qcow2Disk issues its own writes with. `run`
 * does not apply the ops one by one through a Qcow2Disk: that would write ops 0..N-1 before op N is
 * refused (qemu-io's behaviour), and a writable Qcow2Disk open writes the repair of a dirty image
 * at once — both against the all-or-nothing contract above.
 */
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { closeImage } from '../model/index.ts';
import { hostTargetOf, type HostIO, type HostTarget } from '../model/index.ts';
import type { Image } from '../model/index.ts';
import type { Op } from '../model/index.ts';
import { parseScript, SCRIPT_OP_NAMES, ScriptError, type ScriptOpName } from '../script/index.ts';
import { step } from '../model/index.ts';
import { EXIT_DECODE, EXIT_OK, EXIT_USAGE, UsageError, type CliIo, outputFormat, errnoText, parseCommand, reportOpenFailure, showHelp } from './io.ts';
import { chainImage, openImageFile, type OpenedLayer, type OpenPolicy } from '../io/index.ts';
import { applyHostIOToPaths, type HostIOStats } from '../io/index.ts';

/** Help text of the run command. */
export const RUN_HELP = `Usage: qcow2-ref run [--output=human|json] [--quiet] [--allow-data-file-path]
                     IMAGE SCRIPT

Applies the ops of the JSON op script SCRIPT (a file, or - for stdin; format in
docs/op-script.md) to the qcow2 image IMAGE through the model, then closes the
image as QEMU does, and writes the resulting host writes to IMAGE (and to its
external data file, if it has one).

All or nothing:
  1. The whole script is validated first. A bad script is reported with the op
     index and field and IMAGE is not touched (exit 2).
  2. Every op is applied in memory. If one fails (e.g. a write past the end of
     the disk, or an op the model does not support yet) it is reported as
     'qcow2-ref: IMAGE: op N (OP): MESSAGE' and IMAGE is not touched (exit 1).
     IMAGE is not read into memory: only its header and the metadata and
     data the ops touch are read, so a huge sparse image costs memory in
     proportion to what the script touches.
  3. The image is closed as QEMU closes it: a flush, and with lazy refcounts
     the dirty bit the ops set is cleared (qcow2_mark_clean). Without this
     step the file would look like a crashed QEMU session's.
  4. Only then are the host writes issued to IMAGE and its data file, in the
     model's order, with an fsync (of both files) at every flush barrier the
     model emits and one at the end. 'zero' and 'discard' host requests are
     written as zeros (discard never extends the file).

IMAGE is opened for writing as qemu-io opens it (QEMU 7.2's open-time checks):
an image with the corrupt bit set is refused ('qcow2: Image is corrupt; cannot
be opened read/write'); unknown autoclear feature bits are cleared; an image
whose dirty bit is set (a QEMU session with lazy refcounts that did not close
it) is first repaired as QEMU repairs it ('qemu-img check -r all'), and those
writes are issued before the ops' writes.

Files IMAGE refers to:
  backing file     resolved relative to IMAGE's directory (as QEMU does);
                   qcow2 or raw; only read.
  external data    the name in the header extension, resolved relative to
  file             IMAGE's directory (QEMU 7.2 resolves it relative to its
                   current directory; the two agree when run from IMAGE's
                   directory). Read, and written with IMAGE. A name that is
                   absolute or leads out of IMAGE's directory is refused
                   (exit 1, nothing read or written) unless
                   --allow-data-file-path is given.

Options:
  --output=human   One summary line (default):
                   IMAGE: N op(s), W host write(s), B byte(s) written, F flush(es)
  --output=json    The summary as JSON:
                   {"ops":N,"hostWrites":W,"bytesWritten":B,"flushes":F}
                   (hostWrites counts write, zero, discard and truncate
                   requests to IMAGE and its data file; bytesWritten includes
                   the zeros written for zero and discard; flushes counts
                   flush barriers at which something was fsynced)
  -q, --quiet      Print no summary.
  --allow-data-file-path
                   Accept an external data file name that is absolute or
                   leads out of IMAGE's directory.
  -h, --help       Show this help.

Exit codes:
  0  every op succeeded and IMAGE was updated
  1  an op failed in the model, IMAGE (or its data or backing file) could
     not be read or decoded, its data file path was refused, SCRIPT could
     not be read, or writing IMAGE or its data file failed; in all cases but
     the last IMAGE and its data file are unchanged
  2  usage error, or SCRIPT is not a valid op script (IMAGE unchanged)
`;

/** What `run` did to the file. */
export interface RunSummary {
  readonly ops: number;
  readonly hostWrites: number;
  readonly bytesWritten: number;
  readonly flushes: number;
}

/** Largest zero buffer written at once for zero/discard requests. */

/** The script name of an op (`writeZeroes` → `zero`). */
function scriptName(op: Op): ScriptOpName {
  for (const [name, kind] of Object.entries(SCRIPT_OP_NAMES)) if (kind === op.kind) return name as ScriptOpName;
  return op.kind as ScriptOpName;
}


/**
 * What `run` lets an image's header open: its backing chain wherever the header says (as qemu-io
 * does, so run can continue any qemu-io session), and its external data file only inside the image's
 * directory unless `allowDataFilePath` — run writes that file.
 */
function runPolicy(allowDataFilePath: boolean): OpenPolicy {
  return { allowBacking: true, allowBackingPath: true, allowDataFilePath };
}

/**
 * Applies `ops` to `image` in memory, then closes it as QEMU does (closeImage: flush, and the dirty
 * bit set by lazy refcounts cleared). Returns the host I/O of all ops and of the close in order (I/O
 * addressed to the external data file carries `target: 'data'`), or the index and message of the
 * first op that failed (nothing is applied then).
 */
export function planOps(image: Image, ops: readonly Op[]): { ok: true; io: HostIO[]; image: Image } | { ok: false; index: number; message: string } {
  let img = image;
  const io: HostIO[] = [];
  for (let i = 0; i < ops.length; i++) {
    const r = step(img, ops[i]!);
    if (!r.ok) return { ok: false, index: i, message: r.error.message };
    img = r.image;
    for (const x of r.io) io.push(x);
  }
  const closed = closeImage(img);
  for (const x of closed.io) io.push(x);
  return { ok: true, io, image: closed.image };
}

async function readScript(path: string): Promise<string> {
  if (path !== '-') return readFile(path, 'utf8');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Runs `run` with the arguments after the command name; returns the exit code. */
export async function runRun(args: readonly string[], io: CliIo, stdin: () => Promise<string> = () => readScript('-')): Promise<number> {
  const parsed = parseCommand(args, {
    output: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
    'allow-data-file-path': { type: 'boolean' },
  }, true);
  if (parsed.values.help === true) return showHelp(io, RUN_HELP);
  const output = outputFormat(parsed.values.output);
  const pos = parsed.positionals;
  if (pos.length < 2) throw new UsageError(pos.length === 0 ? 'missing IMAGE and SCRIPT' : 'missing SCRIPT');
  if (pos.length > 2) throw new UsageError(`unexpected argument: ${pos[2]}`);
  const [imagePath, scriptPath] = [pos[0]!, pos[1]!];
  const scriptLabel = scriptPath === '-' ? '(stdin)' : scriptPath;

  // 1. The script, all of it.
  let text: string;
  try {
    text = scriptPath === '-' ? await stdin() : await readFile(scriptPath, 'utf8');
  } catch (e) {
    io.stderr(`qcow2-ref: ${scriptLabel}: Could not open '${scriptPath}': ${errnoText(e)}\n`);
    return EXIT_DECODE;
  }
  let ops: Op[];
  try {
    ops = parseScript(text);
  } catch (e) {
    if (e instanceof ScriptError) {
      // One line: JSON.parse's message may quote the script text, newlines included.
      io.stderr(`qcow2-ref: ${scriptLabel}: ${e.message.replace(/\r?\n/g, '\\n')}\n`);
      return EXIT_USAGE;
    }
    throw e;
  }

  // 2. Every op in memory, then the close.
  const allowDataFilePath = parsed.values['allow-data-file-path'] === true;
  let plan;
  let dataPath: string | undefined;
  let top: OpenedLayer | undefined;
  let openIo: readonly HostIO[] = [];
  try {
    // Writable, as qemu-io opens it: QEMU's writable-open checks, and what the open writes (unknown
    // autoclear bits cleared, a dirty image repaired) goes to the file before the ops' writes.
    top = await openImageFile(imagePath, runPolicy(allowDataFilePath), { backing: true, dataFile: 'read', writable: true });
    dataPath = top.dataFile?.path;
    openIo = top.openIo ?? [];
    // What qemu-io prints while its open repairs a dirty image (the check's findings and repairs).
    for (const f of top.repair?.first.findings ?? []) io.stderr(`${f.message}\n`);
    plan = planOps(chainImage(top), ops);
  } catch (e) {
    return reportOpenFailure(io, imagePath, e);
  } finally {
    // Every read of the files is done: the host I/O below is plain bytes. The Images built on the
    // readers (chainImage(top), plan.image) must not be used after this point — the files change.
    top?.close();
  }
  if (!plan.ok) {
    io.stderr(`qcow2-ref: ${imagePath}: op ${plan.index} (${scriptName(ops[plan.index]!)}): ${plan.message}\n`);
    return EXIT_DECODE;
  }

  // 3. The host I/O, in order, to the image and (when the ops changed it) its data file.
  const allIo = [...openIo, ...plan.io];
  let done: HostIOStats;
  const writesData = allIo.some((x) => hostTargetOf(x) === 'data' && x.kind !== 'flush');
  if (writesData && dataPath === undefined) throw new Error('the model wrote a data file the image does not name');
  try {
    done = await applyHostIOToPaths(dataPath !== undefined ? { image: imagePath, data: dataPath } : { image: imagePath }, allIo);
  } catch (e) {
    io.stderr(`qcow2-ref: ${imagePath}: write failed: ${errnoText(e)} (the image and its data file may be partly updated)\n`);
    return EXIT_DECODE;
  }
  const summary: RunSummary = { ops: ops.length, ...done };
  if (parsed.values.quiet !== true) {
    if (output === 'json') io.stdout(`${JSON.stringify(summary)}\n`);
    else {
      io.stdout(
        `${imagePath}: ${summary.ops} op(s), ${summary.hostWrites} host write(s), ${summary.bytesWritten} byte(s) written, ${summary.flushes} flush(es)\n`,
      );
    }
  }
  return EXIT_OK;
}
