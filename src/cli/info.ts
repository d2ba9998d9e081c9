/**
 * `qcow2-ref info IMAGE [--output=human|json] [--backing-chain] [--allow-backing]`: what
 * `qemu-img info` of QEMU 7.2 prints for a qcow2 image, in both of its formats, text for text.
 *
 * - JSON: qemu-img prints the QObject its QAPI visitor built with QEMU's JSON writer
 *   (qobject/json-writer.c, pretty: 4-space indents, `"key": value`, empty containers as `[` +
 *   newline + `]`). A QDict iterates its 512 hash buckets in order (qobject/qdict.c, tdb_hash of the
 *   key), newest entry first within a bucket, so the key order is QEMU's hash order, reproduced here.
 *   Integers are exact (int64 as QEMU prints them), strings escaped as QEMU escapes them (non-ASCII
 *   as \uXXXX).
 * - human: block/qapi.c bdrv_image_info_dump: sizes as size_to_str ("%0.3g" of a power-of-1024
 *   unit, "1 MiB", "216 KiB", "1.12 KiB"), the snapshot table with its fixed-width columns and dates
 *   in local time, format-specific data as dump_qdict prints it (dashes in keys as spaces).
 */
import { imageInfoQObject, qcow2ImageInfo, rawImageInfo, type ImageInfo, type QObject } from '../views/index.ts';
import { isQcow2FormatError } from '../codec/index.ts';
import { EXIT_OK, type CliIo, oneImage, outputFormat, parseCommand, reportOpenFailure, showHelp } from './io.ts';
import { OPEN_POLICY_OPTIONS, OpenImageError, openPolicyFrom, withOpenImageFile, type OpenedLayer } from '../io/index.ts';
import { exactFraction, roundHalfEven } from './exact-decimal.ts';

/** Help text of the info command. */
export const INFO_HELP = `Usage: qcow2-ref info [--output=human|json] [--backing-chain]
                      [--allow-backing] [--allow-backing-path]
                      [--allow-data-file-path] IMAGE

Prints what 'qemu-img info' (QEMU 7.2) prints for the qcow2 image IMAGE, in the
same format: virtual size, file name, format, cluster size, disk size (the
file's allocated blocks), format-specific data (compat, compression type, lazy
refcounts, bitmaps, refcount bits, data file, encryption, corrupt, extended
L2), the dirty flag, internal snapshots and the backing file name.

Only IMAGE is read (as 'qemu-img info' does, which opens neither the backing
file nor the external data file), unless --backing-chain is given.

Options:
  --output=human   qemu-img's text report (default).
  --output=json    qemu-img's JSON report, byte for byte: same keys in the same
                   order, exact 64-bit integers.
  --backing-chain  Report every image of the backing chain, top first (a JSON
                   array, or human reports separated by blank lines). Needs
                   --allow-backing when IMAGE has a backing file.
  --allow-backing  Open backing files. Their names are taken relative to the
                   directory of the image naming them; a name that is absolute,
                   leads out of that directory or names a protocol is refused
                   unless --allow-backing-path is also given.
  --allow-backing-path
                   Accept such backing file names (implies --allow-backing).
  --allow-data-file-path
                   Accepted for symmetry with 'map' and 'run'; info never opens
                   the external data file (qemu-img info does not either).
  -h, --help       Show this help.

Why backing files need a flag: an image's header names the files it refers to,
and whoever made the image chose those names. A tool that follows them reads
whatever file the image's author picked (CVE-2015-1851, CVE-2024-32498).

Differences from qemu-img: only qcow2 images (and raw files below them in a
chain) are reported; header strings that are not valid UTF-8 are printed with
U+FFFD in the human report (qemu-img prints the raw bytes there; the JSON
report is the same).

Exit codes:
  0  the report was printed
  1  IMAGE (or a backing file) could not be read or decoded, or a backing file
     was refused; one line on stderr:
     qcow2-ref: FILE: STRUCTURE.FIELD at 0xOFFSET: PROBLEM
  2  usage error (unknown option, missing or extra IMAGE)
`;

// ---------------------------------------------------------------------------------------------
// QEMU's JSON text

/** tdb_hash of qobject/qdict.c, reduced to one of QDICT_BUCKET_MAX (512) buckets. */
function qdictBucket(key: string): number {
  const b = Buffer.from(key, 'utf8');
  let value = Math.imul(0x238f13af, b.length) >>> 0;
  for (let i = 0; i < b.length; i++) value = (value + (b[i]! << ((i * 5) % 24))) >>> 0;
  return ((Math.imul(1103515243, value) + 12345) >>> 0) % 512;
}

