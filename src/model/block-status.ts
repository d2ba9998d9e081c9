/**
 * `map(image)`: the guest address space as extents, the way `qemu-img map --output=json` of QEMU 7.2
 * reports them (docs/format/map.md). Pure: the Image is only read.
 *
 * How QEMU 7.2 builds the list (qemu-img.c get_block_status + block/io.c bdrv_co_block_status +
 * block/qcow2.c qcow2_co_block_status), restated per (sub)cluster state:
 *
 * | state             | status bits             | present | zero  | data  | offset      |
 * |-------------------|-------------------------|---------|-------|-------|-------------|
 * | normal            | DATA, OFFSET_VALID      | true    | false | true  | host offset |
 * | compressed        | DATA                    | true    | false | true  | —           |
 * | zero-plain        | ZERO                    | true    | true  | false | —           |
 * | zero-alloc        | ZERO, OFFSET_VALID      | true    | true  | false | host offset |
 * | unallocated-plain | (none)                  | → the backing layer, depth + 1                |
 * | unallocated-alloc | OFFSET_VALID            | → the backing layer, depth + 1                |
 *
 * "present" is BDRV_BLOCK_ALLOCATED, which the block layer sets whenever DATA or ZERO is set. An
 * unallocated range is looked up in the backing layer with depth + 1 — unless there is no backing
 * file, or the range starts at or past the backing layer's length: then the block layer answers
 * ZERO at this depth with present false (keeping the offset an unallocated-alloc subcluster has).
 * Adjacent extents merge when depth, present, zero, data and "has an offset" agree and the offsets
 * (if any) are contiguous, exactly qemu-img's entry_mergeable.
 *
 * Host-file holes (BDRV_BLOCK_RECURSE): when QEMU detects "metadata preallocation" — at least
 * max(real * 10/9, real + 2) clusters of the qcow2 file have a refcount, where real = the file's
 * allocated bytes (st_blocks × 512) / cluster size (qcow2_detect_metadata_preallocation) — it asks the
 * file holding the data which parts of a normal cluster are holes (SEEK_HOLE) and reports those as
 * `zero: true, data: true`. This depends on how the file system stores the file, not on the image, so
 * the caller passes the host files' allocation (`MapOptions.host`); without it the model assumes fully
 * allocated files (as a plain copy is), where QEMU never detects preallocation. Small images with
 * large clusters written by QEMU itself usually are sparse enough to trigger it.
 */
import { compressedDescriptor, l2HostOffset } from '../format/index.ts';
import { EIO, ModelError } from './errors.ts';
import type { Image } from './image.ts';
import { l1Entry, readL2Entry, statesOf } from './mapping.ts';
import { getRefcount } from './refcount.ts';
import { beginTx, geo, type Tx } from './tx.ts';

/** One extent of the guest address space, as one object of `qemu-img map --output=json`. */
export interface MapExtent {
  readonly start: bigint;
  readonly length: bigint;
  /** Backing layers descended to find the layer that answers for the range (0 = this image). */
  readonly depth: number;
  /** Allocated in the layer at `depth` (data or zeros recorded there). */
  readonly present: boolean;
  /** Reads as zeros. */
  readonly zero: boolean;
  /** Holds data (not known to be zeros). */
  readonly data: boolean;
  /** Host offset in the answering layer's data-holding file; absent for compressed, zero-plain and unallocated. */
  readonly offset?: bigint;
}

/** How a host file is stored: what `stat` and SEEK_DATA/SEEK_HOLE say about it. */
export interface HostAllocation {
  /** The file's length in bytes. */
  readonly length: bigint;
  /** Bytes allocated on the file system (st_blocks × 512). */
  readonly allocatedBytes: bigint;
  /** The ranges [start, end) that hold data (SEEK_DATA..SEEK_HOLE), sorted and disjoint; the rest is holes. */
  readonly data: readonly (readonly [bigint, bigint])[];
}

/** What `mapImage` may know beyond the image itself. */
export interface MapOptions {
  /** Allocation of the qcow2 file (decides QEMU's metadata-preallocation detection). */
  readonly host?: HostAllocation;
  /** Allocation of the external data file (where holes are looked up for data-file images). */
  readonly dataFileHost?: HostAllocation;
  /**
   * QEMU's metadata-preallocation decision, when the caller already has it. QEMU makes it once per
   * open, at the first block-status query (qcow2_co_block_status: metadata_preallocation_checked),
   * from the file as it was then; a caller that keeps an image open (an NBD server) passes that
   * decision here (detectMetadataPreallocation) with `host` as the file is now. Default: decided
   * from `host` on each call, as for a freshly opened image.
   */
  readonly metadataPreallocated?: boolean;
}

