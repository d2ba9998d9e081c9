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
 * Files the image refers to:
 * - external data file: the name in the header extension, resolved relative to IMAGE's directory
 *   (a deliberate simplification for now: QEMU 7.2 opens it relative to its current directory, which
 *   is the same when the command runs in IMAGE's directory or the name is absolute). Ops that would
 *   change the data file are refused (the model does not model data-file writes yet).
 * - backing file: resolved relative to IMAGE's directory, as QEMU does; qcow2 (recursively) or raw,
 *   read only.
 */
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { parseArgs } from 'node:util';
import { isQcow2FormatError } from '../format/errors.ts';
import { walkImage } from '../format/walk.ts';
import type { HostIO } from '../model/host-file.ts';
import type { BackingSource, Image } from '../model/image.ts';
import { loadImage } from '../model/load-store.ts';
import type { Op } from '../model/ops.ts';
import { readGuest } from '../model/read.ts';
import { parseScript, SCRIPT_OP_NAMES, ScriptError, type ScriptOpName } from '../model/script.ts';
import { step } from '../model/step.ts';
import { EXIT_DECODE, EXIT_OK, EXIT_USAGE, UsageError, type CliIo } from './io.ts';

/** Help text of the run command. */
export const RUN_HELP = `Usage: qcow2-ref run [--output=human|json] [--quiet] IMAGE SCRIPT

Applies the ops of the JSON op script SCRIPT (a file, or - for stdin; format in
docs/op-script.md) to the qcow2 image IMAGE through the model, and writes the
resulting host writes to IMAGE.

All or nothing:
  1. The whole script is validated first. A bad script is reported with the op
     index and field and IMAGE is not touched (exit 2).
  2. Every op is applied in memory. If one fails (e.g. a write past the end of
     the disk, or an op the model does not support yet) it is reported as
     'qcow2-ref: IMAGE: op N (OP): MESSAGE' and IMAGE is not touched (exit 1).
  3. Only then are the host writes issued to IMAGE, in the model's order, with
     an fsync at every flush barrier the model emits and one at the end.
     'zero' and 'discard' host requests are written as zeros (discard never
     extends the file).

Files IMAGE refers to:
  backing file     resolved relative to IMAGE's directory (as QEMU does);
                   qcow2 or raw; only read.
  external data    the name in the header extension, resolved relative to
  file             IMAGE's directory (QEMU resolves it relative to its current
                   directory; the two agree for absolute names or when run
                   from IMAGE's directory). Ops that would change the data
                   file are refused: the model does not write data files yet.

Options:
  --output=human   One summary line (default):
                   IMAGE: N op(s), W host write(s), B byte(s) written, F flush(es)
  --output=json    The summary as JSON:
                   {"ops":N,"hostWrites":W,"bytesWritten":B,"flushes":F}
                   (hostWrites counts write, zero, discard and truncate
                   requests; bytesWritten includes the zeros written for zero
                   and discard; flushes counts fsyncs at flush barriers)
  -q, --quiet      Print no summary.
  -h, --help       Show this help.

Exit codes:
  0  every op succeeded and IMAGE was updated
  1  an op failed in the model, IMAGE (or its data or backing file) could
     not be read or decoded, SCRIPT could not be read, or writing IMAGE
     failed; in all cases but the last IMAGE is unchanged
  2  usage error, or SCRIPT is not a valid op script (IMAGE unchanged)
`;

/** What `run` did to the file. */
export interface RunSummary {
  readonly ops: number;
  readonly hostWrites: number;
  readonly bytesWritten: number;
  readonly flushes: number;
}

const MAX_BACKING_DEPTH = 16;
/** Largest zero buffer written at once for zero/discard requests. */
const ZERO_CHUNK = 1 << 20;

/** The script name of an op (`writeZeroes` → `zero`). */
function scriptName(op: Op): ScriptOpName {
  for (const [name, kind] of Object.entries(SCRIPT_OP_NAMES)) if (kind === op.kind) return name as ScriptOpName;
  return op.kind as ScriptOpName;
}

/** A failure that leaves every file unchanged; printed as `qcow2-ref: MESSAGE`, exit 1. */
class RunFailure extends Error {
  override readonly name = 'RunFailure';
}

function errnoText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOENT') return 'No such file or directory';
  if (err.code === 'EACCES') return 'Permission denied';
  return err.code ?? err.message;
}

