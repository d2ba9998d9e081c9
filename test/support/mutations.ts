/**
 * A catalog of mutations of real qcow2 images, for decoder robustness properties: truncation
 * (weighted toward structure boundaries), bit flips inside metadata regions, and boundary values
 * written into header fields, extension fields, L1/L2/refcount-table entries, snapshot entries and
 * bitmap directory entries. Where the metadata is comes from decoding the original image with our
 * decoder (`locateMetadata`); the arbitraries (`mutationsArbitrary`) only pick among those places.
 */
import fc from 'fast-check';
import { decodeQcow2, HeaderExtensionType, HeaderLayout, type BitmapsExtension, type Qcow2 } from '../../generated/qcow2.ts';

/** The kinds of metadata region bit flips are aimed at. */
export type RegionKind =
  | 'header-cluster'
  | 'l1-table'
  | 'l2-table'
  | 'refcount-table'
  | 'refcount-block'
  | 'snapshot-table'
  | 'snapshot-l1-table'
  | 'bitmap-directory'
  | 'bitmap-table';

/** A byte range `[start, end)` of the image holding one metadata structure. */
export interface Region {
  readonly kind: RegionKind;
  readonly start: number;
  readonly end: number;
}

/** A big-endian integer field of the image, by name, absolute offset and width in bytes. */
export interface Field {
  readonly name: string;
  readonly offset: number;
  readonly width: 1 | 2 | 4 | 8;
}

/** Where the metadata of one image is, as found by decoding it. */
export interface ImageLayout {
  readonly name: string;
  readonly size: number;
  readonly clusterSize: number;
  readonly regions: readonly Region[];
  readonly fields: readonly Field[];
  /** Offsets where a structure starts or ends (truncation targets). */
  readonly boundaries: readonly number[];
}

/** One mutation. Offsets are absolute; a write or flip past the (possibly truncated) end is skipped. */
export type Mutation =
  | { readonly kind: 'truncate'; readonly length: number }
  | { readonly kind: 'flip'; readonly region: RegionKind; readonly offset: number; readonly bit: number }
  | { readonly kind: 'write'; readonly field: string; readonly offset: number; readonly width: 1 | 2 | 4 | 8; readonly value: bigint };

const MAX_FIELDS_PER_TABLE = 6;

/**
 * Decodes `bytes` (a well-formed image) with our decoder and lists its metadata regions, the
 * integer fields worth writing boundary values into, and the structure boundaries. Throws if the
 * image does not decode (it is meant for the matrix's QEMU-made images).
 */
