/**
 * The rules of QEMU 7.2 the model property assumes, restated independently of the model's code and
 * read from the image file through the generated decoders and src/format: which writes link new
 * clusters (and so set the dirty bit with lazy refcounts), which resizes QEMU refuses or may fail
 * part-way, and the refusals on external-data-file images. The property's expectations come from
 * here, never from the model.
 */
import { decodeL1EntryFields, decodeL2EntryFields, IncompatibleFeatureMask, L1_ENTRY_FIXED_SIZE } from '../../generated/qcow2.ts';
import { classifyL2Entry, l1L2Offset, l2EntryWords, type L2EntryClass } from '../../src/format/entries.ts';
import { BDRV_MAX_LENGTH, INT64_MAX, QCOW_MAX_L1_SIZE } from '../../src/format/limits.ts';
import { readHost } from '../../src/model/host-file.ts';
import type { Image } from '../../src/model/image.ts';
import { KiB, MiB, TiB, pattern, type Geo } from './model-configs.ts';
import { type Model, show, type DirtyRule } from './model-checks.ts';
import { place, ResizeCmd, SnapshotCmd } from './model-cmds.ts';

/** Whether `img` has extended L2 entries (incompatible bit 4). */
function extendedL2(img: Image): boolean {
  return (img.header.incompatibleFeatures & IncompatibleFeatureMask.EXTENDED_L2) !== 0n;
}

/** The L2 table offset of active L1 entry `index`, read from the file with the generated decoder (0n: none). */
function l2TableOffset(img: Image, index: bigint): bigint {
  const h = img.header;
  const entry = readHost(img.file, h.l1TableOffset + index * BigInt(L1_ENTRY_FIXED_SIZE), L1_ENTRY_FIXED_SIZE);
  return l1L2Offset(decodeL1EntryFields(entry, 0, { clusterBits: h.clusterBits, extendedL2: extendedL2(img) }));
}

/** The cluster offsets of the L2 tables the active L1 table points at, read from the file. */
export function activeL2Tables(img: Image): Set<bigint> {
  const out = new Set<bigint>();
  for (let i = 0n; i < BigInt(img.header.l1Size); i++) {
    const l2 = l2TableOffset(img, i);
    if (l2 !== 0n) out.add(l2);
  }
  return out;
}

/**
 * The L2 entry mapping guest `offset`, classified as QEMU's qcow2_get_cluster_type does
 * (src/format/entries.ts), with its extended-L2 subcluster bitmap (0 without) — read straight from
 * the image file (the header's L1 table, then the L2 table), not through the model's code; undefined
 * when the L1 entry points at no L2 table.
 */
export function l2EntryAt(img: Image, offset: bigint): { readonly entry: L2EntryClass; readonly bitmap: bigint } | undefined {
  const h = img.header;
  const ext = extendedL2(img);
  const cs = 1n << BigInt(h.clusterBits);
  const entryBytes = ext ? 16n : 8n;
  const l2Entries = cs / entryBytes;
  const l1Index = offset / (cs * l2Entries);
  if (l1Index >= BigInt(h.l1Size)) return undefined;
  const l2 = l2TableOffset(img, l1Index);
  if (l2 === 0n) return undefined;
  const bytes = readHost(img.file, l2 + ((offset / cs) % l2Entries) * entryBytes, Number(entryBytes));
  const fields = decodeL2EntryFields(bytes, 0, { clusterBits: h.clusterBits, extendedL2: ext });
  const ctx = { clusterBits: h.clusterBits, extendedL2: ext, externalDataFile: (h.incompatibleFeatures & IncompatibleFeatureMask.EXTERNAL_DATA_FILE) !== 0n };
  return { entry: classifyL2Entry(fields, ctx), bitmap: l2EntryWords(fields).bitmap ?? 0n };
}

