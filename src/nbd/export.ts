/**
 * An NBD export: one open Qcow2Disk and what qemu-nbd's options say about serving it (name,
 * description, read-only, --discard, --detect-zeroes, --allocation-depth, how many clients). The
 * session (session.ts) speaks the protocol; this module decides what each command does to the disk,
 * the way QEMU's block layer does it for qemu-nbd (nbd/server.c nbd_handle_request over block/io.c),
 * so that a client sees the same image through `qcow2-ref serve` as through qemu-nbd.
 *
 * Every command runs inside `run`, one after the other in the order the sessions dispatched them,
 * across all connections: the driver serialises its calls anyway, and a command that needs two
 * calls (a sparse READ maps the range, then reads the data parts) must not see another command's
 * write between them.
 */
import { isZeroBytes } from '../codec/index.ts';
import { isDiskError, type Qcow2Disk } from '../disk/index.ts';
import { ModelError } from '../model/index.ts';
import type { HostAllocation, MapExtent, MapOptions } from '../model/index.ts';
import {
  NBD_FLAG_CAN_MULTI_CONN, NBD_FLAG_HAS_FLAGS, NBD_FLAG_READ_ONLY, NBD_FLAG_SEND_CACHE, NBD_FLAG_SEND_FAST_ZERO, NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES, NBD_MAX_BLOCK_STATUS_EXTENTS, NBD_MAX_STRING_SIZE, NBD_STATE_HOLE,
  NBD_STATE_ZERO, utf8, type BlockStatusExtent,
} from './protocol.ts';

/** How discard requests reach the image (qemu-nbd --discard; QEMU's BDRV_O_UNMAP). */
export type DiscardMode = 'ignore' | 'unmap';
/** qemu-nbd --detect-zeroes: writes of zeros become write_zeroes (with unmap for 'unmap'). */
export type DetectZeroesMode = 'off' | 'on' | 'unmap';

/** What qemu-nbd's options say about an export. */
export interface NbdExportOptions {
  /** The export name (-x; default ''). At most 4096 bytes of UTF-8. */
  readonly name?: string;
  /** A description for NBD_INFO_DESCRIPTION and NBD_OPT_LIST (-D). At most 4096 bytes of UTF-8. */
  readonly description?: string;
  /** Export read-only (-r). Default: whether the disk was opened read-only. */
  readonly readOnly?: boolean;
  /**
   * --discard (default 'ignore', as qemu-nbd): with 'ignore', TRIM succeeds without effect
   * (bdrv_co_pdiscard does nothing without BDRV_O_UNMAP) and clusters freed by a zero write stay in
   * the file (open the disk with `discardPassthrough: false` to match). WRITE_ZEROES without NO_HOLE
   * frees clusters either way: blk_co_pwrite_zeroes passes BDRV_REQ_MAY_UNMAP down untouched.
   */
  readonly discard?: DiscardMode;
  /** --detect-zeroes (default 'off'); 'unmap' needs discard 'unmap', as in qemu-nbd. */
  readonly detectZeroes?: DetectZeroesMode;
  /** Offer the qemu:allocation-depth metadata context (-A). */
  readonly allocationDepth?: boolean;
  /**
   * Whether more than one client may connect (qemu-nbd -e N with N != 1): NBD_FLAG_CAN_MULTI_CONN is
   * then true, because every connection goes through the one driver and a flush flushes all of it.
   */
  readonly multiConn?: boolean;
  /**
   * How the image's file is stored now (st_blocks, SEEK_DATA/SEEK_HOLE; src/io/seek-data.ts). With
   * it, block status and sparse reads report the holes of a sparse, metadata-preallocated file as
   * zeros, as qemu-nbd does (QEMU decides once, at the first block-status query, whether the image
   * is metadata-preallocated; the holes are looked up at every query). Without it (or when it
   * fails) the file counts as fully allocated.
   */
  readonly hostAllocation?: () => Promise<HostAllocation>;
  /**
   * qemu-nbd --cache: 'writeback' (the default; open the disk with `writeback: true` to match),
   * 'writethrough' (every write, zero and trim is flushed before its reply, as if it had FUA),
   * 'unsafe' (FLUSH and FUA do nothing: nothing is made durable before close).
   */
  readonly cache?: 'writeback' | 'writethrough' | 'unsafe';
}

/** A typed refusal of export options (an over-long name, detect-zeroes=unmap without discard=unmap...). */
export class NbdExportError extends Error {
  override readonly name = 'NbdExportError';
}

