/**
 * Compressed writes, as QEMU 7.2 performs them (block/qcow2.c qcow2_co_pwritev_compressed_part /
 * _task, block/qcow2-cluster.c qcow2_alloc_compressed_cluster_offset; fact sheet §3.4, §6):
 *
 * - only cluster-aligned whole clusters (a partial last cluster at the end of the disk is zero
 *   padded); an external data file refuses them (ENOTSUP);
 * - each cluster is compressed into at most cluster_size - 1 bytes, else written as a normal cluster;
 * - the target must be unallocated (an entry whose offset bits are 0: a zero-plain entry qualifies),
 *   else EIO; the bytes are packed by qcow2_alloc_bytes right after the previous compressed blob;
 * - the L2 entry is a compressed descriptor (never COPIED; extended L2: bitmap 0).
 *
 * zlib is raw deflate with a 4 KiB window (deflateInit2(level 6, -12, memLevel 9)), produced with pako,
 * a port of reference zlib: its output equals the system zlib QEMU links against byte for byte, while
 * Node's built-in zlib (Chromium's fork) compresses differently (2848 vs 2985 bytes for one noisy
 * 4 KiB cluster), which would change every later compressed offset. zstd output is not produced
 * yet: no zstd encoder is a dependency of the project, so such writes return a typed ENOTSUP.
 */
import { deflateRaw } from 'pako';
import type { L2EntryFields } from '../../generated/qcow2.ts';
import { l2EntryWords } from '../format/entries.ts';
import { EINVAL, EIO, ENOTSUP, ModelError } from './errors.ts';
import { clusterTable, l1l2Index, readL2Entry, writeL2Entry } from './mapping.ts';
import { metadataOverlap, signalFatalCorruption } from './overlap.ts';
import { allocBytes } from './refcount.ts';
import { type Tx, geo, hostFlush, hostWrite } from './tx.ts';
import { guestWrite } from './write.ts';

/** The compressed form of one cluster, or undefined when it does not fit in cluster_size - 1 bytes. */
export function compressCluster(cluster: Uint8Array, compressionType: number): Uint8Array | undefined {
  if (compressionType !== 0) throw new ModelError('unsupported', ENOTSUP, 'writing zstd-compressed clusters is not modelled yet (no zstd encoder)');
  const out = deflateRaw(cluster, { level: 6, windowBits: 12, memLevel: 9, strategy: 0 });
  return out.length <= cluster.length - 1 ? out : undefined;
}

/** The L2 entry describing `length` compressed bytes at host byte offset `host` (§3.4). */
function compressedEntry(tx: Tx, host: bigint, length: number): L2EntryFields {
  const g = geo(tx);
  const nbCsectors = Number((host + BigInt(length) - 1n) / 512n - host / 512n);
  const shift = 38 - g.clusterBits; // position of the sector count in the 30-bit high part
  const offsetHi = Number(host >> 32n);
  if (offsetHi >= 2 ** shift || nbCsectors >= 2 ** (g.clusterBits - 8)) {
    throw new ModelError('too-big', EIO, `compressed data at 0x${host.toString(16)} does not fit a compressed descriptor`);
  }
  return {
    copied: false,
    compressed: true,
    compressedHi: nbCsectors * 2 ** shift + offsetHi,
    compressedLo: Number(host & 0xffffffffn),
    ...(g.extendedL2 ? { zeroBitmap: 0, allocBitmap: 0 } : {}),
  };
}

/**
 * Writes `data` compressed at guest `offset` (qemu-io `write -c`). The caller checks the range is
 * inside the virtual disk.
 */
export function guestWriteCompressed(tx: Tx, offset: bigint, data: Uint8Array): void {
  const g = geo(tx);
  const cs = g.clusterSize;
  if (g.externalDataFile) throw new ModelError('unsupported', ENOTSUP, 'compressed writes are not supported with an external data file');
  if (data.length === 0) return;
  if (offset % BigInt(cs) !== 0n) throw new ModelError('unsupported', EINVAL, 'compressed writes must start at a cluster boundary');
  if (data.length % cs !== 0 && offset + BigInt(data.length) !== tx.img.header.size) {
    throw new ModelError('unsupported', EINVAL, 'compressed writes must cover whole clusters (except the last cluster of the disk)');
  }
  for (let pos = 0; pos < data.length; pos += cs) {
    const at = offset + BigInt(pos);
    const chunk = data.subarray(pos, Math.min(data.length, pos + cs));
    const cluster = new Uint8Array(cs);
    cluster.set(chunk); // the last cluster of an unaligned disk is zero padded
    const out = compressCluster(cluster, tx.img.header.compressionType);
    if (out === undefined) {
      // Incompressible: QEMU silently writes a normal cluster instead.
      guestWrite(tx, at, chunk);
      continue;
    }
    const l2Offset = clusterTable(tx, at);
    const { l2: l2Index } = l1l2Index(tx, at);
    const old = readL2Entry(tx, l2Offset, l2Index);
    // "Compression can't overwrite anything": any offset bits in the entry refuse the write.
    if ((l2EntryWords(old).word & 0x00fffffffffffe00n) !== 0n || old.compressed) {
      throw new ModelError('unsupported', EIO, `compressed write to an allocated cluster at guest offset 0x${at.toString(16)}`);
    }
    // QEMU allocates the bytes (refcount and L2 entry in its caches), then runs the overlap check
    // on the target range; the packing cursor can point into a cluster that was freed and reused
    // as metadata since (a stale free_byte_offset), and then the check stops the write. Nothing of
    // the allocation reaches the disk: QEMU drops its caches once the image is marked corrupt.
    const beforeAlloc = tx.img;
    const ioBefore = tx.io.length;
    const host = allocBytes(tx, out.length);
    const overlap = metadataOverlap(tx, host, BigInt(out.length));
    if (overlap !== undefined) {
      tx.img = beforeAlloc;
      tx.io.length = ioBefore;
      signalFatalCorruption(tx, `Preventing invalid write on metadata (overlaps with ${overlap})`);
    }
    // Crash safety: the refcount of the host range, then the compressed bytes, are on disk before
    // the L2 entry points at them.
    hostFlush(tx);
    hostWrite(tx, host, out);
    hostFlush(tx);
    writeL2Entry(tx, l2Offset, l2Index, compressedEntry(tx, host, out.length));
  }
}