/** Whether the cluster holding guest `offset` is compressed (read from the file). */
export function compressedAt(img: Image, offset: bigint): boolean {
  return l2EntryAt(img, offset)?.entry.kind === 'compressed';
}

/**
 * Whether the cluster holding guest `offset` is a NORMAL data cluster by its L2 entry (QEMU 7.2
 * qcow2_get_cluster_type): not compressed, not a zero cluster (standard L2), and a host offset — with
 * an external data file, offset 0 with COPIED set. With extended L2 the subclusters may still be
 * unallocated or zero (`bitmap`).
 */
export function normalAt(img: Image, offset: bigint): { readonly copied: boolean; readonly bitmap: bigint } | undefined {
  const e = l2EntryAt(img, offset);
  return e?.entry.kind === 'normal' ? { copied: e.entry.copied, bitmap: e.bitmap } : undefined;
}

/**
 * Whether a guest write of [offset, offset + length) links new clusters into an L2 table — QEMU 7.2's
 * qcow2_alloc_cluster_link_l2, where lazy refcounts mark the image dirty — restated from QEMU's rules
 * over the entries in the file: a cluster is overwritten in place only when it is NORMAL with COPIED
 * set (cluster_needs_new_alloc false → handle_copied) and, with extended L2, every subcluster written
 * is allocated (calculate_l2_meta with keep_old: anything else needs an L2 update); every other
 * cluster is allocated (handle_alloc) and linked.
 */
export function writeLinks(img: Image, offset: bigint, length: bigint): boolean {
  if (length <= 0n) return false;
  const h = img.header;
  const cs = 1n << BigInt(h.clusterBits);
  const ext = (h.incompatibleFeatures & IncompatibleFeatureMask.EXTENDED_L2) !== 0n;
  const sc = ext ? cs / 32n : cs;
  const end = offset + length;
  for (let c = offset / cs; c * cs < end; c++) {
    const n = normalAt(img, c * cs);
    if (n === undefined || !n.copied) return true;
    if (!ext) continue;
    const from = (offset > c * cs ? offset : c * cs) - c * cs;
    const to = (end < (c + 1n) * cs ? end : (c + 1n) * cs) - c * cs;
    for (let i = from / sc; i <= (to - 1n) / sc; i++) if (((n.bitmap >> i) & 1n) === 0n) return true;
  }
  return false;
}

/**
 * Whether QEMU's block layer may turn (part of) a write_zeroes into an explicit write of zeros, which
 * links clusters like a write (DirtyRule 'may-set'): a piece not aligned to subclusters (the unaligned
 * end at the end of the disk excepted), or with extended L2 a piece of a cluster (zero_l2_subclusters
 * refuses a compressed cluster). Version 2 with a backing file too, but lazy refcounts need v3.
 */
export function zeroMayWrite(g: Geo, size: bigint, offset: bigint, length: bigint): boolean {
  if (length <= 0n) return false;
  const end = offset + length;
  if (offset % g.sc !== 0n || (end % g.sc !== 0n && end !== size)) return true;
  return g.extendedL2 && (offset % g.cs !== 0n || (end % g.cs !== 0n && end !== size));
}

/** QEMU's limit on L1 entries (qcow2_grow_l1_table: QCOW_MAX_L1_SIZE bytes of 8-byte entries). */
export const QCOW_MAX_L1_ENTRIES = BigInt(QCOW_MAX_L1_SIZE / L1_ENTRY_FIXED_SIZE);

/**
 * Cost bounds of a resize in the property (the model does what QEMU does, and some of it is linear in
 * the range): a shrink fetches (allocates) one L2 table per L1 entry between the new and the old end,
 * so at most MAX_SHRINK_L2_TABLES tables and MAX_SHRINK_L2_BYTES of them (at least one); a grow keeps
 * the L1 table at most MAX_L1_ENTRIES entries (256 KiB) and the disk at most MAX_GROWN_SIZE, and a
 * grow the backing file shows through zero-fills at most MAX_ZERO_FILL_CLUSTERS clusters.
 */
