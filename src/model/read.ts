/**
 * Guest reads: resolves every (sub)cluster of a range through L1/L2, the subcluster bitmaps,
 * compressed clusters and the backing image (docs/format/mapping.md#read-resolution). Pure: the Image is only read.
 *
 * With an external data file (docs/format/mapping.md#standard-l2-entries, docs/format/features.md#external-data-file) allocated clusters are read from the data file
 * at host offset == guest offset; QEMU's qcow2_get_host_offset treats any other host offset, and any
 * compressed entry, as a fatal corruption.
 */
import { Decompress as ZstdDecompress } from 'fzstd';
import { compressedDescriptor, l2HostOffset } from '../format/index.ts';
import { compressionCodecs } from './compression.ts';
import { EIO, ModelError } from './errors.ts';
import { readHost, readHostInto, type HostFile } from './host-file.ts';
import type { Image } from './image.ts';
import { entryAt, statesOf } from './mapping.ts';
import { beginTx, geo, type Tx } from './tx.ts';

/**
 * zstd-decompresses the start of `data` into exactly `clusterSize` bytes. The bytes after the frame
 * (the next packed blob, or zeros up to the sector end) are never needed: like QEMU's
 * qcow2_zstd_decompress, decoding stops once a whole cluster is produced, so an error QEMU would never
 * see (fzstd reading the trailing bytes as a new frame) is ignored.
 */
function zstdCluster(data: Uint8Array, clusterSize: number): Uint8Array {
  const out = new Uint8Array(clusterSize);
  let got = 0;
  const stream = new ZstdDecompress((chunk) => {
    const n = Math.min(chunk.length, clusterSize - got);
    out.set(chunk.subarray(0, n), got);
    got += n;
  });
  try {
    stream.push(data, true);
  } catch (e) {
    if (got < clusterSize) throw e;
  }
  return out.subarray(0, got);
}

/** Decompresses one cluster of compressed data as QEMU does (raw deflate or zstd; trailing bytes ignored). */
export function decompressCluster(data: Uint8Array, clusterSize: number, compressionType: number): Uint8Array {
  let out: Uint8Array;
  try {
    // QEMU's qcow2_zlib_decompress: inflateInit2(-12), one inflate(Z_FINISH) into one cluster.
    out = compressionType === 1 ? zstdCluster(data, clusterSize) : compressionCodecs().inflateRaw(data, { windowBits: 12, limit: clusterSize });
  } catch {
    throw new ModelError('corrupt', EIO, 'compressed cluster cannot be decompressed');
  }
  // QEMU stops once a whole cluster is produced and fails if it cannot produce one.
  if (out.length < clusterSize) throw new ModelError('corrupt', EIO, `compressed cluster decompresses to ${out.length} bytes, less than a cluster`);
  return out.subarray(0, clusterSize);
}

/** The backing chain's bytes at `offset` stored at `out[at, at + length)` (zeros past its end, or without one). */
function readBackingTo(img: Image, offset: bigint, length: number, out: Uint8Array, at: number, outIsZero: boolean): void {
  const size = img.backing ? img.backing.size : 0n;
  const n = offset < size ? Number(size - offset < BigInt(length) ? size - offset : BigInt(length)) : 0;
  if (n > 0) out.set(img.backing!.read(offset, n), at);
  if (!outIsZero && n < length) out.fill(0, at + n, at + length);
}

/** `length` bytes of guest data at `offset` (the caller keeps the range inside the virtual disk). */
export function readGuestTx(tx: Tx, offset: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  readGuestTo(tx, offset, length, out, 0, true);
  return out;
}

/**
 * Stores the guest bytes [offset, offset + length) at `out[at, at + length)`; when `outIsZero` that
 * range already holds zeros (a fresh array) and zero ranges are skipped. Host-contiguous runs of
 * allocated (sub)clusters are read with one readHost call each, as QEMU reads them with one request.
 */
