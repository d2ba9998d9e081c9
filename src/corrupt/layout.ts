/**
 * Where things are in a qcow2 file, for the corruption and mutation catalogs: every metadata cluster
 * (by what it holds), the active guest mapping (guest cluster → the host clusters its data uses),
 * every host cluster anything references, and the exact position of each refcount.
 *
 * Everything is decoded with the generated decoders (header, L1/L2/refcount-table entries, snapshot
 * entries) and classified by src/format/entries.ts; nothing here assumes an offset the image does not
 * state. Unlike walkImage (src/format/walk.ts), which describes every entry and every refcount, this
 * skips all-zero table entries in bulk and never decodes refcount blocks (the catalogs read single
 * refcounts where they poke them), so it stays fast on 2 MiB clusters with 1-bit refcounts (16 Mi
 * refcounts per block). Bounded on hostile input: tables that run past the end of the file are left
 * out, and snapshot L1 tables share one budget proportional to the file size.
 *
 * Also the bit-exact field access the catalogs poke with (`readField`/`writeField`): big-endian
 * fields of 8..64 bits, and the LSB-first sub-byte refcounts of widths 1, 2 and 4 (docs/format/refcounts.md#sub-byte-widths).
 */
import {
  HeaderExtensionType,
  decodeHeader,
  decodeL1EntryFields,
  decodeL2EntryFields,
  decodeRefcountTableEntryFields,
  decodeQcow2,
  decodeSnapshotEntryFields,
  type FullDiskEncryptionPointer,
  type SnapshotEntryFields,
} from '../../generated/qcow2.ts';
import { classifyL2Entry, l1L2Offset, l2EntryWords, refcountBlockOffset, type L2Context, type L2EntryClass } from '../format/index.ts';
import { isQcow2FormatError } from '../codec/index.ts';
import { describeHeader, visitDistinctL2Tables, type HeaderInfo } from '../format/index.ts';
import { u64ToBigInt } from '../format/index.ts';

/** A half-open guest byte range [offset, offset + length). */
export interface GuestRange {
  readonly offset: bigint;
  readonly length: bigint;
}

/** What a metadata cluster holds. */
export type MetadataKind = 'header' | 'active-l1' | 'l2' | 'refcount-table' | 'refcount-block' | 'snapshot-table' | 'snapshot-l1' | 'luks-header';

/** One metadata cluster: its index, kind, and a description naming the structure. */
export interface MetadataCluster {
  readonly cluster: bigint;
  readonly kind: MetadataKind;
  readonly what: string;
}

/** A non-zero L1 entry. */
export interface L1Slot {
  readonly index: number;
  readonly word: bigint;
  readonly l2Offset: bigint;
}

/** An L1 table (active or a snapshot's) that lies inside the file. */
export interface L1TableLayout {
  readonly offset: bigint;
  readonly size: number;
  /** The non-zero entries, in index order. */
  readonly entries: readonly L1Slot[];
}

/** A non-zero L2 entry (word 0 or, with extended L2, the bitmap word non-zero). */
export interface L2Slot {
  readonly index: number;
  readonly word: bigint;
  /** Word 1 with extended L2 (zero bits 63..32, alloc bits 31..0), else 0n. */
  readonly bitmap: bigint;
  readonly class: L2EntryClass;
}

/** One distinct L2 table that lies inside the file and is cluster aligned. */
export interface L2TableLayout {
  readonly offset: bigint;
  /** Entries per table. */
  readonly entryCount: number;
  readonly entries: readonly L2Slot[];
  /** Who points at it: 'active' or `snapshot N`, with the L1 index. */
  readonly references: readonly { readonly l1: string; readonly index: number }[];
}

/** One active L2 table with the active L1 indexes pointing at it. */
export interface ActiveL2Table {
  readonly table: L2TableLayout;
  readonly l1Indexes: readonly number[];
}

/** One guest cluster of the active mapping whose data lives in host clusters (normal, zero-alloc, compressed). */
export interface ActiveDataCluster {
  readonly guestOffset: bigint;
  /** The host clusters its data uses (one, or every cluster a compressed blob touches). */
  readonly hostClusters: readonly bigint[];
}

/** The refcount table: where it is, and its non-zero entries. */
export interface RefcountTableLayout {
  readonly offset: bigint;
  readonly clusters: number;
  /** Entries in the table. */
  readonly size: number;
  /** The non-zero entries: index, whole word, block offset (bits 9..63). */
  readonly entries: readonly { readonly index: number; readonly word: bigint; readonly blockOffset: bigint }[];
}

