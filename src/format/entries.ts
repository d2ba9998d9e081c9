/**
 * The meaning of table entries, one level above the generated layer: which kind of cluster an L2
 * entry describes, where its data is, what each extended-L2 subcluster reads as, and the offsets
 * held by L1 and refcount-table entries. Pure functions over the generated field objects; every
 * offset is an exact bigint (nothing rounds above 2^53).
 *
 * Rules follow QEMU's qcow2_get_cluster_type / qcow2_get_subcluster_type
 * (see docs/format/mapping.md#l1-entries through #subcluster-types, and docs/format/refcounts.md#refcount-table).
 */
import {
  L1EntryMasks, L1EntryShifts, L2EntryMasks, L2EntryShifts, type L1EntryFields, type L2EntryFields, type RefcountTableEntryFields,
  type U64Fields,
} from '../../generated/qcow2.ts';
import { offsetFromParts, u64ToBigInt } from './u64.ts';

/** What decides how an L2 entry is read, besides its bits. */
export interface L2Context {
  /** log2 of the cluster size (9..21); decides the compressed descriptor's split. */
  readonly clusterBits: number;
  /** Incompatible bit 4: 128-bit entries; the ZERO flag (bit 0) is then ignored. */
  readonly extendedL2: boolean;
  /** Incompatible bit 2: an entry with COPIED set and offset 0 is a NORMAL cluster at host offset 0. */
  readonly externalDataFile: boolean;
}

/** A compressed cluster descriptor (bits 0..61 of an L2 entry whose bit 62 is set). */
export interface CompressedDescriptor {
  /** Host byte offset of the first compressed byte (not aligned). */
  readonly hostOffset: bigint;
  /** Number of 512-byte sectors after the one holding the first byte. */
  readonly additionalSectors: number;
  /** Bytes QEMU reads starting at hostOffset: (additionalSectors + 1) * 512 - (hostOffset & 511). */
  readonly compressedBytes: number;
}

/** The kind of cluster a (standard) L2 entry describes, with its exact host location. */
export type L2EntryClass =
  | { readonly kind: 'unallocated'; readonly copied: boolean }
  | { readonly kind: 'zero-plain'; readonly copied: boolean }
  | { readonly kind: 'zero-alloc'; readonly copied: boolean; readonly hostOffset: bigint }
  | { readonly kind: 'normal'; readonly copied: boolean; readonly hostOffset: bigint }
  | ({ readonly kind: 'compressed'; readonly copied: boolean } & CompressedDescriptor);

/** The kind of an L2 entry: 'unallocated' | 'zero-plain' | 'zero-alloc' | 'normal' | 'compressed'. */
export type L2EntryKind = L2EntryClass['kind'];

/** What one extended-L2 subcluster reads as (QEMU's QCow2SubclusterType). */
export type SubclusterState =
  | 'unallocated-plain'
  | 'unallocated-alloc'
  | 'zero-plain'
  | 'zero-alloc'
  | 'normal'
  | 'compressed'
  | 'invalid';

/** Number of subclusters per cluster with extended L2 entries. */
export const SUBCLUSTERS_PER_CLUSTER = 32;

/**
 * The host cluster offset of a standard (bit 62 clear) L2 descriptor: bits 9..55, exact.
 * Returns 0n for a compressed entry (whose bits mean something else).
 */
export function l2HostOffset(entry: L2EntryFields): bigint {
  if (entry.compressed) return 0n;
  return offsetFromParts(entry.hostOffsetHi ?? 0, entry.hostOffsetLo ?? 0);
}

/**
 * Decodes the compressed descriptor of an entry whose bit 62 is set, for clusters of
 * 2^clusterBits bytes: x = 62 - (clusterBits - 8) bits of host byte offset, then the
 * additional-sector count up to bit 61 (docs/format/mapping.md#compressed-clusters). Throws RangeError if `entry.compressed` is false.
 */
