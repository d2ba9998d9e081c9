/**
 * Compressed writes, as QEMU 7.2 performs them (block/qcow2.c qcow2_co_pwritev_compressed_part /
 * _task, block/qcow2-cluster.c qcow2_alloc_compressed_cluster_offset; docs/format/mapping.md#compressed-clusters, docs/format/compression.md):
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
 * 4 KiB cluster), which would change every later compressed offset.
 *
 * zstd (docs/format/compression.md#zstd, compression_type 1) is QEMU's qcow2_zstd_compress: a fresh ZSTD_CCtx with
 * default parameters (level ZSTD_CLEVEL_DEFAULT = 3, no checksum) and ONE call
 * ZSTD_compressStream2(ZSTD_e_end) with the whole cluster as input. On a fresh context that call
 * pledges the input size, so the frame is exactly what one-shot ZSTD_compress(level 3) writes: the
 * content size is in the header and the frame is single-segment. A non-zero return (the output
 * buffer of cluster_size - 1 bytes is too small) is -ENOMEM, and the cluster is written normally.
 * Both encoders come from the model's codecs (compression.ts, portable-codecs.ts: pako for zlib,
 * @bokuweb/zstd-wasm 0.0.22's libzstd wasm for zstd, whose frames equal QEMU 7.2's).
 */
import { L2EntryMasks, type L2EntryFields } from '../../generated/qcow2.ts';
import { l2EntryWords } from '../format/index.ts';
import { compressionCodecs } from './compression.ts';
import { EINVAL, EIO, ENOTSUP, ModelError } from './errors.ts';
import { clusterTable, l1l2Index, readL2Entry, writeL2Entry } from './mapping.ts';
import { modelMetadataOverlap, signalFatalCorruption } from './overlap.ts';
import { allocBytes } from './refcount.ts';
import { type Tx, checkpointImg, geo, hostFlush, hostWrite, withOwnedPages } from './tx.ts';
import { guestWrite } from './write.ts';

/** zstd's default compression level (ZSTD_CLEVEL_DEFAULT), which QEMU's default-parameter CCtx uses. */
const ZSTD_CLEVEL_DEFAULT = 3;

/** One cluster as QEMU's qcow2_zstd_compress writes it (the whole zstd frame; the size limit is the caller's). */
export function zstdCompressCluster(cluster: Uint8Array): Uint8Array {
  const codecs = compressionCodecs();
  try {
    return codecs.zstdCompress(cluster, ZSTD_CLEVEL_DEFAULT);
  } catch (e) {
    // Any compressor error other than "does not fit" fails QEMU's write with -EINVAL.
    throw new ModelError('unsupported', EINVAL, `zstd compression failed: ${(e as Error).message}`);
  }
}

/**
 * The compressed form of one cluster, or undefined when it does not fit in cluster_size - 1 bytes
 * (QEMU's compressors get an output buffer of cluster_size - 1 bytes and return -ENOMEM when the
 * result does not fit; qcow2_co_pwritev_compressed_task then writes a normal cluster; docs/format/compression.md#when-data-is-stored-compressed).
 * compressionType 0 is zlib (raw deflate), 1 is zstd; anything else is refused.
 */
export function compressCluster(cluster: Uint8Array, compressionType: number): Uint8Array | undefined {
  let out: Uint8Array;
  if (compressionType === 0) out = compressionCodecs().deflateRaw(cluster, { level: 6, windowBits: 12, memLevel: 9, strategy: 0 });
  else if (compressionType === 1) out = zstdCompressCluster(cluster);
  else throw new ModelError('unsupported', ENOTSUP, `unknown compression type ${compressionType}`);
  return out.length <= cluster.length - 1 ? out : undefined;
}

/** The L2 entry describing `length` compressed bytes at host byte offset `host` (docs/format/mapping.md#compressed-clusters). */
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
  withOwnedPages(tx, () => writeCompressed(tx, offset, data));
}

function writeCompressed(tx: Tx, offset: bigint, data: Uint8Array): void {
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
    if ((l2EntryWords(old).word & L2EntryMasks.hostOffset) !== 0n || old.compressed) {
      throw new ModelError('unsupported', EIO, `compressed write to an allocated cluster at guest offset 0x${at.toString(16)}`);
    }
    // QEMU allocates the bytes (refcount and L2 entry in its caches), then runs the overlap check
    // on the target range; the packing cursor can point into a cluster that was freed and reused
    // as metadata since (a stale free_byte_offset), and then the check stops the write. Nothing of
    // the allocation reaches the disk: QEMU drops its caches once the image is marked corrupt.
    const beforeAlloc = checkpointImg(tx);
    const ioBefore = tx.io.length;
    const host = allocBytes(tx, out.length);
    const overlap = modelMetadataOverlap(tx, host, BigInt(out.length));
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
