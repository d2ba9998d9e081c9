/**
 * Hostile-input mutations of a qcow2 file: where they may land (every size, count and offset field of
 * the header, the header extensions, L1/L2/refcount-table/refcount-block entries, snapshot table
 * entries and bitmap directory entries; the metadata regions for bit flips; the structure boundaries
 * for truncation) and how they are applied. Where things are comes from the image itself
 * (layout.ts over walkImage); nothing here assumes an offset.
 *
 * The values written are QEMU's and the format's edges: 0, 1, 2^31-1, 2^31, 2^32-1, 2^53+1, 2^63,
 * 2^64-1, the file length and the cluster boundaries around it, and for extension lengths and the
 * backing-file name the lengths that end just inside, at, and just past the end of cluster 0 (the
 * "extension too large" cases of test 080, docs/format/extensions.md#extension-errors, docs/format/iotests.md#test-080-cases).
 *
 * Pure and free of randomness: a property (test/support/hostile-campaign.ts) picks from the
 * lists; `applyMutations` returns a new array. Finding the targets walks the whole image (walkImage:
 * every entry and refcount decoded), which is meant for seed images, computed once.
 */
import { HeaderLayout } from '../../generated/qcow2.ts';
import { walkImage } from '../format/index.ts';
import { layoutOf } from './layout.ts';

/** The kinds of region bit flips aim at. */
export type RegionKind =
  | 'header-cluster'
  | 'l1-table'
  | 'l2-table'
  | 'refcount-table'
  | 'refcount-block'
  | 'snapshot-table'
  | 'snapshot-l1-table'
  | 'bitmap-directory'
  | 'bitmap-table'
  | 'luks-header';

/** Bytes [start, end) of the file holding one metadata structure. */
export interface MutationRegion {
  readonly kind: RegionKind;
  readonly start: number;
  readonly end: number;
}

/** What a field holds, which decides the values worth writing into it. */
export type FieldRole = 'offset' | 'size' | 'count' | 'entry' | 'flags' | 'extension-length' | 'other';

/** A big-endian integer field: name, absolute offset, width in bytes and role. */
export interface MutationField {
  readonly name: string;
  readonly offset: number;
  readonly width: 1 | 2 | 4 | 8;
  readonly role: FieldRole;
  /** For extension lengths: file offset where the extension's data starts (its end must stay inside cluster 0). */
  readonly dataOffset?: number;
}

/** Where one image can be mutated. */
export interface MutationTargets {
  readonly fileLength: number;
  readonly clusterSize: number;
  readonly regions: readonly MutationRegion[];
  readonly fields: readonly MutationField[];
  /** Offsets where a structure starts or ends (truncation targets), sorted, inside [0, fileLength]. */
  readonly boundaries: readonly number[];
}

/** One mutation. Offsets are absolute; a flip or write past the (possibly truncated) end is skipped. */
export type Mutation =
  | { readonly kind: 'truncate'; readonly length: number }
  | { readonly kind: 'flip'; readonly region: RegionKind; readonly offset: number; readonly bit: number }
  | { readonly kind: 'write'; readonly field: string; readonly offset: number; readonly width: 1 | 2 | 4 | 8; readonly value: bigint };

/** Entries listed per table: the first two and up to this many allocated ones. */
const FIELDS_PER_TABLE = 6;
/** Refcount blocks: entries listed per block. */
const REFCOUNTS_PER_BLOCK = 4;

/**
 * Every place of `bytes` (a qcow2 file whose header decodes) worth mutating. Throws the header's
 * Qcow2FormatError when the header does not decode; structures that do not decode contribute nothing.
 */