/** The entries of a dict in the order QEMU's qdict_first/qdict_next visit them. */
export function qdictOrder<T>(entries: readonly (readonly [string, T])[]): (readonly [string, T])[] {
  const buckets = new Map<number, (readonly [string, T])[]>();
  for (const e of entries) {
    const k = qdictBucket(e[0]);
    const list = buckets.get(k) ?? [];
    list.unshift(e); // QLIST_INSERT_HEAD
    buckets.set(k, list);
  }
  return [...buckets.keys()].sort((a, b) => a - b).flatMap((k) => buckets.get(k)!);
}

/** A string as QEMU's JSON writer quotes it (quoted_str): \uXXXX (upper case) for controls and non-ASCII. */
export function qemuJsonString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (cp) {
      case 0x22: out += '\\"'; break;
      case 0x5c: out += '\\\\'; break;
      case 0x08: out += '\\b'; break;
      case 0x0c: out += '\\f'; break;
      case 0x0a: out += '\\n'; break;
      case 0x0d: out += '\\r'; break;
      case 0x09: out += '\\t'; break;
      default:
        if (cp > 0xffff) {
          const hi = 0xd800 + ((cp - 0x10000) >> 10);
          const lo = 0xdc00 + ((cp - 0x10000) & 0x3ff);
          out += `\\u${hi.toString(16).toUpperCase().padStart(4, '0')}\\u${lo.toString(16).toUpperCase().padStart(4, '0')}`;
        } else if (cp < 0x20 || cp >= 0x7f) out += `\\u${cp.toString(16).toUpperCase().padStart(4, '0')}`;
        else out += ch;
    }
  }
  return `${out}"`;
}

/** `obj` as qobject_to_json_pretty prints it (no trailing newline). */
export function qemuJsonPretty(obj: QObject): string {
  const out: string[] = [];
  const nl = (depth: number): string => `\n${' '.repeat(depth * 4)}`;
  const write = (o: QObject, depth: number): void => {
    switch (o.kind) {
      case 'string': out.push(qemuJsonString(o.value)); return;
      case 'int': out.push(o.value.toString()); return;
      case 'bool': out.push(o.value ? 'true' : 'false'); return;
      case 'list':
        out.push('[');
        o.items.forEach((x, i) => {
          out.push(i > 0 ? `,${nl(depth + 1)}` : nl(depth + 1));
          write(x, depth + 1);
        });
        out.push(nl(depth), ']');
        return;
      case 'dict':
        out.push('{');
        qdictOrder(o.entries).forEach(([k, v], i) => {
          out.push(i > 0 ? `,${nl(depth + 1)}` : nl(depth + 1), `${qemuJsonString(k)}: `);
          write(v, depth + 1);
        });
        out.push(nl(depth), '}');
        return;
    }
  };
  write(obj, 0);
  return out.join('');
}

// ---------------------------------------------------------------------------------------------
// QEMU's human text

/** `x` (a finite double ≥ 0) as C's printf("%0.3g") prints it with glibc (exact, ties to even). */
export function formatG3(x: number): string {
  if (x === 0) return '0';
  // value = num / den exactly.
  let { num, den } = exactFraction(x);
  // Decimal exponent E with 10^E <= value < 10^(E+1).
  let E = Math.floor(Math.log10(x));
  const pow10 = (k: number): bigint => 10n ** BigInt(k);
  const ge = (k: number): boolean => (k >= 0 ? num >= den * pow10(k) : num * pow10(-k) >= den);
  while (!ge(E)) E--;
  while (ge(E + 1)) E++;
  // q = value / 10^(E-2), rounded half to even.
  const shift = E - 2;
  if (shift >= 0) den *= pow10(shift);
  else num *= pow10(-shift);
  let q = roundHalfEven(num, den);
  if (q === 1000n) {
    q = 100n;
    E += 1;
  }
  const digits = q.toString(); // three digits
  if (E < -4 || E >= 3) {
    const m = trimFraction(`${digits[0]}.${digits.slice(1)}`);
    return `${m}e${E < 0 ? '-' : '+'}${String(Math.abs(E)).padStart(2, '0')}`;
  }
  // Fixed notation with 2 - E decimals, trailing zeros removed.
  const scaled = E >= 2 ? digits + '0'.repeat(E - 2) : digits;
  const intLen = E + 1;
  let s: string;
  if (intLen > 0) s = `${scaled.slice(0, intLen)}.${scaled.slice(intLen)}`;
  else s = `0.${'0'.repeat(-intLen)}${digits}`;
  return trimFraction(s);
}

