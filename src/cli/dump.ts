/**
 * `qcow2-ref dump IMAGE [--output=human|json]`: prints every structure walkImage finds, as readable
 * sections or as JSON (64-bit values as numbers up to 2^53, decimal strings above).
 *
 * The image is not read into memory: walkImage reads it through a file reader (positioned reads,
 * src/io/file-reader.ts) and decodes only the structures it describes, so memory grows with the
 * metadata described (the report), not with the file: a 6 GiB preallocated image costs its tables.
 */
import { fstatSync } from 'node:fs';
import { match } from 'ts-pattern';
import type { L2EntryClass, SubclusterState } from '../format/index.ts';
import { isQcow2FormatError } from '../codec/index.ts';
import { headerExtensionTypeHex, type DecodedFeatures } from '../format/index.ts';
import { jsonU64 } from '../format/index.ts';
import { l2TableEntries, walkImage, type ImageWalk, type L1Info, type L2EntryInfo, type L2TableInfo, type RefcountBlockInfo, type WalkError } from '../format/index.ts';
import { EXIT_DECODE, EXIT_OK, type CliIo, oneImage, outputFormat, parseCommand, showHelp } from './io.ts';
import { fileReader, type FileReader } from '../io/index.ts';
import { HostReaderError } from '../model/index.ts';

/** Help text of the dump command. */
export const DUMP_HELP = `Usage: qcow2-ref dump IMAGE [--output=human|json]

Decodes every structure of the qcow2 image IMAGE and prints it: the header (all
fields), header extensions (known ones decoded, unknown ones as raw bytes), the
feature name table, the backing file name, the active L1 table and each distinct
L2 table it points at (entries decoded to their kind: unallocated, zero-plain,
zero-alloc, normal, compressed; for extended L2 images the state of each of the
32 subclusters), the refcount table and each distinct refcount block, the
snapshot table with each snapshot's L1 table (and its L2 tables), and persistent
bitmaps. Runs of unallocated entries and of equal refcounts are summarised.

Options:
  --output=human   Readable sections (default).
  --output=json    One JSON document with the same content. 64-bit values are
                   JSON numbers when at most 2^53 and decimal strings above
                   (exact either way); byte strings are lowercase hex.
  -h, --help       Show this help.

A structure that cannot be decoded is reported at its place (and on stderr) and
the dump goes on with the rest; a header that cannot be decoded ends it.

Exit codes:
  0  the image was decoded completely
  1  the image (or part of it) could not be decoded, or could not be read;
     one line per problem on stderr:
     qcow2-ref: IMAGE: STRUCTURE.FIELD at 0xOFFSET: PROBLEM
  2  usage error (unknown option, missing or extra IMAGE)
`;

