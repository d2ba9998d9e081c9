/**
 * `qcow2-ref map IMAGE [--output=human|json] [--allow-backing] ...`: what `qemu-img map` of QEMU
 * 7.2 prints, text for text.
 *
 * The extents come from the model (mapImage, src/model/block-status.ts) over the whole backing chain, told
 * how every file involved is stored (src/io/seek-data.ts: st_blocks and SEEK_DATA/SEEK_HOLE),
 * because QEMU consults the same facts: it detects "metadata preallocation" from the qcow2 file's
 * allocated size and then reports file holes inside normal clusters as zeros, and a raw backing
 * file's holes are zeros too. Without python3 the files are taken as fully allocated (one warning).
 *
 * Output, as qemu-img.c img_map/dump_map_entry print it:
 * - json: `[` + one `{ "start": S, "length": L, "depth": D, "present": B, "zero": B, "data": B[,
 *   "offset": O]}` per extent, joined by `,\n`, + `]\n`;
 * - human: `Offset Length Mapped to File` (16-wide columns, numbers as printf("%#-16x"): 0x prefix
 *   except for 0), one row per extent that holds data and is not zero; an extent with data but no
 *   host offset (compressed, encrypted) ends the listing with an error (exit 1), as in QEMU.
 */
import { isQcow2FormatError } from '../codec/index.ts';
import { ModelError } from '../model/index.ts';
import { HostReaderError } from '../model/index.ts';
import type { MapExtent } from '../model/index.ts';
import { parseQemuSize } from './create.ts';
import { probeHostAllocationsOrFull } from '../io/index.ts';
import { EXIT_DECODE, EXIT_OK, UsageError, type CliIo, oneImage, outputFormat, parseCommand, reportOpenFailure, showHelp } from './io.ts';
import { OPEN_POLICY_OPTIONS, chainImage, mapDependencies, mapLayer, openImageFile, openPolicyFrom, type OpenedLayer } from '../io/index.ts';

/** Help text of the map command. */
export const MAP_HELP = `Usage: qcow2-ref map [--output=human|json] [--start-offset=OFFSET]
                     [--max-length=LENGTH] [--allow-backing] [--allow-backing-path]
                     [--allow-data-file-path] IMAGE

Prints the guest address space of the qcow2 image IMAGE as 'qemu-img map'
(QEMU 7.2) prints it, text for text: which ranges hold data, which read as
zeros, which come from which backing file, and where they are stored.

Options:
  --output=human   qemu-img's table (default): Offset, Length, Mapped to, File;
                   one row per range that holds data. Fails (exit 1) on
                   compressed or encrypted data, which has no host offset, as
                   qemu-img does.
  --output=json    qemu-img's JSON: one object per extent with start, length,
                   depth (backing layers descended), present (allocated in that
                   layer), zero, data and, where the data has a host offset,
                   offset.
  -s, --start-offset=OFFSET
                   Start at guest offset OFFSET (qemu-img size syntax: 1M, 4k).
  -l, --max-length=LENGTH
                   Map at most LENGTH bytes.
  --allow-backing  Open backing files (needed when IMAGE has one). Their names
                   are taken relative to the directory of the image naming them;
                   a name that is absolute, leads out of that directory or names
                   a protocol is refused unless --allow-backing-path is given.
  --allow-backing-path
                   Accept such backing file names (implies --allow-backing).
  --allow-data-file-path
                   Accept an external data file name that is absolute or leads
                   out of IMAGE's directory (as for 'qcow2-ref run').
  -h, --help       Show this help.

Files IMAGE refers to are opened as QEMU opens them (backing files relative to
the naming image's directory, format from the backing-format extension or the
qcow2 magic, else raw; the data file relative to IMAGE's directory), but only
as far as the options allow: an image's header names those files, and whoever
made the image chose the names; following them blindly reads whatever file the
image's author picked (CVE-2015-1851, CVE-2024-32498).

How the files are stored matters (as for qemu-img): holes in a sparse,
metadata-preallocated image read as zeros. The allocation is probed with
SEEK_DATA/SEEK_HOLE through python3; without python3 every file is taken as
fully allocated and a warning is printed.

Differences from qemu-img: a relative external data file name is resolved
against IMAGE's directory (qemu-img 7.2 uses its working directory), and the
File column shows the path opened.

Exit codes:
  0  the map was printed
  1  IMAGE (or a file it refers to) could not be read or decoded, a file it
     refers to was refused, the metadata is invalid, or (human output) data
     without a host offset was found; one line on stderr:
     qcow2-ref: FILE: PROBLEM
  2  usage error (unknown option, missing or extra IMAGE, bad offset)
`;

/** One extent as qemu-img's JSON line (without separators). */
export function mapExtentJson(e: MapExtent): string {
  return `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}` +
    `${e.offset !== undefined ? `, "offset": ${e.offset}` : ''}}`;
}

/** `extents` as `qemu-img map --output=json` prints them (one line per extent, joined by `,\n`). */
export function formatMapJson(extents: readonly MapExtent[]): string {
  return `[${extents.map(mapExtentJson).join(',\n')}]\n`;
}