/** %g's removal of trailing zeros (and of a trailing decimal point) from the fraction. */
function trimFraction(s: string): string {
  return s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
}

/** util/cutils.c size_to_str: `val` (uint64) in the largest binary unit below 1000 of it, "%0.3g %sB". */
export function sizeToStr(val: bigint): string {
  const suffixes = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  const v = BigInt.asUintN(64, val);
  const d = Number(v);
  const y = d / (1000.0 / 1024.0);
  let i = 0;
  if (y !== 0) {
    const dv = new DataView(new ArrayBuffer(8));
    dv.setFloat64(0, y);
    i = ((dv.getUint16(0) >> 4) & 0x7ff) - 1022; // frexp exponent
  }
  i = Math.trunc((i - 1) / 10);
  const div = 2 ** (i * 10);
  return `${formatG3(d / div)} ${suffixes[i]}B`;
}

/** printf("%-Ns") / ("%Ns"): pads by bytes (UTF-8), never truncates. */
function padBytes(s: string, width: number, left: boolean): string {
  const n = width - Buffer.byteLength(s, 'utf8');
  if (n <= 0) return s;
  return left ? s + ' '.repeat(n) : ' '.repeat(n) + s;
}

/** C's `(int)` of an int64: the low 32 bits, signed. */
const toInt32 = (v: bigint): bigint => BigInt.asIntN(32, v);
/** printf("%02d"). */
const two = (v: bigint): string => (v < 0n ? `-${-v}` : String(v).padStart(2, '0'));

/** The header line of bdrv_snapshot_dump. */
const SNAPSHOT_HEADER = `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}`;

