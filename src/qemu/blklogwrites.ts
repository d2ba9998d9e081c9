/**
 * A parser of the write logs QEMU's `blklogwrites` block driver keeps (the dm-log-writes format), so
 * that what QEMU 7.2 really wrote to an image file can be replayed and crash-tested like the model's
 * own HostIO. Facts of the format and of QEMU's logging are in docs/format/blklogwrites.md; in short
 * (block/blklogwrites.c, blk_log_writes_co_log and blk_log_writes_co_do_log):
 * - sector 0 holds the superblock {magic, version, nr_entries, sectorsize}, little-endian; each entry
 *   is one log sector holding {sector, nr_sectors, flags, data_len} followed by nr_sectors sectors of
 *   data (none for a discard); `sector` and `nr_sectors` count log sectors (`sectorsize` bytes, 512
 *   by default — the Linux kernel's dm-log-writes counts 512-byte sectors instead; this parser
 *   follows QEMU, blk_log_writes_find_cur_log_sector);
 * - QEMU logs an operation AFTER it completed on the image file, so log order is completion order,
 *   and a FLUSH entry is a completed flush (a barrier for every entry before it);
 * - a write_zeroes request is logged as a plain write whose data is zeros (flags 0), so it becomes a
 *   `write` here: the log cannot tell it from a written buffer of zeros;
 * - QEMU never sets FUA (the block layer emulates FUA with a flush after the write, which is logged as
 *   its own FLUSH entry) nor MARK; for other writers' logs a FUA write becomes a write then a flush,
 *   a FLUSH entry with data a flush then the write (a pre-flush), and a MARK entry nothing;
 * - truncation is NOT logged (blklogwrites has no truncate handler; the block layer passes it to the
 *   image file unseen), so the log never holds a `truncate`: a replay's file length is at least the
 *   real one and may be longer (see src/qemu/logged-run.ts).
 * The log is untrusted input: every size is checked against the bytes present before anything is
 * allocated, loops are bounded by the log's length, and any defect is a BlkLogWritesError naming the
 * entry and its byte offset.
 */
import type { HostIO } from '../model/index.ts';

/** LOG_FLUSH_FLAG: the entry is a completed flush of the image file. */
export const LOG_FLUSH_FLAG = 1n;
/** LOG_FUA_FLAG: a write that was durable when it completed (QEMU never sets it). */
export const LOG_FUA_FLAG = 2n;
/** LOG_DISCARD_FLAG: a discard of the entry's sectors; no data follows the entry. */
export const LOG_DISCARD_FLAG = 4n;
/** LOG_MARK_FLAG: an annotation written by a user of dm-log-writes (QEMU never sets it). */
export const LOG_MARK_FLAG = 8n;
const LOG_FLAG_MASK = LOG_FLUSH_FLAG | LOG_FUA_FLAG | LOG_DISCARD_FLAG | LOG_MARK_FLAG;

/** WRITE_LOG_MAGIC ("rhswfsj" little-endian). */
export const WRITE_LOG_MAGIC = 0x6a736677736872n;
/** WRITE_LOG_VERSION. */
export const WRITE_LOG_VERSION = 1n;
/** sizeof(struct log_write_super): magic, version, nr_entries (u64 each), sectorsize (u32). */
export const LOG_SUPER_SIZE = 28;
/** sizeof(struct log_write_entry): sector, nr_sectors, flags, data_len (u64 each). */
export const LOG_ENTRY_SIZE = 32;
/** QEMU's bound on the log sector size (blk_log_writes_sector_size_valid: below 2^24). */
const MAX_SECTOR_SIZE = 1 << 24;
/** The largest byte offset QEMU's block layer addresses (BDRV_MAX_LENGTH is below it). */
const MAX_HOST_END = (1n << 63n) - 1n;

/** A defect of a log: where it is (entry index, or the superblock) and what is wrong. */
export class BlkLogWritesError extends Error {
  override readonly name = 'BlkLogWritesError';
  /** The entry's index (0-based), or undefined for the superblock. */
  readonly entryIndex: number | undefined;
  /** Byte offset in the log of the structure at fault. */
  readonly byteOffset: number;

  constructor(entryIndex: number | undefined, byteOffset: number, detail: string) {
    super(`blklogwrites log: ${entryIndex === undefined ? 'superblock' : `entry ${entryIndex}`} at byte offset ${byteOffset}: ${detail}`);
    this.entryIndex = entryIndex;
    this.byteOffset = byteOffset;
  }
}

/** The superblock of a log. */
export interface BlkLogWritesSuperblock {
  /** Entries the log holds (as of the last superblock update). */
  readonly nrEntries: bigint;
  /** Log sector size in bytes: the unit of the entries' sector and nr_sectors, and of the layout. */
  readonly sectorSize: number;
}

/** One log entry as stored. */
export interface BlkLogWritesEntry {
  /** Byte offset of the entry's header in the log. */
  readonly logOffset: number;
  /** First log sector of the image file it addresses. */
  readonly sector: bigint;
  readonly nrSectors: bigint;
  /** LOG_*_FLAG bits. */
  readonly flags: bigint;
  /** data_len as stored (QEMU writes 0; the kernel uses it for marks). */
  readonly dataLen: bigint;
}

/** A parsed log. */
export interface BlkLogWrites {
  readonly sectorSize: number;
  readonly entries: readonly BlkLogWritesEntry[];
  /** The host operations, in log order. A write's bytes are views of the parsed log's bytes. */
  readonly host: readonly HostIO[];
  /**
   * `host` index of each entry's first operation, and `host.length` last (length entries + 1): entry
   * i became `host[hostStart[i], hostStart[i+1])` (one operation for every entry QEMU writes).
   */
  readonly hostStart: readonly number[];
  /** Byte offset just past the last entry: where the next entry would go. */
  readonly end: number;
}