/** Bytes of one piece of a WRITE_ZEROES or TRIM handed to the driver (a multiple of every cluster size). */
const ZERO_PIECE = 1n << 28n;

/** The metadata contexts a client selected (NBD_OPT_SET_META_CONTEXT). */
export interface MetaContexts {
  readonly baseAllocation: boolean;
  readonly allocationDepth: boolean;
}

/** One run of a sparse read: data bytes, or a range that reads as zeros. */
export type ReadPiece =
  | { readonly kind: 'data'; readonly offset: bigint; readonly data: Uint8Array }
  | { readonly kind: 'hole'; readonly offset: bigint; readonly length: number };

/** A disk served over NBD, with the options it is served with. */
export class NbdExport {
  /** The name as UTF-8 bytes (what clients send). */
  readonly nameBytes: Uint8Array;
  readonly descriptionBytes: Uint8Array | undefined;
  /** The export size: the disk size rounded down to 512 bytes (nbd_export_create: QEMU_ALIGN_DOWN). */
  readonly size: bigint;
  /** The transmission flags without NBD_FLAG_SEND_DF (added per client once structured replies are negotiated). */
  readonly flags: number;
  readonly readOnly: boolean;
  readonly discard: DiscardMode;
  readonly detectZeroes: DetectZeroesMode;
  readonly allocationDepth: boolean;
  private queue: Promise<unknown> = Promise.resolve();
  /** QEMU's metadata-preallocation decision, made at the first query that needs block status. */
  private preallocated: boolean | undefined;
  /** The file's allocation as last probed; dropped by every change. */
  private host: HostAllocation | undefined;
  /** Why probing the file's allocation failed, once (the file then counts as fully allocated). */
  probeFailure: string | undefined;

  /** Serves `disk`; throws NbdExportError for options qemu-nbd refuses. */
  constructor(readonly disk: Qcow2Disk, readonly options: NbdExportOptions = {}) {
    this.nameBytes = utf8(options.name ?? '');
    if (this.nameBytes.length > NBD_MAX_STRING_SIZE) throw new NbdExportError(`export name '${options.name}' too long`);
    this.descriptionBytes = options.description !== undefined ? utf8(options.description) : undefined;
    if (this.descriptionBytes !== undefined && this.descriptionBytes.length > NBD_MAX_STRING_SIZE) {
      throw new NbdExportError(`description '${options.description}' too long`);
    }
    this.readOnly = options.readOnly ?? disk.readOnly;
    if (!this.readOnly && disk.readOnly) throw new NbdExportError('the disk was opened read-only; it can only be exported read-only');
    this.discard = options.discard ?? 'ignore';
    this.detectZeroes = options.detectZeroes ?? 'off';
    if (this.detectZeroes === 'unmap' && this.discard !== 'unmap') {
      // qemu-nbd.c's refusal, word for word.
      throw new NbdExportError('setting detect-zeroes to unmap is not allowed without setting discard operation to unmap');
    }
    this.allocationDepth = options.allocationDepth === true;
    this.size = disk.size & ~511n;
    // nbd_export_create: HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_CACHE; READ_ONLY, or TRIM |
    // WRITE_ZEROES | FAST_ZERO; CAN_MULTI_CONN when more than one client may connect.
    let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
    flags |= this.readOnly ? NBD_FLAG_READ_ONLY : NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    if (options.multiConn === true) flags |= NBD_FLAG_CAN_MULTI_CONN;
    this.flags = flags;
  }

