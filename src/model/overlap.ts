/**
 * QEMU's metadata overlap check (qcow2_pre_write_overlap_check, docs/format/overlap-checks.md) with the default
 * "cached" template: before data is written at a host range, the range (rounded out to clusters) must
 * not touch the header cluster, the active L1 table, an active L2 table, the refcount table, a
 * refcount block or the snapshot table. An overlap is a fatal corruption: QEMU refuses the write,
 * sets the corrupt bit and stops using the image.
 */
import { decodeL1EntryFields, decodeRefcountTableEntryFields } from '../../generated/qcow2.ts';
import { l1L2Offset, refcountBlockOffset } from '../format/entries.ts';
import { EIO, ModelError } from './errors.ts';
import { hostPage } from './host-file.ts';
import { PAGE_SIZE } from './page-map.ts';
import { INCOMPAT_CORRUPT } from './image.ts';
import { l1Entry } from './mapping.ts';
import { reftableEntry, reftableSize } from './refcount.ts';
import { type Tx, checkpointImg, geo, isOwnedPage, setHeaderFields } from './tx.ts';

/**
 * The non-zero table-entry offsets of one 4 KiB page of an L1 table or refcount table, decoded once
 * per page object through the generated decoders. Pages are immutable, so the page object is the
 * cache key: a step that changes one entry makes a new page, and only that page is decoded again.
 * The overlap check runs before every compressed write, and decoding the whole tables each time
 * (2048 L1 + 8192 reftable entries for 1 TiB with 64 KiB clusters) was 46 % of the mixed benchmark.
 */
interface PageEntries {
  readonly clusterBits: number;
  /** Entry index within the page (the 8-byte slot), ascending. */
  readonly slots: number[];
  /** The exact offset each entry holds (non-zero). */
  readonly offsets: bigint[];
  /** offset / cluster size when the offset is cluster aligned and below 2^53, else -1. */
  readonly clusters: number[];
}

const SLOTS_PER_PAGE = PAGE_SIZE / 8;
const l1PageCache = new WeakMap<Uint8Array, PageEntries>();
const reftablePageCache = new WeakMap<Uint8Array, PageEntries>();

function decodePage(page: Uint8Array, clusterBits: number, kind: 'l1' | 'reftable'): PageEntries {
  const slots: number[] = [];
  const offsets: bigint[] = [];
  const clusters: number[] = [];
  const mask = (1n << BigInt(clusterBits)) - 1n;
  for (let slot = 0; slot < SLOTS_PER_PAGE; slot++) {
    const at = slot * 8;
    // An all-zero entry holds offset 0 (no table): skip it without decoding.
    let any = 0;
    for (let k = 0; k < 8; k++) any |= page[at + k]!;
    if (any === 0) continue;
    const offset = kind === 'l1'
      ? l1L2Offset(decodeL1EntryFields(page, at, { clusterBits, extendedL2: false }))
      : refcountBlockOffset(decodeRefcountTableEntryFields(page, at, { clusterBits, refcountOrder: 0 }));
    if (offset === 0n) continue;
    slots.push(slot);
    offsets.push(offset);
    clusters.push((offset & mask) === 0n && offset < 1n << 53n ? Number(offset >> BigInt(clusterBits)) : -1);
  }
  return { clusterBits, slots, offsets, clusters };
}

function pageEntries(page: Uint8Array, clusterBits: number, kind: 'l1' | 'reftable', cacheable: boolean): PageEntries {
  // A page the running operation may still change in place is decoded, never cached.
  if (!cacheable) return decodePage(page, clusterBits, kind);
  const cache = kind === 'l1' ? l1PageCache : reftablePageCache;
  let e = cache.get(page);
  if (e === undefined || e.clusterBits !== clusterBits) {
    e = decodePage(page, clusterBits, kind);
    cache.set(page, e);
  }
  return e;
}

/**
 * Visits, in index order, the entries [0, count) of the table at `tableOffset` whose offset is not
 * 0, until `visit` returns true; returns whether it did. The table must start 8-byte aligned.
 */