/** Runs `dump` with the arguments after the command name; returns the exit code. */
export async function runDump(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(args, { output: { type: 'string', short: 'o' } }, true);
  if (parsed.values.help === true) return showHelp(io, DUMP_HELP);
  const output = outputFormat(parsed.values.output);
  const image = oneImage(parsed.positionals);
  let reader: FileReader;
  try {
    reader = fileReader(image);
    if (fstatSync(reader.fd).isDirectory()) {
      reader.close();
      throw Object.assign(new Error('EISDIR'), { code: 'EISDIR' });
    }
  } catch (e) {
    io.stderr(`qcow2-ref: ${image}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
    return EXIT_DECODE;
  }
  let walk: ImageWalk;
  try {
    // The walk without L2 entries (its size does not grow with the allocated clusters); each table's
    // entries are decoded again, one table at a time, as the report reaches it.
    walk = walkImage(reader, { l2Entries: false });
    const w = walk;
    const entriesOf = (t: L2TableInfo): readonly L2EntryInfo[] => (t.error !== undefined ? [] : l2TableEntries(reader, w.header, t.offset));
    await writeLines(io, output === 'json' ? jsonReport(walk, entriesOf) : humanReport(image, walk, entriesOf));
  } catch (e) {
    if (isQcow2FormatError(e) || e instanceof HostReaderError) {
      io.stderr(`qcow2-ref: ${image}: ${e.message}\n`);
      return EXIT_DECODE;
    }
    throw e;
  } finally {
    reader.close();
  }
  for (const err of walk.errors) io.stderr(`qcow2-ref: ${image}: ${walkErrorLine(err)}\n`);
  return walk.errors.length === 0 ? EXIT_OK : EXIT_DECODE;
}

/** A walk error as `structure.field at 0xOFFSET: detail (at WHERE)`. */
export function walkErrorLine(e: WalkError): string {
  return `${e.structure}.${e.field} at 0x${e.offset.toString(16)}: ${e.detail} (${e.at})`;
}

/** Where report lines go, one or more at a time. */
type Lines = string[];

/** Bytes of report written to stdout at once. */
const WRITE_CHUNK = 1 << 16;

/**
 * Writes `lines` (each followed by a newline) to stdout in chunks of about WRITE_CHUNK bytes,
 * waiting for stdout to take each (CliIo.drain): a long report is never held whole.
 */
async function writeLines(io: CliIo, lines: Iterable<string>): Promise<void> {
  let chunk: string[] = [];
  let size = 0;
  for (const l of lines) {
    chunk.push(l);
    size += l.length + 1;
    if (size >= WRITE_CHUNK) {
      io.stdout(`${chunk.join('\n')}\n`);
      chunk = [];
      size = 0;
      await io.drain?.();
    }
  }
  if (chunk.length > 0) io.stdout(`${chunk.join('\n')}\n`);
}

/** Yields and removes the lines of `out`. */
function* take(out: Lines): Generator<string> {
  yield* out.splice(0);
}

/** The L2 entries of a table of the walk (the walk's own, or decoded again for a walk without them). */
type EntriesOf = (t: L2TableInfo) => readonly L2EntryInfo[];

/** Text placed where the L2 tables go in the JSON document, then replaced by them one by one. */
const L2_TABLES_MARK = '\u0000l2Tables\u0000';

/**
 * The lines of `JSON.stringify(toJson(walk), null, 2)` (in pieces that may hold several lines), the
 * L2 tables' entries from `entriesOf`, one table at a time: the same bytes, never the whole document.
 */
function* jsonReport(walk: ImageWalk, entriesOf: EntriesOf): Generator<string> {
  const doc = JSON.stringify(toJson({ ...walk, l2Tables: L2_TABLES_MARK }), null, 2);
  const mark = JSON.stringify(L2_TABLES_MARK);
  const at = doc.indexOf(mark);
  if (walk.l2Tables.length === 0) {
    yield `${doc.slice(0, at)}[]${doc.slice(at + mark.length)}`;
    return;
  }
  yield `${doc.slice(0, at)}[`;
  for (let i = 0; i < walk.l2Tables.length; i++) {
    const t = walk.l2Tables[i]!;
    const text = JSON.stringify(toJson({ ...t, entries: entriesOf(t) }), null, 2);
    // An element of an array that is a member of the top-level object: every line indented by 4 spaces.
    yield `    ${text.replaceAll('\n', '\n    ')}${i + 1 < walk.l2Tables.length ? ',' : ''}`;
  }
  yield `  ]${doc.slice(at + mark.length)}`;
}

/**
 * The walk as a JSON-ready value: bigints become numbers (≤ 2^53) or decimal strings, byte arrays
 * become lowercase hex strings; everything else is kept as is.
 */
export function toJson(v: unknown): unknown {
  if (typeof v === 'bigint') return jsonU64(v);
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex');
  if (Array.isArray(v)) return v.map(toJson);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = toJson(x);
    return out;
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Human output

const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

function features(f: DecodedFeatures): string {
  const parts = [...f.names];
  if (f.unknownMask !== 0n) parts.push(`unknown bits ${hex(f.unknownMask)}`);
  return `${hex(f.value)}${parts.length > 0 ? ` (${parts.join(', ')})` : ''}`;
}

/** One L2 entry's meaning in words. */
export function describeClass(c: L2EntryClass): string {
  const copied = c.copied ? ', COPIED' : '';
  return match(c)
    .with({ kind: 'unallocated' }, () => `unallocated${copied}`)
    .with({ kind: 'zero-plain' }, () => `zero-plain${copied}`)
    .with({ kind: 'zero-alloc' }, (z) => `zero-alloc at ${hex(z.hostOffset)}${copied}`)
    .with({ kind: 'normal' }, (n) => `normal at ${hex(n.hostOffset)}${copied}`)
    .with(
      { kind: 'compressed' },
      (x) => `compressed at ${hex(x.hostOffset)}, ${x.additionalSectors} additional sector(s), ${x.compressedBytes} byte(s)${copied}`,
    )
    .exhaustive();
}

function subclusterRuns(states: readonly SubclusterState[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < states.length) {
    let j = i;
    while (j + 1 < states.length && states[j + 1] === states[i]) j++;
    parts.push(`${i === j ? `${i}` : `${i}-${j}`} ${states[i]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

function errorText(e: WalkError): string {
  return `ERROR ${walkErrorLine(e)}`;
}

function l1Lines(out: Lines, l1: L1Info, indent: string): void {
  if (l1.error !== undefined) {
    out.push(`${indent}${errorText(l1.error)}`);
    return;
  }
  if (l1.sameAs !== undefined) {
    out.push(`${indent}(same table as ${l1.sameAs})`);
    return;
  }
  let next = 0;
  const gap = (upTo: number): void => {
    if (upTo > next) out.push(`${indent}[${next}${upTo - 1 > next ? `-${upTo - 1}` : ''}] ${upTo - next} unallocated`);
  };
  for (const e of l1.entries) {
    gap(e.index);
    const flags = [e.copied ? 'COPIED' : '', e.reservedBits !== 0n ? `reserved bits ${hex(e.reservedBits)}` : ''].filter((s) => s !== '');
    const target = e.l2Offset === 0n ? 'no L2 table' : `L2 table at ${hex(e.l2Offset)}`;
    out.push(`${indent}[${e.index}] ${hex(e.word)} -> ${target}${flags.length > 0 ? ` (${flags.join(', ')})` : ''}`);
    next = e.index + 1;
  }
  gap(l1.size);
}

function l2Lines(out: Lines, t: L2TableInfo, entries: readonly L2EntryInfo[], walk: ImageWalk): void {
  const refs = t.references.map((r) => `${r.l1} L1[${r.index}]`).join(', ');
  out.push(`L2 table at ${hex(t.offset)} (${t.entryCount} entries; referenced by ${refs})`);
  if (t.error !== undefined) {
    out.push(`  ${errorText(t.error)}`);
    return;
  }
  const first = t.references[0];
  const entriesPerL2 = BigInt(t.entryCount);
  const cluster = BigInt(walk.header.clusterSize);
  let next = 0;
  const gap = (upTo: number): void => {
    if (upTo > next) out.push(`  [${next}${upTo - 1 > next ? `-${upTo - 1}` : ''}] ${upTo - next} unallocated`);
  };
  for (const e of entries) {
    gap(e.index);
    const guest = first !== undefined ? ` guest ${hex((BigInt(first.index) * entriesPerL2 + BigInt(e.index)) * cluster)}` : '';
    const raw = e.bitmap !== undefined ? `${hex(e.word)} bitmap ${hex(e.bitmap)}` : hex(e.word);
    const reserved = e.reservedBits !== 0n ? `, reserved bits ${hex(e.reservedBits)}` : '';
    out.push(`  [${e.index}]${guest}: ${describeClass(e.class)}${reserved} (${raw})`);
    if (e.subclusters !== undefined) out.push(`      subclusters: ${subclusterRuns(e.subclusters)}`);
    next = e.index + 1;
  }
  gap(t.entryCount);
}

function refblockLines(out: Lines, b: RefcountBlockInfo): void {
  out.push(`Refcount block at ${hex(b.offset)} (${b.entryCount} entries; refcount table ${b.tableIndexes.map((i) => `[${i}]`).join(', ')})`);
  if (b.error !== undefined) {
    out.push(`  ${errorText(b.error)}`);
    return;
  }
  const base = BigInt(b.tableIndexes[0] ?? 0) * BigInt(b.entryCount);
  for (const r of b.runs) {
    const from = base + BigInt(r.start);
    const to = from + BigInt(r.count) - 1n;
    out.push(`  cluster${r.count > 1 ? `s ${from}-${to}` : ` ${from}`}: refcount ${r.refcount}`);
  }
}

/** The readable report of a walk. */
export function formatHuman(image: string, walk: ImageWalk): string {
  return `${[...humanReport(image, walk, (t) => t.entries)].join('\n')}\n`;
}

/** formatHuman's lines, the L2 tables' entries from `entriesOf`, one table at a time. */
function* humanReport(image: string, walk: ImageWalk, entriesOf: EntriesOf): Generator<string> {
  const h = walk.header;
  const out: Lines = [];
  out.push(`qcow2 image ${image} (${walk.fileSize} bytes)`, '');
  out.push('Header');
  const row = (k: string, v: string | number | bigint | boolean): void => {
    out.push(`  ${k.padEnd(26)}${String(v)}`);
  };
  row('version', h.version);
  row('cluster bits', `${h.clusterBits} (cluster size ${h.clusterSize})`);
  row('virtual size', h.size);
  row('backing file offset', hex(h.backingFileOffset));
  row('backing file size', h.backingFileSize);
  row('crypt method', `${h.cryptMethod} (${h.cryptMethodName})`);
  row('L1 size', h.l1Size);
  row('L1 table offset', hex(h.l1TableOffset));
  row('refcount table offset', hex(h.refcountTableOffset));
  row('refcount table clusters', h.refcountTableClusters);
  row('snapshots', h.nbSnapshots);
  row('snapshots offset', hex(h.snapshotsOffset));
  row('incompatible features', features(h.incompatibleFeatures));
  row('compatible features', features(h.compatibleFeatures));
  row('autoclear features', features(h.autoclearFeatures));
  row('refcount order', `${h.refcountOrder} (${h.refcountBits}-bit refcounts)`);
  row('header length', h.headerLength);
  row('compression type', `${h.compressionType} (${h.compressionTypeName})`);
  if (h.unknownHeaderFieldsLength > 0) row('unknown header fields', `${h.unknownHeaderFieldsLength} byte(s)`);

  out.push('', `Header extensions (from ${hex(h.headerLength)})`);
  if (walk.extensionsError !== undefined) out.push(`  ${errorText(walk.extensionsError)}`);
  for (const e of walk.extensions) {
    const head = `  at ${hex(e.offset)}: ${headerExtensionTypeHex(e.typeCode)}`;
    out.push(
      match(e)
        .with({ type: 'end' }, () => `${head} end of extensions`)
        .with({ type: 'backing-file-format' }, (x) => `${head} backing file format: ${JSON.stringify(x.name)}`)
        .with({ type: 'feature-name-table' }, (x) => `${head} feature name table, ${x.entries.length} entries`)
        .with(
          { type: 'bitmaps' },
          (x) => `${head} bitmaps: ${x.nbBitmaps} bitmap(s), directory ${x.directorySize} byte(s) at ${hex(x.directoryOffset)}${x.reserved !== 0 ? `, reserved ${hex(x.reserved)}` : ''}`,
        )
        .with({ type: 'full-disk-encryption' }, (x) => `${head} full disk encryption header: ${x.headerLength} byte(s) at ${hex(x.headerOffset)}`)
        .with({ type: 'external-data-file' }, (x) => `${head} external data file: ${JSON.stringify(x.name)}`)
        .with({ type: 'unknown' }, (x) => `${head} unknown extension, ${x.length} byte(s): ${Buffer.from(x.data).toString('hex').slice(0, 64)}${x.length > 32 ? '…' : ''}`)
        .exhaustive(),
    );
  }
  if (walk.extensionTrailingBytes > 0) out.push(`  ${walk.extensionTrailingBytes} byte(s) after the end marker`);

  if (walk.featureTable.length > 0) {
    out.push('', 'Feature name table');
    for (const f of walk.featureTable) out.push(`  ${f.field} bit ${f.bit}: ${f.name}`);
  }

  if (walk.backingFile !== undefined) {
    const b = walk.backingFile;
    out.push('', 'Backing file');
    if (b.error !== undefined) out.push(`  ${errorText(b.error)}`);
    else out.push(`  ${JSON.stringify(b.name)}${b.format !== undefined ? ` (format ${b.format})` : ''} at ${hex(b.offset)}`);
  }
  if (walk.dataFile !== undefined) out.push('', 'External data file', `  ${JSON.stringify(walk.dataFile)}`);

  out.push('', `Active L1 table: ${walk.activeL1.size} entries at ${hex(walk.activeL1.offset)}`);
  l1Lines(out, walk.activeL1, '  ');

  yield* take(out);
  for (const t of walk.l2Tables) {
    out.push('');
    l2Lines(out, t, entriesOf(t), walk);
    yield* take(out);
  }

  const r = walk.refcounts;
  out.push('', `Refcount table: ${r.tableClusters} cluster(s), ${r.tableSize} entries at ${hex(r.tableOffset)}`);
  if (r.error !== undefined) out.push(`  ${errorText(r.error)}`);
  for (const e of r.entries) {
    out.push(`  [${e.index}] -> refcount block at ${hex(e.blockOffset)}${e.reservedBits !== 0 ? ` (reserved bits ${hex(e.reservedBits)})` : ''}`);
  }
  for (const b of r.blocks) {
    out.push('');
    refblockLines(out, b);
  }

  const s = walk.snapshots;
  out.push('', `Snapshot table: ${s.count} snapshot(s) at ${hex(s.offset)}`);
  if (s.error !== undefined) out.push(`  ${errorText(s.error)}`);
  for (const sn of s.entries) {
    const date = new Date(sn.dateSec * 1000).toISOString();
    out.push(`  snapshot ${sn.index}: id ${JSON.stringify(sn.id)}, name ${JSON.stringify(sn.name)}, date ${date} (+${sn.dateNsec} ns)`);
    out.push(`    vm clock ${sn.vmClockNsec} ns, vm state size ${sn.vmStateSizeLarge ?? sn.vmStateSize}, extra data ${sn.extraDataSize} byte(s)` +
      `${sn.diskSize !== undefined ? `, disk size ${sn.diskSize}` : ''}${sn.icount !== undefined ? `, icount ${hex(sn.icount)}` : ''}`);
    out.push(`    L1 table: ${sn.l1Size} entries at ${hex(sn.l1TableOffset)}`);
    l1Lines(out, sn.l1, '      ');
  }

  if (walk.bitmaps !== undefined) {
    const bd = walk.bitmaps;
    out.push('', `Bitmap directory: ${bd.size} byte(s) at ${hex(bd.offset)}`);
    if (bd.error !== undefined) out.push(`  ${errorText(bd.error)}`);
    for (const b of bd.bitmaps) {
      const flags = [b.inUse ? 'in-use' : '', b.auto ? 'auto' : '', b.extraDataCompatible ? 'extra-data-compatible' : ''].filter((x) => x !== '');
      out.push(`  bitmap ${JSON.stringify(b.name)}: type ${b.bitmapType}, granularity ${2 ** b.granularityBits}, flags [${flags.join(', ')}], table ${b.tableSize} entries at ${hex(b.tableOffset)}`);
      if (b.error !== undefined) out.push(`    ${errorText(b.error)}`);
      for (const e of b.table) {
        out.push(`    [${e.index}] ${e.dataOffset !== 0n ? `data at ${hex(e.dataOffset)}` : e.allOnes ? 'all ones' : 'all zeros'}${e.reservedBits !== 0n ? ` (reserved bits ${hex(e.reservedBits)})` : ''}`);
      }
    }
  }

  if (walk.errors.length > 0) {
    out.push('', `Errors (${walk.errors.length})`);
    for (const e of walk.errors) out.push(`  ${walkErrorLine(e)}`);
  }
  yield* take(out);
}