export const MAX_SHRINK_L2_TABLES = 64n;

export const MAX_SHRINK_L2_BYTES = 256n * KiB;

export const MAX_L1_ENTRIES = 32768n;

export const MAX_GROWN_SIZE = 16n * TiB;

export const MAX_ZERO_FILL_CLUSTERS = 4096n;

/**
 * The valid size a resize from `from` towards `to` (both multiples of 512, positive) is clamped to by
 * the cost bounds: a shrink stops at the lowest L1-entry boundary within the table budget (keeping
 * `to`'s offset inside its cluster where that is still below `from`), a grow at the L1 and zero-fill
 * budgets. Returns `to` itself when it is within them.
 */
export function cheapResizeSize(g: Geo, backingSize: bigint | undefined, from: bigint, to: bigint): bigint {
  const cs = g.cs;
  if (to > from) {
    let t = to;
    const byL1 = MAX_L1_ENTRIES * g.perL2;
    const l1Max = byL1 < MAX_GROWN_SIZE ? byL1 : MAX_GROWN_SIZE;
    if (t > l1Max) t = l1Max > from ? l1Max : from;
    if (backingSize !== undefined && backingSize > from) {
      const zMax = (from / cs + MAX_ZERO_FILL_CLUSTERS) * cs;
      if (t > zMax) t = zMax;
    }
    return t;
  }
  if (to < from) {
    const budget = MAX_SHRINK_L2_BYTES / cs < MAX_SHRINK_L2_TABLES ? MAX_SHRINK_L2_BYTES / cs : MAX_SHRINK_L2_TABLES;
    const maxTables = budget < 1n ? 1n : budget;
    const lowest = ((from + g.perL2 - 1n) / g.perL2 - maxTables) * g.perL2;
    if (((to + cs - 1n) / cs) * cs >= lowest) return to;
    const t = lowest + (to % cs);
    return t < from ? t : lowest;
  }
  return to;
}

/** What a ResizeCmd resizes to, relative to the size when it runs (plain data, so it prints). */
export type ResizeTarget =
  /** An absolute size (valid: clamped to at least 512 and by the cost bounds). */
  | { readonly to: 'size'; readonly size: bigint }
  /** The current size plus `delta` (a multiple of 512, negative shrinks). */
  | { readonly to: 'delta'; readonly delta: bigint }
  /** The current size rounded down to a cluster, plus `clusters` clusters and `plus` bytes (multiple of 512). */
  | { readonly to: 'clusters'; readonly clusters: bigint; readonly plus: bigint }
  /** `plus` bytes past the largest size whose L1 table fits one cluster: the L1 needs a second cluster. */
  | { readonly to: 'l1'; readonly plus: bigint }
  /** Refused: an invalid absolute size (0, negative, past INT64_MAX or the block layer's maximum). */
  | { readonly to: 'invalid'; readonly size: bigint }
  /** Refused: the current size plus 1..511. */
  | { readonly to: 'unaligned'; readonly plus: bigint }
  /** Refused: a size whose L1 table would exceed QEMU's 32 MiB, `512 + plus` bytes past the limit. */
  | { readonly to: 'l1-too-large'; readonly plus: bigint };

/** The size a target resolves to on a disk of `from` bytes (see ResizeTarget; valid kinds clamped by cost). */
export function resolveResize(t: ResizeTarget, g: Geo, backingSize: bigint | undefined, from: bigint): bigint {
  const valid = (n: bigint): bigint => cheapResizeSize(g, backingSize, from, n < 512n ? 512n : n);
  switch (t.to) {
    case 'size':
      return valid(t.size);
    case 'delta':
      return valid(from + t.delta);
    case 'clusters':
      return valid((from / g.cs + t.clusters) * g.cs + t.plus);
    case 'l1':
      return valid((g.cs / 8n) * g.perL2 + t.plus);
    case 'invalid':
      return t.size;
    case 'unaligned':
      return from + t.plus;
    case 'l1-too-large':
      return QCOW_MAX_L1_ENTRIES * g.perL2 + 512n + t.plus;
  }
}

