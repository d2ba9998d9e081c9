/**
 * Guest reads: resolves every (sub)cluster of a range through L1/L2, the subcluster bitmaps,
 * compressed clusters and the backing image (fact sheet §3.6). Pure: the Image is only read.
 */
import { inflateRawSync, constants as zlibConstants } from 'node:zlib';
import { decompress as zstdDecompress } from 'fzstd';
import { compressedDescriptor, l2HostOffset } from '../format/entries.ts';
import { EIO, ModelError } from './errors.ts';
import { readHost } from './host-file.ts';
import type { Image } from './image.ts';
import { entryAt, statesOf } from './mapping.ts';
import { beginTx, geo, type Tx } from './tx.ts';

/** Decompresses one cluster of compressed data as QEMU does (raw deflate or zstd; trailing bytes ignored). */
export function decompressCluster(data: Uint8Array, clusterSize: number, compressionType: number): Uint8Array {
  let out: Uint8Array;
  try {
    out = compressionType === 1
      ? zstdDecompress(data)
      : new Uint8Array(inflateRawSync(data, { finishFlush: zlibConstants.Z_SYNC_FLUSH }));
  } catch {
    throw new ModelError('corrupt', EIO, 'compressed cluster cannot be decompressed');
  }
  // QEMU stops once a whole cluster is produced and fails if it cannot produce one.
  if (out.length < clusterSize) throw new ModelError('corrupt', EIO, `compressed cluster decompresses to ${out.length} bytes, less than a cluster`);
  return out.subarray(0, clusterSize);
}

function readBacking(img: Image, offset: bigint, length: number): Uint8Array {
  if (!img.backing) return new Uint8Array(length);
  const out = new Uint8Array(length);
  const size = img.backing.size;
  if (offset < size) {
    const n = Number(size - offset < BigInt(length) ? size - offset : BigInt(length));
    out.set(img.backing.read(offset, n));
  }
  return out;
}

/** `length` bytes of guest data at `offset` (the caller keeps the range inside the virtual disk). */
export function readGuestTx(tx: Tx, offset: bigint, length: number): Uint8Array {
  const g = geo(tx);
  const out = new Uint8Array(length);
  const scSize = g.clusterSize / g.subclusters;
  let pos = 0;
  while (pos < length) {
    const at = offset + BigInt(pos);
    const inCluster = Number(at & BigInt(g.clusterSize - 1));
    const { entry, l2Offset, l2Index } = entryAt(tx, at);
    const states = statesOf(tx, entry);
    const sc = Math.floor(inCluster / scSize) % states.length;
    const state = states[sc]!;
    // Bytes until the end of this subcluster (or cluster without extended L2).
    const span = Math.min(length - pos, (g.extendedL2 ? (sc + 1) * scSize : g.clusterSize) - inCluster);
    switch (state) {
      case 'unallocated-plain':
      case 'unallocated-alloc':
        out.set(readBacking(tx.img, at, span), pos);
        break;
      case 'zero-plain':
      case 'zero-alloc':
        if (tx.img.header.version < 3) {
          throw new ModelError('corrupt', EIO, `Zero cluster entry found in pre-v3 image (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${l2Index.toString(16)})`);
        }
        break;
      case 'normal': {
        const host = l2HostOffset(entry!) + BigInt(inCluster);
        const file = g.externalDataFile ? tx.img.dataFile : tx.img.file;
        if (file) out.set(readHost(file, host, span), pos);
        break;
      }
      case 'compressed': {
        const d = compressedDescriptor(entry!, g.clusterBits);
        const raw = readHost(tx.img.file, d.hostOffset, d.compressedBytes);
        const cluster = decompressCluster(raw, g.clusterSize, tx.img.header.compressionType);
        out.set(cluster.subarray(inCluster, inCluster + span), pos);
        break;
      }
      case 'invalid':
        throw new ModelError('corrupt', EIO, `Invalid cluster entry found  (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${l2Index.toString(16)})`);
    }
    pos += span;
  }
  return out;
}

/** `length` bytes of guest data at `offset` of `img`. Throws ModelError for ranges past the disk. */
export function readGuest(img: Image, offset: bigint, length: number): Uint8Array {
  if (offset < 0n || offset + BigInt(length) > img.header.size) {
    throw new ModelError('out-of-range', EIO, `read of ${length} bytes at ${offset} is beyond the end of the ${img.header.size}-byte disk`);
  }
  return readGuestTx(beginTx(img), offset, length);
}