/** Whether qemu-img would merge `b` onto the end of `a` (qemu-img.c entry_mergeable). */
function mergeable(a: MapExtent, b: MapExtent): boolean {
  if (a.start + a.length !== b.start) return false;
  if (a.depth !== b.depth || a.present !== b.present || a.zero !== b.zero || a.data !== b.data) return false;
  if ((a.offset === undefined) !== (b.offset === undefined)) return false;
  return a.offset === undefined || a.offset + a.length === b.offset;
}

/** Appends `e` to `out`, merging it into the last extent when qemu-img would. */
function push(out: MapExtent[], e: MapExtent): void {
  if (e.length <= 0n) return;
  const last = out[out.length - 1];
  if (last !== undefined && mergeable(last, e)) {
    // Every extent in `out` is a fresh object of this module's making (never one a backing source
    // returned), so growing it in place is safe — and a whole-disk map merges millions of times.
    (last as { length: bigint }).length = last.length + e.length;
  } else {
    out.push(e);
  }
}

/**
 * An unallocated range [start, start+length) of the layer at `depth`: the backing layer's extents
 * (depth + 1) where the backing layer reaches, ZERO at this depth past its end or without one.
 * `offset` is the host offset an unallocated-alloc subcluster keeps (reported only at this depth).
 */
function unallocated(img: Image, start: bigint, length: bigint, depth: number, offset: bigint | undefined, out: MapExtent[]): void {
  const b = img.backing;
  const backingEnd = b === undefined ? start : b.size;
  if (b !== undefined && start < backingEnd) {
    const n = start + length <= backingEnd ? length : backingEnd - start;
    const inner = b.map !== undefined
      ? b.map(start, n)
      // A backing source without a map is a raw file without holes: all data, at its own offsets.
      : [{ start, length: n, depth: 0, present: true, zero: false, data: true, offset: start }];
    for (const e of inner) push(out, { ...e, depth: e.depth + depth + 1 });
    if (n === length) return;
    // bdrv_co_block_status clips at the backing layer's end; the rest starts past it (ZERO here).
    unallocated(img, start + n, length - n, depth, offset === undefined ? undefined : offset + n, out);
    return;
  }
  push(out, { start, length, depth, present: false, zero: true, data: false, ...(offset !== undefined ? { offset } : {}) });
}

/**
 * A normal (data) range whose host bytes are looked up in the host file (BDRV_BLOCK_RECURSE in
 * block/io.c): data parts stay data, holes and bytes past the end of the file become `zero: true`.
 */
function recurse(start: bigint, length: bigint, host: bigint, file: HostAllocation, out: MapExtent[]): void {
  let at = 0n;
  const piece = (n: bigint, zero: boolean): void => {
    if (n <= 0n) return;
    push(out, { start: start + at, length: n, depth: 0, present: true, zero, data: true, offset: host + at });
    at += n;
  };
  for (const [a, b] of file.data) {
    if (at >= length) break;
    if (b <= host + at) continue;
    const dataFrom = a > host + at ? a : host + at;
    if (dataFrom >= host + length) break;
    piece(dataFrom - (host + at), true);
    const dataTo = b < host + length ? b : host + length;
    piece(dataTo - (host + at), false);
  }
  piece(length - at, true);
}

/**
 * metadataPreallocated's answers per image and host allocation. Both are immutable, so this is a
 * cache of a pure function: a backing image's `map` (imageBackingSource) is called once per
 * unallocated range of the overlay, and counting the refcounts of its whole file each time made a
 * map over a qcow2 backing chain quadratic.
 */
const preallocatedCache = new WeakMap<Image, WeakMap<HostAllocation, boolean>>();

/** qcow2_detect_metadata_preallocation: do more clusters have a refcount than the file has allocated? */
/**
 * qcow2_detect_metadata_preallocation: whether QEMU, opening `image` stored as `host` says, treats it
 * as metadata-preallocated — more clusters have a refcount than the file has allocated — and so
 * looks up the host file's holes inside data clusters (see the top of this file).
 */
export function detectMetadataPreallocation(image: Image, host: HostAllocation): boolean {
  return metadataPreallocated(image, host);
}

function metadataPreallocated(image: Image, host: HostAllocation): boolean {
  let byHost = preallocatedCache.get(image);
  if (byHost === undefined) preallocatedCache.set(image, (byHost = new WeakMap()));
  let answer = byHost.get(host);
  if (answer === undefined) byHost.set(host, (answer = countPreallocated(beginTx(image), host)));
  return answer;
}

function countPreallocated(tx: Tx, host: HostAllocation): boolean {
  const cs = BigInt(geo(tx).clusterSize);
  const realClusters = host.allocatedBytes / cs;
  const a = (realClusters * 10n) / 9n;
  const threshold = a > realClusters + 2n ? a : realClusters + 2n;
  // bdrv_getlength counts whole sectors.
  const fileLength = (host.length + 511n) & ~511n;
  const endCluster = (fileLength + cs - 1n) / cs;
  let count = 0n;
  for (let i = 0n; i < endCluster && count < threshold; i++) if (getRefcount(tx, i) !== 0n) count++;
  return count >= threshold;
}

