/**
 * A catalog of named corruptions of a valid qcow2 image — the metadata inconsistencies `qemu-img
 * check` knows about (docs/format/check.md, the test-060 cases of docs/format/iotests.md#test-060-cases, docs/format/mapping.md for entry rules).
 * Each corruption takes an image (its bytes or a model Image) and an Rng, and either returns the
 * corrupted bytes with an exact account of what was poked (structure, field, file offset, old and new
 * value), its category, and the guest ranges whose content the corruption (or a repair of it) can
 * change — or says it is not applicable, when the image lacks what it needs (no compressed cluster,
 * version 3 only, no snapshot, ...).
 *
 * Structures are found through the image itself (src/corrupt/layout.ts over walkImage): no offset is
 * assumed. Pure: the input is never modified; the same image and the same Rng choices give the same
 * result. Used by test/qemu/corruption-injection.test.ts and by the corpus generator's invalid
 * families.
 */
import {
  CompatibleFeatureMask, encodeSnapshotEntry, HeaderLayout, IncompatibleFeatureMask, L1_ENTRY_FIXED_SIZE, L1EntryMasks,
  L2EntryMasks, RefcountTableEntryMasks, type SnapshotEntryFields,
} from '../../generated/qcow2.ts';
import { QCOW_MAX_L1_SIZE, QCOW_MAX_SNAPSHOT_EXTRA_DATA } from '../format/limits.ts';
import type { Image } from '../model/image.ts';
import { storeImage } from '../model/load-store.ts';
import {
  coveredClusters,
  guestRangeOfL1Index,
  guestRangesOfL2Slot,
  guestRangesUsing,
  l1EntryOffset,
  l2EntryOffset,
  layoutOf,
  readField,
  refcountSlot,
  writeField,
  type ActiveL2Table,
  type FileLayout,
  type GuestRange,
  type MetadataCluster,
  type RefcountSlot,
} from './layout.ts';
import { bigBelow, pick, type Rng } from './rng.ts';

/** What kind of inconsistency a corruption creates. */
export type CorruptionCategory =
  /** An on-disk refcount differs from the references (too low, too high, zero). */
  | 'refcount'
  /** An L1 or L2 entry points at a cluster that holds metadata. */
  | 'pointer'
  /** An offset that must be cluster aligned is not. */
  | 'alignment'
  /** Reserved bits of an L1, L2 or refcount-table entry are set. */
  | 'reserved-bits'
  /** Flags that contradict each other or the version (compressed+COPIED, zero flag in v2). */
  | 'flags'
  /** Extended-L2 subcluster bitmaps that are invalid. */
  | 'subcluster'
  /** An L1, L2 or refcount-table entry points past the end of the file. */
  | 'past-eof'
  /** A snapshot table entry that is broken. */
  | 'snapshot'
  /** The dirty bit with refcounts a crash with lazy refcounts leaves behind. */
  | 'dirty';

/** Every category, in catalog order. */
export const CORRUPTION_CATEGORIES: readonly CorruptionCategory[] = ['refcount', 'pointer', 'alignment', 'reserved-bits', 'flags', 'subcluster', 'past-eof', 'snapshot', 'dirty'];

/** One field written: where, how wide, and the value before and after. */
export interface Poke {
  /** The structure, e.g. `L2 table at 0x50000` or `header`. */
  readonly structure: string;
  /** The field, e.g. `entry 3 (guest 0x30000) word 0`. */
  readonly field: string;
  /** File offset of the field (its first byte). */
  readonly offset: bigint;
  /** Width in bits: 8..64 for big-endian fields, 1, 2 or 4 for packed refcounts. */
  readonly bits: number;
  /** First bit inside the byte for widths below 8 (LSB first); 0 otherwise. */
  readonly shift: number;
  readonly old: bigint;
  readonly new: bigint;
}

/** A corruption that was applied. */
export interface AppliedCorruption {
  readonly kind: 'applied';
  readonly name: CorruptionName;
  readonly category: CorruptionCategory;
  /** The corrupted file (a new array; the input is untouched). */
  readonly bytes: Uint8Array;
  /** Every field written, in order. Snapshot-table rewrites are listed as the byte ranges that changed. */
  readonly pokes: readonly Poke[];
  /**
   * Set when the corruption extended the file first (a rewritten snapshot table running past the old
   * end, inside the clusters the table owns): the new length; the added bytes are zeros before the pokes.
   */
  readonly grewTo?: bigint;
  /** One line saying what was done, naming structures and values. */
  readonly description: string;
  /**
   * Guest ranges of the active disk whose content this corruption can change, directly or through a
   * repair (the entry poked, and every guest cluster whose data lives in a cluster a poked pointer now
   * aims at). Everything else must read as before the corruption, and after any repair.
   */
  readonly affected: readonly GuestRange[];
}

/** A corruption that needs something the image does not have. */
export interface NotApplicable {
  readonly kind: 'not-applicable';
  readonly name: CorruptionName;
  readonly category: CorruptionCategory;
  readonly reason: string;
}

export type CorruptionOutcome = AppliedCorruption | NotApplicable;

/** One named corruption. */
export interface Corruption {
  readonly name: CorruptionName;
  readonly category: CorruptionCategory;
  /** What it does, in a sentence (with the fact-sheet section it follows). */
  readonly title: string;
  readonly apply: (layout: FileLayout, rng: Rng) => CorruptionOutcome;
}

export type CorruptionName =
  | 'refcount-too-low'
  | 'refcount-too-high'
  | 'refcount-zero'
  | 'l2-into-metadata'
  | 'data-into-metadata'
  | 'unaligned-l1-entry'
  | 'unaligned-l2-entry'
  | 'unaligned-refblock-entry'
  | 'reserved-bits-l1'
  | 'reserved-bits-l2'
  | 'reserved-bits-reftable'
  | 'compressed-copied'
  | 'v2-zero-flag'
  | 'compressed-nonzero-bitmap'
  | 'alloc-and-zero-subcluster'
  | 'alloc-bits-on-unallocated'
  | 'l1-entry-past-eof'
  | 'l2-entry-past-eof'
  | 'refblock-past-eof'
  | 'snapshot-l1-unaligned'
  | 'snapshot-l1-too-large'
  | 'snapshot-l1-past-eof'
  | 'snapshot-extra-data-short'
  | 'snapshot-extra-data-too-large'
  | 'dirty-stale-refcounts';