export function mutationTargets(bytes: Uint8Array): MutationTargets {
  const w = walkImage(bytes);
  const l = layoutOf(bytes);
  const h = w.header;
  const len = bytes.length;
  const cs = h.clusterSize;
  const regions: MutationRegion[] = [];
  const fields: MutationField[] = [];
  const boundaries = new Set<number>([0, len, h.headerLength, Math.min(cs, len)]);
  const num = (v: bigint): number => (v > BigInt(len) ? len : Number(v));
  const region = (kind: RegionKind, start: bigint, length: bigint): void => {
    const s = num(start);
    const e = num(start + length);
    if (e > s) {
      regions.push({ kind, start: s, end: e });
      boundaries.add(s);
      boundaries.add(e);
    }
  };
  const field = (name: string, offset: number | bigint, width: MutationField['width'], role: FieldRole, dataOffset?: number): void => {
    const o = typeof offset === 'bigint' ? (offset > BigInt(len) ? len : Number(offset)) : offset;
    if (o >= 0 && o + width <= len) fields.push({ name, offset: o, width, role, ...(dataOffset !== undefined ? { dataOffset } : {}) });
  };

  // Header (docs/format/header.md#header-layout).
  region('header-cluster', 0n, BigInt(cs));
  const L = HeaderLayout;
  const header: [{ readonly id: string; readonly offset: number; readonly size: MutationField['width'] }, FieldRole][] = [
    [L.version, 'other'],
    [L.backingFileOffset, 'offset'],
    [L.backingFileSize, 'size'],
    [L.clusterBits, 'other'],
    [L.size, 'size'],
    [L.cryptMethod, 'other'],
    [L.l1Size, 'count'],
    [L.l1TableOffset, 'offset'],
    [L.refcountTableOffset, 'offset'],
    [L.refcountTableClusters, 'count'],
    [L.nbSnapshots, 'count'],
    [L.snapshotsOffset, 'offset'],
  ];
  if (h.version >= 3) {
    header.push([L.incompatibleFeatures, 'flags'], [L.compatibleFeatures, 'flags'], [L.autoclearFeatures, 'flags']);
    header.push([L.refcountOrder, 'other'], [L.headerLength, 'size']);
    if (h.headerLength > L.compressionType.offset) header.push([L.compressionType, 'other']);
  }
  for (const [f, role] of header) {
    field(`header.${f.id}`, f.offset, f.size, role);
    boundaries.add(f.offset);
  }

  // Header extensions: type and length of each (the end marker too), and the known pointer fields.
  for (const [i, e] of w.extensions.entries()) {
    const data = e.offset + 8;
    field(`ext[${i}].type`, e.offset, 4, 'other');
    field(`ext[${i}].len_data`, e.offset + 4, 4, 'extension-length', data);
    boundaries.add(e.offset);
    boundaries.add(data);
    boundaries.add(data + e.length);
    if (e.type === 'bitmaps') {
      field(`ext[${i}].bitmaps.nb_bitmaps`, data, 4, 'count');
      field(`ext[${i}].bitmaps.reserved`, data + 4, 4, 'other');
      field(`ext[${i}].bitmaps.bitmap_directory_size`, data + 8, 8, 'size');
      field(`ext[${i}].bitmaps.bitmap_directory_offset`, data + 16, 8, 'offset');
    } else if (e.type === 'full-disk-encryption') {
      field(`ext[${i}].fde.offset`, data, 8, 'offset');
      field(`ext[${i}].fde.length`, data + 8, 8, 'size');
      region('luks-header', e.headerOffset, e.headerLength < BigInt(4 * cs) ? e.headerLength : BigInt(4 * cs));
    } else if (e.type === 'feature-name-table') {
      // The first entry's type and bit bytes.
      field(`ext[${i}].feature[0].type`, data, 1, 'other');
      field(`ext[${i}].feature[0].bit`, data + 1, 1, 'other');
    }
  }

  // L1 tables (active and snapshots') and the L2 tables behind them.
  const l1 = (label: string, kind: RegionKind, offset: bigint, size: number, entries: readonly { index: number; l2Offset: bigint }[]): void => {
    region(kind, offset, 8n * BigInt(size));
    const listed = new Set<number>();
    for (let i = 0; i < Math.min(2, size); i++) listed.add(i);
    for (const e of entries) if (listed.size < FIELDS_PER_TABLE + 2) listed.add(e.index);
    for (const i of listed) field(`${label}[${i}]`, offset + 8n * BigInt(i), 8, 'entry');
  };
  if (w.activeL1.error === undefined) l1('l1', 'l1-table', w.activeL1.offset, w.activeL1.size, w.activeL1.entries);
  const entryBytes = h.extendedL2 ? 16n : 8n;
  for (const t of w.l2Tables) {
    if (t.error !== undefined) continue;
    region('l2-table', t.offset, BigInt(cs));
    const listed = new Set<number>([0]);
    for (const e of t.entries) if (listed.size < FIELDS_PER_TABLE + 1) listed.add(e.index);
    for (const i of listed) {
      const at = t.offset + entryBytes * BigInt(i);
      field(`l2@0x${t.offset.toString(16)}[${i}]`, at, 8, 'entry');
      if (h.extendedL2) field(`l2@0x${t.offset.toString(16)}[${i}].bitmap`, at + 8n, 8, 'entry');
    }
  }

  // Refcount table and blocks.
  const r = w.refcounts;
  if (r.error === undefined) {
    region('refcount-table', r.tableOffset, BigInt(r.tableClusters) * BigInt(cs));
    const listed = new Set<number>();
    for (let i = 0; i < Math.min(2, r.tableSize); i++) listed.add(i);
    for (const e of r.entries) if (listed.size < FIELDS_PER_TABLE + 2) listed.add(e.index);
    for (const i of listed) field(`reftable[${i}]`, r.tableOffset + 8n * BigInt(i), 8, 'entry');
    const width = (h.refcountBits >= 8 ? h.refcountBits / 8 : 1) as MutationField['width'];
    for (const b of r.blocks) {
      if (b.error !== undefined) continue;
      region('refcount-block', b.offset, BigInt(cs));
      for (let i = 0; i < REFCOUNTS_PER_BLOCK; i++) field(`refblock@0x${b.offset.toString(16)}[${i}]`, b.offset + BigInt(i * width), width, 'count');
    }
  }

  // Snapshot table: every fixed field of each entry, its extra data, and each snapshot's L1 table.
  if (l.snapshotTableBytes > 0) region('snapshot-table', w.snapshots.offset, BigInt(l.snapshotTableBytes));
  for (const s of w.snapshots.entries) {
    const o = s.entryOffset;
    const e = `snapshot[${s.index}]`;
    field(`${e}.l1_table_offset`, o, 8, 'offset');
    field(`${e}.l1_size`, o + 8, 4, 'count');
    field(`${e}.len_id`, o + 12, 2, 'size');
    field(`${e}.len_name`, o + 14, 2, 'size');
    field(`${e}.date_sec`, o + 16, 4, 'other');
    field(`${e}.date_nsec`, o + 20, 4, 'other');
    field(`${e}.vm_clock_nsec`, o + 24, 8, 'other');
    field(`${e}.vm_state_size`, o + 32, 4, 'size');
    field(`${e}.len_extra_data`, o + 36, 4, 'size');
    if (s.extraDataSize >= 8) field(`${e}.vm_state_size_large`, o + 40, 8, 'size');
    if (s.extraDataSize >= 16) field(`${e}.disk_size`, o + 48, 8, 'size');
    if (s.extraDataSize >= 24) field(`${e}.icount`, o + 56, 8, 'other');
    boundaries.add(o);
    boundaries.add(o + 40);
    boundaries.add(o + 40 + s.extraDataSize);
    if (s.l1.error === undefined && s.l1.sameAs === undefined) l1(`${e}.l1`, 'snapshot-l1-table', s.l1.offset, s.l1.size, s.l1.entries);
  }

  // Bitmap directory entries and bitmap tables.
  const dir = w.bitmaps;
  if (dir !== undefined && dir.error === undefined) {
    region('bitmap-directory', dir.offset, dir.size);
    let at = dir.offset;
    for (const [i, b] of dir.bitmaps.entries()) {
      const e = `bitmap[${i}]`;
      field(`${e}.bitmap_table_offset`, at, 8, 'offset');
      field(`${e}.bitmap_table_size`, at + 8n, 4, 'count');
      field(`${e}.flags`, at + 12n, 4, 'flags');
      field(`${e}.type`, at + 16n, 1, 'other');
      field(`${e}.granularity_bits`, at + 17n, 1, 'other');
      field(`${e}.len_name`, at + 18n, 2, 'size');
      field(`${e}.len_extra_data`, at + 20n, 4, 'size');
      const entryLen = 24n + BigInt(b.extraDataSize) + BigInt(b.name.length);
      at += entryLen + ((8n - (entryLen % 8n)) % 8n);
      boundaries.add(num(at));
      region('bitmap-table', b.tableOffset, 8n * BigInt(b.tableSize));
      if (b.tableSize > 0) field(`${e}.table[0]`, b.tableOffset, 8, 'entry');
    }
  }

  return {
    fileLength: len,
    clusterSize: cs,
    regions,
    fields,
    boundaries: [...boundaries].filter((b) => b >= 0 && b <= len).sort((a, b) => a - b),
  };
}

