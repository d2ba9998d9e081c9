/**
 * The conversion engine behind `qcow2-ref convert`: what `qemu-img convert` (QEMU 7.2) does for
 * qcow2 and raw images, streamed, so that memory does not depend on the size of the image or of its
 * data. The CLI (src/cli/convert.ts) parses the arguments and prints; everything else is here.
 *
 * The copy loop is qemu-img.c's (convert_iteration_sectors, convert_co_write, is_allocated_sectors,
 * is_allocated_sectors_min), run in order as qemu-img runs it with its default in-order writes:
 * - the input is walked by block status: for a qcow2 input the model's map (mapImage, through the
 *   backing chain when it is opened), for a raw input the file's data/hole ranges
 *   (SEEK_DATA/SEEK_HOLE, src/io/seek-data.ts). A data extent ends where QEMU's would: at
 *   the end of an L2 table of every qcow2 layer involved, after one cluster for compressed data, at
 *   most BDRV_REQUEST_MAX_BYTES after its start, and aligned down to the input's cluster size when it
 *   crosses such a boundary (QEMU's source alignment); zero extents are not cut at L2 tables, which
 *   changes no write (see qcow2Source);
 * - zero extents (unallocated, zero clusters, holes) are not written at all: both outputs are new
 *   files that read as zeros (QEMU's has_zero_init), so the raw output stays sparse there and the
 *   qcow2 output leaves those clusters unallocated;
 * - data extents are read in chunks of at most 2 MiB (one output cluster with -c) through the model's
 *   read path (readGuest) or the raw file, and each chunk is written except for runs of zeros of at
 *   least 4 KiB (qemu-img's default -S 4k sparse detection, aligned to 4 KiB exactly as
 *   is_allocated_sectors does); with -c a cluster is written compressed unless it is all zeros.
 *
 * The output is written to a temporary file next to OUT (src/io/temp-file.ts) and renamed over OUT
 * only once it is complete; on any failure (or interruption) the temporary file is removed and OUT is
 * untouched. Whether it is fsync'ed before the rename is the output cache mode (-t), as in qemu-img:
 * `unsafe` (qemu-img convert's default too) never flushes; every other mode fsyncs once, before the
 * rename, so that a crash never leaves a renamed but incomplete OUT.
 * - raw output: the temporary file is truncated to the virtual size (a sparse file), its first block
 *   is allocated as QEMU's file-posix does, and the data chunks are written at their guest offsets.
 * - qcow2 output: createImage with the -o options is written to the temporary file; then every chunk
 *   is a model `step` (write, or writeCompressed per cluster) whose host I/O is issued to the file at
 *   once through the disk layer's applier (src/disk/apply-io.ts HostIoIssuer, as Qcow2Disk issues
 *   its own), and closeImage ends it. The model's flush barriers are not fsync'ed
 *   one by one — like qemu-img convert (cache=unsafe) — because the temporary file is worthless until
 *   the final fsync and rename. To keep memory bounded, the Image's host file is rebased
 *   (rebaseHostFile) onto a reader of the output file every REBASE_BYTES of host writes, which drops
 *   the pages written so far from memory. This is safe although the reader's file keeps changing
 *   after the rebase: every byte written to the file after a rebase is also in the Image's overlay
 *   (the HostIO and the new Image come from the same step), and the overlay always hides the base
 *   where they differ, so the base is only read where the file still holds what it held at the rebase.
 *
 * Files IN refers to (backing files, an external data file) are opened under the same policy as
 * `info` and `map` (src/io/open-file.ts): backing files only with --allow-backing.
 */