export function locateMetadata(name: string, bytes: Uint8Array): ImageLayout {
  const q: Qcow2 = decodeQcow2(bytes);
  const h = q.header;
  const cs = h.clusterSize;
  const regions: Region[] = [];
  const fields: Field[] = [];
  const boundaries = new Set<number>([0, bytes.length, h.lenHeader, q.extensionsEnd]);
  const region = (kind: RegionKind, start: number, length: number): void => {
    const end = Math.min(start + length, bytes.length);
    if (length > 0 && start < end) {
      regions.push({ kind, start, end });
      boundaries.add(start);
      boundaries.add(end);
    }
  };
  const field = (fname: string, offset: number, width: Field['width']): void => {
    if (offset + width <= bytes.length) fields.push({ name: fname, offset, width });
  };
  const pos = (hi: number, lo: number): number => hi * 2 ** 32 + lo;

  // Header (v2: 72 bytes; v3: header_length) and the rest of cluster 0 (extensions, backing name).
  region('header-cluster', 0, cs);
  const L = HeaderLayout;
  type HeaderField = { readonly id: string; readonly offset: number; readonly size: Field['width'] };
  const header64: HeaderField[] = [L.backingFileOffset, L.size, L.l1TableOffset, L.refcountTableOffset, L.snapshotsOffset];
  const header32: HeaderField[] = [L.version, L.backingFileSize, L.clusterBits, L.cryptMethod, L.l1Size, L.refcountTableClusters, L.nbSnapshots];
  if (h.version >= 3) {
    header64.push(L.incompatibleFeatures, L.compatibleFeatures, L.autoclearFeatures);
    header32.push(L.refcountOrder, L.headerLength);
    if ((h.headerLength ?? 0) > L.compressionType.offset) field(`header.${L.compressionType.id}`, L.compressionType.offset, L.compressionType.size);
  }
  for (const f of header64) field(`header.${f.id}`, f.offset, f.size);
  for (const f of header32) field(`header.${f.id}`, f.offset, f.size);
  // Every header field's start, then the end of QEMU's 112-byte QCowHeader.
  for (const f of Object.values(L)) boundaries.add(f.offset);
  boundaries.add(112);

  // Header extensions: type and length of each, and the fields of the known pointer-bearing ones.
  let at = h.lenHeader;
  for (const [i, ext] of (q.headerExtensions.extensions ?? []).entries()) {
    field(`ext[${i}].type`, at, 4);
    field(`ext[${i}].len_data`, at + 4, 4);
    const data = at + 8;
    if (ext.type === HeaderExtensionType.BITMAPS) {
      field(`ext[${i}].bitmaps.nb_bitmaps`, data, 4);
      field(`ext[${i}].bitmaps.reserved`, data + 4, 4);
      field(`ext[${i}].bitmaps.bitmap_directory_size`, data + 8, 8);
      field(`ext[${i}].bitmaps.bitmap_directory_offset`, data + 16, 8);
    } else if (ext.type === HeaderExtensionType.FULL_DISK_ENCRYPTION) {
      field(`ext[${i}].fde.offset`, data, 8);
      field(`ext[${i}].fde.length`, data + 8, 8);
    }
    at = data + ext.lenData + ((8 - (ext.lenData % 8)) % 8);
    boundaries.add(data);
    boundaries.add(at);
  }

  // L1 tables (active and snapshots') and the L2 tables behind them.
  const l2Seen = new Set<number>();
  const l1 = (kind: RegionKind, label: string, offset: number, entries: Qcow2['l1Table']): void => {
    region(kind, offset, entries.length * 8);
    let listed = 0;
    for (const [i, e] of entries.entries()) {
      if (i < 2 || (e.isAllocated && listed < MAX_FIELDS_PER_TABLE)) {
        field(`${label}[${i}]`, offset + i * 8, 8);
        listed++;
      }
      if (!e.isAllocated) continue;
      const l2 = pos(e.l2OffsetHi, e.l2OffsetLo * 512);
      if (l2Seen.has(l2)) continue;
      l2Seen.add(l2);
      region('l2-table', l2, cs);
      const width = h.hasExtendedL2 ? 16 : 8;
      let l2Listed = 0;
      for (const [j, entry] of (e.l2Table?.entries ?? []).entries()) {
        const isSet = entry.compressed || entry.hostOffsetLo !== 0 || entry.hostOffsetHi !== 0 || entry.zero;
        if (j === 0 || (isSet && l2Listed < MAX_FIELDS_PER_TABLE)) {
          field(`l2@${l2}[${j}]`, l2 + j * width, 8);
          if (h.hasExtendedL2) field(`l2@${l2}[${j}].bitmaps`, l2 + j * width + 8, 8);
          l2Listed++;
        }
      }
    }
  };
  l1('l1-table', 'l1', pos(h.l1TableOffset.hi, h.l1TableOffset.lo), q.l1Table);

  // Refcount table and blocks.
  const rt = pos(h.refcountTableOffset.hi, h.refcountTableOffset.lo);
  region('refcount-table', rt, h.refcountTableClusters * cs);
  for (const [i, e] of q.refcountTable.entries.entries()) {
    if (i < 2 || e.isAllocated) {
      if (i < 2 + MAX_FIELDS_PER_TABLE) field(`reftable[${i}]`, rt + i * 8, 8);
    }
    if (e.isAllocated) region('refcount-block', pos(e.refblockOffsetHi, e.refblockOffsetLo * 512), cs);
  }

  // Snapshot table: entry fields, extra data, and each snapshot's L1 table.
  const st = pos(h.snapshotsOffset.hi, h.snapshotsOffset.lo);
  let sp = st;
  for (const [i, s] of q.snapshots.entries()) {
    const len = 40 + s.lenExtraData + s.lenId + s.lenName;
    // Every entry but the last is padded to 8 bytes (QEMU aligns each entry's start).
    const padded = i + 1 < q.snapshots.length ? len + ((8 - (len % 8)) % 8) : len;
    field(`snapshot[${i}].l1_table_offset`, sp, 8);
    field(`snapshot[${i}].l1_size`, sp + 8, 4);
    field(`snapshot[${i}].len_id`, sp + 12, 2);
    field(`snapshot[${i}].len_name`, sp + 14, 2);
    field(`snapshot[${i}].date_sec`, sp + 16, 4);
    field(`snapshot[${i}].vm_clock_nsec`, sp + 24, 8);
    field(`snapshot[${i}].vm_state_size`, sp + 32, 4);
    field(`snapshot[${i}].len_extra_data`, sp + 36, 4);
    if (s.lenExtraData >= 8) field(`snapshot[${i}].vm_state_size_large`, sp + 40, 8);
    if (s.lenExtraData >= 16) field(`snapshot[${i}].disk_size`, sp + 48, 8);
    if (s.lenExtraData >= 24) field(`snapshot[${i}].icount`, sp + 56, 8);
    boundaries.add(sp + 40);
    boundaries.add(sp + 40 + s.lenExtraData);
    sp += padded;
    l1('snapshot-l1-table', `snapshot[${i}].l1`, pos(s.l1TableOffset.hi, s.l1TableOffset.lo), s.l1Table);
  }
  region('snapshot-table', st, sp - st);

  // Bitmap directory and bitmap tables.
  for (const ext of q.headerExtensions.extensions ?? []) {
    if (ext.type !== HeaderExtensionType.BITMAPS) continue;
    const bm = ext.data as BitmapsExtension;
    const dir = pos(bm.bitmapDirectoryOffset.hi, bm.bitmapDirectoryOffset.lo);
    region('bitmap-directory', dir, pos(bm.bitmapDirectorySize.hi, bm.bitmapDirectorySize.lo));
    let dp = dir;
    for (const [i, e] of bm.bitmapDirectory.entries.entries()) {
      field(`bitmap[${i}].bitmap_table_offset`, dp, 8);
      field(`bitmap[${i}].bitmap_table_size`, dp + 8, 4);
      field(`bitmap[${i}].flags`, dp + 12, 4);
      field(`bitmap[${i}].type`, dp + 16, 1);
      field(`bitmap[${i}].granularity_bits`, dp + 17, 1);
      field(`bitmap[${i}].len_name`, dp + 18, 2);
      field(`bitmap[${i}].len_extra_data`, dp + 20, 4);
      const len = 24 + e.lenExtraData + e.lenName;
      dp += len + ((8 - (len % 8)) % 8);
      boundaries.add(dp);
      const bt = pos(e.bitmapTableOffset.hi, e.bitmapTableOffset.lo);
      region('bitmap-table', bt, e.bitmapTableSize * 8);
      if (e.bitmapTableSize > 0) field(`bitmap[${i}].table[0]`, bt, 8);
    }
  }

  return {
    name,
    size: bytes.length,
    clusterSize: cs,
    regions,
    fields,
    boundaries: [...boundaries].filter((b) => b >= 0 && b <= bytes.length).sort((a, b) => a - b),
  };
}

