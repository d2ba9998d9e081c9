/**
 * What a corruption of the catalog (catalog.ts) is — its categories, the pokes it reports, its outcome
 * — and the mechanism every corruption is built from: finding places in the image's layout, poking
 * fields with an exact account of old and new values, and the one-word and refcount corruptions.
 */
import { HeaderLayout, L1_ENTRY_FIXED_SIZE, L2EntryMasks } from '../../generated/qcow2.ts';
import { QCOW_MAX_L1_SIZE } from '../format/index.ts';
import { guestRangeOfL1Index, guestRangesOfL2Slot, guestRangesUsing, l1EntryOffset, l2EntryOffset, readField, refcountSlot, writeField, type ActiveL2Table, type FileLayout, type GuestRange, type MetadataCluster, type RefcountSlot } from './layout.ts';
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

/** Header fields incompatible_features and compatible_features (the spec's HeaderLayout). */
export const INCOMPAT_OFFSET = BigInt(HeaderLayout.incompatibleFeatures.offset);

export const COMPAT_OFFSET = BigInt(HeaderLayout.compatibleFeatures.offset);

/** Entries QEMU's check accepts in a snapshot L1 (QCOW_MAX_L1_SIZE / 8 = 4 Mi, docs/format/check.md#reference-counting-pass). */
export const MAX_L1_ENTRIES = BigInt(QCOW_MAX_L1_SIZE / L1_ENTRY_FIXED_SIZE);

/** A past-EOF pointer lands at most this many clusters beyond the end (QEMU's check sizes its refcount array by it). */
export const MAX_PAST_EOF_CLUSTERS = 1n << 20n;

/**
 * A refcount block past the end lands at most this many bytes beyond it: `-r all` extends the file to
 * hold it (docs/format/check.md#-r-all), and the repaired file is read back whole by the property.
 */
export const MAX_REFBLOCK_PAST_EOF_BYTES = 64n * 1024n * 1024n;

export const hex = (v: bigint): string => `0x${v.toString(16)}`;