  /** Runs `fn` after every command dispatched before it has finished (across all connections). */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.queue.then(fn, fn);
    this.queue = r.catch(() => undefined);
    return r;
  }

  /** The MapOptions that make the driver's map what qemu-nbd's block status would be now. */
  private async mapOptions(): Promise<MapOptions> {
    const probe = this.options.hostAllocation;
    if (probe === undefined || this.probeFailure !== undefined || this.preallocated === false) return { metadataPreallocated: false };
    try {
      this.host ??= await probe();
      this.preallocated ??= await this.disk.metadataPreallocation(this.host);
    } catch (e) {
      if (isDiskError(e) || e instanceof ModelError) throw e;
      this.probeFailure = (e as Error)?.message ?? String(e);
      return { metadataPreallocated: false };
    }
    return this.preallocated ? { metadataPreallocated: true, host: this.host } : { metadataPreallocated: false };
  }

  /** The image may have changed: the next block-status query probes the file again. */
  private changed(): void {
    this.host = undefined;
  }

  /**
   * The bytes of [offset, offset + length) as runs of data and zeros (nbd_co_send_sparse_read: block
   * status decides which ranges are sent as NBD_REPLY_TYPE_OFFSET_HOLE). The caller has checked the
   * range against the export size. With `into` (at least `length` bytes) the data runs are views of
   * it instead of new arrays.
   */
  async readSparse(offset: bigint, length: number, into?: Uint8Array): Promise<ReadPiece[]> {
    const extents = await this.disk.map(offset, BigInt(length), await this.mapOptions());
    const runs: { zero: boolean; start: bigint; length: bigint }[] = [];
    for (const e of clip(extents, offset, BigInt(length))) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last.zero === e.zero) last.length += e.length;
      else runs.push({ zero: e.zero, start: e.start, length: e.length });
    }
    // The runs cover the range exactly unless the map broke its contract; then read it all.
    if (runs.reduce((n, r) => n + r.length, 0n) !== BigInt(length) || (runs[0] !== undefined && runs[0].start !== offset)) {
      return [{ kind: 'data', offset, data: await this.read(offset, length, into) }];
    }
    const out: ReadPiece[] = [];
    for (const r of runs) {
      if (r.zero) out.push({ kind: 'hole', offset: r.start, length: Number(r.length) });
      else {
        const at = Number(r.start - offset);
        const data = into !== undefined ? into.subarray(at, at + Number(r.length)) : new Uint8Array(Number(r.length));
        await this.disk.readInto(r.start, data);
        out.push({ kind: 'data', offset: r.start, data });
      }
    }
    return out;
  }

  /** `length` bytes at `offset`, all of them (simple replies, NBD_CMD_FLAG_DF); in `into` (a view of it) when given. */
  async read(offset: bigint, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const data = into !== undefined ? into.subarray(0, length) : new Uint8Array(length);
    if (length > 0) await this.disk.readInto(offset, data);
    return data;
  }

  /**
   * NBD_CMD_WRITE: blk_co_pwrite, with --detect-zeroes turning a buffer of zeros into write_zeroes
   * (bdrv_aligned_pwritev: BDRV_REQ_ZERO_WRITE, plus BDRV_REQ_MAY_UNMAP for 'unmap'); `fua` flushes
   * before the reply (qcow2 has no native FUA: the block layer flushes after the write).
   */
  async write(offset: bigint, data: Uint8Array, fua: boolean): Promise<void> {
    this.changed();
    fua = this.fua(fua);
    if (this.detectZeroes !== 'off' && data.length > 0 && isZeroBytes(data)) {
      await this.disk.writeZeroes(offset, BigInt(data.length), { unmap: this.detectZeroes === 'unmap' });
    } else {
      await this.disk.write(offset, data);
    }
    if (fua) await this.disk.flush();
  }

  /**
   * NBD_CMD_WRITE_ZEROES: blk_co_pwrite_zeroes with BDRV_REQ_MAY_UNMAP unless NO_HOLE (whatever
   * --discard says: only bdrv_co_pwrite_zeroes, the path of a node's children, drops it without
   * BDRV_O_UNMAP, and the export's requests do not take it) and BDRV_REQ_NO_FALLBACK for FAST_ZERO. Long requests go to the driver in aligned pieces of 256 MiB, which changes nothing
   * (every piece boundary is a cluster boundary) but bounds the work of one driver call.
   */
  async writeZeroes(offset: bigint, length: number, opts: { readonly noHole: boolean; readonly fastZero: boolean; readonly fua: boolean }): Promise<void> {
    this.changed();
    const fua = this.fua(opts.fua);
    const unmap = !opts.noHole;
    for (const [at, n] of pieces(offset, BigInt(length))) await this.disk.writeZeroes(at, n, { unmap, noFallback: opts.fastZero });
    if (fua) await this.disk.flush();
  }

  /** NBD_CMD_TRIM: blk_co_pdiscard (nothing without --discard=unmap), then a flush for FUA. */
  async trim(offset: bigint, length: number, fua: boolean): Promise<void> {
    this.changed();
    fua = this.fua(fua);
    if (this.discard === 'unmap') for (const [at, n] of pieces(offset, BigInt(length))) await this.disk.discard(at, n);
    if (fua) await this.disk.flush();
  }

  /** NBD_CMD_FLUSH: blk_co_flush (nothing with cache 'unsafe': BDRV_O_NO_FLUSH). */
  async flush(): Promise<void> {
    if (this.options.cache !== 'unsafe') await this.disk.flush();
  }

  /** Whether a change must be durable before its reply: FUA, or always with cache 'writethrough'; never with 'unsafe'. */
  private fua(requested: boolean): boolean {
    return this.options.cache === 'unsafe' ? false : requested || this.options.cache === 'writethrough';
  }

  /**
   * NBD_CMD_BLOCK_STATUS for the selected contexts, as nbd_co_send_block_status computes them:
   * extents merged while their flags agree, at most NBD_MAX_BLOCK_STATUS_EXTENTS per context (one
   * with REQ_ONE), never past the requested range.
   * - base:allocation (blockstatus_to_extents): NBD_STATE_HOLE unless the range holds data,
   *   NBD_STATE_ZERO when it reads as zeros — from bdrv_block_status_above over the whole chain,
   *   which is what qemu-img map reports (mapImage).
   * - qemu:allocation-depth (blockalloc_to_extents): bdrv_is_allocated_above's depth — 0 when no
   *   image of the chain allocates the range, else 1 + the depth of the image that does. Beyond the
   *   end of a shorter backing file the block layer treats the synthesized zeros as allocated in
   *   that backing file (bdrv_co_common_block_status_above, "*pnum == 0"), where the map reports an
   *   unallocated range of the image above it.
   * The range is mapped in pieces of 65536 clusters, stopping once every context is full.
   */
  async blockStatus(offset: bigint, length: number, contexts: MetaContexts, reqOne: boolean): Promise<{ base: BlockStatusExtent[]; depth: BlockStatusExtent[] }> {
    const cap = reqOne ? 1 : NBD_MAX_BLOCK_STATUS_EXTENTS;
    const base = new ExtentList(cap);
    const depth = new ExtentList(cap);
    const chain = this.disk.chainLength;
    const piece = BigInt(1 << this.disk.current.header.clusterBits) * 65536n;
    const end = offset + BigInt(length);
    for (let at = offset; at < end;) {
      const n = end - at < piece ? end - at : piece;
      const extents = await this.disk.map(at, n, await this.mapOptions());
      for (const e of clip(extents, at, n)) {
        if (contexts.baseAllocation) base.add(e.length, (e.data ? 0 : NBD_STATE_HOLE) | (e.zero ? NBD_STATE_ZERO : 0));
        if (contexts.allocationDepth) depth.add(e.length, e.present ? e.depth + 1 : e.depth < chain - 1 ? e.depth + 2 : 0);
      }
      if ((!contexts.baseAllocation || base.full) && (!contexts.allocationDepth || depth.full)) break;
      at += n;
    }
    return { base: base.extents, depth: depth.extents };
  }
}