/** One snapshot table entry: where it is, its fields, and its L1 table (when it lies inside the file). */
export interface SnapshotLayout {
  readonly index: number;
  readonly entryOffset: number;
  readonly fields: SnapshotEntryFields;
  readonly l1?: L1TableLayout;
}

/** Where a refcount lives: `bits` wide, at byte `offset`, starting at bit `shift` (LSB first) for widths below 8. */
export interface RefcountSlot {
  readonly cluster: bigint;
  readonly tableIndex: number;
  readonly blockOffset: bigint;
  readonly index: number;
  readonly offset: bigint;
  readonly bits: number;
  readonly shift: number;
}

/** Everything the catalogs need to know about one image. */
export interface FileLayout {
  readonly bytes: Uint8Array;
  readonly header: HeaderInfo;
  readonly clusterBits: number;
  readonly clusterSize: bigint;
  readonly fileLength: bigint;
  /** Virtual size. */
  readonly size: bigint;
  readonly version: number;
  readonly extendedL2: boolean;
  readonly externalDataFile: boolean;
  readonly refcountBits: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  /** The active L1 table, or undefined when it runs past the end of the file. */
  readonly activeL1?: L1TableLayout;
  /** Every distinct L2 table reachable from the active or a snapshot L1 table. */
  readonly l2Tables: readonly L2TableLayout[];
  /** The refcount table, or undefined when it runs past the end of the file. */
  readonly refcountTable?: RefcountTableLayout;
  /** Refcount block offsets that lie inside the file and are cluster aligned (the pokeable ones). */
  readonly refcountBlocks: ReadonlySet<bigint>;
  /** Snapshot table entries decoded in order (up to the first that does not decode). */
  readonly snapshots: readonly SnapshotLayout[];
  /** Bytes of the snapshot table (0 without snapshots, or when it could not be decoded whole). */
  readonly snapshotTableBytes: number;
  /** Metadata clusters by index (a cluster holding two structures is listed once, first found). */
  readonly metadata: ReadonlyMap<bigint, MetadataCluster>;
  readonly activeL2: readonly ActiveL2Table[];
  readonly activeData: readonly ActiveDataCluster[];
  /** Every host cluster referenced by metadata or data, active or in a snapshot (data of an external data file excluded). */
  readonly referenced: ReadonlySet<bigint>;
}

/** Bytes of the L1 entries all snapshots may add up to, per byte of file (a hostile-input bound, as walkImage's). */
const L1_BUDGET_FACTOR = 4n;

/** Big-endian u64 at `at` as two u32 halves are zero. */
function zeroWord(view: DataView, at: number): boolean {
  return view.getUint32(at) === 0 && view.getUint32(at + 4) === 0;
}

/**
 * The layout of the qcow2 file `bytes`. Throws the header's Qcow2FormatError when the header cannot
 * be decoded; a structure that runs past the end of the file or does not decode is left out (the
 * catalogs then find fewer places to corrupt).
 */