/** A copy of the file being corrupted, recording every field it writes. */
export class Poker {
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

export function applied(
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

export function notApplicable(c: { name: CorruptionName; category: CorruptionCategory }, reason: string): NotApplicable {
  return { kind: 'not-applicable', name: c.name, category: c.category, reason };
}

/** Sorted, merged, non-empty ranges. */
export function mergeRanges(ranges: readonly GuestRange[]): GuestRange[] {
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

/** An entry of the active L1 table or of the refcount table: index, file offset and value. */
export interface EntrySlot {
  readonly index: number;
  readonly offset: bigint;
  readonly word: bigint;
}

/**
 * The active L1 entries. `allocated`: only those pointing at an L2 table — 'prefer' falls back to all
 * entries when none does.
 */
export function l1Slots(l: FileLayout, allocated: boolean | 'prefer'): EntrySlot[] {
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
export interface L2Slot {
  readonly table: ActiveL2Table;
  readonly index: number;
  readonly offset: bigint;
  readonly word: bigint;
  /** Word 1 (the subcluster bitmap) with extended L2, else 0n. */
  readonly bitmap: bigint;
}

/** Entries of active L2 tables that satisfy `want` (the table's all-zero entries included when `withEmpty`). */
export function l2Slots(l: FileLayout, want: (s: L2Slot) => boolean, withEmpty = false): L2Slot[] {
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

export function l2Name(s: L2Slot): string {
  return `L2 table at ${hex(s.table.table.offset)}`;
}

export function l2Field(l: FileLayout, s: L2Slot, word: 0 | 1): string {
  const guest = s.table.l1Indexes.map((i) => hex((BigInt(i) * BigInt(l.l2Entries) + BigInt(s.index)) * l.clusterSize)).join(', ');
  return `entry ${s.index} (guest ${guest}) ${word === 0 ? 'descriptor' : 'subcluster bitmap'}`;
}

/** Kind of the cluster an L2 word describes, by QEMU's rules (docs/format/mapping.md#cluster-types). */
export function l2Kind(l: FileLayout, word: bigint): 'compressed' | 'zero-plain' | 'zero-alloc' | 'normal' | 'unallocated' {
  if ((word & L2EntryMasks.compressed) !== 0n) return 'compressed';
  const off = word & L2EntryMasks.hostOffset;
  if (!l.extendedL2 && (word & L2EntryMasks.zero) !== 0n) return off === 0n ? 'zero-plain' : 'zero-alloc';
  if (off === 0n && !(l.externalDataFile && (word & L2EntryMasks.copied) !== 0n)) return 'unallocated';
  return 'normal';
}

/** Refcount-table entries with a block (or, when `withEmpty`, also some empty ones of the table). */
export function reftableSlots(l: FileLayout, withEmpty: boolean): EntrySlot[] {
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
export function metadataTargets(l: FileLayout, except: bigint): MetadataCluster[] {
  return [...l.metadata.values()].filter((m) => m.cluster !== except);
}

/**
 * A cluster-aligned offset at or past the end of the file (the first cluster past it, or further, up
 * to `maxClusters` clusters past it).
 */
export function pastEof(l: FileLayout, rng: Rng, maxOffset: bigint, maxClusters = MAX_PAST_EOF_CLUSTERS): bigint | undefined {
  const first = ((l.fileLength + l.clusterSize - 1n) / l.clusterSize) * l.clusterSize;
  const k = pick(rng, [0n, 0n, 1n, 2n, bigBelow(rng, 64n < maxClusters ? 64n : maxClusters), bigBelow(rng, maxClusters)]);
  const o = first + k * l.clusterSize;
  if (o <= maxOffset) return o;
  return first <= maxOffset ? first : undefined;
}

/** A 512-aligned offset inside the cluster of `offset` that is not cluster aligned (undefined with 512-byte clusters). */
export function unalign(l: FileLayout, rng: Rng, offset: bigint): bigint | undefined {
  const sectors = l.clusterSize / 512n;
  if (sectors < 2n) return undefined;
  return offset + 512n * (1n + bigBelow(rng, sectors - 1n));
}

/** One set bit of `mask`, chosen by rng. */
export function bitOf(rng: Rng, mask: bigint): bigint {
  const bits: bigint[] = [];
  for (let b = 0n; b < 64n; b++) if (((mask >> b) & 1n) !== 0n) bits.push(b);
  return 1n << pick(rng, bits);
}

/** The active guest clusters whose data lives in the cluster holding `offset`. */
export function usersOf(l: FileLayout, offset: bigint): GuestRange[] {
  return guestRangesUsing(l, new Set([offset / l.clusterSize]));
}

/** One word of a table entry a corruption rewrites: how pokes and descriptions name it, and the guest ranges mapped through it. */
export interface EntryWord {
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
export type WordChange = string | bigint | {
  readonly value: bigint;
  readonly note?: string;
  readonly affected?: readonly GuestRange[];
  readonly also?: { readonly word: EntryWord; readonly value: bigint };
};

/** The word of an active L1 entry. */
export function l1Word(l: FileLayout, s: EntrySlot): EntryWord {
  return { structure: 'active L1 table', field: `entry ${s.index}`, offset: s.offset, old: s.word, label: `active L1[${s.index}]`, maps: [guestRangeOfL1Index(l, s.index)] };
}

/** Word 0 (the descriptor) of an active L2 entry. */
export function l2Descriptor(l: FileLayout, s: L2Slot): EntryWord {
  return { structure: l2Name(s), field: l2Field(l, s, 0), offset: s.offset, old: s.word, label: `${l2Name(s)} entry ${s.index}`, maps: guestRangesOfL2Slot(l, s.table, s.index) };
}

/** Word 1 (the subcluster bitmap) of an extended active L2 entry. */
export function l2Bitmap(l: FileLayout, s: L2Slot): EntryWord {
  return { structure: l2Name(s), field: l2Field(l, s, 1), offset: s.offset + 8n, old: s.bitmap, label: `${l2Name(s)} entry ${s.index} bitmap`, maps: guestRangesOfL2Slot(l, s.table, s.index) };
}

/** The word of a refcount-table entry (no guest range is mapped through it). */
export function reftableWord(_l: FileLayout, s: EntrySlot): EntryWord {
  return { structure: 'refcount table', field: `entry ${s.index}`, offset: s.offset, old: s.word, label: `refcount table[${s.index}]`, maps: [] };
}

/** `list`, or `reason` when it is empty. */
export function someOr<T>(list: readonly T[], reason: string): readonly T[] | string {
  return list.length > 0 ? list : reason;
}

/**
 * A corruption that picks one of the entries `candidates` lists (a string: why there are none) and
 * sets the word `wordOf` names to what `change` makes of it. The Rng is asked in that order: by
 * `candidates`, for the pick, by `change`.
 */
export function wordCorruption<S>(
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
export function anyL2Entry(l: FileLayout, rng: Rng): readonly L2Slot[] | string {
  return someOr(l2Slots(l, () => true, rng.int(3) === 0), 'no active L2 table');
}

/** `word` with its offset (`mask`) moved to a 512-aligned place inside its cluster that is not cluster aligned. */
export function unalignedOffset(l: FileLayout, rng: Rng, word: bigint, mask: bigint): bigint | string {
  const u = unalign(l, rng, word & mask);
  return u === undefined ? '512-byte clusters: every 512-aligned offset is cluster aligned' : (word & ~mask) | u;
}

/** unalignedOffset of an L1 or L2 entry: the guest data of the cluster it pointed at can change too. */
export function unalignedMapping(l: FileLayout, rng: Rng, word: bigint, mask: bigint): WordChange {
  const v = unalignedOffset(l, rng, word, mask);
  return typeof v === 'string' ? v : { value: v, affected: usersOf(l, word & mask) };
}

/**
 * An L2 entry's host offset aimed at `target` (COPIED set), with extended L2 every subcluster
 * allocated, so that the whole cluster reads what is there; `note` for the description.
 */
export function l2PointedAt(l: FileLayout, s: L2Slot, target: bigint, note: string, affected: readonly GuestRange[] = []): WordChange {
  return { value: L2EntryMasks.copied | target, note, affected, ...(l.extendedL2 ? { also: { word: l2Bitmap(l, s), value: L2EntryMasks.allocBitmap } } : {}) };
}

/** The referenced clusters a refcount block covers: their refcount slot and refcount, in `l.referenced` order. */
export function referencedRefcounts(l: FileLayout): { s: RefcountSlot; r: bigint }[] {
  return [...l.referenced].flatMap((c) => {
    const s = refcountSlot(l, c);
    return s === undefined ? [] : [{ s, r: readField(l.bytes, s.offset, s.bits, s.shift) }];
  });
}

/** Applies corruption `c`: the refcount in slot `s` goes from `r` to `v`, described with `verb`. */
export function refcountChanged(c: Corruption, l: FileLayout, s: RefcountSlot, r: bigint, v: bigint, verb: string): AppliedCorruption {
  const p = new Poker(l);
  setRefcount(p, s, v);
  return applied(c, p, `refcount of cluster ${s.cluster} (${describeCluster(l, s.cluster)}) ${verb} from ${r} to ${v}`, []);
}

/** Pokes `v` into the refcount in slot `s`. */
export function setRefcount(p: Poker, s: RefcountSlot, v: bigint): void {
  p.set(`refcount block at ${hex(s.blockOffset)}`, `refcount of cluster ${s.cluster}`, s.offset, s.bits, v, s.shift);
}

/** What a host cluster holds, for descriptions. */
export function describeCluster(l: FileLayout, cluster: bigint): string {
  const m = l.metadata.get(cluster);
  if (m !== undefined) return m.what;
  return l.referenced.has(cluster) ? 'data' : 'unreferenced';
}