// ---------------------------------------------------------------------------------------------
// Where the header fields are, and how far corruptions reach (entry bits come from the spec: generated/qcow2.ts)

/** Header fields incompatible_features and compatible_features (the spec's HeaderLayout). */
const INCOMPAT_OFFSET = BigInt(HeaderLayout.incompatibleFeatures.offset);
const COMPAT_OFFSET = BigInt(HeaderLayout.compatibleFeatures.offset);
/** Entries QEMU's check accepts in a snapshot L1 (QCOW_MAX_L1_SIZE / 8 = 4 Mi, docs/format/check.md#reference-counting-pass). */
const MAX_L1_ENTRIES = BigInt(QCOW_MAX_L1_SIZE / L1_ENTRY_FIXED_SIZE);
/** A past-EOF pointer lands at most this many clusters beyond the end (QEMU's check sizes its refcount array by it). */
const MAX_PAST_EOF_CLUSTERS = 1n << 20n;
/**
 * A refcount block past the end lands at most this many bytes beyond it: `-r all` extends the file to
 * hold it (docs/format/check.md#-r-all), and the repaired file is read back whole by the property.
 */
const MAX_REFBLOCK_PAST_EOF_BYTES = 64n * 1024n * 1024n;

const hex = (v: bigint): string => `0x${v.toString(16)}`;

// ---------------------------------------------------------------------------------------------
// Poking

/** A copy of the file being corrupted, recording every field it writes. */
class Poker {
  bytes: Uint8Array;
  readonly pokes: Poke[] = [];
  /** The new file length when `grow` extended the file. */
  grewTo: bigint | undefined;

  constructor(readonly layout: FileLayout) {
    this.bytes = layout.bytes.slice();
  }

  read(offset: bigint, bits: number, shift = 0): bigint {
    return readField(this.bytes, offset, bits, shift);
  }

  set(structure: string, field: string, offset: bigint, bits: number, value: bigint, shift = 0): void {
    const old = this.read(offset, bits, shift);
    writeField(this.bytes, offset, bits, value, shift);
    this.pokes.push({ structure, field, offset, bits, shift, old, new: value });
  }

  /** Extends the file with zeros to `length` bytes (no-op when it is that long already). */
  grow(length: bigint): void {
    if (length <= BigInt(this.bytes.length)) return;
    const bigger = new Uint8Array(Number(length));
    bigger.set(this.bytes);
    this.bytes = bigger;
    this.grewTo = length;
  }
}

function applied(
  c: { name: CorruptionName; category: CorruptionCategory },
  p: Poker,
  description: string,
  affected: readonly GuestRange[],
): AppliedCorruption {
  return {
    kind: 'applied',
    name: c.name,
    category: c.category,
    bytes: p.bytes,
    pokes: p.pokes,
    ...(p.grewTo !== undefined ? { grewTo: p.grewTo } : {}),
    description,
    affected: mergeRanges(affected),
  };
}

function notApplicable(c: { name: CorruptionName; category: CorruptionCategory }, reason: string): NotApplicable {
  return { kind: 'not-applicable', name: c.name, category: c.category, reason };
}