import { closeSync, fstatSync, ftruncateSync, openSync } from 'node:fs';
import { HEADER_MAGIC } from '../../generated/qcow2.ts';
import { rename, rm, stat } from 'node:fs/promises';
import { isZeroBytes } from '../codec/index.ts';
import { isQcow2FormatError } from '../codec/index.ts';
import type { MapExtent } from '../model/index.ts';
import { closeImage } from '../model/index.ts';
import { createImage, type CreateOptions } from '../model/index.ts';
import { errnoText } from '../model/index.ts';
import { ModelError } from '../model/index.ts';
import { applyHostIO, rebaseHostFile } from '../model/index.ts';
import { hostTargetOf, type HostIO } from '../model/index.ts';
import { HostReaderError } from '../model/index.ts';
import { geometryOf, type Image } from '../model/index.ts';
import { readGuestInto } from '../model/index.ts';
import { step } from '../model/index.ts';
import { fileReader, type FileReader } from './file-reader.ts';
import { HostIoIssuer, isDiskError } from '../disk/index.ts';
import { fileBackend } from './file-backend.ts';
import { writeFully, writeFullyAsync, writeHostFile } from './host-io-file.ts';
import { chainImage, mapDependencies, mapLayer, openImageFile, type HostAllocations, type OpenedLayer } from './open-file.ts';
import { probeHostAllocationsOrFull } from './seek-data.ts';
import { tempPathBeside } from './temp-file.ts';

/** How the engine reports progress: `update` with the bytes done so far, `stop` once at the end. */
export interface ConvertProgress {
  update(done: number): void;
  stop(): void;
}

/** A progress report that shows nothing. */
const NO_PROGRESS: ConvertProgress = { update: () => undefined, stop: () => undefined };

/** Bytes per sector (BDRV_SECTOR_SIZE): block status and sparse detection work in sectors. */
const SECTOR = 512n;
/** qemu-img's IO_BUF_SIZE: the largest chunk read and written at once. */
const IO_BUF_SIZE = 2n * 1024n * 1024n;
/** BDRV_REQUEST_MAX_SECTORS × 512: the longest block-status query. */
const MAX_STATUS_BYTES = BigInt(0x7fffffff >> 9) * SECTOR;
/** qemu-img's default -S: runs of at least this many zero sectors are not written. */
const MIN_SPARSE_SECTORS = 8;
/** s.alignment = MAX(pow2floor(min_sparse), request_alignment / 512) = 8 sectors for files. */
const WRITE_ALIGNMENT_SECTORS = 8;
/** How much host I/O may be applied to a qcow2 output before its Image is rebased onto the file. */
export const REBASE_BYTES = 8 * 1024 * 1024;
/** How much of the guest address space the map of a qcow2 input covers at once. */
const MAP_WINDOW = 1n << 30n;

/** A failure that leaves OUT unchanged; printed as `qcow2-ref: MESSAGE`, exit 1. */
export class ConvertError extends Error {
  override readonly name = 'ConvertError';
}

// ---------------------------------------------------------------------------------------------
// Zero detection (qemu-img.c is_allocated_sectors / is_allocated_sectors_min, QEMU 7.2)

function sectorIsZero(buf: Uint8Array, sector: number): boolean {
  const from = sector * 512;
  return isZeroBytes(buf, from, Math.min(512, buf.length - from));
}

/**
 * is_allocated_sectors: whether the first sector of `buf` (from sector `first`, `n` sectors) holds
 * data, and how many sectors from it share that state — a data run's end aligned up and a zero run's
 * end aligned down to `alignment` sectors (counted from `sectorNum`, the guest sector of `first`),
 * a short zero run before an unaligned boundary counted as data.
 */
function isAllocatedSectors(buf: Uint8Array, first: number, n: number, sectorNum: bigint, alignment: number): { allocated: boolean; count: number } {
  if (n <= 0) return { allocated: false, count: 0 };
  const isZero = sectorIsZero(buf, first);
  let i = 1;
  while (i < n && sectorIsZero(buf, first + i) === isZero) i++;
  if (i === n) return { allocated: !isZero, count: i };
  const tail = Number((sectorNum + BigInt(i)) & BigInt(alignment - 1));
  let zero = isZero;
  if (tail !== 0) {
    if (zero && i <= tail) zero = false;
    if (!zero) i = Math.min(i + alignment - tail, n);
    else i -= tail;
  }
  return { allocated: !zero, count: i };
}