export function layoutOf(bytes: Uint8Array): FileLayout {
  const header = describeHeader(decodeHeader(bytes));
  const len = BigInt(bytes.length);
  const cs = BigInt(header.clusterSize);
  const cb = header.clusterBits;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const inside = (offset: bigint, length: bigint): boolean => offset >= 0n && length >= 0n && offset + length <= len;
  const l2ctx: L2Context = { clusterBits: cb, extendedL2: header.extendedL2, externalDataFile: header.externalDataFile };
  const l1params = { clusterBits: cb, extendedL2: header.extendedL2 };
  const entryBytes = header.extendedL2 ? 16 : 8;
  const l2Entries = header.clusterSize / entryBytes;

  const metadata = new Map<bigint, MetadataCluster>();
  const referenced = new Set<bigint>();
  const span = (offset: bigint, length: bigint, kind: MetadataKind, what: string): void => {
    if (length <= 0n) return;
    for (let c = offset / cs; c <= (offset + length - 1n) / cs; c++) {
      referenced.add(c);
      if (!metadata.has(c)) metadata.set(c, { cluster: c, kind, what });
    }
  };
  span(0n, 1n, 'header', 'header');

  const readL1 = (offset: bigint, size: number): L1TableLayout | undefined => {
    if (size > 0 && !inside(offset, 8n * BigInt(size))) return undefined;
    const entries: L1Slot[] = [];
    const base = Number(offset);
    for (let i = 0; i < size; i++) {
      const at = base + 8 * i;
      if (zeroWord(view, at)) continue;
      const e = decodeL1EntryFields(bytes, at, l1params);
      entries.push({ index: i, word: view.getBigUint64(at), l2Offset: l1L2Offset(e) });
    }
    return { offset, size, entries };
  };

  const l2ByOffset = new Map<bigint, { offset: bigint; entryCount: number; entries: L2Slot[]; references: { l1: string; index: number }[] }>();
  const visitL2 = (l1Name: string, t: L1TableLayout): void => {
    visitDistinctL2Tables(l1Name, t.entries, l2ByOffset, (e) => {
      // QEMU refuses unaligned L2 tables, and one running past the file reads zeros: neither is listed.
      if (e.l2Offset % cs !== 0n || !inside(e.l2Offset, cs)) return undefined;
      const entries: L2Slot[] = [];
      const base = Number(e.l2Offset);
      for (let j = 0; j < l2Entries; j++) {
        const at = base + j * entryBytes;
        if (zeroWord(view, at) && (!header.extendedL2 || zeroWord(view, at + 8))) continue;
        const f = decodeL2EntryFields(bytes, at, l1params);
        const { word, bitmap } = l2EntryWords(f);
        entries.push({ index: j, word, bitmap: bitmap ?? 0n, class: classifyL2Entry(f, l2ctx) });
      }
      return { offset: e.l2Offset, entryCount: l2Entries, entries, references: [{ l1: l1Name, index: e.index }] };
    });
  };

  const activeL1 = readL1(header.l1TableOffset, header.l1Size);
  if (activeL1 !== undefined) {
    span(activeL1.offset, 8n * BigInt(activeL1.size), 'active-l1', `active L1 table at 0x${activeL1.offset.toString(16)}`);
    visitL2('active', activeL1);
  }

  // Refcount table and the blocks it names (not decoded: single refcounts are read where poked).
  const tableBytes = BigInt(header.refcountTableClusters) * cs;
  let refcountTable: RefcountTableLayout | undefined;
  const refcountBlocks = new Set<bigint>();
  if (inside(header.refcountTableOffset, tableBytes)) {
    const size = Number(tableBytes / 8n);
    const entries: { index: number; word: bigint; blockOffset: bigint }[] = [];
    const base = Number(header.refcountTableOffset);
    for (let i = 0; i < size; i++) {
      const at = base + 8 * i;
      if (zeroWord(view, at)) continue;
      const e = decodeRefcountTableEntryFields(bytes, at, { clusterBits: cb, refcountOrder: header.refcountOrder });
      const blockOffset = refcountBlockOffset(e);
      entries.push({ index: i, word: view.getBigUint64(at), blockOffset });
      if (blockOffset !== 0n && blockOffset % cs === 0n && inside(blockOffset, cs)) refcountBlocks.add(blockOffset);
    }
    refcountTable = { offset: header.refcountTableOffset, clusters: header.refcountTableClusters, size, entries };
    span(header.refcountTableOffset, tableBytes, 'refcount-table', `refcount table at 0x${header.refcountTableOffset.toString(16)}`);
    for (const b of refcountBlocks) span(b, cs, 'refcount-block', `refcount block at 0x${b.toString(16)}`);
  }

  // Snapshot table, each snapshot's L1 table and the L2 tables behind it.
  const snapshots: SnapshotLayout[] = [];
  let snapshotTableBytes = 0;
  let l1Budget = (len / 8n) * L1_BUDGET_FACTOR + 1024n;
  let pos = header.snapshotsOffset;
  let complete = header.nbSnapshots > 0;
  for (let i = 0; i < header.nbSnapshots; i++) {
    if (!inside(pos, 40n)) {
      complete = false;
      break;
    }
    let fields: SnapshotEntryFields;
    try {
      fields = decodeSnapshotEntryFields(bytes, Number(pos), { ...l1params, isLast: i + 1 === header.nbSnapshots });
    } catch (e) {
      if (!isQcow2FormatError(e)) throw e;
      complete = false;
      break;
    }
    const l1Offset = u64ToBigInt(fields.l1TableOffset);
    let l1: L1TableLayout | undefined;
    if (BigInt(fields.l1Size) <= l1Budget) {
      l1Budget -= BigInt(fields.l1Size);
      l1 = readL1(l1Offset, fields.l1Size);
    }
    snapshots.push({ index: i, entryOffset: Number(pos), fields, ...(l1 !== undefined ? { l1 } : {}) });
    const n = 40 + fields.lenExtraData + fields.lenId + fields.lenName;
    pos += BigInt(i + 1 === header.nbSnapshots ? n : n + ((8 - (n % 8)) % 8));
  }
  if (complete) {
    snapshotTableBytes = Number(pos - header.snapshotsOffset);
    span(header.snapshotsOffset, BigInt(snapshotTableBytes), 'snapshot-table', `snapshot table at 0x${header.snapshotsOffset.toString(16)}`);
  }
  const l1Seen = new Set<string>([`${header.l1TableOffset}:${header.l1Size}`]);
  for (const s of snapshots) {
    if (s.l1 === undefined) continue;
    const key = `${s.l1.offset}:${s.l1.size}`;
    if (!l1Seen.has(key)) span(s.l1.offset, 8n * BigInt(s.l1.size), 'snapshot-l1', `L1 table of snapshot ${s.index} at 0x${s.l1.offset.toString(16)}`);
    l1Seen.add(key);
    visitL2(`snapshot ${s.index}`, s.l1);
  }

  // The LUKS header (full-disk-encryption extension), found through the generated extension decoder.
  const fde = fdeRange(bytes, header);
  if (fde !== undefined) span(fde.offset, fde.length, 'luks-header', 'LUKS header');

  // L2 tables are metadata; their entries reference data clusters.
  const dataClusters = (e: L2Slot): bigint[] => {
    const c = e.class;
    if (c.kind === 'compressed') {
      if (c.compressedBytes <= 0) return [];
      const out: bigint[] = [];
      for (let k = c.hostOffset / cs; k <= (c.hostOffset + BigInt(c.compressedBytes) - 1n) / cs; k++) out.push(k);
      return out;
    }
    if ((c.kind === 'normal' || c.kind === 'zero-alloc') && !header.externalDataFile) return [c.hostOffset / cs];
    return [];
  };
  const l2Tables = [...l2ByOffset.values()];
  const activeL2: ActiveL2Table[] = [];
  const activeData: ActiveDataCluster[] = [];
  for (const t of l2Tables) {
    span(t.offset, cs, 'l2', `L2 table at 0x${t.offset.toString(16)}`);
    for (const e of t.entries) for (const c of dataClusters(e)) referenced.add(c);
    const l1Indexes = t.references.filter((r) => r.l1 === 'active').map((r) => r.index);
    if (l1Indexes.length === 0) continue;
    activeL2.push({ table: t, l1Indexes });
    for (const i of l1Indexes) {
      for (const e of t.entries) {
        const hostClusters = dataClusters(e);
        if (hostClusters.length > 0) activeData.push({ guestOffset: (BigInt(i) * BigInt(l2Entries) + BigInt(e.index)) * cs, hostClusters });
      }
    }
  }
  return {
    bytes,
    header,
    clusterBits: cb,
    clusterSize: cs,
    fileLength: len,
    size: header.size,
    version: header.version,
    extendedL2: header.extendedL2,
    externalDataFile: header.externalDataFile,
    refcountBits: header.refcountBits,
    l2Entries,
    ...(activeL1 !== undefined ? { activeL1 } : {}),
    l2Tables,
    ...(refcountTable !== undefined ? { refcountTable } : {}),
    refcountBlocks,
    snapshots,
    snapshotTableBytes,
    metadata,
    activeL2,
    activeData,
    referenced,
  };
}

