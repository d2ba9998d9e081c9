/**
 * Opening an image file the way QEMU 7.2 does, for the CLI commands that read images: the file is
 * opened as a model Image through a file reader (src/io/file-reader.ts: positioned reads, nothing
 * read until the model needs it, so memory does not grow with the file's size) with QEMU's open-time
 * validation (src/open/open.ts openImage: an image QEMU refuses is refused with QEMU's message, naming the
 * header structure, field and file offset; `qemu-img info`'s no-I/O open for dataFile 'ignore',
 * read-only otherwise unless `writable`); the files its
 * header names — the backing file (recursively) and the external data file — are found as QEMU
 * finds them, but only as far as the caller's policy allows.
 *
 * Where the named files are:
 * - backing file: the header's name taken relative to the directory of the image naming it, purely
 *   textually (QEMU's bdrv_make_absolute_filename: `dir/of/image/` + name; absolute names as they
 *   are). Its format is the backing-format extension's, else probed: the qcow2 magic means qcow2,
 *   anything else raw. Other formats are not supported.
 * - external data file: the extension's name taken relative to the image's directory, as
 *   `qcow2-ref run` does (src/cli/run.ts). QEMU 7.2 itself opens a relative data-file name relative
 *   to its current directory; the two agree when the command runs in the image's directory.
 *
 * The policy, and why. An image file is data: whoever wrote it chose every byte of its header,
 * including the names of the files it refers to. A tool that follows those names blindly reads
 * whatever file the image's author picked — the bug class of CVE-2015-1851 (OpenStack Cinder: a
 * qcow2 upload whose backing file was a host file, which conversion then read out) and
 * CVE-2024-32498 (OpenStack Nova/Glance/Cinder: the same through a qcow2 external data file). So:
 * - backing files are opened only when the caller asks (`allowBacking`, CLI `--allow-backing`);
 * - even then, a backing name that is absolute, leads out of the naming image's directory (`..`),
 *   or has a protocol prefix is refused unless `allowBackingPath` (CLI `--allow-backing-path`);
 * - a data file name that is absolute or leads out of the image's directory is refused unless
 *   `allowDataFilePath` (CLI `--allow-data-file-path`, the flag `qcow2-ref run` has); one inside
 *   the directory is opened (the image cannot be used without it).
 * The check is on the names, not on what the file system does with them: a symbolic link placed in
 * the image's directory is followed (it was put there by whoever controls the directory, not by the
 * image). Chains are limited to MAX_BACKING_DEPTH files and a file that appears twice in a chain
 * (same device and inode) is refused, so a crafted loop cannot make the command run forever.
 *
 * Every opened file is held open by a reader until the caller closes the chain: `openImageFile` returns
 * the top layer with a `close()` that closes every reader of the chain (withOpenImageFile does it for a
 * callback). The files must not change while the layers, or Images built on them, are used.
 */
import { fstatSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { HEADER_MAGIC } from '../../generated/qcow2.ts';
import { isQcow2FormatError } from '../codec/index.ts';
import { hostFromReader } from '../model/index.ts';
import { HostReaderError } from '../model/index.ts';
import { type HostIO } from '../model/index.ts';
import { rawReaderBackingSource } from '../model/index.ts';
import type { BackingSource, Image } from '../model/index.ts';
import { headerReferences, pathHasProtocol, qemuFullBackingFilename, type HeaderReferences } from '../model/index.ts';
import { isOpenError, openImageWithIo } from '../open/index.ts';
import type { RepairResult } from '../check/index.ts';
import { mapImage, type HostAllocation, type MapExtent, type MapOptions } from '../model/index.ts';
import { readGuest } from '../model/index.ts';
import { fileReader, type FileReader } from './file-reader.ts';
import { errnoText } from '../model/index.ts';

/** Longest backing chain opened (the top image included). */
export const MAX_BACKING_DEPTH = 64;

/** What may be opened besides the image itself. All false by default. */
export interface OpenPolicy {
  /** Open the backing chain (otherwise an image with a backing file is opened without it). */
  readonly allowBacking?: boolean;
  /** Accept backing file names that are absolute, lead out of the image's directory, or name a protocol. */
  readonly allowBackingPath?: boolean;
  /** Accept an external data file name that is absolute or leads out of the image's directory. */
  readonly allowDataFilePath?: boolean;
}

/** The parseArgs options of the open policy, shared by every command that opens images. */
export const OPEN_POLICY_OPTIONS = {
  'allow-backing': { type: 'boolean' },
  'allow-backing-path': { type: 'boolean' },
  'allow-data-file-path': { type: 'boolean' },
} as const;

/** The OpenPolicy the OPEN_POLICY_OPTIONS flags ask for (--allow-backing-path implies --allow-backing). */
export function openPolicyFrom(values: { readonly 'allow-backing'?: boolean; readonly 'allow-backing-path'?: boolean; readonly 'allow-data-file-path'?: boolean }): Required<OpenPolicy> {
  const allowBackingPath = values['allow-backing-path'] === true;
  return { allowBacking: values['allow-backing'] === true || allowBackingPath, allowBackingPath, allowDataFilePath: values['allow-data-file-path'] === true };
}

/** What to do with the files besides the image. */
export interface OpenFileOptions {
  /** Follow the backing chain (subject to the policy); default false. */
  readonly backing?: boolean;
  /**
   * The external data file: 'stat' (default) resolves its name under the policy and requires it to
   * exist, as QEMU's open does; 'read' also reads it into the Image; 'ignore' leaves it alone, as
   * `qemu-img info` does (it opens images without I/O and never touches the data file).
   */
  readonly dataFile?: 'ignore' | 'stat' | 'read';
  /**
   * Open the top image for writing (QEMU's BDRV_O_RDWR; backing files are always read-only): the
   * corrupt bit is refused, unknown autoclear bits are cleared and a dirty image is repaired
   * (src/open/open.ts); the layer's `openIo` holds the writes it made. Default false.
   */
  readonly writable?: boolean;
  /**
   * Open the top image as `qemu-img check` does (QEMU's BDRV_O_CHECK): the checks QEMU skips in check
   * mode are skipped and a dirty image is not repaired at open (the check itself does that).
   */
  readonly checkMode?: boolean;
}

/** A file that could not be opened, read, decoded, or that the policy refuses. */
export class OpenImageError extends Error {
  override readonly name = 'OpenImageError';
  /** The file the problem is about, as QEMU would name it. */
  readonly file: string;
  /** The problem, one line, without the file name. */
  readonly detail: string;
  /** 'refused': the policy forbids opening a named file; the others: the file itself. */
  readonly code: 'read' | 'decode' | 'refused' | 'unsupported' | 'loop';

  constructor(code: OpenImageError['code'], file: string, detail: string) {
    super(`${file}: ${detail}`);
    this.code = code;
    this.file = file;
    this.detail = detail.replace(/\r?\n/g, ' ');
  }
}

/** What `stat` says about a file. */
export interface FileStat {
  readonly length: bigint;
  /** st_blocks × 512. */
  readonly allocatedBytes: bigint;
  readonly dev: bigint;
  readonly ino: bigint;
}

/** The external data file of an opened qcow2 layer. */
export interface OpenedDataFile {
  /** The name in the header extension. */
  readonly name: string;
  /** The path opened (the name relative to the image's directory). */
  readonly path: string;
  readonly stat: FileStat;
}

/** One opened file of a chain. */
export interface OpenedLayer {
  /** QEMU's name for the file: as given for the top image, the full backing file name below. */
  readonly filename: string;
  readonly format: 'qcow2' | 'raw';
  readonly stat: FileStat;
  /** The open reader of the file (closed by `close`). */
  readonly reader: FileReader;
  /** qcow2 only: the Image loaded through `reader` (with its data file when read, without backing). */
  readonly image?: Image;
  /** qcow2 only: the header's references (backing name and format, data file, ...). */
  readonly refs?: HeaderReferences;
  /** qcow2 only: the host writes a writable open made (already in `image`'s file; to be issued before any others). */
  readonly openIo?: readonly HostIO[];
  /** qcow2 only: the automatic repair of a dirty image a writable open ran (what QEMU prints while opening). */
  readonly repair?: RepairResult;
  /** qcow2 only: warnings QEMU prints while opening the image. */
  readonly warnings?: readonly string[];
  readonly dataFile?: OpenedDataFile;
  /** The opened backing layer, when the chain was followed. */
  readonly backing?: OpenedLayer;
  /**
   * Closes the readers of this layer (its file and data file) and of every layer below it. Idempotent.
   * Reading through the layer, or an Image built on it, afterwards throws HostReaderError('io').
   */
  close(): void;
}

async function statFile(path: string, owner: string): Promise<FileStat> {
  try {
    const st = await stat(path, { bigint: true });
    return { length: st.size, allocatedBytes: st.blocks * 512n, dev: st.dev, ino: st.ino };
  } catch (e) {
    throw new OpenImageError('read', owner, `Could not open '${path}': ${errnoText(e)}`);
  }
}

/** A reader of the file at `path` and what fstat says about the file it opened. */
function openReader(path: string, owner: string): { reader: FileReader; stat: FileStat } {
  let reader: FileReader;
  try {
    reader = fileReader(path);
  } catch (e) {
    throw new OpenImageError('read', owner, `Could not open '${path}': ${errnoText(e)}`);
  }
  try {
    const st = fstatSync(reader.fd, { bigint: true });
    if (st.isDirectory()) throw Object.assign(new Error('EISDIR'), { code: 'EISDIR' });
    return { reader, stat: { length: st.size, allocatedBytes: st.blocks * 512n, dev: st.dev, ino: st.ino } };
  } catch (e) {
    reader.close();
    throw new OpenImageError('read', owner, `Could not open '${path}': ${errnoText(e)}`);
  }
}

/** Whether `name`, taken relative to the directory of `imagePath`, stays inside that directory. */
function staysInside(imagePath: string, name: string): boolean {
  if (name === '' || isAbsolute(name)) return false;
  const base = resolve(dirname(imagePath));
  const rel = relative(base, resolve(base, name));
  return !(rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel));
}