export function compressedDescriptor(entry: L2EntryFields, clusterBits: number): CompressedDescriptor {
  if (!entry.compressed) throw new RangeError('compressedDescriptor: entry is not compressed');
  const hi = (entry.compressedHi ?? 0) >>> 0;
  const lo = (entry.compressedLo ?? 0) >>> 0;
  // x - 32: the sector count starts at this bit of the 30-bit high part.
  const shift = 38 - clusterBits;
  const additionalSectors = hi >>> shift;
  const offsetHi = shift >= 32 ? hi : hi & ((1 << shift) - 1);
  const hostOffset = (BigInt(offsetHi) << 32n) | BigInt(lo);
  const compressedBytes = (additionalSectors + 1) * 512 - (lo & 511);
  return { hostOffset, additionalSectors, compressedBytes };
}

/**
 * Classifies word 0 of an L2 entry like QEMU's qcow2_get_cluster_type: bit 62 first (compressed;
 * bit 0 is then part of the offset), then the ZERO flag (only without extended L2: zero-plain if the
 * offset is 0, else zero-alloc), then offset 0 = unallocated — except with an external data file,
 * where COPIED with offset 0 is a normal cluster at host offset 0 — else normal.
 */
export function classifyL2Entry(entry: L2EntryFields, ctx: L2Context): L2EntryClass {
  const copied = entry.copied;
  if (entry.compressed) return { kind: 'compressed', copied, ...compressedDescriptor(entry, ctx.clusterBits) };
  const hostOffset = l2HostOffset(entry);
  if (entry.zero === true && !ctx.extendedL2) {
    return hostOffset === 0n ? { kind: 'zero-plain', copied } : { kind: 'zero-alloc', copied, hostOffset };
  }
  if (hostOffset === 0n) {
    if (ctx.externalDataFile && copied) return { kind: 'normal', copied, hostOffset };
    return { kind: 'unallocated', copied };
  }
  return { kind: 'normal', copied, hostOffset };
}

/**
 * The 32 subcluster states of an extended L2 entry (index n = subcluster n), as QEMU's
 * qcow2_get_subcluster_type decides them: compressed entries are 'compressed' throughout;
 * an allocated entry with any subcluster both allocated and zero is 'invalid' throughout, else
 * zero bit → zero-alloc, alloc bit → normal, neither → unallocated-alloc; an unallocated entry with
 * any alloc bit is 'invalid' throughout, else zero bit → zero-plain, else unallocated-plain.
 * For a standard entry (no bitmaps) returns one state for the whole cluster.
 */
export function subclusterStates(entry: L2EntryFields, ctx: L2Context): SubclusterState[] {
  const cls = classifyL2Entry(entry, ctx);
  if (!ctx.extendedL2 || entry.zeroBitmap === undefined || entry.allocBitmap === undefined) {
    const whole: SubclusterState =
      cls.kind === 'unallocated' ? 'unallocated-plain' : cls.kind;
    return [whole];
  }
  const zero = entry.zeroBitmap >>> 0;
  const alloc = entry.allocBitmap >>> 0;
  const all = (s: SubclusterState): SubclusterState[] => new Array<SubclusterState>(SUBCLUSTERS_PER_CLUSTER).fill(s);
  if (cls.kind === 'compressed') return all('compressed');
  const out: SubclusterState[] = [];
  if (cls.kind === 'unallocated') {
    if (alloc !== 0) return all('invalid');
    for (let n = 0; n < SUBCLUSTERS_PER_CLUSTER; n++) out.push(((zero >>> n) & 1) !== 0 ? 'zero-plain' : 'unallocated-plain');
    return out;
  }
  // normal (zero-plain / zero-alloc cannot occur: the ZERO flag is ignored with extended L2)
  if ((zero & alloc) !== 0) return all('invalid');
  for (let n = 0; n < SUBCLUSTERS_PER_CLUSTER; n++) {
    if (((zero >>> n) & 1) !== 0) out.push('zero-alloc');
    else if (((alloc >>> n) & 1) !== 0) out.push('normal');
    else out.push('unallocated-alloc');
  }
  return out;
}