/** The LUKS header range the full-disk-encryption extension names (crypt_method 2), if one decodes. */
function fdeRange(bytes: Uint8Array, header: HeaderInfo): { offset: bigint; length: bigint } | undefined {
  if (header.cryptMethod !== 2) return undefined;
  try {
    for (const e of decodeQcow2(bytes).headerExtensions.extensions ?? []) {
      if (e.type >>> 0 !== HeaderExtensionType.FULL_DISK_ENCRYPTION) continue;
      const f = e.data as FullDiskEncryptionPointer;
      return { offset: u64ToBigInt(f.offset), length: u64ToBigInt(f.length) };
    }
  } catch (e) {
    if (!isQcow2FormatError(e)) throw e;
  }
  return undefined;
}

/** Where the refcount of host cluster `cluster` is stored, or undefined when no pokeable refcount block covers it. */
export function refcountSlot(layout: FileLayout, cluster: bigint): RefcountSlot | undefined {
  const r = layout.refcountTable;
  if (r === undefined) return undefined;
  const perBlock = (layout.clusterSize * 8n) / BigInt(layout.refcountBits);
  const tableIndex = cluster / perBlock;
  if (tableIndex >= BigInt(r.size)) return undefined;
  const te = r.entries.find((e) => BigInt(e.index) === tableIndex);
  if (te === undefined || !layout.refcountBlocks.has(te.blockOffset)) return undefined;
  const index = Number(cluster % perBlock);
  const bitPos = BigInt(index) * BigInt(layout.refcountBits);
  return {
    cluster,
    tableIndex: Number(tableIndex),
    blockOffset: te.blockOffset,
    index,
    offset: te.blockOffset + bitPos / 8n,
    bits: layout.refcountBits,
    shift: layout.refcountBits < 8 ? Number(bitPos % 8n) : 0,
  };
}