/**
 * qemu-img's is_allocated_sectors_min for `n` sectors of `buf` starting at sector `first` (guest
 * sector `sectorNum`): when the first sector is zero, the zero run (as isAllocatedSectors); when it
 * is data, the longest prefix that ends with data and contains no zero run of `min` sectors or more
 * (shorter zero runs are written with the data, so requests are not broken up for small holes).
 */
export function isAllocatedSectorsMin(buf: Uint8Array, first: number, n: number, min: number, sectorNum: bigint, alignment: number): { allocated: boolean; count: number } {
  const minRun = n < min ? n : min;
  const head = isAllocatedSectors(buf, first, n, sectorNum, alignment);
  if (!head.allocated) return head;
  let numUsed = head.count;
  let numChecked = numUsed;
  let at = first + head.count;
  let left = n - head.count;
  let sector = sectorNum + BigInt(head.count);
  while (left > 0) {
    const r = isAllocatedSectors(buf, at, left, sector, alignment);
    at += r.count;
    left -= r.count;
    sector += BigInt(r.count);
    numChecked += r.count;
    if (r.allocated) numUsed = numChecked;
    else if (r.count >= minRun) break;
  }
  return { allocated: true, count: numUsed };
}

// ---------------------------------------------------------------------------------------------
// Sources: block status and reads

/** One block-status answer: `length` bytes from the queried offset are data, or read as zeros. */
interface Status {
  readonly length: bigint;
  readonly data: boolean;
}

/** What the copy loop reads. */
interface ConvertSource {
  /** The input's name, for messages. */
  readonly name: string;
  /** The guest size copied (whole sectors, as QEMU's total_sectors). */
  readonly size: bigint;
  /** A fresh block-status walker (queries must come in ascending order of offset). */
  statusWalker(): (offset: bigint, maxLength: bigint) => Status;
  /** Stores the `target.length` bytes of guest data at `offset` (inside `size`) in `target`. */
  read(offset: bigint, target: Uint8Array): void;
  /** Frees what the source holds open. */
  close(): void;
}

const roundUp = (v: bigint, a: bigint): bigint => ((v + a - 1n) / a) * a;
const roundDown = (v: bigint, a: bigint): bigint => (v / a) * a;
const min = (a: bigint, b: bigint): bigint => (a < b ? a : b);

/** Where QEMU's block status splits extents of each layer of a qcow2 chain (undefined: a raw layer). */
interface LayerGeometry {
  readonly clusterSize: bigint;
  /** Guest bytes one L2 table maps. */
  readonly l2Span: bigint;
}

/**
 * A qcow2 input (its chain opened under the policy) as a ConvertSource. `hosts`: where each file of
 * the chain holds data (SEEK_DATA), so that clusters allocated over holes — metadata preallocation —
 * are reported as zeros and never read, as QEMU's block status recurses into the file for them
 * (BDRV_BLOCK_RECURSE) and qemu-img convert skips them.
 */