/** A relative `name` taken relative to the directory of the image at `imagePath`. */
function besideImage(imagePath: string, name: string): string {
  return isAbsolute(name) ? name : join(dirname(imagePath), name);
}

async function readOrFail(path: string, what: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (e) {
    throw new RunFailure(`${what}: Could not open '${path}': ${errnoText(e)}`);
  }
}

/**
 * The Image stored at `path` with its data file and backing chain loaded (each relative name
 * relative to the directory of the image naming it). Throws RunFailure naming the file.
 */
export async function loadImageFile(path: string, depth = 0): Promise<Image> {
  const bytes = await readOrFail(path, path);
  let walk;
  try {
    walk = walkImage(bytes);
  } catch (e) {
    if (isQcow2FormatError(e)) throw new RunFailure(`${path}: ${e.message}`);
    throw e;
  }
  let dataFile: Uint8Array | undefined;
  if (walk.dataFile !== undefined) {
    dataFile = await readOrFail(besideImage(path, walk.dataFile), `${path}: data file`);
  }
  let backing: BackingSource | undefined;
  const b = walk.backingFile;
  if (b !== undefined) {
    if (b.name === undefined) throw new RunFailure(`${path}: the backing file name cannot be read`);
    if (depth >= MAX_BACKING_DEPTH) throw new RunFailure(`${path}: backing chain deeper than ${MAX_BACKING_DEPTH}`);
    const bpath = besideImage(path, b.name);
    const fmt = b.format ?? 'raw';
    if (fmt === 'qcow2') {
      const img = await loadImageFile(bpath, depth + 1);
      backing = { size: img.header.size, read: (o, l) => readGuest(img, o, l) };
    } else if (fmt === 'raw') {
      const raw = await readOrFail(bpath, `${path}: backing file`);
      backing = {
        size: BigInt(raw.length),
        read: (o, l) => {
          const out = new Uint8Array(l);
          if (o < BigInt(raw.length)) out.set(raw.subarray(Number(o), Math.min(raw.length, Number(o) + l)));
          return out;
        },
      };
    } else {
      throw new RunFailure(`${path}: backing format '${fmt}' is not supported by qcow2-ref`);
    }
  }
  return loadImage(bytes, {
    ...(dataFile !== undefined ? { dataFile } : {}),
    ...(backing !== undefined ? { backing } : {}),
  });
}

/**
 * Applies `ops` to `image` in memory. Returns the host I/O of all ops in order, or the index and
 * message of the first op that failed (nothing is applied then). An op that changes the external
 * data file counts as failed: that I/O is not part of HostIO yet.
 */
export function planOps(image: Image, ops: readonly Op[]): { ok: true; io: HostIO[]; image: Image } | { ok: false; index: number; message: string } {
  let img = image;
  const io: HostIO[] = [];
  for (let i = 0; i < ops.length; i++) {
    const r = step(img, ops[i]!);
    if (!r.ok) return { ok: false, index: i, message: r.error.message };
    if (r.image.dataFile !== img.dataFile) {
      return { ok: false, index: i, message: 'the op would change the external data file, which qcow2-ref run cannot write yet' };
    }
    img = r.image;
    for (const x of r.io) io.push(x);
  }
  return { ok: true, io, image: img };
}

async function writeAll(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new Error('short write');
    done += bytesWritten;
  }
}