function someEntry(tx: Tx, tableOffset: bigint, count: number, kind: 'l1' | 'reftable',
  visit: (index: number, offset: bigint, cluster: number) => boolean): boolean {
  if (count <= 0) return false;
  const cb = geo(tx).clusterBits;
  const end = tableOffset + BigInt(count) * 8n;
  const firstPage = Number(tableOffset / BigInt(PAGE_SIZE));
  const lastPage = Number((end - 1n) / BigInt(PAGE_SIZE));
  for (let p = firstPage; p <= lastPage; p++) {
    const page = hostPage(tx.img.file, p);
    if (page === undefined) continue; // a hole: every entry is 0
    const e = pageEntries(page, cb, kind, !isOwnedPage(tx, p, page));
    // Table index of slot 0 of this page (may be negative for the page holding the table start).
    const base = Number((BigInt(p) * BigInt(PAGE_SIZE) - tableOffset) / 8n);
    for (let k = 0; k < e.slots.length; k++) {
      const index = base + e.slots[k]!;
      if (index < 0 || index >= count) continue;
      if (visit(index, e.offsets[k]!, e.clusters[k]!)) return true;
    }
  }
  return false;
}

/** The metadata section [offset, offset+length) overlaps, by QEMU's name, or undefined. */
export function metadataOverlap(tx: Tx, offset: bigint, length: bigint): string | undefined {
  const g = geo(tx);
  const cs = BigInt(g.clusterSize);
  const start = offset & ~(cs - 1n);
  const end = (offset + length + cs - 1n) & ~(cs - 1n);
  const hits = (from: bigint, len: bigint): boolean => len > 0n && from < end && start < from + len;
  // The checked range in clusters, as exact numbers when it is below 2^53 (else compare bigints).
  const exact = end < 1n << 53n;
  const startC = exact ? Number(start >> BigInt(g.clusterBits)) : 0;
  const endC = exact ? Number(end >> BigInt(g.clusterBits)) : 0;
  const hitsCluster = (from: bigint, cluster: number): boolean =>
    exact && cluster >= 0 ? cluster >= startC && cluster < endC : hits(from, cs);
  const h = tx.img.header;
  if (hits(0n, cs)) return 'qcow2_header';
  if (hits(h.l1TableOffset, BigInt(h.l1Size) * 8n)) return 'active L1 table';
  if ((h.l1TableOffset & 7n) === 0n) {
    const found = someEntry(tx, h.l1TableOffset, h.l1Size, 'l1', (i, l2, cluster) => {
      // An unaligned L2 offset fails as reading the entry does (l1Entry throws QEMU's error).
      if ((l2 & (cs - 1n)) !== 0n) l1Entry(tx, i);
      return hitsCluster(l2, cluster);
    });
    if (found) return 'active L2 table';
  } else {
    for (let i = 0; i < h.l1Size; i++) {
      const l2 = l1Entry(tx, i).l2Offset;
      if (l2 !== 0n && hits(l2, cs)) return 'active L2 table';
    }
  }
  if (hits(h.refcountTableOffset, BigInt(h.refcountTableClusters) * cs)) return 'refcount table';
  if ((h.refcountTableOffset & 7n) === 0n) {
    if (someEntry(tx, h.refcountTableOffset, reftableSize(tx), 'reftable', (_i, block, cluster) => hitsCluster(block, cluster))) {
      return 'refcount block';
    }
  } else {
    for (let i = 0; i < reftableSize(tx); i++) {
      const block = reftableEntry(tx, i);
      if (block !== 0n && hits(block, cs)) return 'refcount block';
    }
  }
  if (h.nbSnapshots > 0 && hits(h.snapshotsOffset, cs)) return 'snapshot table';
  return undefined;
}

/**
 * `qcow2_signal_corruption` (fatal, writable image): writes the corrupt bit and throws the EIO the
 * request fails with, carrying the image as QEMU leaves it (what `tx` holds now plus the bit).
 */
export function signalFatalCorruption(tx: Tx, message: string): never {
  setHeaderFields(tx, { incompatibleFeatures: tx.img.header.incompatibleFeatures | INCOMPAT_CORRUPT });
  const e = new ModelError('corrupt', EIO, `qcow2: Marking image as corrupt: ${message}; further corruption events will be suppressed`);
  e.committed = { image: checkpointImg(tx), io: [...tx.io] };
  throw e;
}