function mapRange(tx: Tx, start: bigint, length: bigint, holes: HostAllocation | undefined, out: MapExtent[]): void {
  const img = tx.img;
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const l2Span = cs * BigInt(g.l2Entries);
  const end = start + length;
  const scSize = BigInt(g.clusterSize / g.subclusters);
  // Consecutive unallocated-plain ranges are looked up in the backing layer as one range (the
  // result is the same after merging; one backing lookup per cluster made maps over backing chains slow).
  let plainFrom = 0n;
  let plainTo = 0n;
  const flushPlain = (): void => {
    if (plainTo > plainFrom) unallocated(img, plainFrom, plainTo - plainFrom, 0, undefined, out);
    plainFrom = plainTo = 0n;
  };
  const addPlain = (from: bigint, to: bigint): void => {
    if (plainTo !== from) {
      flushPlain();
      plainFrom = from;
    }
    plainTo = to;
  };
  let at = start;
  while (at < end) {
    const l1Index = Number(at / l2Span);
    const tableEnd = (BigInt(l1Index) + 1n) * l2Span;
    const stop = tableEnd < end ? tableEnd : end;
    const { l2Offset } = l1Entry(tx, l1Index);
    if (l2Offset === 0n) {
      addPlain(at, stop);
      at = stop;
      continue;
    }
    while (at < stop) {
      const l2Index = Number((at % l2Span) / cs);
      const entry = readL2Entry(tx, l2Offset, l2Index);
      const states = statesOf(tx, entry);
      const clusterStart = at - (at % cs);
      const clusterEnd = clusterStart + cs < stop ? clusterStart + cs : stop;
      const clusterHost = l2HostOffset(entry);
      for (let sc = 0; sc < states.length; sc++) {
        const scStart = clusterStart + BigInt(sc) * (states.length === 1 ? cs : scSize);
        const scEnd0 = states.length === 1 ? clusterStart + cs : scStart + scSize;
        const from = scStart > at ? scStart : at;
        const to = scEnd0 < clusterEnd ? scEnd0 : clusterEnd;
        if (from >= to) continue;
        const len = to - from;
        const state = states[sc]!;
        if (state === 'unallocated-plain') {
          addPlain(from, to);
          continue;
        }
        flushPlain();
        const host = clusterHost + (from - clusterStart);
        switch (state) {
          case 'normal':
            if (holes === undefined) push(out, { start: from, length: len, depth: 0, present: true, zero: false, data: true, offset: host });
            else recurse(from, len, host, holes, out);
            break;
          case 'compressed':
            compressedDescriptor(entry, g.clusterBits);
            push(out, { start: from, length: len, depth: 0, present: true, zero: false, data: true });
            break;
          case 'zero-plain':
          case 'zero-alloc':
            if (img.header.version < 3) {
              throw new ModelError('corrupt', EIO, `Zero cluster entry found in pre-v3 image (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${l2Index.toString(16)})`);
            }
            push(out, { start: from, length: len, depth: 0, present: true, zero: true, data: false, ...(state === 'zero-alloc' ? { offset: host } : {}) });
            break;
          case 'unallocated-alloc':
            unallocated(img, from, len, 0, host, out);
            break;
          case 'invalid':
            throw new ModelError('corrupt', EIO, `Invalid cluster entry found  (L2 offset: 0x${l2Offset.toString(16)}, L2 index: 0x${l2Index.toString(16)})`);
        }
      }
      at = clusterEnd;
    }
  }
  flushPlain();
}

/**
 * The extents of `[offset, offset + length)` of `image` (default: the whole disk) in guest order,
 * merged as `qemu-img map --output=json` merges them; together they cover the range exactly.
 * `opts` supplies the host files' allocation for QEMU's hole refinement (see the top of this file).
 * Throws ModelError('corrupt') where QEMU's map fails (invalid entries, zero flag in a v2 image) and
 * ModelError('out-of-range') for a range past the virtual size.
 */
export function mapImage(image: Image, offset = 0n, length?: bigint, opts: MapOptions = {}): MapExtent[] {
  const len = length ?? image.header.size - offset;
  if (offset < 0n || len < 0n || offset + len > image.header.size) {
    throw new ModelError('out-of-range', EIO, `map of ${len} bytes at ${offset} is beyond the end of the ${image.header.size}-byte disk`);
  }
  const out: MapExtent[] = [];
  const tx = beginTx(image);
  const holesIn = geo(tx).externalDataFile ? opts.dataFileHost : opts.host;
  const preallocated = opts.metadataPreallocated ?? (opts.host !== undefined && metadataPreallocated(image, opts.host));
  const recurseInto = preallocated && holesIn !== undefined ? holesIn : undefined;
  mapRange(tx, offset, len, recurseInto, out);
  return out;
}