/**
 * Issues `io` to the open file `fh` in order: writes as writes, 'zero' as writes of zeros (in chunks
 * of at most 1 MiB, extending the file like a write), 'discard' as writes of zeros clipped to the
 * current end of the file (never extending it), 'truncate' as ftruncate, 'flush' as fsync (repeated
 * barriers with nothing in between issue one fsync). Ends with an fsync when anything was written
 * after the last barrier.
 */
export async function applyHostIOToFile(fh: FileHandle, io: readonly HostIO[]): Promise<Omit<RunSummary, 'ops'>> {
  let length = BigInt((await fh.stat()).size);
  let hostWrites = 0;
  let bytesWritten = 0;
  let flushes = 0;
  let dirty = false;
  let zeros: Uint8Array | undefined;
  const writeZeros = async (offset: bigint, count: bigint): Promise<void> => {
    let pos = offset;
    const end = offset + count;
    while (pos < end) {
      const n = Number(end - pos < BigInt(ZERO_CHUNK) ? end - pos : BigInt(ZERO_CHUNK));
      zeros ??= new Uint8Array(ZERO_CHUNK);
      await writeAll(fh, zeros.subarray(0, n), Number(pos));
      pos += BigInt(n);
      bytesWritten += n;
    }
  };
  for (const op of io) {
    switch (op.kind) {
      case 'write':
        await writeAll(fh, op.bytes, Number(op.offset));
        bytesWritten += op.bytes.length;
        if (op.offset + BigInt(op.bytes.length) > length) length = op.offset + BigInt(op.bytes.length);
        hostWrites++;
        dirty = true;
        break;
      case 'zero':
        await writeZeros(op.offset, op.length);
        if (op.offset + op.length > length) length = op.offset + op.length;
        hostWrites++;
        dirty = true;
        break;
      case 'discard': {
        const end = op.offset + op.length < length ? op.offset + op.length : length;
        if (end > op.offset) await writeZeros(op.offset, end - op.offset);
        hostWrites++;
        dirty = true;
        break;
      }
      case 'truncate':
        await fh.truncate(Number(op.length));
        length = op.length;
        hostWrites++;
        dirty = true;
        break;
      case 'flush':
        if (dirty) {
          await fh.sync();
          flushes++;
          dirty = false;
        }
        break;
    }
  }
  if (dirty) await fh.sync();
  return { hostWrites, bytesWritten, flushes };
}

async function readScript(path: string): Promise<string> {
  if (path !== '-') return readFile(path, 'utf8');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Runs `run` with the arguments after the command name; returns the exit code. */
export async function runRun(args: readonly string[], io: CliIo, stdin: () => Promise<string> = () => readScript('-')): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: {
        output: { type: 'string' },
        quiet: { type: 'boolean', short: 'q' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (parsed.values.help === true) {
    io.stdout(RUN_HELP);
    return EXIT_OK;
  }
  const output = parsed.values.output ?? 'human';
  if (output !== 'human' && output !== 'json') throw new UsageError(`--output must be 'human' or 'json', not '${output}'`);
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

  // 2. Every op in memory.
  let plan;
  try {
    const image = await loadImageFile(imagePath);
    plan = planOps(image, ops);
  } catch (e) {
    if (e instanceof RunFailure) {
      io.stderr(`qcow2-ref: ${e.message}\n`);
      return EXIT_DECODE;
    }
    throw e;
  }
  if (!plan.ok) {
    io.stderr(`qcow2-ref: ${imagePath}: op ${plan.index} (${scriptName(ops[plan.index]!)}): ${plan.message}\n`);
    return EXIT_DECODE;
  }

  // 3. The host I/O, in order.
  let done: Omit<RunSummary, 'ops'>;
  try {
    const fh = await open(imagePath, 'r+');
    try {
      done = await applyHostIOToFile(fh, plan.io);
    } finally {
      await fh.close();
    }
  } catch (e) {
    io.stderr(`qcow2-ref: ${imagePath}: write failed: ${errnoText(e)} (the image may be partly updated)\n`);
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