/**
 * The path of the external data file `name` of the image at `imagePath` (relative names relative
 * to the image's directory, QEMU-style textual join). Throws OpenImageError('refused') when `name`
 * is empty, absolute or leads out of that directory, unless `allow`.
 */
export function dataFilePathOf(imagePath: string, name: string, allow: boolean): string {
  if (!allow && !staysInside(imagePath, name)) {
    throw new OpenImageError('refused', imagePath,
      `data file path '${name}' is ${name === '' ? 'empty' : isAbsolute(name) ? 'absolute' : "outside the image's directory"}; refusing to use it (--allow-data-file-path allows it)`);
  }
  return qemuFullBackingFilename(imagePath, name);
}

/**
 * The path of backing file `name` of the image at `imagePath` (QEMU's full backing file name).
 * Throws OpenImageError('refused') when the name is absolute, leads out of the image's directory
 * or has a protocol prefix, unless `allow`; OpenImageError('unsupported') for a protocol name even
 * when allowed (only local files are opened).
 */
export function backingPathOf(imagePath: string, name: string, allow: boolean): string {
  if (!allow && (pathHasProtocol(name) || !staysInside(imagePath, name))) {
    const why = pathHasProtocol(name) ? 'names a protocol' : isAbsolute(name) ? 'is absolute' : "leads outside the image's directory";
    throw new OpenImageError('refused', imagePath, `backing file path '${name}' ${why}; refusing to open it (--allow-backing-path allows it)`);
  }
  if (pathHasProtocol(name)) throw new OpenImageError('unsupported', imagePath, `backing file '${name}' names a protocol; qcow2-ref opens only local files`);
  return qemuFullBackingFilename(imagePath, name);
}

const QCOW2_MAGIC = HEADER_MAGIC;

function isQcow2(bytes: Uint8Array): boolean {
  return QCOW2_MAGIC.every((m, i) => bytes[i] === m);
}