/** Sorted, merged, non-empty ranges. */
function mergeRanges(ranges: readonly GuestRange[]): GuestRange[] {
  const sorted = ranges.filter((r) => r.length > 0n).slice().sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
  const out: { offset: bigint; length: bigint }[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.offset <= last.offset + last.length) {
      const end = r.offset + r.length > last.offset + last.length ? r.offset + r.length : last.offset + last.length;
      last.length = end - last.offset;
    } else out.push({ offset: r.offset, length: r.length });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Places to corrupt

/** An entry of the active L1 table or of the refcount table: index, file offset and value. */
interface EntrySlot {
  readonly index: number;
  readonly offset: bigint;
  readonly word: bigint;
}

/**
 * The active L1 entries. `allocated`: only those pointing at an L2 table — 'prefer' falls back to all
 * entries when none does.
 */
function l1Slots(l: FileLayout, allocated: boolean | 'prefer'): EntrySlot[] {
  const l1 = l.activeL1;
  if (l1 === undefined || l1.size === 0) return [];
  const used = l1.entries.filter((e) => e.l2Offset !== 0n).map((e) => ({ index: e.index, offset: l1EntryOffset(l1.offset, e.index), word: e.word }));
  if (allocated === true || (allocated === 'prefer' && used.length > 0)) return used;
  const out: EntrySlot[] = [];
  // Every index of a huge table would be a waste: the allocated ones and up to 64 others.
  const seen = new Set<number>();
  for (const e of l1.entries) seen.add(e.index);
  for (let i = 0; i < l1.size && seen.size < l1.entries.length + 64; i++) seen.add(i);
  for (const i of [...seen].sort((a, b) => a - b)) {
    const offset = l1EntryOffset(l1.offset, i);
    out.push({ index: i, offset, word: readField(l.bytes, offset, 64) });
  }
  return out;
}

/** An entry of an active L2 table: the table, the index, the file offset of word 0 and its value. */
interface L2Slot {
  readonly table: ActiveL2Table;
  readonly index: number;
  readonly offset: bigint;
  readonly word: bigint;
  /** Word 1 (the subcluster bitmap) with extended L2, else 0n. */
  readonly bitmap: bigint;
}

/** Entries of active L2 tables that satisfy `want` (the table's all-zero entries included when `withEmpty`). */
function l2Slots(l: FileLayout, want: (s: L2Slot) => boolean, withEmpty = false): L2Slot[] {
  const out: L2Slot[] = [];
  for (const t of l.activeL2) {
    const indexes = new Set(t.table.entries.map((e) => e.index));
    if (withEmpty) {
      // A handful of empty slots per table is enough variety.
      for (let i = 0, extra = 0; i < t.table.entryCount && extra < 8; i++) if (!indexes.has(i)) { indexes.add(i); extra++; }
    }
    for (const index of indexes) {
      const offset = l2EntryOffset(l, t.table.offset, index);
      const s: L2Slot = { table: t, index, offset, word: readField(l.bytes, offset, 64), bitmap: l.extendedL2 ? readField(l.bytes, offset + 8n, 64) : 0n };
      if (want(s)) out.push(s);
    }
  }
  return out;
}

function l2Name(s: L2Slot): string {
  return `L2 table at ${hex(s.table.table.offset)}`;
}

function l2Field(l: FileLayout, s: L2Slot, word: 0 | 1): string {
  const guest = s.table.l1Indexes.map((i) => hex((BigInt(i) * BigInt(l.l2Entries) + BigInt(s.index)) * l.clusterSize)).join(', ');
  return `entry ${s.index} (guest ${guest}) ${word === 0 ? 'descriptor' : 'subcluster bitmap'}`;
}

/** Kind of the cluster an L2 word describes, by QEMU's rules (docs/format/mapping.md#cluster-types). */
function l2Kind(l: FileLayout, word: bigint): 'compressed' | 'zero-plain' | 'zero-alloc' | 'normal' | 'unallocated' {
  if ((word & L2EntryMasks.compressed) !== 0n) return 'compressed';
  const off = word & L2EntryMasks.hostOffset;
  if (!l.extendedL2 && (word & L2EntryMasks.zero) !== 0n) return off === 0n ? 'zero-plain' : 'zero-alloc';
  if (off === 0n && !(l.externalDataFile && (word & L2EntryMasks.copied) !== 0n)) return 'unallocated';
  return 'normal';
}

/** Refcount-table entries with a block (or, when `withEmpty`, also some empty ones of the table). */
function reftableSlots(l: FileLayout, withEmpty: boolean): EntrySlot[] {
  const r = l.refcountTable;
  if (r === undefined || r.size === 0) return [];
  const listed = new Set(r.entries.map((e) => e.index));
  if (withEmpty) for (let i = 0, extra = 0; i < r.size && extra < 8; i++) if (!listed.has(i)) { listed.add(i); extra++; }
  return [...listed].sort((a, b) => a - b).map((index) => {
    const offset = r.offset + 8n * BigInt(index);
    return { index, offset, word: readField(l.bytes, offset, 64) };
  });
}

/** Metadata clusters a pointer may be aimed at (excluding `except`). */
function metadataTargets(l: FileLayout, except: bigint): MetadataCluster[] {
  return [...l.metadata.values()].filter((m) => m.cluster !== except);
}

/**
 * A cluster-aligned offset at or past the end of the file (the first cluster past it, or further, up
 * to `maxClusters` clusters past it).
 */
function pastEof(l: FileLayout, rng: Rng, maxOffset: bigint, maxClusters = MAX_PAST_EOF_CLUSTERS): bigint | undefined {
  const first = ((l.fileLength + l.clusterSize - 1n) / l.clusterSize) * l.clusterSize;
  const k = pick(rng, [0n, 0n, 1n, 2n, bigBelow(rng, 64n < maxClusters ? 64n : maxClusters), bigBelow(rng, maxClusters)]);
  const o = first + k * l.clusterSize;
  if (o <= maxOffset) return o;
  return first <= maxOffset ? first : undefined;
}

/** A 512-aligned offset inside the cluster of `offset` that is not cluster aligned (undefined with 512-byte clusters). */
function unalign(l: FileLayout, rng: Rng, offset: bigint): bigint | undefined {
  const sectors = l.clusterSize / 512n;
  if (sectors < 2n) return undefined;
  return offset + 512n * (1n + bigBelow(rng, sectors - 1n));
}

/** One set bit of `mask`, chosen by rng. */
function bitOf(rng: Rng, mask: bigint): bigint {
  const bits: bigint[] = [];
  for (let b = 0n; b < 64n; b++) if (((mask >> b) & 1n) !== 0n) bits.push(b);
  return 1n << pick(rng, bits);
}

/** The active guest clusters whose data lives in the cluster holding `offset`. */
function usersOf(l: FileLayout, offset: bigint): GuestRange[] {
  return guestRangesUsing(l, new Set([offset / l.clusterSize]));
}

// ---------------------------------------------------------------------------------------------
// Corruptions of one word or one refcount

/** One word of a table entry a corruption rewrites: how pokes and descriptions name it, and the guest ranges mapped through it. */
interface EntryWord {
  readonly structure: string;
  readonly field: string;
  readonly offset: bigint;
  readonly old: bigint;
  /** How a description names the word, before `old → new`. */
  readonly label: string;
  readonly maps: readonly GuestRange[];
}

/**
 * What a one-word corruption writes: the new value alone, or with what the description adds after
 * it, the guest ranges it can change besides those mapped through the entry, and a second word it
 * sets. A string says why it cannot.
 */
type WordChange = string | bigint | {
  readonly value: bigint;
  readonly note?: string;
  readonly affected?: readonly GuestRange[];
  readonly also?: { readonly word: EntryWord; readonly value: bigint };
};

/** The word of an active L1 entry. */
function l1Word(l: FileLayout, s: EntrySlot): EntryWord {
  return { structure: 'active L1 table', field: `entry ${s.index}`, offset: s.offset, old: s.word, label: `active L1[${s.index}]`, maps: [guestRangeOfL1Index(l, s.index)] };
}

/** Word 0 (the descriptor) of an active L2 entry. */
function l2Descriptor(l: FileLayout, s: L2Slot): EntryWord {
  return { structure: l2Name(s), field: l2Field(l, s, 0), offset: s.offset, old: s.word, label: `${l2Name(s)} entry ${s.index}`, maps: guestRangesOfL2Slot(l, s.table, s.index) };
}

/** Word 1 (the subcluster bitmap) of an extended active L2 entry. */
function l2Bitmap(l: FileLayout, s: L2Slot): EntryWord {
  return { structure: l2Name(s), field: l2Field(l, s, 1), offset: s.offset + 8n, old: s.bitmap, label: `${l2Name(s)} entry ${s.index} bitmap`, maps: guestRangesOfL2Slot(l, s.table, s.index) };
}

/** The word of a refcount-table entry (no guest range is mapped through it). */
function reftableWord(_l: FileLayout, s: EntrySlot): EntryWord {
  return { structure: 'refcount table', field: `entry ${s.index}`, offset: s.offset, old: s.word, label: `refcount table[${s.index}]`, maps: [] };
}

/** `list`, or `reason` when it is empty. */
function someOr<T>(list: readonly T[], reason: string): readonly T[] | string {
  return list.length > 0 ? list : reason;
}

/**
 * A corruption that picks one of the entries `candidates` lists (a string: why there are none) and
 * sets the word `wordOf` names to what `change` makes of it. The Rng is asked in that order: by
 * `candidates`, for the pick, by `change`.
 */
function wordCorruption<S>(
  name: CorruptionName,
  category: CorruptionCategory,
  title: string,
  wordOf: (l: FileLayout, s: S) => EntryWord,
  candidates: (l: FileLayout, rng: Rng) => readonly S[] | string,
  change: (l: FileLayout, rng: Rng, s: S) => WordChange,
): Corruption {
  return {
    name,
    category,
    title,
    apply(l, rng) {
      const found = candidates(l, rng);
      if (typeof found === 'string') return notApplicable(this, found);
      const s = pick(rng, found);
      const made = change(l, rng, s);
      if (typeof made === 'string') return notApplicable(this, made);
      const c = typeof made === 'bigint' ? { value: made } : made;
      const w = wordOf(l, s);
      const p = new Poker(l);
      p.set(w.structure, w.field, w.offset, 64, c.value);
      if (c.also !== undefined) p.set(c.also.word.structure, c.also.word.field, c.also.word.offset, 64, c.also.value);
      return applied(this, p, `${w.label} ${hex(w.old)} → ${hex(c.value)}${c.note ?? ''}`, [...w.maps, ...(c.affected ?? [])]);
    },
  };
}

/** Candidates for a pointer aimed elsewhere: every entry of the active L2 tables, a third of the time with some empty ones. */
function anyL2Entry(l: FileLayout, rng: Rng): readonly L2Slot[] | string {
  return someOr(l2Slots(l, () => true, rng.int(3) === 0), 'no active L2 table');
}

/** `word` with its offset (`mask`) moved to a 512-aligned place inside its cluster that is not cluster aligned. */
function unalignedOffset(l: FileLayout, rng: Rng, word: bigint, mask: bigint): bigint | string {
  const u = unalign(l, rng, word & mask);
  return u === undefined ? '512-byte clusters: every 512-aligned offset is cluster aligned' : (word & ~mask) | u;
}

/** unalignedOffset of an L1 or L2 entry: the guest data of the cluster it pointed at can change too. */
function unalignedMapping(l: FileLayout, rng: Rng, word: bigint, mask: bigint): WordChange {
  const v = unalignedOffset(l, rng, word, mask);
  return typeof v === 'string' ? v : { value: v, affected: usersOf(l, word & mask) };
}

/**
 * An L2 entry's host offset aimed at `target` (COPIED set), with extended L2 every subcluster
 * allocated, so that the whole cluster reads what is there; `note` for the description.
 */
function l2PointedAt(l: FileLayout, s: L2Slot, target: bigint, note: string, affected: readonly GuestRange[] = []): WordChange {
  return { value: L2EntryMasks.copied | target, note, affected, ...(l.extendedL2 ? { also: { word: l2Bitmap(l, s), value: L2EntryMasks.allocBitmap } } : {}) };
}

/** The referenced clusters a refcount block covers: their refcount slot and refcount, in `l.referenced` order. */
function referencedRefcounts(l: FileLayout): { s: RefcountSlot; r: bigint }[] {
  return [...l.referenced].flatMap((c) => {
    const s = refcountSlot(l, c);
    return s === undefined ? [] : [{ s, r: readField(l.bytes, s.offset, s.bits, s.shift) }];
  });
}

/** Applies corruption `c`: the refcount in slot `s` goes from `r` to `v`, described with `verb`. */
function refcountChanged(c: Corruption, l: FileLayout, s: RefcountSlot, r: bigint, v: bigint, verb: string): AppliedCorruption {
  const p = new Poker(l);
  setRefcount(p, s, v);
  return applied(c, p, `refcount of cluster ${s.cluster} (${describeCluster(l, s.cluster)}) ${verb} from ${r} to ${v}`, []);
}

/** Pokes `v` into the refcount in slot `s`. */
function setRefcount(p: Poker, s: RefcountSlot, v: bigint): void {
  p.set(`refcount block at ${hex(s.blockOffset)}`, `refcount of cluster ${s.cluster}`, s.offset, s.bits, v, s.shift);
}

// ---------------------------------------------------------------------------------------------
// The corruptions

const refcountTooLow: Corruption = {
  name: 'refcount-too-low',
  category: 'refcount',
  title: 'a referenced cluster with refcount ≥ 2 gets a lower non-zero refcount (check: ERROR cluster N refcount=r reference=R; -r all raises it, docs/format/check.md#-r-all)',
  apply(l, rng) {
    const cands = referencedRefcounts(l).filter((x) => x.r >= 2n);
    if (cands.length === 0) return notApplicable(this, 'no referenced cluster has a refcount of 2 or more');
    const { s, r } = pick(rng, cands);
    return refcountChanged(this, l, s, r, 1n + bigBelow(rng, r - 1n), 'lowered');
  },
};

const refcountTooHigh: Corruption = {
  name: 'refcount-too-high',
  category: 'refcount',
  title: 'a cluster covered by a refcount block gets a higher refcount — referenced or not, inside the file or past its end (check: Leaked cluster N, docs/format/check.md#comparing-refcounts; past the end invisible, surprises.md item 28)',
  apply(l, rng) {
    const max = (1n << BigInt(l.refcountBits)) - 1n;
    const referenced = referencedRefcounts(l).filter((x) => x.r < max).map((x) => x.s.cluster);
    const ranges = coveredClusters(l);
    let cluster: bigint | undefined;
    if (referenced.length > 0 && rng.int(2) === 0) cluster = pick(rng, referenced);
    else if (ranges.length > 0) {
      const range = pick(rng, ranges);
      // Mostly clusters inside the file, sometimes anywhere the block covers.
      const fileClusters = (l.fileLength + l.clusterSize - 1n) / l.clusterSize;
      const inFile = fileClusters > range.first ? fileClusters - range.first : 0n;
      const span = inFile > 0n && inFile < range.count && rng.int(4) !== 0 ? inFile : range.count;
      cluster = range.first + bigBelow(rng, span);
    }
    const s = cluster !== undefined ? refcountSlot(l, cluster) : undefined;
    if (s === undefined) return notApplicable(this, 'no refcount block covers a cluster that could take a higher refcount');
    const r = readField(l.bytes, s.offset, s.bits, s.shift);
    if (r >= max) return notApplicable(this, `cluster ${s.cluster} already has the largest refcount ${max}`);
    const up = max - r;
    return refcountChanged(this, l, s, r, r + 1n + (rng.int(8) === 0 ? up - 1n : bigBelow(rng, up < 3n ? up : 3n)), 'raised');
  },
};

const refcountZero: Corruption = {
  name: 'refcount-zero',
  category: 'refcount',
  title: 'a referenced cluster (header, tables, refcount blocks, data) gets refcount 0 (check: refcount=0; -r all rebuilds the refcount structure, docs/format/check.md#-r-all, surprises.md item 12)',
  apply(l, rng) {
    const cands = referencedRefcounts(l).filter((x) => x.r !== 0n);
    if (cands.length === 0) return notApplicable(this, 'no referenced cluster has a refcount to clear');
    const { s, r } = pick(rng, cands);
    return refcountChanged(this, l, s, r, 0n, 'set');
  },
};

const l2IntoMetadata = wordCorruption(
  'l2-into-metadata', 'pointer',
  'an active L1 entry points its L2 table at a metadata cluster, COPIED set (test 060 "L2 reference into L1", docs/format/iotests.md#test-060-cases)',
  l1Word,
  (l, rng) => someOr(l1Slots(l, rng.int(4) !== 0 ? 'prefer' : false), 'the active L1 table is empty'),
  (l, rng, s) => {
    const targets = metadataTargets(l, (s.word & L1EntryMasks.l2Offset) / l.clusterSize);
    if (targets.length === 0) return 'no other metadata cluster to point at';
    const t = pick(rng, targets);
    return { value: L1EntryMasks.copied | (t.cluster * l.clusterSize), note: ` (the ${t.what})`, affected: usersOf(l, t.cluster * l.clusterSize) };
  },
);

const dataIntoMetadata = wordCorruption(
  'data-into-metadata', 'pointer',
  'an active L2 entry maps its guest cluster onto a metadata cluster, COPIED set (test 060 "data cluster into refblock", "data into inactive L2", docs/format/iotests.md#test-060-cases)',
  l2Descriptor,
  anyL2Entry,
  (l, rng, s) => {
    const t = pick(rng, metadataTargets(l, -1n));
    return l2PointedAt(l, s, t.cluster * l.clusterSize, ` (the ${t.what})`, usersOf(l, t.cluster * l.clusterSize));
  },
);

const unalignedL1 = wordCorruption(
  'unaligned-l1-entry', 'alignment',
  'an allocated active L1 entry gets an L2 offset that is 512-aligned but not cluster aligned (test 060 "unaligned L1 entry", docs/format/mapping.md#l1-entries)',
  l1Word,
  (l) => someOr(l1Slots(l, true), 'no allocated L1 entry'),
  (l, rng, s) => unalignedMapping(l, rng, s.word, L1EntryMasks.l2Offset),
);

const unalignedL2 = wordCorruption(
  'unaligned-l2-entry', 'alignment',
  'a normal or preallocated-zero L2 entry gets a host offset that is 512-aligned but not cluster aligned (test 060 "unaligned L2 entry", "unaligned prealloc zero", docs/format/mapping.md#cluster-types)',
  l2Descriptor,
  (l) => someOr(l2Slots(l, (s) => {
    const k = l2Kind(l, s.word);
    return (k === 'normal' || k === 'zero-alloc') && (s.word & L2EntryMasks.hostOffset) !== 0n;
  }), 'no allocated normal or zero-alloc L2 entry'),
  (l, rng, s) => unalignedMapping(l, rng, s.word, L2EntryMasks.hostOffset),
);

const unalignedRefblock = wordCorruption(
  'unaligned-refblock-entry', 'alignment',
  'a refcount-table entry gets a block offset that is 512-aligned but not cluster aligned (test 060 "unaligned reftable entry", docs/format/refcounts.md#refcount-table)',
  reftableWord,
  (l) => someOr(reftableSlots(l, false).filter((s) => (s.word & RefcountTableEntryMasks.refblockOffset) !== 0n), 'no refcount block'),
  (l, rng, s) => unalignedOffset(l, rng, s.word, RefcountTableEntryMasks.refblockOffset),
);

const reservedL1 = wordCorruption(
  'reserved-bits-l1', 'reserved-bits',
  'a reserved bit (L1E_RESERVED_MASK) of an active L1 entry is set (docs/format/mapping.md#l1-entries)',
  l1Word,
  (l, rng) => someOr(l1Slots(l, rng.int(4) !== 0 ? 'prefer' : false).filter((s) => (s.word & L1EntryMasks.reserved) !== L1EntryMasks.reserved), 'the active L1 table is empty'),
  (_l, rng, s) => s.word | bitOf(rng, L1EntryMasks.reserved & ~s.word),
);

const reservedL2 = wordCorruption(
  'reserved-bits-l2', 'reserved-bits',
  'a reserved bit (L2E_STD_RESERVED_MASK) of a standard (not compressed) active L2 entry is set (docs/format/mapping.md#standard-l2-entries: reads work, check counts it)',
  l2Descriptor,
  (l, rng) => someOr(l2Slots(l, (s) => (s.word & L2EntryMasks.compressed) === 0n, rng.int(4) === 0), 'no standard active L2 entry'),
  (_l, rng, s) => {
    const free = L2EntryMasks.reserved & ~s.word;
    return free === 0n ? 'every reserved bit is already set' : s.word | bitOf(rng, free);
  },
);

const reservedReftable = wordCorruption(
  'reserved-bits-reftable', 'reserved-bits',
  'a reserved bit (mask 0x1ff) of a refcount-table entry is set (docs/format/refcounts.md#refcount-table)',
  reftableWord,
  (l, rng) => someOr(reftableSlots(l, rng.int(4) === 0).filter((s) => (s.word & RefcountTableEntryMasks.reserved) !== RefcountTableEntryMasks.reserved), 'no refcount-table entry'),
  (_l, rng, s) => s.word | bitOf(rng, RefcountTableEntryMasks.reserved & ~s.word),
);

const compressedCopied = wordCorruption(
  'compressed-copied', 'flags',
  'COPIED is set on a compressed L2 entry (docs/format/mapping.md#standard-l2-entries: compressed entries are never COPIED)',
  l2Descriptor,
  (l) => someOr(l2Slots(l, (s) => (s.word & L2EntryMasks.compressed) !== 0n && (s.word & L2EntryMasks.copied) === 0n), 'no compressed cluster in the active L2 tables'),
  (_l, _rng, s) => s.word | L2EntryMasks.copied,
);

const v2ZeroFlag = wordCorruption(
  'v2-zero-flag', 'flags',
  'the zero flag (bit 0) on a standard L2 entry of a version 2 image (docs/format/mapping.md#cluster-types: fatal on access, not flagged by check)',
  l2Descriptor,
  (l, rng) => (l.version !== 2 ? 'version 3 image: the zero flag is legal'
    : someOr(l2Slots(l, (s) => (s.word & L2EntryMasks.compressed) === 0n && (s.word & L2EntryMasks.zero) === 0n, rng.int(3) === 0), 'no standard active L2 entry')),
  (_l, _rng, s) => s.word | L2EntryMasks.zero,
);

const compressedBitmap = wordCorruption(
  'compressed-nonzero-bitmap', 'subcluster',
  'an extended-L2 compressed entry gets a non-zero subcluster bitmap (docs/format/mapping.md#compressed-clusters: check ERROR compressed cluster ... non-zero subcluster allocation bitmap)',
  l2Bitmap,
  (l) => (!l.extendedL2 ? 'no extended L2 entries' : someOr(l2Slots(l, (s) => (s.word & L2EntryMasks.compressed) !== 0n), 'no compressed cluster in the active L2 tables')),
  (_l, rng) => pick(rng, [1n, 1n << BigInt(rng.int(64)), bigBelow(rng, 1n << 64n) | 1n, (1n << 64n) - 1n]),
);

const allocAndZero = wordCorruption(
  'alloc-and-zero-subcluster', 'subcluster',
  'an allocated extended-L2 entry gets one subcluster both allocated and zero (docs/format/mapping.md#subcluster-types: INVALID; check ERROR ... corrupted subcluster allocation bitmap)',
  l2Bitmap,
  (l) => (!l.extendedL2 ? 'no extended L2 entries'
    : someOr(l2Slots(l, (s) => l2Kind(l, s.word) === 'normal' && (s.word & L2EntryMasks.hostOffset) !== 0n), 'no allocated extended-L2 entry')),
  (_l, rng, s) => {
    const n = BigInt(rng.int(32));
    return { value: s.bitmap | (1n << n) | (1n << (32n + n)), note: ` (subcluster ${n} allocated and zero)` };
  },
);

const allocOnUnallocated = wordCorruption(
  'alloc-bits-on-unallocated', 'subcluster',
  'an extended-L2 entry without host offset gets allocation bits (docs/format/mapping.md#subcluster-types: INVALID; check ERROR: Unallocated cluster has non-zero subcluster allocation map)',
  l2Bitmap,
  (l) => (!l.extendedL2 ? 'no extended L2 entries'
    : someOr(l2Slots(l, (s) => l2Kind(l, s.word) === 'unallocated' && (s.bitmap & L2EntryMasks.allocBitmap) !== L2EntryMasks.allocBitmap, true), 'no unallocated extended-L2 entry')),
  (_l, rng, s) => {
    const v = s.bitmap | pick(rng, [1n << BigInt(rng.int(32)), L2EntryMasks.allocBitmap, bigBelow(rng, L2EntryMasks.allocBitmap) + 1n]);
    return v === s.bitmap ? 'the chosen bits are already set' : v;
  },
);

const l1PastEof = wordCorruption(
  'l1-entry-past-eof', 'past-eof',
  'an active L1 entry points at an L2 table past the end of the file, COPIED set (docs/format/mapping.md#read-resolution: reads zeros; check: region exceeding the end of the file)',
  l1Word,
  (l, rng) => someOr(l1Slots(l, rng.int(3) !== 0 ? 'prefer' : false), 'the active L1 table is empty'),
  (l, rng) => {
    const o = pastEof(l, rng, L1EntryMasks.l2Offset);
    return o === undefined ? 'the file ends past the largest L2 offset' : { value: L1EntryMasks.copied | o, note: ` (file length ${hex(l.fileLength)})` };
  },
);

const l2PastEof = wordCorruption(
  'l2-entry-past-eof', 'past-eof',
  'an active L2 entry maps its guest cluster past the end of the file, COPIED set (test 080 0x800000ffffff0000; check: region exceeding the end of the file)',
  l2Descriptor,
  anyL2Entry,
  (l, rng, s) => {
    const o = pastEof(l, rng, L2EntryMasks.hostOffset);
    return o === undefined ? 'the file ends past the largest host offset' : l2PointedAt(l, s, o, ` (file length ${hex(l.fileLength)})`);
  },
);

const refblockPastEof = wordCorruption(
  'refblock-past-eof', 'past-eof',
  'a refcount-table entry (used or empty) points at a refcount block past the end of the file (test 108; -r all: Repairing refcount block N is outside image)',
  reftableWord,
  (l, rng) => someOr(reftableSlots(l, rng.int(3) === 0), 'no refcount table'),
  (l, rng) => {
    const far = MAX_REFBLOCK_PAST_EOF_BYTES / l.clusterSize;
    const o = pastEof(l, rng, RefcountTableEntryMasks.refblockOffset, far > 1n ? far : 1n);
    return o === undefined ? 'no offset past the end of the file fits' : { value: o, note: ` (file length ${hex(l.fileLength)})` };
  },
);

/** The snapshot table entries with their fields, or undefined when there is none or the table did not decode whole. */
function snapshotFields(l: FileLayout): { offset: number; fields: SnapshotEntryFields }[] | undefined {
  if (l.snapshots.length === 0 || l.snapshotTableBytes === 0) return undefined;
  return l.snapshots.map((s) => ({ offset: s.entryOffset, fields: s.fields }));
}

/**
 * A corruption of one snapshot, chosen by the Rng, when `requires` finds nothing missing (a string
 * says what is): `edit` pokes snapshot `i` through `p` and returns the description, or `{ reason }`
 * when it cannot.
 */
function snapshotCorruption(
  name: CorruptionName,
  title: string,
  edit: (l: FileLayout, rng: Rng, p: Poker, i: number, entry: { offset: number; fields: SnapshotEntryFields }) => string | { readonly reason: string },
  requires: (l: FileLayout) => string | undefined = () => undefined,
): Corruption {
  return {
    name,
    category: 'snapshot',
    title,
    apply(l, rng) {
      const missing = requires(l);
      if (missing !== undefined) return notApplicable(this, missing);
      const entries = snapshotFields(l);
      if (entries === undefined) return notApplicable(this, 'no snapshot');
      const i = rng.int(entries.length);
      const p = new Poker(l);
      const done = edit(l, rng, p, i, entries[i]!);
      return typeof done === 'string' ? applied(this, p, done, []) : notApplicable(this, done.reason);
    },
  };
}

/** A snapshot corruption that sets `field` of the entry to what `value` makes of the old one (undefined: nothing suitable). */
function snapshotFieldCorruption(
  name: CorruptionName,
  title: string,
  field: 'l1_table_offset' | 'l1_size',
  value: (l: FileLayout, rng: Rng, old: bigint) => bigint | undefined,
): Corruption {
  return snapshotCorruption(name, title, (l, rng, p, i, e) => {
    const at = BigInt(e.offset) + (field === 'l1_table_offset' ? 0n : 8n);
    const bits = field === 'l1_table_offset' ? 64 : 32;
    const old = readField(l.bytes, at, bits);
    const v = value(l, rng, old);
    if (v === undefined || v === old) return { reason: `no suitable ${field} for snapshot ${i}` };
    p.set(`snapshot table entry ${i} (id ${e.fields.idStr})`, field, at, bits, v);
    return `snapshot ${i} ${field} ${hex(old)} → ${hex(v)}`;
  });
}

const snapshotL1Unaligned = snapshotFieldCorruption(
  'snapshot-l1-unaligned',
  'a snapshot table entry gets an L1 offset that is not cluster aligned (test 080: check ERROR snapshot N ... L1 table is not cluster aligned)',
  'l1_table_offset',
  (l, rng, old) => pick(rng, [unalign(l, rng, old), old + 1n + bigBelow(rng, 511n)]),
);

const snapshotL1TooLarge = snapshotFieldCorruption(
  'snapshot-l1-too-large',
  'a snapshot table entry gets an l1_size above 4 Mi entries (test 080: check ERROR snapshot N ... L1 table is too large)',
  'l1_size',
  (_l, rng) => pick(rng, [MAX_L1_ENTRIES + 1n, 0x10000000n, 0xffffffffn, MAX_L1_ENTRIES + 1n + bigBelow(rng, 0xffffffffn - MAX_L1_ENTRIES)]),
);

const snapshotL1PastEof = snapshotFieldCorruption(
  'snapshot-l1-past-eof',
  'a snapshot table entry gets a cluster-aligned L1 offset past the end of the file',
  'l1_table_offset',
  (l, rng) => pastEof(l, rng, (1n << 63n) - 1n),
);

/**
 * Rewrites snapshot `i` of the table with `change` applied to its fields: the whole table is encoded
 * again (entries after it move), in place; bytes of the old table past the new end are zeroed.
 * Returns undefined when the new table does not fit the clusters the old one occupies.
 */
function rewriteSnapshot(l: FileLayout, p: Poker, i: number, change: (f: SnapshotEntryFields) => SnapshotEntryFields): string | undefined {
  const entries = snapshotFields(l)!;
  const n = entries.length;
  const parts = entries.map((e, k) => {
    const f = k === i ? change(e.fields) : e.fields;
    const isLast = k + 1 === n;
    const len = 40 + f.lenExtraData + f.lenId + f.lenName;
    const { padding: _old, ...rest } = f;
    const fixed: SnapshotEntryFields = isLast ? rest : { ...rest, padding: new Uint8Array((8 - (len % 8)) % 8) };
    return encodeSnapshotEntry(fixed, { clusterBits: l.clusterBits, extendedL2: l.extendedL2, isLast });
  });
  const total = parts.reduce((a, b) => a + b.length, 0);
  const start = l.header.snapshotsOffset;
  const room = ((BigInt(l.snapshotTableBytes) + l.clusterSize - 1n) / l.clusterSize) * l.clusterSize;
  if (BigInt(total) > room) return undefined;
  // The table's last cluster is usually where the file ends: it may grow inside it.
  p.grow(start + BigInt(total));
  const table = new Uint8Array(Math.max(total, l.snapshotTableBytes));
  let at = 0;
  for (const part of parts) {
    table.set(part, at);
    at += part.length;
  }
  // Record the changed bytes as runs of 8-byte (or shorter, at the end) big-endian words.
  for (let k = 0; k < table.length; k += 8) {
    const w = Math.min(8, table.length - k);
    const off = start + BigInt(k);
    let v = 0n;
    for (let j = 0; j < w; j++) v = (v << 8n) | BigInt(table[k + j]!);
    if (p.read(off, 8 * w) !== v) p.set('snapshot table', `bytes ${k}..${k + w - 1}`, off, 8 * w, v);
  }
  return `table rewritten (${l.snapshotTableBytes} → ${total} bytes)`;
}

type ExtraData = SnapshotEntryFields['extraData'];

/**
 * A snapshot corruption that gives the snapshot `length(rng)` bytes of extra data (`extra` makes
 * them from the old ones) by rewriting the snapshot table; `noRoom` says why not when the new table
 * does not fit the old one's clusters.
 */
function extraDataCorruption(
  name: CorruptionName,
  title: string,
  requires: (l: FileLayout) => string | undefined,
  length: (rng: Rng) => number,
  extra: (l: FileLayout, old: ExtraData, len: number) => ExtraData,
  noRoom: string,
): Corruption {
  return snapshotCorruption(name, title, (l, rng, p, i, e) => {
    const len = length(rng);
    const how = rewriteSnapshot(l, p, i, (f) => ({ ...f, lenExtraData: len, extraData: extra(l, f.extraData, len) }));
    if (how === undefined) return { reason: noRoom };
    return `snapshot ${i} extra data ${e.fields.lenExtraData} → ${len} bytes; ${how}`;
  }, requires);
}

const snapshotExtraShort = extraDataCorruption(
  'snapshot-extra-data-short',
  'a version 3 snapshot entry gets less than 16 bytes of extra data (docs/format/snapshots.md#extra-data: check ERROR snapshot table entry N is incomplete; -r all rewrites the table)',
  (l) => (l.version < 3 ? 'version 2: snapshot entries need no extra data' : undefined),
  (rng) => pick(rng, [0, 8, 1 + rng.int(15)]),
  (_l, old, len) => ({
    ...(len >= 8 ? { vmStateSizeLarge: old.vmStateSizeLarge ?? { hi: 0, lo: 0 } } : {}),
    unknown: new Uint8Array(len >= 8 ? len - 8 : len),
  }),
  'the rewritten table does not fit',
);

const snapshotExtraTooLarge = extraDataCorruption(
  'snapshot-extra-data-too-large',
  'a snapshot entry gets more than 1024 bytes of extra data (docs/format/snapshots.md#limits: Too much extra metadata in snapshot table entry N; -r all drops it)',
  () => undefined,
  (rng) => QCOW_MAX_SNAPSHOT_EXTRA_DATA + 1 + rng.int(64) * 8,
  (l, old, len) => {
    const known = 24;
    const zero = { hi: 0, lo: 0 };
    return { vmStateSizeLarge: old.vmStateSizeLarge ?? zero, diskSize: old.diskSize ?? { hi: Number(l.size >> 32n), lo: Number(l.size & 0xffffffffn) }, icount: old.icount ?? { hi: 0xffffffff, lo: 0xffffffff }, unknown: new Uint8Array(len - known) };
  },
  'the enlarged table does not fit the clusters of the old one',
);

const dirtyStale: Corruption = {
  name: 'dirty-stale-refcounts',
  category: 'dirty',
  title: 'the dirty bit (with lazy refcounts) and what a crash leaves: the newest referenced clusters with refcount 0, maybe a leak (docs/format/features.md#dirty-bit-and-lazy-refcounts; check reports, -r all rebuilds and clears the bit)',
  apply(l, rng) {
    if (l.version < 3) return notApplicable(this, 'version 2 images cannot be dirty');
    const fixed = new Set(['header', 'refcount-table', 'refcount-block']);
    const newest = referencedRefcounts(l)
      .filter((x) => x.r !== 0n && !fixed.has(l.metadata.get(x.s.cluster)?.kind ?? 'data'))
      .map((x) => x.s.cluster)
      .sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
    if (newest.length === 0) return notApplicable(this, 'no data or table cluster with a refcount');
    const p = new Poker(l);
    const incompat = p.read(INCOMPAT_OFFSET, 64);
    const compat = p.read(COMPAT_OFFSET, 64);
    p.set('header', 'incompatible_features', INCOMPAT_OFFSET, 64, incompat | IncompatibleFeatureMask.DIRTY);
    if ((compat & CompatibleFeatureMask.LAZY_REFCOUNTS) === 0n) p.set('header', 'compatible_features', COMPAT_OFFSET, 64, compat | CompatibleFeatureMask.LAZY_REFCOUNTS);
    const k = 1 + rng.int(Math.min(3, newest.length));
    const zeroed = newest.slice(0, k);
    for (const c of zeroed) setRefcount(p, refcountSlot(l, c)!, 0n);
    let leak = '';
    if (rng.int(2) === 0) {
      const ranges = coveredClusters(l);
      const fileClusters = (l.fileLength + l.clusterSize - 1n) / l.clusterSize;
      const free: bigint[] = [];
      for (const r of ranges) for (let c = r.first; c < r.first + r.count && c < fileClusters && free.length < 64; c++) if (!l.referenced.has(c)) free.push(c);
      if (free.length > 0) {
        const c = pick(rng, free);
        const s = refcountSlot(l, c)!;
        if (p.read(s.offset, s.bits, s.shift) === 0n) {
          setRefcount(p, s, 1n);
          leak = `, free cluster ${c} refcount 1`;
        }
      }
    }
    return applied(this, p, `dirty bit set; refcounts of cluster(s) ${zeroed.join(', ')} set to 0${leak}`, []);
  },
};

/** What a host cluster holds, for descriptions. */
function describeCluster(l: FileLayout, cluster: bigint): string {
  const m = l.metadata.get(cluster);
  if (m !== undefined) return m.what;
  return l.referenced.has(cluster) ? 'data' : 'unreferenced';
}

/** Every corruption of the catalog, in a fixed order. */
export const CORRUPTIONS: readonly Corruption[] = [
  refcountTooLow,
  refcountTooHigh,
  refcountZero,
  l2IntoMetadata,
  dataIntoMetadata,
  unalignedL1,
  unalignedL2,
  unalignedRefblock,
  reservedL1,
  reservedL2,
  reservedReftable,
  compressedCopied,
  v2ZeroFlag,
  compressedBitmap,
  allocAndZero,
  allocOnUnallocated,
  l1PastEof,
  l2PastEof,
  refblockPastEof,
  snapshotL1Unaligned,
  snapshotL1TooLarge,
  snapshotL1PastEof,
  snapshotExtraShort,
  snapshotExtraTooLarge,
  dirtyStale,
];

/** The corruption called `name`; throws RangeError for an unknown name. */
export function corruptionNamed(name: string): Corruption {
  const c = CORRUPTIONS.find((k) => k.name === name);
  if (c === undefined) throw new RangeError(`no corruption named '${name}'`);
  return c;
}

/** The file layout of `source`: bytes as given, a model Image's stored file, or a layout already made. */
function toLayout(source: Uint8Array | Image | FileLayout): FileLayout {
  if (source instanceof Uint8Array) return layoutOf(source);
  if ('metadata' in source) return source;
  return layoutOf(storeImage(source));
}

/**
 * Applies corruption `name` to `source` — a qcow2 file's bytes, a model Image, or a layout from
 * layoutOf (to apply several corruptions to one image without decoding it again) — with choices from
 * `rng`. Returns the corrupted bytes and what was poked, or 'not-applicable' with the reason. Pure:
 * `source` is not modified. Throws the header's Qcow2FormatError when `source` has no decodable
 * header, RangeError for an unknown name.
 */
export function corrupt(source: Uint8Array | Image | FileLayout, name: CorruptionName, rng: Rng): CorruptionOutcome {
  const layout = toLayout(source);
  return corruptionNamed(name).apply(layout, rng);
}

/**
 * The corruptions among `names` (default: the whole catalog) that apply to `source`, each applied
 * with the Rng `rngFor` gives for its name: what a property or a corpus generator can pick from.
 * Same inputs, purity and errors as `corrupt`.
 */
export function applicableCorruptions(source: Uint8Array | Image | FileLayout, rngFor: (name: CorruptionName) => Rng, names: readonly CorruptionName[] = CORRUPTIONS.map((c) => c.name)): AppliedCorruption[] {
  const layout = toLayout(source);
  const out: AppliedCorruption[] = [];
  for (const n of names) {
    const r = corrupt(layout, n, rngFor(n));
    if (r.kind === 'applied') out.push(r);
  }
  return out;
}