/** Boundary values per field width (the brief's list for 64- and 32-bit fields, analogues for narrower ones). */
export function boundaryValues(width: Field['width'], layout: Pick<ImageLayout, 'size' | 'clusterSize'>): bigint[] {
  const eof = BigInt(layout.size);
  const cs = BigInt(layout.clusterSize);
  const nearEof = [eof, eof - 8n, ((eof + cs - 1n) / cs) * cs];
  switch (width) {
    case 8:
      return [0n, 1n, 2n ** 31n - 1n, 2n ** 32n - 1n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, ...nearEof];
    case 4:
      return [0n, 1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, ...nearEof.filter((v) => v < 2n ** 32n)];
    case 2:
      return [0n, 1n, 0x7fffn, 0x8000n, 0xffffn];
    case 1:
      return [0n, 1n, 0x7fn, 0x80n, 0xffn];
  }
}

/**
 * An arbitrary of one mutation of the image described by `layout`: truncation (half of them at a
 * structure boundary ± 8 bytes, the rest anywhere), a bit flip in a metadata region (region kind
 * chosen uniformly, so the many L2 tables of one image do not drown the header), or a boundary
 * value written into a field.
 */
export function mutationArbitrary(layout: ImageLayout): fc.Arbitrary<Mutation> {
  const truncateAtBoundary = fc
    .tuple(fc.constantFrom(...layout.boundaries), fc.integer({ min: -8, max: 8 }))
    .map(([b, d]): Mutation => ({ kind: 'truncate', length: Math.max(0, Math.min(layout.size, b + d)) }));
  const truncateAnywhere = fc.integer({ min: 0, max: layout.size }).map((length): Mutation => ({ kind: 'truncate', length }));
  const kinds = [...new Set(layout.regions.map((r) => r.kind))];
  const flip = fc
    .constantFrom(...kinds)
    .chain((kind) => fc.constantFrom(...layout.regions.filter((r) => r.kind === kind)))
    .chain((r) =>
      fc.record({ offset: fc.integer({ min: r.start, max: r.end - 1 }), bit: fc.integer({ min: 0, max: 7 }) }).map(
        ({ offset, bit }): Mutation => ({ kind: 'flip', region: r.kind, offset, bit }),
      ),
    );
  const write = fc
    .constantFrom(...layout.fields)
    .chain((f) =>
      fc.constantFrom(...boundaryValues(f.width, layout)).map(
        (value): Mutation => ({ kind: 'write', field: f.name, offset: f.offset, width: f.width, value }),
      ),
    );
  return fc.oneof(
    { arbitrary: truncateAtBoundary, weight: 1 },
    { arbitrary: truncateAnywhere, weight: 1 },
    { arbitrary: flip, weight: 3 },
    { arbitrary: write, weight: 4 },
  );
}

/** One to three mutations of the image described by `layout`, applied in order. */
export function mutationsArbitrary(layout: ImageLayout): fc.Arbitrary<Mutation[]> {
  return fc.array(mutationArbitrary(layout), { minLength: 1, maxLength: 3 });
}

/** A mutated copy of `bytes` (the input is not modified). */
export function applyMutations(bytes: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let out = bytes.slice();
  for (const m of mutations) {
    switch (m.kind) {
      case 'truncate':
        out = out.subarray(0, Math.min(m.length, out.length));
        break;
      case 'flip':
        if (m.offset < out.length) out[m.offset]! ^= 1 << m.bit;
        break;
      case 'write':
        if (m.offset + m.width <= out.length) {
          for (let i = 0; i < m.width; i++) out[m.offset + i] = Number((m.value >> BigInt(8 * (m.width - 1 - i))) & 0xffn);
        }
        break;
    }
  }
  return out.slice(); // own, exactly-sized buffer (Kaitai reads the whole underlying ArrayBuffer view)
}