async function openLayer(
  filename: string,
  format: 'qcow2' | 'raw',
  policy: OpenPolicy,
  opts: OpenFileOptions,
  seen: FileStat[],
): Promise<OpenedLayer> {
  const { reader, stat: st } = openReader(filename, filename);
  // Everything opened from here on is closed again if this layer cannot be opened.
  const opened: { close(): void }[] = [reader];
  const closeAll = (): void => {
    for (const r of opened) r.close();
  };
  try {
    if (seen.some((s) => s.dev === st.dev && s.ino === st.ino)) {
      throw new OpenImageError('loop', filename, `Backing file '${filename}' creates an infinite loop.`);
    }
    if (seen.length >= MAX_BACKING_DEPTH) {
      throw new OpenImageError('unsupported', filename, `backing chain longer than ${MAX_BACKING_DEPTH} files`);
    }
    if (format === 'raw') return { filename, format, stat: st, reader, close: closeAll };

    // QEMU's open-time validation (src/open/open.ts): `qemu-img info` opens without I/O ('ignore':
    // no data file checks), everything else with I/O; only the top image may be writable. The data
    // file is attached below, once its name has passed the policy.
    let refs: HeaderReferences;
    let image: Image;
    let openIo: readonly HostIO[] = [];
    let repair: RepairResult | undefined;
    let warnings: readonly string[] = [];
    try {
      const writable = opts.writable === true && seen.length === 0;
      const r = openImageWithIo(reader, { noIo: opts.dataFile === 'ignore', writable, checkMode: opts.checkMode === true && seen.length === 0 });
      image = r.image;
      openIo = r.io;
      repair = r.repair;
      warnings = r.warnings;
      refs = headerReferences(image);
    } catch (e) {
      if (isOpenError(e) || isQcow2FormatError(e)) throw new OpenImageError('decode', filename, e.message);
      if (e instanceof HostReaderError) throw new OpenImageError('read', filename, e.message);
      throw e;
    }
    let dataFile: OpenedDataFile | undefined;
    let dataReader: FileReader | undefined;
    const h = image.header;
    if (opts.dataFile !== 'ignore' && h.version === 3 && (h.incompatibleFeatures & 4n) !== 0n && refs.dataFile !== undefined) {
      const path = dataFilePathOf(filename, refs.dataFile, policy.allowDataFilePath === true);
      if (opts.dataFile === 'read') {
        const d = openReader(path, filename);
        dataReader = d.reader;
        opened.push(dataReader);
        dataFile = { name: refs.dataFile, path, stat: d.stat };
      } else {
        dataFile = { name: refs.dataFile, path, stat: await statFile(path, filename) };
      }
    }
    let backing: OpenedLayer | undefined;
    if (opts.backing === true && refs.backingFile !== undefined) {
      if (policy.allowBacking !== true) {
        throw new OpenImageError('refused', filename,
          `has backing file '${refs.backingFile}', which is opened only with --allow-backing (the image's header should not choose which files are read)`);
      }
      const path = backingPathOf(filename, refs.backingFile, policy.allowBackingPath === true);
      const fmt = refs.backingFormat;
      let bfmt: 'qcow2' | 'raw';
      if (fmt === 'qcow2' || fmt === 'raw') bfmt = fmt;
      else if (fmt !== undefined) throw new OpenImageError('unsupported', filename, `backing file format '${fmt}' is not supported by qcow2-ref (only qcow2 and raw)`);
      else bfmt = isQcow2(await readHead(path, filename)) ? 'qcow2' : 'raw';
      backing = await openLayer(path, bfmt, policy, opts, [...seen, st]);
      opened.push(backing);
    }
    // The data file joins the opened image (the open's checks and repair do not depend on it).
    if (dataReader !== undefined) image = { ...image, dataFile: hostFromReader(dataReader) };
    return {
      filename,
      format,
      stat: st,
      reader,
      image,
      refs,
      openIo,
      ...(repair !== undefined ? { repair } : {}),
      warnings,
      ...(dataFile !== undefined ? { dataFile } : {}),
      ...(backing !== undefined ? { backing } : {}),
      close: closeAll,
    };
  } catch (e) {
    closeAll();
    throw e;
  }
}

/** The first 4 bytes of the file at `path` (fewer if it is shorter). */
async function readHead(path: string, owner: string): Promise<Uint8Array> {
  let fh;
  try {
    fh = await open(path, 'r');
    const buf = new Uint8Array(4);
    const { bytesRead } = await fh.read(buf, 0, 4, 0);
    return buf.subarray(0, bytesRead);
  } catch (e) {
    throw new OpenImageError('read', owner, `Could not open '${path}': ${errnoText(e)}`);
  } finally {
    await fh?.close();
  }
}

/**
 * Opens the image at `path` (as given: it is QEMU's name for the top file) under `policy`: opens a
 * reader of the file and loads it through it (qcow2 magic required; only the header is read now),
 * checks and stats its external data file (opening a reader of it only with `opts.dataFile: 'read'`,
 * leaving it alone with 'ignore'), and with `opts.backing` follows the backing chain. Throws only
 * OpenImageError: unreadable or undecodable files (the message names the file, and for a decode
 * error the structure, field and offset), refused names, unsupported formats, loops; nothing stays
 * open then. On success the caller must call the result's `close()` (or use withOpenImageFile).
 */
export async function openImageFile(path: string, policy: OpenPolicy = {}, opts: OpenFileOptions = {}): Promise<OpenedLayer> {
  const head = await readHeadOrFail(path);
  if (!isQcow2(head)) {
    throw new OpenImageError('decode', path, 'header.magic at 0x0: Image is not in qcow2 format');
  }
  return openLayer(path, 'qcow2', policy, opts, []);
}

/**
 * openImageFile, then `fn` with the opened top layer; the chain is closed when `fn` settles, whether it
 * returned or threw. Returns what `fn` returns; throws what openImageFile or `fn` throws.
 */