function qcow2Source(top: OpenedLayer, hosts: HostAllocations): ConvertSource {
  const image = chainImage(top, hosts);
  const layers: (LayerGeometry | undefined)[] = [];
  for (let l: OpenedLayer | undefined = top; l !== undefined; l = l.backing) {
    if (l.image === undefined) {
      layers.push(undefined);
      continue;
    }
    if (l.image.header.cryptMethod !== 0) throw new ConvertError(`${l.filename}: encrypted images are not supported (qcow2-ref does not decrypt)`);
    const g = geometryOf(l.image.header);
    layers.push({ clusterSize: BigInt(g.clusterSize), l2Span: BigInt(g.clusterSize) * BigInt(g.l2Entries) });
  }
  const size = image.header.size & ~511n;
  // QEMU's src_alignment: the input's cluster size in sectors (request_alignment is 1 for qcow2).
  const alignment = layers[0]!.clusterSize;
  return {
    name: top.filename,
    size,
    statusWalker() {
      let window: MapExtent[] = [];
      let wStart = 0n;
      let wEnd = 0n;
      let idx = 0;
      const load = (from: bigint): void => {
        wStart = from;
        wEnd = min(size, from + MAP_WINDOW);
        window = mapLayer(top, image, hosts, wStart, wEnd - wStart);
        idx = 0;
      };
      return (pos, maxLength) => {
        if (pos < wStart || pos >= wEnd) load(pos);
        while (idx < window.length && window[idx]!.start + window[idx]!.length <= pos) idx++;
        let e = window[idx]!;
        const queryEnd = min(pos + maxLength, size);
        // The extent may go on past the window: map again from here.
        if (e.start + e.length === wEnd && wEnd < queryEnd && wStart !== pos) {
          load(pos);
          e = window[0]!;
        }
        let end = min(e.start + e.length, queryEnd);
        // QEMU's qcow2 block status stops at the end of each L2 table. For zero extents that changes
        // nothing that is written (they are skipped, and with -c the cut only decides which whole
        // clusters are read and found to be zeros), so only data extents are cut: a huge sparse image
        // with small clusters then needs one query per zero run instead of one per L2 table.
        for (let d = 0; !e.zero && d <= e.depth && d < layers.length; d++) {
          const g = layers[d];
          if (g !== undefined) end = min(end, roundDown(pos, g.l2Span) + g.l2Span);
        }
        // Compressed data (data without an offset): QEMU reports one cluster at a time.
        const g = layers[e.depth];
        if (e.data && !e.zero && e.offset === undefined && g !== undefined) end = min(end, roundDown(pos, g.clusterSize) + g.clusterSize);
        let length = end - pos;
        const tail = (pos + length) % alignment;
        if (length > tail) length -= tail;
        return { length, data: !e.zero };
      };
    },
    read: (offset, target) => readGuestInto(image, offset, target.length, target, 0),
    close: () => top.close(),
  };
}