/** Reads a little-endian u64 at `at` (caller checked the bounds). */
function u64(view: DataView, at: number): bigint {
  return view.getBigUint64(at, true);
}

/**
 * The superblock at the start of `bytes` (at least its first LOG_SUPER_SIZE bytes). Promises: magic
 * and version are QEMU's, the sector size is one QEMU accepts (a power of two, at least an entry,
 * below 16 MiB); otherwise throws BlkLogWritesError. An empty input is an empty log (QEMU's
 * log-append treats an empty log file so): 0 entries of 512-byte sectors.
 */
export function parseBlkLogWritesSuperblock(bytes: Uint8Array): BlkLogWritesSuperblock {
  if (bytes.length === 0) return { nrEntries: 0n, sectorSize: 512 };
  if (bytes.length < LOG_SUPER_SIZE) {
    throw new BlkLogWritesError(undefined, 0, `truncated: ${bytes.length} bytes, the superblock has ${LOG_SUPER_SIZE}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, LOG_SUPER_SIZE);
  const magic = u64(view, 0);
  if (magic !== WRITE_LOG_MAGIC) throw new BlkLogWritesError(undefined, 0, `bad magic 0x${magic.toString(16)} (expected 0x${WRITE_LOG_MAGIC.toString(16)})`);
  const version = u64(view, 8);
  if (version !== WRITE_LOG_VERSION) throw new BlkLogWritesError(undefined, 8, `unsupported version ${version}`);
  const sectorSize = view.getUint32(24, true);
  const powerOfTwo = sectorSize !== 0 && (sectorSize & (sectorSize - 1)) === 0;
  if (!powerOfTwo || sectorSize < LOG_ENTRY_SIZE || sectorSize >= MAX_SECTOR_SIZE) {
    throw new BlkLogWritesError(undefined, 24, `invalid sector size ${sectorSize}`);
  }
  return { nrEntries: u64(view, 16), sectorSize };
}

/**
 * Parses a whole log: the superblock's nr_entries entries, laid out as QEMU lays them out (each entry
 * one sector, then nr_sectors sectors of data unless it is a discard; the first at sector 1), mapped
 * to HostIO in log order (see the module header for the mapping). Bytes after the last entry are
 * ignored (`end` says where it is). Throws BlkLogWritesError for any defect: a bad superblock,
 * unknown flag bits, an entry or its data past the end of the log (a truncated log, or nr_entries or
 * nr_sectors larger than the log holds), an address past 2^63.
 */
export function parseBlkLogWrites(bytes: Uint8Array): BlkLogWrites {
  const sb = parseBlkLogWritesSuperblock(bytes);
  const ss = sb.sectorSize;
  const ssBig = BigInt(ss);
  const length = BigInt(bytes.length);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries: BlkLogWritesEntry[] = [];
  const host: HostIO[] = [];
  const hostStart: number[] = [];
  let pos = ss;
  // Bounded by the log's length whatever nr_entries says: each entry moves `pos` on by at least one
  // sector or throws, and nothing is allocated ahead of the entries present.
  for (let i = 0; BigInt(i) < sb.nrEntries; i++) {
    if (pos + LOG_ENTRY_SIZE > bytes.length) {
      throw new BlkLogWritesError(i, pos, `truncated: the superblock counts ${sb.nrEntries} entries, the log ends at byte ${bytes.length}`);
    }
    const entry: BlkLogWritesEntry = {
      logOffset: pos,
      sector: u64(view, pos),
      nrSectors: u64(view, pos + 8),
      flags: u64(view, pos + 16),
      dataLen: u64(view, pos + 24),
    };
    if ((entry.flags & ~LOG_FLAG_MASK) !== 0n) throw new BlkLogWritesError(i, pos, `invalid flags 0x${entry.flags.toString(16)}`);
    const discard = (entry.flags & LOG_DISCARD_FLAG) !== 0n;
    const dataStart = pos + ss;
    const dataSectors = discard ? 0n : entry.nrSectors;
    // Checked in bigint before anything is sliced or converted: nr_sectors is attacker-controlled.
    if (BigInt(dataStart) + dataSectors * ssBig > length) {
      throw new BlkLogWritesError(i, pos, `${dataSectors} sectors of data run past the end of the log (${bytes.length} bytes)`);
    }
    const offset = entry.sector * ssBig;
    const byteLength = entry.nrSectors * ssBig;
    if (offset + byteLength > MAX_HOST_END) {
      throw new BlkLogWritesError(i, pos, `addresses bytes up to ${offset + byteLength}, past 2^63`);
    }
    hostStart.push(host.length);
    const dataEnd = dataStart + Number(dataSectors) * ss;
    if ((entry.flags & LOG_MARK_FLAG) === 0n) {
      // A flush comes before the entry's own operation (a pre-flush), a FUA barrier after it.
      if ((entry.flags & LOG_FLUSH_FLAG) !== 0n) host.push({ kind: 'flush' });
      if (discard) host.push({ kind: 'discard', offset, length: byteLength });
      else if (dataSectors > 0n) host.push({ kind: 'write', offset, bytes: bytes.subarray(dataStart, dataEnd) });
      if ((entry.flags & LOG_FUA_FLAG) !== 0n) host.push({ kind: 'flush' });
    }
    entries.push(entry);
    pos = dataEnd;
  }
  hostStart.push(host.length);
  return { sectorSize: ss, entries, host, hostStart, end: pos };
}