export async function withOpenImageFile<T>(path: string, policy: OpenPolicy, opts: OpenFileOptions, fn: (top: OpenedLayer) => T | Promise<T>): Promise<T> {
  const top = await openImageFile(path, policy, opts);
  try {
    return await fn(top);
  } finally {
    top.close();
  }
}

async function readHeadOrFail(path: string): Promise<Uint8Array> {
  await statFile(path, path);
  return readHead(path, path);
}


/** The host allocation of each file a layer's map depends on, looked up by path. */
export type HostAllocations = ReadonlyMap<string, HostAllocation>;

/** Every file whose allocation the map of `top` may depend on (each layer's file and data file), top first, no repeats. */
export function mapDependencies(top: OpenedLayer): string[] {
  const out: string[] = [];
  for (let l: OpenedLayer | undefined = top; l !== undefined; l = l.backing) {
    out.push(l.filename);
    if (l.dataFile !== undefined) out.push(l.dataFile.path);
  }
  return [...new Set(out)];
}

/**
 * `extents` with the offsets of the extents at depth 0 removed and the result merged again the way
 * qemu-img merges: what QEMU reports for an encrypted qcow2 layer, whose block status never carries
 * an offset (qcow2_co_block_status: `!s->crypto`).
 */
export function withoutOffsetsAtDepth0(extents: readonly MapExtent[]): MapExtent[] {
  const out: MapExtent[] = [];
  for (const e0 of extents) {
    let e = e0;
    if (e.depth === 0 && e.offset !== undefined) {
      const { offset: _drop, ...rest } = e;
      e = rest;
    }
    const last = out[out.length - 1];
    if (
      last !== undefined && last.start + last.length === e.start && last.depth === e.depth && last.present === e.present &&
      last.zero === e.zero && last.data === e.data && (last.offset === undefined) === (e.offset === undefined) &&
      (last.offset === undefined || last.offset + last.length === e.offset)
    ) {
      out[out.length - 1] = { ...last, length: last.length + e.length };
    } else out.push(e);
  }
  return out;
}

/** The map options of a qcow2 layer: its file's and data file's allocation (none for encrypted layers). */
function layerMapOptions(layer: OpenedLayer, hosts: HostAllocations | undefined): MapOptions {
  if (hosts === undefined || layer.image!.header.cryptMethod !== 0) return {};
  const host = hosts.get(layer.filename);
  const dataHost = layer.dataFile !== undefined ? hosts.get(layer.dataFile.path) : undefined;
  return { ...(host !== undefined ? { host } : {}), ...(dataHost !== undefined ? { dataFileHost: dataHost } : {}) };
}

/**
 * The extents of [offset, offset+length) of the qcow2 `image` of `layer` as qemu-img map reports
 * them: mapImage with the layer's host allocation, offsets hidden for an encrypted layer.
 */
export function mapLayer(layer: OpenedLayer, image: Image, hosts: HostAllocations | undefined, offset?: bigint, length?: bigint): MapExtent[] {
  const extents = mapImage(image, offset ?? 0n, length ?? (image.header.size & ~511n) - (offset ?? 0n), layerMapOptions(layer, hosts));
  return image.header.cryptMethod !== 0 ? withoutOffsetsAtDepth0(extents) : extents;
}

/** A raw file as QEMU's file-posix reports it: data ranges as data, holes and the tail of the last sector as zeros. */
function rawSource(layer: OpenedLayer, hosts: HostAllocations | undefined): BackingSource {
  const alloc = hosts?.get(layer.filename);
  return rawReaderBackingSource(layer.reader, alloc?.data);
}

/**
 * The Image of the qcow2 `layer` with its backing chain attached as model BackingSources (reads
 * and maps through every layer), each layer's map told its files' allocation from `hosts` (when
 * given). A layer opened without its backing file keeps none (its unallocated clusters read as
 * zeros, as with QEMU's BDRV_O_NO_BACKING).
 */
export function chainImage(layer: OpenedLayer, hosts?: HostAllocations): Image {
  if (layer.image === undefined) throw new Error('chainImage: not a qcow2 layer');
  const b = layer.backing;
  if (b === undefined) return layer.image;
  let source: BackingSource;
  if (b.format === 'raw') source = rawSource(b, hosts);
  else {
    const img = chainImage(b, hosts);
    source = {
      size: img.header.size & ~511n,
      read: (o, l) => readGuest(img, o, l),
      map: (o, l) => mapLayer(b, img, hosts, o, l),
    };
  }
  return { ...layer.image, backing: source };
}