/** A raw input: `reader` over the file, `data` its data ranges (SEEK_DATA/SEEK_HOLE). */
function rawSource(name: string, reader: FileReader, data: readonly (readonly [bigint, bigint])[]): ConvertSource {
  const length = reader.length;
  // bdrv_getlength counts whole sectors; the tail of the last one reads as zeros.
  const size = roundUp(length, SECTOR);
  return {
    name,
    size,
    statusWalker() {
      let i = 0;
      return (pos, maxLength) => {
        const queryEnd = min(pos + maxLength, size);
        while (i < data.length && roundUp(data[i]![1], SECTOR) <= pos) i++;
        const r = data[i];
        if (r === undefined) return { length: queryEnd - pos, data: false };
        const a = roundDown(r[0], SECTOR);
        if (a > pos) return { length: min(a, queryEnd) - pos, data: false };
        return { length: min(roundUp(r[1], SECTOR), queryEnd) - pos, data: true };
      };
    },
    read: (offset, target) => {
      const end = min(offset + BigInt(target.length), length);
      const n = end > offset ? Number(end - offset) : 0;
      if (n > 0) reader.readInto(offset, target, 0, n);
      target.fill(0, n);
    },
    close: () => reader.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// Sinks: the output file

/** What the copy loop writes to. */
interface ConvertSink {
  /** Cluster size of a compressed output (the unit of compressed writes). */
  readonly clusterSize: bigint;
  /**
   * Writes `bytes` at guest `offset`. The promise settles when the sink no longer needs `bytes`
   * (the raw sink writes in the background, on libuv's thread pool; the qcow2 sink is done before
   * it returns). Writes are issued one after the other, never concurrently.
   */
  write(offset: bigint, bytes: Uint8Array): Promise<void>;
  writeCompressed(offset: bigint, bytes: Uint8Array): Promise<void>;
  /** Completes the file (qcow2: close the image; -c: align the end of the file), then calls `sync` on its descriptor when given. */
  finish(compressed: boolean, sync: ((fd: number) => void) | undefined): Promise<void>;
  /** Closes the file (idempotent). */
  close(): Promise<void>;
}

/**
 * A raw output: the file truncated to `size` (sparse), data written at guest offsets. Like QEMU's
 * file-posix, which allocates the first block of a file it grows from empty (allocate_first_block:
 * 4 KiB of zeros, 512 bytes for files under 4 KiB, so that O_DIRECT block-size probing works on it
 * later), the first block is written as zeros: the output then has the same holes as qemu-img's.
 */
function rawSink(path: string, size: bigint): ConvertSink {
  const fd = openSync(path, 'wx', 0o644);
  let open = true;
  try {
    ftruncateSync(fd, Number(size));
    if (size > 0n) writeFully(fd, new Uint8Array(size < 4096n ? 512 : 4096), 0n);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return {
    clusterSize: 0n,
    write: (offset, bytes) => writeFullyAsync(fd, bytes, offset),
    writeCompressed: () => Promise.reject(new ConvertError('compression is only supported for qcow2 output')),
    finish: async (_compressed, sync) => sync?.(fd),
    close: async () => {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

/**
 * A qcow2 output: `image` (from createImage, already written to `path`) driven through `step`, its
 * host I/O issued to the file as it comes (through a backend without flush: barriers cost nothing,
 * see the module comment), rebased onto the file every REBASE_BYTES.
 */
async function qcow2Sink(path: string, created: Image, outName: string): Promise<ConvertSink> {
  const backend = await fileBackend(path, { readOnly: false });
  let fd: number | undefined;
  let writer: HostIoIssuer;
  let image: Image = created;
  let sinceRebase = 0;
  const rebase = (): void => {
    // A reader over the descriptor (not owned: closing it is a no-op), see the module comment.
    image = { ...image, file: rebaseHostFile(image.file, fileReader(fd!)) };
    sinceRebase = 0;
  };
  try {
    // For the rebase reader and the final sync.
    fd = openSync(path, 'r');
    const { flush: _durable, ...noFlush } = backend;
    writer = await HostIoIssuer.open({ image: noFlush });
    rebase();
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    await backend.close!();
    throw e;
  }
  const apply = async (io: readonly HostIO[]): Promise<void> => {
    if (io.some((x) => x.kind !== 'flush' && hostTargetOf(x) !== 'image')) {
      throw new ConvertError('the model addressed an external data file, which convert does not create');
    }
    const before = writer.counts.bytesWritten;
    try {
      await writer.issue(io);
    } catch (e) {
      // The file system's own error (ENOSPC...), as the caller reports it.
      throw isDiskError(e) && e.cause !== undefined ? e.cause : e;
    }
    sinceRebase += writer.counts.bytesWritten - before;
    if (sinceRebase >= REBASE_BYTES) rebase();
  };
  const run = async (op: Parameters<typeof step>[1], what: string): Promise<void> => {
    const r = step(image, op);
    if (!r.ok) throw new ConvertError(`${outName}: ${what}: ${r.error.message}`);
    image = r.image;
    await apply(r.io);
  };
  let open = true;
  return {
    clusterSize: BigInt(geometryOf(created.header).clusterSize),
    write: (offset, bytes) => run({ kind: 'write', offset, data: bytes }, `write of ${bytes.length} bytes at guest offset ${offset}`),
    writeCompressed: (offset, bytes) => run({ kind: 'writeCompressed', offset, data: bytes }, `compressed write at guest offset ${offset}`),
    finish: async (compressed, sync) => {
      if (compressed) {
        // qemu-img ends a compressed conversion with blk_pwrite_compressed(0 bytes), which qcow2
        // turns into "align end of file to a sector boundary": a truncate to the length in sectors.
        // (The model's writeCompressed of 0 bytes does nothing, so the driver issues it.)
        const length = writer.length();
        const aligned = roundUp(length, SECTOR);
        if (aligned !== length) {
          const io: HostIO[] = [{ kind: 'truncate', length: aligned }];
          image = { ...image, file: applyHostIO(image.file, io) };
          await apply(io);
        }
      }
      // The image first, then its I/O: apply() may rebase, which needs the two to agree.
      const closed = closeImage(image);
      image = closed.image;
      await apply(closed.io);
      sync?.(fd!);
    },
    close: async () => {
      if (!open) return;
      open = false;
      closeSync(fd!);
      await backend.close!();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The copy

/** What a conversion did. */
export interface ConvertSummary {
  /** Guest bytes of OUT (IN's size in whole sectors). */
  readonly size: bigint;
  /** Guest bytes read from IN (data extents). */
  readonly bytesRead: bigint;
  /** Guest bytes written to OUT (data; compressed clusters count their guest size). */
  readonly bytesWritten: bigint;
}

/** Hooks of the copy loop. */
interface CopyHooks {
  readonly progress: ConvertProgress;
  /** Called between chunks; may throw to abort (interruption). */
  readonly checkpoint: () => Promise<void>;
}

/**
 * Runs `fn`, turning the errors a read of the input can raise (corrupt metadata or compressed data,
 * an undecodable structure, a file that failed or changed under its reader) into one ConvertError
 * naming the input, what was being done and where, as qemu-img's "error while reading ..." does.
 */
function readingInput<T>(name: string, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ModelError || isQcow2FormatError(e) || e instanceof HostReaderError) {
      throw new ConvertError(`${name}: ${what}: ${e.message.replace(/\r?\n/g, ' ')}`);
    }
    throw e;
  }
}

/** The data bytes the copy loop will read (qemu-img's allocated_sectors pre-pass), for progress. */
function dataBytes(source: ConvertSource, compressed: boolean, clusterSize: bigint): bigint {
  let total = 0n;
  for (const c of chunksOf(source, compressed, clusterSize)) if (c.data) total += c.length;
  return total;
}

/** One piece of the copy: `length` guest bytes at `offset`, data to copy or zeros to skip. */
interface Chunk {
  readonly offset: bigint;
  readonly length: bigint;
  readonly data: boolean;
}

/**
 * convert_iteration_sectors over the whole source: the pieces in order, cut as qemu-img cuts them
 * (status extents, data in chunks of at most 2 MiB, whole output clusters with -c). Lazy: one
 * status query at a time, so memory does not depend on the number of pieces.
 */
function* chunksOf(source: ConvertSource, compressed: boolean, clusterSize: bigint): Generator<Chunk> {
  const status = source.statusWalker();
  const bufBytes = compressed ? clusterSize : IO_BUF_SIZE;
  const total = source.size;
  let pos = 0n;
  let nextStatus = 0n;
  let data = false;
  while (pos < total) {
    let n = min(total - pos, MAX_STATUS_BYTES);
    if (nextStatus <= pos) {
      const at = pos;
      const s = readingInput(source.name, `error while reading block status at guest offset ${at}`, () => status(at, n));
      data = s.data;
      // n = DIV_ROUND_UP(count, BDRV_SECTOR_SIZE): qemu-img works in whole sectors, so a status
      // extent ending inside a sector (a raw backing file of odd length) covers the whole sector.
      nextStatus = pos + roundUp(s.length, SECTOR);
    }
    n = min(n, nextStatus - pos);
    if (data) n = min(n, bufBytes);
    if (compressed) {
      // "We need to write complete clusters for compressed images": a shorter extent is taken as data.
      if (n < clusterSize) {
        n = min(clusterSize, total - pos);
        data = true;
      } else {
        n = roundDown(n, clusterSize);
      }
    }
    yield { offset: pos, length: n, data };
    pos += n;
  }
}

/**
 * convert_co_write for one data chunk `buf` at guest offset `pos`; resolves to the guest bytes
 * written, once the sink no longer needs `buf`.
 */
async function writeChunk(sink: ConvertSink, pos: bigint, buf: Uint8Array, compressed: boolean): Promise<bigint> {
  if (compressed) {
    // A compressed cluster is written whole, unless it is all zeros (the new file reads as zeros).
    if (isZeroBytes(buf)) return 0n;
    await sink.writeCompressed(pos, buf);
    return BigInt(buf.length);
  }
  // Write the data, skip zero runs of at least -S (4 KiB): the new file reads as zeros there.
  let written = 0n;
  const sectors = buf.length / 512;
  let at = 0;
  while (at < sectors) {
    const r = isAllocatedSectorsMin(buf, at, sectors - at, MIN_SPARSE_SECTORS, pos / SECTOR + BigInt(at), WRITE_ALIGNMENT_SECTORS);
    if (r.allocated) {
      await sink.write(pos + BigInt(at) * SECTOR, buf.subarray(at * 512, (at + r.count) * 512));
      written += BigInt(r.count) * SECTOR;
    }
    at += r.count;
  }
  return written;
}

/**
 * Copies every data chunk of `source` to `sink` in guest order; zero chunks are skipped.
 *
 * Two buffers, allocated once (not one fresh, page-faulting array per 2 MiB): chunk k+1 is read into
 * one while chunk k is still being written from the other on the thread pool, as qemu-img overlaps
 * its reads and writes. At most one chunk's writes are in flight, and a buffer is reused only after
 * its chunk's writes settled; writes still go out in guest order. Nothing is in flight when this
 * returns or throws, so the caller may close or remove the file.
 */
async function copy(source: ConvertSource, sink: ConvertSink, compressed: boolean, hooks: CopyHooks): Promise<ConvertSummary> {
  let bytesRead = 0n;
  let bytesWritten = 0n;
  const size = Number(compressed ? sink.clusterSize : IO_BUF_SIZE);
  const buffers = [new Uint8Array(size), new Uint8Array(size)] as const;
  let next = 0;
  let inFlight: Promise<bigint> | undefined;
  try {
    for (const c of chunksOf(source, compressed, sink.clusterSize)) {
      if (!c.data) continue;
      const buf = buffers[next]!.subarray(0, Number(c.length));
      next ^= 1;
      readingInput(source.name, `error while reading ${c.length} bytes at guest offset ${c.offset}`, () => source.read(c.offset, buf));
      bytesRead += c.length;
      if (inFlight !== undefined) bytesWritten += await inFlight;
      inFlight = writeChunk(sink, c.offset, buf, compressed);
      // A rejection is taken by the await above or below; this only keeps it from being "unhandled"
      // while the next chunk is read.
      inFlight.catch(() => undefined);
      hooks.progress.update(Number(bytesRead));
      await hooks.checkpoint();
    }
    if (inFlight !== undefined) bytesWritten += await inFlight;
    inFlight = undefined;
  } finally {
    // On a failure (a read error, an interruption), let the last writes settle before the caller
    // closes the descriptor; their own error, if any, is secondary to the one being thrown.
    if (inFlight !== undefined) await inFlight.catch(() => undefined);
  }
  return { size: source.size, bytesRead, bytesWritten };
}

// ---------------------------------------------------------------------------------------------
// The conversion

/** Whether the file at `path` starts with the qcow2 magic (false when it is shorter). */
function startsWithQcow2Magic(path: string): boolean {
  const r = fileReader(path);
  try {
    if (r.length < 4n) return false;
    const head = r.read(0n, 4);
    return HEADER_MAGIC.every((m, i) => head[i] === m);
  } finally {
    r.close();
  }
}

/** How `convert` reports progress and notices interruption. */
export interface ConvertHooks {
  /** Called between chunks; throws to abort the conversion. */
  readonly checkpoint: () => Promise<void>;
  /** Whether to start a progress display (then the data is measured first, as qemu-img does). */
  readonly showProgress: boolean;
  /** Starts the progress display for `total` data bytes. */
  readonly progressTarget: (total: number) => ConvertProgress;
  /** Flushes a file descriptor to disk (fsyncSync; a test may count the calls). */
  readonly fsync: (fd: number) => void;
}

export interface ConvertRequest {
  readonly input: string;
  readonly output: string;
  readonly inFormat: 'qcow2' | 'raw' | undefined;
  readonly outFormat: 'qcow2' | 'raw';
  readonly targetOptions: Omit<CreateOptions, 'size'>;
  readonly compressed: boolean;
  /** Output cache mode (-t): 'unsafe' never syncs OUT, every other mode fsyncs it before the rename. */
  readonly cache: OutputCache;
  readonly policy: { readonly allowBacking: boolean; readonly allowBackingPath: boolean; readonly allowDataFilePath: boolean };
}

/** qemu-img's cache modes (-t), as bdrv_parse_cache_mode accepts them. */
export const OUTPUT_CACHES = ['unsafe', 'writeback', 'writethrough', 'directsync', 'none'] as const;
export type OutputCache = (typeof OUTPUT_CACHES)[number];

/** Opens IN as a ConvertSource; throws OpenImageError / ConvertError naming the file. */
async function openSource(req: ConvertRequest, warn: (line: string) => void): Promise<ConvertSource> {
  let format = req.inFormat;
  if (format === undefined) {
    try {
      format = startsWithQcow2Magic(req.input) ? 'qcow2' : 'raw';
    } catch (e) {
      throw new ConvertError(`${req.input}: Could not open '${req.input}': ${errnoText(e)}`);
    }
  }
  if (format === 'qcow2') {
    const top = await openImageFile(req.input, req.policy, { backing: true, dataFile: 'read' });
    try {
      const paths = mapDependencies(top);
      const allocs = probeHostAllocationsOrFull(paths, warn);
      return qcow2Source(top, new Map(paths.map((p, i) => [p, allocs[i]!] as const)));
    } catch (e) {
      top.close();
      throw e;
    }
  }
  let reader: FileReader;
  try {
    reader = fileReader(req.input);
  } catch (e) {
    throw new ConvertError(`${req.input}: Could not open '${req.input}': ${errnoText(e)}`);
  }
  try {
    if (fstatSync(reader.fd).isDirectory()) throw new ConvertError(`${req.input}: Could not open '${req.input}': Is a directory`);
    const [alloc] = probeHostAllocationsOrFull([req.input], warn);
    return rawSource(req.input, reader, alloc!.data);
  } catch (e) {
    reader.close();
    throw e;
  }
}

/**
 * Converts `req.input` to `req.output` (see the module comment): the output is complete and renamed
 * into place when this returns; on a throw the temporary file is gone and the output untouched.
 * Throws OpenImageError, ConvertError, CreateError, ModelError, Qcow2FormatError, HostReaderError or
 * an fs error; the caller reports them.
 */
export async function convertImage(req: ConvertRequest, hooks: ConvertHooks, warn: (line: string) => void): Promise<ConvertSummary> {
  const source = await openSource(req, warn);
  const temp = tempPathBeside(req.output);
  let sink: ConvertSink | undefined;
  let progress: ConvertProgress = NO_PROGRESS;
  try {
    // Refuse a directory as OUT before any work (the final rename would fail anyway).
    const st = await stat(req.output).catch(() => undefined);
    if (st?.isDirectory() === true) throw new ConvertError(`${req.output}: Could not create '${req.output}': Is a directory`);
    if (req.outFormat === 'raw') {
      sink = rawSink(temp, source.size);
    } else {
      const created = createImage({ ...req.targetOptions, size: source.size });
      await writeHostFile(temp, created.image.file);
      sink = await qcow2Sink(temp, created.image, req.output);
    }
    if (hooks.showProgress) progress = hooks.progressTarget(Number(dataBytes(source, req.compressed, sink.clusterSize)));
    const summary = await copy(source, sink, req.compressed, { progress, checkpoint: hooks.checkpoint });
    // Crash safety: with any cache mode but unsafe, OUT's bytes reach the disk before its name does.
    await sink.finish(req.compressed, req.cache !== 'unsafe' ? hooks.fsync : undefined);
    await sink.close();
    progress.update(Number(summary.bytesRead));
    progress.stop();
    await rename(temp, req.output);
    return summary;
  } catch (e) {
    progress.stop();
    await sink?.close();
    await rm(temp, { force: true });
    throw e;
  } finally {
    source.close();
  }
}