/**
 * Word 0 of an L2 entry as the exact 64-bit value it was decoded from (bits 63..0), and for
 * extended entries the bitmap word (zero bits 63..32, alloc bits 31..0).
 */
export function l2EntryWords(entry: L2EntryFields): { word: bigint; bitmap?: bigint } {
  let word = (entry.copied ? L2EntryMasks.copied : 0n) | (entry.compressed ? L2EntryMasks.compressed : 0n);
  if (entry.compressed) {
    word |= (BigInt((entry.compressedHi ?? 0) >>> 0) << L2EntryShifts.compressedHi) | (BigInt((entry.compressedLo ?? 0) >>> 0) << L2EntryShifts.compressedLo);
  } else {
    word |= BigInt((entry.reservedHi ?? 0) >>> 0) << L2EntryShifts.reservedHi;
    word |= l2HostOffset(entry);
    word |= BigInt((entry.reservedLo ?? 0) >>> 0) << L2EntryShifts.reservedLo;
    word |= entry.zero === true ? L2EntryMasks.zero : 0n;
  }
  if (entry.zeroBitmap === undefined || entry.allocBitmap === undefined) return { word };
  return { word, bitmap: (BigInt(entry.zeroBitmap >>> 0) << L2EntryShifts.zeroBitmap) | (BigInt(entry.allocBitmap >>> 0) << L2EntryShifts.allocBitmap) };
}

/**
 * Reserved bits of a standard L2 descriptor that are set (mask L2EntryMasks.reserved), as a bigint;
 * 0n for compressed entries (their reserved bits are not separable) and clean entries.
 */
export function l2ReservedBits(entry: L2EntryFields): bigint {
  if (entry.compressed) return 0n;
  return (BigInt((entry.reservedHi ?? 0) >>> 0) << L2EntryShifts.reservedHi) | (BigInt((entry.reservedLo ?? 0) >>> 0) << L2EntryShifts.reservedLo);
}

/** The L2 table offset held by an L1 entry (bits 9..55), exact; 0n means no L2 table. */
export function l1L2Offset(entry: L1EntryFields): bigint {
  return offsetFromParts(entry.l2OffsetHi, entry.l2OffsetLo);
}

/** The exact 64-bit value of an L1 entry (COPIED, reserved bits and offset). */
export function l1EntryWord(entry: L1EntryFields): bigint {
  return (
    (entry.copied ? L1EntryMasks.copied : 0n) |
    (BigInt(entry.reservedHi >>> 0) << L1EntryShifts.reservedHi) |
    l1L2Offset(entry) |
    (BigInt(entry.reservedLo >>> 0) << L1EntryShifts.reservedLo)
  );
}

/** Reserved bits of an L1 entry that are set (mask L1EntryMasks.reserved), as a bigint. */
export function l1ReservedBits(entry: L1EntryFields): bigint {
  return (BigInt(entry.reservedHi >>> 0) << L1EntryShifts.reservedHi) | (BigInt(entry.reservedLo >>> 0) << L1EntryShifts.reservedLo);
}

/** The refcount block offset held by a refcount-table entry (bits 9..63), exact; 0n means no block. */
export function refcountBlockOffset(entry: RefcountTableEntryFields): bigint {
  return offsetFromParts(entry.refblockOffsetHi, entry.refblockOffsetLo);
}

/**
 * One refcount as the generated refcount block holds it (boolean for 1-bit, number for 2..32-bit,
 * hi/lo halves for 64-bit) → its exact value.
 */
export function refcountValue(v: boolean | number | U64Fields): bigint {
  if (typeof v === 'boolean') return v ? 1n : 0n;
  if (typeof v === 'number') return BigInt(v >>> 0);
  return u64ToBigInt(v);
}