/**
 * The values worth writing into `f`: for every width the edges 0, 1 and all-ones with the signed
 * edges (2^31-1, 2^31 for 32 bits; 2^63-1, 2^63 and 2^53+1 for 64 bits, plus 2^31-1 and 2^32-1);
 * for offsets and sizes also the file length, the cluster boundary around it and 8 below it; for
 * extension lengths the lengths that end just inside, exactly at and just past the end of cluster 0.
 */
export function boundaryValues(f: MutationField, t: Pick<MutationTargets, 'fileLength' | 'clusterSize'>): bigint[] {
  const eof = BigInt(t.fileLength);
  const cs = BigInt(t.clusterSize);
  const out: bigint[] = [];
  switch (f.width) {
    case 8:
      out.push(0n, 1n, 2n ** 31n - 1n, 2n ** 32n - 1n, 2n ** 53n + 1n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n);
      break;
    case 4:
      out.push(0n, 1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n);
      break;
    case 2:
      out.push(0n, 1n, 0x7fffn, 0x8000n, 0xffffn);
      break;
    case 1:
      out.push(0n, 1n, 0x7fn, 0x80n, 0xffn);
      break;
  }
  if (f.role === 'offset' || f.role === 'size' || f.role === 'count') {
    out.push(eof, eof - 8n, ((eof + cs - 1n) / cs) * cs, cs, cs - 1n);
  }
  if (f.role === 'extension-length' && f.dataOffset !== undefined) {
    const room = cs - BigInt(f.dataOffset);
    out.push(room - 8n, room - 1n, room, room + 1n, room + 8n);
  }
  const max = (1n << BigInt(8 * f.width)) - 1n;
  return [...new Set(out.filter((v) => v >= 0n && v <= max))];
}

/** A mutated copy of `bytes` (the input is not modified): each mutation in order. */
export function applyMutations(bytes: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let out = bytes.slice();
  for (const m of mutations) {
    switch (m.kind) {
      case 'truncate':
        out = out.subarray(0, Math.max(0, Math.min(m.length, out.length)));
        break;
      case 'flip':
        if (m.offset >= 0 && m.offset < out.length) out[m.offset]! ^= 1 << (m.bit & 7);
        break;
      case 'write':
        if (m.offset >= 0 && m.offset + m.width <= out.length) {
          for (let i = 0; i < m.width; i++) out[m.offset + i] = Number((m.value >> BigInt(8 * (m.width - 1 - i))) & 0xffn);
        }
        break;
    }
  }
  // An exactly sized buffer of its own (no view into a larger one).
  return out.slice();
}