function localDate(sec: bigint): string {
  const d = new Date(Number(sec) * 1000);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** One row of bdrv_snapshot_dump (block/qapi.c). */
function snapshotRow(s: NonNullable<ImageInfo['snapshots']>[number]): string {
  const vmClockNsec = BigInt.asUintN(64, s.vmClockSec * 1_000_000_000n + s.vmClockNsec);
  const secs = vmClockNsec / 1_000_000_000n;
  const clock = `${two(toInt32(secs / 3600n))}:${two(toInt32((secs / 60n) % 60n))}:${two(toInt32(secs % 60n))}.${String(toInt32((vmClockNsec / 1_000_000n) % 1000n)).padStart(3, '0')}`;
  // pstrcpy into QEMUSnapshotInfo: id_str[128], name[256].
  const clip = (t: string, max: number): string => {
    const b = Buffer.from(t, 'utf8');
    return b.length <= max ? t : new TextDecoder().decode(b.subarray(0, max));
  };
  return `${padBytes(clip(s.id, 127), 9, true)} ${padBytes(clip(s.name, 255), 16, true)} ${padBytes(sizeToStr(s.vmStateSize), 8, false)}` +
    `${padBytes(localDate(s.dateSec), 20, false)}${padBytes(clock, 13, false)}${padBytes(s.icount !== undefined ? s.icount.toString() : '', 11, false)}`;
}

/** dump_qobject / dump_qdict / dump_qlist of block/qapi.c. */
function dumpQObject(indent: number, o: QObject, out: string[]): void {
  switch (o.kind) {
    case 'int': out.push(o.value.toString()); return;
    case 'string': out.push(o.value); return;
    case 'bool': out.push(o.value ? 'true' : 'false'); return;
    case 'list':
      o.items.forEach((x, i) => {
        const composite = x.kind === 'dict' || x.kind === 'list';
        out.push(`${' '.repeat(indent * 4)}[${i}]:${composite ? '\n' : ' '}`);
        dumpQObject(indent + 1, x, out);
        if (!composite) out.push('\n');
      });
      return;
    case 'dict':
      for (const [k, x] of qdictOrder(o.entries)) {
        const composite = x.kind === 'dict' || x.kind === 'list';
        out.push(`${' '.repeat(indent * 4)}${k.replace(/-/g, ' ')}:${composite ? '\n' : ' '}`);
        dumpQObject(indent + 1, x, out);
        if (!composite) out.push('\n');
      }
      return;
  }
}

/** bdrv_image_info_dump of QEMU 7.2: the human report of one image. */
export function formatInfoHuman(info: ImageInfo): string {
  const out: string[] = [];
  out.push(
    `image: ${info.filename}\n`,
    `file format: ${info.format}\n`,
    `virtual size: ${sizeToStr(info.virtualSize)} (${info.virtualSize} bytes)\n`,
    `disk size: ${info.actualSize !== undefined ? sizeToStr(info.actualSize) : 'unavailable'}\n`,
  );
  if (info.encrypted === true) out.push('encrypted: yes\n');
  if (info.clusterSize !== undefined) out.push(`cluster_size: ${info.clusterSize}\n`);
  if (info.dirtyFlag) out.push('cleanly shut down: no\n');
  if (info.backingFilename !== undefined) {
    let line = `backing file: ${info.backingFilename}`;
    if (info.fullBackingFilename === undefined) line += ' (cannot determine actual path)';
    else if (info.fullBackingFilename !== info.backingFilename) line += ` (actual path: ${info.fullBackingFilename})`;
    out.push(`${line}\n`);
    if (info.backingFilenameFormat !== undefined) out.push(`backing file format: ${info.backingFilenameFormat}\n`);
  }
  if (info.snapshots !== undefined) {
    out.push('Snapshot list:\n', `${SNAPSHOT_HEADER}\n`);
    for (const s of info.snapshots) out.push(`${snapshotRow(s)}\n`);
  }
  const qobj = imageInfoQObject(info);
  const fs = qobj.kind === 'dict' ? qobj.entries.find(([k]) => k === 'format-specific')?.[1] : undefined;
  const data = fs?.kind === 'dict' ? fs.entries.find(([k]) => k === 'data')?.[1] : undefined;
  if (data !== undefined) {
    out.push('Format specific information:\n');
    dumpQObject(1, data, out);
  }
  return out.join('');
}

// ---------------------------------------------------------------------------------------------
// The command

/** The info of every layer from `top` down (one layer unless the chain was opened). */
function layerInfos(top: OpenedLayer): { infos: ImageInfo[]; warnings: string[] } {
  const infos: ImageInfo[] = [];
  const warnings: string[] = [];
  for (let l: OpenedLayer | undefined = top; l !== undefined; l = l.backing) {
    if (l.format === 'raw') {
      infos.push(rawImageInfo({ filename: l.filename, length: l.stat.length, actualSize: l.stat.allocatedBytes }));
      continue;
    }
    try {
      const r = qcow2ImageInfo(l.image!, { filename: l.filename, actualSize: l.stat.allocatedBytes });
      infos.push(r.info);
      for (const w of r.warnings) warnings.push(`${l.filename}: warning: ${w}`);
    } catch (e) {
      if (isQcow2FormatError(e)) throw new OpenImageError('decode', l.filename, e.message);
      throw e;
    }
  }
  return { infos, warnings };
}

/** The report `qcow2-ref info` prints for `infos` (one image, or a chain with `chain`). */
export function formatInfo(infos: readonly ImageInfo[], output: 'human' | 'json', chain: boolean): string {
  if (output === 'json') {
    const objs = infos.map(imageInfoQObject);
    return `${qemuJsonPretty(chain ? { kind: 'list', items: objs } : objs[0]!)}\n`;
  }
  return infos.map(formatInfoHuman).join('\n');
}

/** Runs `info` with the arguments after the command name; returns the exit code. */
export async function runInfo(args: readonly string[], io: CliIo): Promise<number> {
  const parsed = parseCommand(args, {
    output: { type: 'string' },
    'backing-chain': { type: 'boolean' },
    ...OPEN_POLICY_OPTIONS,
  }, true);
  if (parsed.values.help === true) return showHelp(io, INFO_HELP);
  const output = outputFormat(parsed.values.output);
  const image = oneImage(parsed.positionals);
  const chain = parsed.values['backing-chain'] === true;
  const policy = openPolicyFrom(parsed.values);
  let text: string;
  try {
    text = await withOpenImageFile(image, policy, { backing: chain, dataFile: 'ignore' }, (top) => {
      const { infos, warnings } = layerInfos(top);
      for (const w of warnings) io.stderr(`qcow2-ref: ${w}\n`);
      return formatInfo(infos, output, chain);
    });
  } catch (e) {
    return reportOpenFailure(io, image, e);
  }
  io.stdout(text);
  return EXIT_OK;
}