/** A context's extents (nbd_extent_array_add): merged while flags agree, at most `cap` of them. */
class ExtentList {
  readonly extents: BlockStatusExtent[] = [];
  full = false;

  constructor(private readonly cap: number) {}

  add(length: bigint, flags: number): void {
    if (this.full || length <= 0n) return;
    const last = this.extents[this.extents.length - 1];
    // The request length is below 2^32, so a merged length always fits the 32-bit field.
    if (last !== undefined && last.flags === flags) {
      last.length += Number(length);
      return;
    }
    if (this.extents.length >= this.cap) {
      this.full = true;
      return;
    }
    this.extents.push({ length: Number(length), flags });
  }
}

/** The extents of `[offset, offset + length)` only, in order (a map never reports outside its range; this makes sure). */
function* clip(extents: readonly MapExtent[], offset: bigint, length: bigint): Generator<MapExtent> {
  const end = offset + length;
  for (const e of extents) {
    const s = e.start > offset ? e.start : offset;
    const t = e.start + e.length < end ? e.start + e.length : end;
    if (t <= s) continue;
    yield s === e.start && t === e.start + e.length ? e : { ...e, start: s, length: t - s };
  }
}

/** [offset, offset + length) cut at multiples of ZERO_PIECE. */
function* pieces(offset: bigint, length: bigint): Generator<[bigint, bigint]> {
  const end = offset + length;
  for (let at = offset; at < end;) {
    const next = (at / ZERO_PIECE + 1n) * ZERO_PIECE;
    const to = next < end ? next : end;
    yield [at, to - at];
    at = to;
  }
}