/** printf("%#-16" PRIx64): 0x prefix except for zero, left-justified in 16 columns. */
function hex16(v: bigint): string {
  return (v === 0n ? '0' : `0x${v.toString(16)}`).padEnd(16);
}

/** The human table's header line. */
export const MAP_HUMAN_HEADER = `${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n`;

/**
 * `extents` as `qemu-img map` (human) prints them: `text` is stdout; `error` is set (with the
 * extent's start) when qemu-img would stop with "File contains external, encrypted or compressed
 * clusters." — the rows before it are printed, as QEMU prints them. `fileAtDepth(d)` names the file
 * that holds the data of layer d. Only the first extent is examined before qemu-img folds "zero"
 * and "no data" together, which is why the check looks at it even when it is zero.
 */
export function formatMapHuman(extents: readonly MapExtent[], fileAtDepth: (depth: number) => string): { text: string; error?: { start: bigint } } {
  let text = MAP_HUMAN_HEADER;
  for (let i = 0; i < extents.length; i++) {
    const e = extents[i]!;
    // dump_map_entry folds every extent after the first that has no data or is zero into
    // "zero, no data" before printing it, so only data-and-not-zero extents (and the first) count.
    const data = i === 0 ? e.data : e.data && !e.zero;
    const zero = i === 0 ? e.zero : !(e.data && !e.zero);
    if (data && e.offset === undefined) return { text, error: { start: e.start } };
    if (data && !zero) text += `${hex16(e.start)}${hex16(e.length)}${hex16(e.offset ?? 0n)}${fileAtDepth(e.depth)}\n`;
  }
  return { text };
}

/** The file holding layer `depth`'s data: its external data file, else the layer's own file. */
function fileAtDepth(top: OpenedLayer, depth: number): string {
  let l: OpenedLayer | undefined = top;
  for (let d = 0; d < depth && l !== undefined; d++) l = l.backing;
  if (l === undefined) return '';
  return l.dataFile?.path ?? l.filename;
}

function parseOffset(name: string, text: string): bigint {
  const v = parseQemuSize(text);
  if (typeof v !== 'bigint' || v >= 1n << 63n) throw new UsageError(`invalid ${name} specified`);
  return v;
}

/** Runs `map` with the arguments after the command name; returns the exit code. */
export async function runMap(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(args, {
    output: { type: 'string' },
    'start-offset': { type: 'string', short: 's' },
    'max-length': { type: 'string', short: 'l' },
    ...OPEN_POLICY_OPTIONS,
  }, true);
  if (parsed.values.help === true) return showHelp(io, MAP_HELP);
  const output = outputFormat(parsed.values.output);
  const imagePath = oneImage(parsed.positionals);
  const startOffset = parsed.values['start-offset'] !== undefined ? parseOffset('offset', parsed.values['start-offset']) : 0n;
  const maxLength = parsed.values['max-length'] !== undefined ? parseOffset('length', parsed.values['max-length']) : (1n << 63n) - 1n;
  const policy = openPolicyFrom(parsed.values);

  let top: OpenedLayer | undefined;
  let extents: MapExtent[];
  try {
    top = await openImageFile(imagePath, policy, { backing: true, dataFile: 'stat' });
    const paths = mapDependencies(top);
    const allocs = probeHostAllocationsOrFull(paths, (line) => io.stderr(`qcow2-ref: warning: ${line}\n`));
    const hosts = new Map(paths.map((p, i) => [p, allocs[i]!] as const));
    const image = chainImage(top, hosts);
    const size = image.header.size & ~511n;
    const end = startOffset + maxLength < size ? startOffset + maxLength : size;
    extents = startOffset < end ? mapLayer(top, image, hosts, startOffset, end - startOffset) : [];
  } catch (e) {
    if (e instanceof ModelError || isQcow2FormatError(e) || e instanceof HostReaderError) {
      io.stderr(`qcow2-ref: ${imagePath}: Could not read file metadata: ${e.message}\n`);
      return EXIT_DECODE;
    }
    return reportOpenFailure(io, imagePath, e);
  } finally {
    // The extents are plain values: every file can be closed before printing.
    top?.close();
  }
  // An empty range: qemu-img prints its initial, empty entry.
  if (extents.length === 0) {
    if (output === 'json') io.stdout(formatMapJson([{ start: startOffset, length: 0n, depth: 0, present: false, zero: false, data: false }]));
    else io.stdout(MAP_HUMAN_HEADER);
    return EXIT_OK;
  }
  if (output === 'json') {
    io.stdout(formatMapJson(extents));
    return EXIT_OK;
  }
  const opened = top;
  const human = formatMapHuman(extents, (d) => fileAtDepth(opened, d));
  io.stdout(human.text);
  if (human.error !== undefined) {
    io.stderr(`qcow2-ref: ${imagePath}: guest offset 0x${human.error.start.toString(16)}: File contains external, encrypted or compressed clusters.\n`);
    return EXIT_DECODE;
  }
  return EXIT_OK;
}