/**
 * A grow whose zero-fill QEMU cannot do (block/qcow2.c qcow2_co_truncate with BDRV_REQ_ZERO_WRITE, which
 * bdrv_co_truncate adds when a backing file longer than the old size would show through): zero flags
 * are needed from the first subcluster boundary at or after the old size up to the new size, and
 * version 2 has none; with extended L2, the subclusters of a partial cluster at that boundary cannot be
 * zeroed when the cluster is compressed (zero_l2_subclusters: -ENOTSUP).
 */
export function zeroFillFails(model: Model, img: Image, from: bigint, to: bigint): boolean {
  const b = model.disk.backing;
  const g = model.geo;
  if (b === undefined || b.size <= from || to <= from) return false;
  const zeroStart = ((from + g.sc - 1n) / g.sc) * g.sc;
  if (to <= zeroStart) return false;
  if (g.version === 2) return true;
  return g.extendedL2 && zeroStart % g.cs !== 0n && compressedAt(img, zeroStart);
}

/**
 * The dirty bit after a grow from `from` to `to` bytes (DirtyRule): when the backing file would show
 * through, QEMU 7.2's qcow2_co_truncate zeroes the new area with zero flags from the first subcluster
 * boundary at or after `from`, and writes explicit zeros — a guest write (qcow2_co_pwritev_part) —
 * over the unaligned head [from, that boundary); that write marks a lazy image dirty exactly when it
 * links clusters (writeLinks). Every other resize keeps the bit.
 */
export function growDirtyRule(model: Model, img: Image, from: bigint, to: bigint): DirtyRule {
  const b = model.disk.backing;
  const g = model.geo;
  if (b === undefined || b.size <= from || to <= from || from % g.sc === 0n) return 'keep';
  const zeroStart = ((from + g.sc - 1n) / g.sc) * g.sc;
  const headEnd = zeroStart < to ? zeroStart : to;
  return writeLinks(img, from, headEnd - from) ? 'set' : 'keep';
}