/** The cluster ranges the pokeable refcount blocks cover, in table order. */
export function coveredClusters(layout: FileLayout): { readonly first: bigint; readonly count: bigint }[] {
  const perBlock = (layout.clusterSize * 8n) / BigInt(layout.refcountBits);
  return (layout.refcountTable?.entries ?? [])
    .filter((e) => layout.refcountBlocks.has(e.blockOffset))
    .map((e) => ({ first: BigInt(e.index) * perBlock, count: perBlock }));
}

/**
 * The value of the field of `bits` bits at byte `offset`: big-endian for 8..64 bits (whole bytes),
 * or bits [shift, shift + bits) of one byte (LSB first) for 1, 2 and 4 bits.
 */
export function readField(bytes: Uint8Array, offset: bigint, bits: number, shift = 0): bigint {
  const at = Number(offset);
  if (bits < 8) return BigInt((bytes[at]! >> shift) & ((1 << bits) - 1));
  let v = 0n;
  for (let i = 0; i < bits / 8; i++) v = (v << 8n) | BigInt(bytes[at + i]!);
  return v;
}

/** Writes `value` into the field readField describes (in place). Throws RangeError when it does not fit. */
export function writeField(bytes: Uint8Array, offset: bigint, bits: number, value: bigint, shift = 0): void {
  if (value < 0n || value >= 1n << BigInt(bits)) throw new RangeError(`value ${value} does not fit ${bits} bits`);
  const at = Number(offset);
  if (at < 0 || at + Math.max(1, bits / 8) > bytes.length) throw new RangeError(`field at 0x${offset.toString(16)} is outside the file`);
  if (bits < 8) {
    const mask = ((1 << bits) - 1) << shift;
    bytes[at] = (bytes[at]! & ~mask) | (Number(value) << shift);
    return;
  }
  for (let i = bits / 8 - 1, v = value; i >= 0; i--, v >>= 8n) bytes[at + i] = Number(v & 0xffn);
}

/** The guest range one active L1 entry maps (cut at the virtual size; empty past it). */
export function guestRangeOfL1Index(layout: FileLayout, index: number): GuestRange {
  const perL2 = BigInt(layout.l2Entries) * layout.clusterSize;
  const from = BigInt(index) * perL2;
  const to = from + perL2 < layout.size ? from + perL2 : layout.size;
  return { offset: from, length: to > from ? to - from : 0n };
}

/** The guest clusters entry `index` of an active L2 table maps (one per active L1 entry pointing at the table). */
export function guestRangesOfL2Slot(layout: FileLayout, t: ActiveL2Table, index: number): GuestRange[] {
  return t.l1Indexes.map((i) => ({ offset: (BigInt(i) * BigInt(layout.l2Entries) + BigInt(index)) * layout.clusterSize, length: layout.clusterSize }));
}

/** The guest clusters of the active mapping whose data lives in any of `hostClusters`. */
export function guestRangesUsing(layout: FileLayout, hostClusters: ReadonlySet<bigint>): GuestRange[] {
  return layout.activeData.filter((d) => d.hostClusters.some((c) => hostClusters.has(c))).map((d) => ({ offset: d.guestOffset, length: layout.clusterSize }));
}

/** File offset of L1 entry `index` of the table at `tableOffset`. */
export function l1EntryOffset(tableOffset: bigint, index: number): bigint {
  return tableOffset + 8n * BigInt(index);
}

/** File offset of word 0 of L2 entry `index` of the table at `tableOffset` (word 1 follows with extended L2). */
export function l2EntryOffset(layout: FileLayout, tableOffset: bigint, index: number): bigint {
  return tableOffset + BigInt(index) * (layout.extendedL2 ? 16n : 8n);
}