function readGuestTo(tx: Tx, offset: bigint, length: number, out: Uint8Array, at: number, outIsZero: boolean): void {
  const g = geo(tx);
  const scSize = g.clusterSize / g.subclusters;
  // A pending run of allocated data: out[at + runPos, + runLen) = host file `runFile` at runHost.
  let runPos = 0;
  let runLen = 0;
  let runHost = 0n;
  let runFile: HostFile | undefined;
  const flushRun = (): void => {
    if (runLen > 0) readHostInto(runFile!, runHost, runLen, out, at + runPos);
    runLen = 0;
  };
  let pos = 0;
  while (pos < length) {
    const guest = offset + BigInt(pos);
    const inCluster = Number(guest & BigInt(g.clusterSize - 1));
    const { entry, l2Offset, l2Index } = entryAt(tx, guest);
    const states = statesOf(tx, entry);
    const sc = Math.floor(inCluster / scSize) % states.length;
    const state = states[sc]!;
    // Bytes until the end of this subcluster (or cluster without extended L2).
    const span = Math.min(length - pos, (g.extendedL2 ? (sc + 1) * scSize : g.clusterSize) - inCluster);
    if (state !== 'normal') flushRun();
    switch (state) {
      case 'unallocated-plain':
      case 'unallocated-alloc':
        readBackingTo(tx.img, guest, span, out, at + pos, outIsZero);
        break;
      case 'zero-plain':
      case 'zero-alloc':
        if (tx.img.header.version < 3) {
          throw new ModelError('corrupt', EIO, `Zero cluster entry found in pre-v3 image (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${l2Index.toString(16)})`);
        }
        if (!outIsZero) out.fill(0, at + pos, at + pos + span);
        break;
      case 'normal': {
        const hostCluster = l2HostOffset(entry!);
        const host = hostCluster + BigInt(inCluster);
        let file: HostFile;
        if (g.externalDataFile) {
          const guestCluster = guest - BigInt(inCluster);
          if (hostCluster !== guestCluster) {
            throw new ModelError('corrupt', EIO,
              `External data file host cluster offset 0x${hostCluster.toString(16)} does not match guest cluster offset: 0x${guestCluster.toString(16)}, L2 index: 0x${l2Index.toString(16)})`);
          }
          const data = tx.img.dataFile;
          if (data === undefined) throw new ModelError('no-data-file', EIO, 'the image has an external data file but none was supplied');
          file = data;
        } else {
          file = tx.img.file;
        }
        if (runLen > 0 && (file !== runFile || host !== runHost + BigInt(runLen))) flushRun();
        if (runLen === 0) {
          runPos = pos;
          runHost = host;
          runFile = file;
        }
        runLen += span;
        break;
      }
      case 'compressed': {
        if (g.externalDataFile) {
          throw new ModelError('corrupt', EIO,
            `Compressed cluster entry found in image with external data file (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${l2Index.toString(16)})`);
        }
        const d = compressedDescriptor(entry!, g.clusterBits);
        const raw = readHost(tx.img.file, d.hostOffset, d.compressedBytes);
        const cluster = decompressCluster(raw, g.clusterSize, tx.img.header.compressionType);
        out.set(cluster.subarray(inCluster, inCluster + span), at + pos);
        break;
      }
      case 'invalid':
        throw new ModelError('corrupt', EIO, `Invalid cluster entry found  (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${l2Index.toString(16)})`);
    }
    pos += span;
  }
  flushRun();
}

/** `length` bytes of guest data at `offset` of `img`. Throws ModelError for ranges past the disk. */
export function readGuest(img: Image, offset: bigint, length: number): Uint8Array {
  if (offset < 0n || offset + BigInt(length) > img.header.size) {
    throw new ModelError('out-of-range', EIO, `read of ${length} bytes at ${offset} is beyond the end of the ${img.header.size}-byte disk`);
  }
  return readGuestTx(beginTx(img), offset, length);
}

/**
 * readGuest into `target[pos, pos + length)` instead of a fresh array: the same bytes (zeros
 * included), for drivers that stream data through one reused buffer. Only `target` changes.
 * Throws ModelError for a range past the disk (`target` unchanged) or for a corrupt entry (`target`
 * then partly written).
 */
export function readGuestInto(img: Image, offset: bigint, length: number, target: Uint8Array, pos: number): void {
  if (offset < 0n || offset + BigInt(length) > img.header.size) {
    throw new ModelError('out-of-range', EIO, `read of ${length} bytes at ${offset} is beyond the end of the ${img.header.size}-byte disk`);
  }
  if (pos < 0 || pos + length > target.length) throw new RangeError(`target of ${target.length} bytes cannot take ${length} bytes at ${pos}`);
  readGuestTo(beginTx(img), offset, length, target, pos, false);
}