/** QEMU's refusal of `qemu-img resize` from `from` to `to` bytes (its rules, restated), or undefined. */
export function expectedResizeRefusal(model: Model, img: Image, from: bigint, to: bigint): ExpectedRefusal | undefined {
  if (to <= 0n || to > INT64_MAX) return { label: 'size not positive', code: 'unsupported', message: /^New image size must be positive$/ };
  if (to > BDRV_MAX_LENGTH) return { label: 'past the maximum', code: 'too-big', message: /^offset\(\d+\) exceeds maximum\(9223372035781033984\)$/ };
  if (to % 512n !== 0n) return { label: 'not a multiple of 512', code: 'unsupported', message: /^The new size must be a multiple of 512$/ };
  const g = model.geo;
  if (g.version === 2 && model.disk.snapshotNames.length > 0) return { label: 'v2 with snapshots', code: 'unsupported', message: /^Can't resize a v2 image which has snapshots$/ };
  if (to > from && (to + g.perL2 - 1n) / g.perL2 > QCOW_MAX_L1_ENTRIES) return { label: 'L1 over 32 MiB', code: 'too-big', message: /^Failed to grow the L1 table: File too large$/ };
  if (zeroFillFails(model, img, from, to)) return { label: 'zero-fill impossible', code: 'unsupported', message: /^Failed to zero out new clusters: Operation not supported$/ };
  return undefined;
}

/** A refusal QEMU gives: a short label (for the coverage counts), the model's error code and QEMU's message. */
export interface ExpectedRefusal {
  readonly label: string;
  readonly code: string;
  readonly message: RegExp;
}

/** Refcount blocks the reftable points at, read from the file. */
export function liveRefblocks(img: Image): number {
  const h = img.header;
  const t = readHost(img.file, h.refcountTableOffset, h.refcountTableClusters << h.clusterBits);
  const v = new DataView(t.buffer, t.byteOffset, t.length);
  let n = 0;
  for (let i = 0; i + 8 <= t.length; i += 8) if (v.getBigUint64(i) !== 0n) n++;
  return n;
}

/**
 * Snapshot create / apply / delete by name. Names are unique in the oracle, so a create is generated
 * only for a free name and apply/delete only for an existing one. Creating or applying can fail when
 * a refcount would overflow (narrow refcount_bits): QEMU then keeps what it did so far (a new L1
 * leaks, some refcounts stay raised, the guest content is unchanged), the model returns that image,
 * and the oracle is unchanged — except that an apply resizes the disk to the snapshot's size first
 * (QEMU 7.2 qcow2_snapshot_goto: blk_truncate, the same path as `qemu-img resize`), so when it fails
 * after that the oracle is resized too. An apply whose resize is beyond the cost bounds of ResizeCmd
 * is skipped (check); one whose zero-fill QEMU cannot do (see zeroFillFails) must be refused like the
 * resize and change no read.
 * On an image with an external data file QEMU 7.2 refuses internal snapshots (measured,
 * test/qemu/model-data-file.test.ts): every create, apply and delete runs and must be refused with
 * QEMU's errno and message (dataFileSnapshotRefusal) and change nothing.
 */
/** ENOTSUP and ENOENT as QEMU returns them. */
export const ENOTSUP_ERRNO = -95;

export const ENOENT_ERRNO = -2;

/**
 * qemu-img 7.2's refusal of an internal snapshot op on an image with an external data file (measured,
 * test/qemu/model-data-file.test.ts): create and apply fail with ENOTSUP; delete finds no snapshot (such an
 * image cannot have one).
 */
export function dataFileSnapshotRefusal(kind: SnapshotCmd['kind'], name: string): ExpectedRefusal & { readonly errno: number } {
  const q = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  switch (kind) {
    case 'snapshotCreate':
      return { label: 'data file: snapshot create', code: 'unsupported', errno: ENOTSUP_ERRNO, message: new RegExp(`^Could not create snapshot '${q}': -95 \\(Operation not supported\\)$`) };
    case 'snapshotApply':
      return { label: 'data file: snapshot apply', code: 'unsupported', errno: ENOTSUP_ERRNO, message: new RegExp(`^Could not apply snapshot '${q}': Failed to load snapshot: Operation not supported$`) };
    case 'snapshotDelete':
      return { label: 'data file: snapshot delete', code: 'unsupported', errno: ENOENT_ERRNO, message: new RegExp(`^Could not delete snapshot '${q}': snapshot not found$`) };
  }
}

/**
 * The dirty bit after a compressed write (DirtyRule): QEMU 7.2 writes a cluster whose data does not
 * compress to less than a cluster as a normal cluster (qcow2_co_pwritev_compressed_task: -ENOMEM from
 * qcow2_co_compress → qcow2_co_pwritev_part), which links it like any write; a compressed cluster is
 * linked without marking the image dirty. 'runs' data always compresses ('keep'); 'noise' never does
 * when it fills the cluster (a write, 'set' exactly when it links: writeLinks) — a partial last
 * cluster is padded with zeros and may compress; 'pattern' depends on the compressor ('may-set').
 */
export function compressedDirtyRule(g: Geo, img: Image, p: { offset: bigint; length: bigint }, mode: 'runs' | 'pattern' | 'noise'): DirtyRule {
  if (mode === 'runs') return 'keep';
  if (mode === 'pattern') return 'may-set';
  const whole = (p.length / g.cs) * g.cs;
  if (writeLinks(img, p.offset, whole)) return 'set';
  return whole === p.length ? 'keep' : 'may-set';
}
