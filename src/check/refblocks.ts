/**
 * On-disk refcounts as `qemu-img check` reads and changes them: qcow2_get_refcount through QEMU's
 * refcount-block cache (block/qcow2-cache.c), which the check opens with the default options — 4
 * entries (MIN_REFCOUNT_CACHE_SIZE), least recently used replaced first.
 *
 * The cache decides when QEMU's refcount repairs reach the file. update_refcount changes a block in
 * the cache and marks it dirty; a dirty block is written back only when it is replaced, or when the
 * cache is flushed (qcow2_cache_write: rebuild_refcount_structure's qcow2_cache_empty, mark_clean /
 * mark_consistent, bdrv_flush in qcow2_write_snapshots and when the image is closed). Every write-back
 * first passes the metadata overlap check (ignoring refcount blocks): a block overlapping other
 * metadata — an inactive L1 table whose snapshot entry says it is huge or unaligned, say — is a
 * fatal corruption, the write-back fails (a replacement then fails the refcount read that needed
 * it) and the block's changes are lost with the image.
 *
 * The model writes each change to the working file at once (so that everything reading the file
 * sees what QEMU's cache would give) and remembers, per cache entry, the host writes still waiting
 * to be written back; repair.ts drops those the image never wrote back. Offsets in entries are
 * cluster aligned (the unaligned case fails before the cache, as in qcow2_get_refcount).
 */
import { decodeRefcountBlockFields, RefcountTableEntryMasks } from '../../generated/qcow2.ts';
import { isZeroBytes } from '../codec/index.ts';
import { refcountValue } from '../format/index.ts';
import { hostPage, viewHost } from '../model/index.ts';
import { PAGE_SIZE } from '../model/index.ts';
import { type HostIO } from '../model/index.ts';
import { hashHex, readable, reftableSize, signalCorruption, type CheckContext, type RefblockCacheEntry } from './context.ts';
import { EIO } from '../model/index.ts';
import { QCOW2_OL_REFCOUNT_BLOCK } from '../format/index.ts';
import { checkMetadataOverlap } from './overlap.ts';
import { reftableView, viewWord } from './tables.ts';

/** log2 of the refcounts per refcount block. */
export function refblockBits(c: CheckContext): number {
  return c.g.clusterBits + 3 - c.tx.img.header.refcountOrder;
}

/** Reftable entry `i` as its exact 64-bit word (the in-memory s->refcount_table; 0 past the file). */
export function reftableWord(c: CheckContext, i: number): bigint {
  return viewWord(reftableView(c.tx), i);
}

// ---------------------------------------------------------------------------------------------
// The cache (qcow2_cache_do_get, qcow2_cache_entry_flush, qcow2_cache_write, qcow2_cache_empty)

/**
 * qcow2_cache_entry_flush: a dirty entry is written back after the overlap check; on an overlap the
 * corruption is signalled and the entry stays dirty. Returns 0 or the errno.
 */
function entryFlush(c: CheckContext, e: RefblockCacheEntry, attach: 'previous' | 'next'): number {
  if (!e.dirty || e.offset === 0n) return 0;
  const overlap = checkMetadataOverlap(c, QCOW2_OL_REFCOUNT_BLOCK, e.offset, BigInt(c.g.clusterSize));
  if (overlap !== undefined) {
    signalCorruption(c, `Preventing invalid write on metadata (overlaps with ${overlap})`, attach);
    return EIO;
  }
  e.dirty = false;
  e.pending = [];
  return 0;
}

/**
 * qcow2_cache_get + qcow2_cache_put of the refcount block at `offset` (cluster aligned, not 0):
 * a hit, or the least recently used entry (the first of equals) written back and replaced. Returns
 * 0, or the errno when the write-back or the read (past BDRV_MAX_LENGTH) fails.
 */
export function cacheGet(c: CheckContext, offset: bigint, attach: 'previous' | 'next'): number {
  const cache = c.session.refblockCache;
  let victim: RefblockCacheEntry | undefined;
  // The lookup starts at (offset / table_size * 4) % 4 = 0 with 4 entries.
  for (const e of cache.entries) {
    if (e.offset === offset) {
      e.lru = ++cache.counter;
      return 0;
    }
    if (victim === undefined || e.lru < victim.lru) victim = e;
  }
  const e = victim!;
  const r = entryFlush(c, e, attach);
  if (r !== 0) return r;
  e.offset = 0n;
  if (!readable(offset, BigInt(c.g.clusterSize))) return EIO;
  e.offset = offset;
  e.lru = ++cache.counter;
  return 0;
}

/**
 * update_refcount's change of the block at `offset` (just got through cacheGet): the entry is dirty
 * and `writes` — the host writes the model made for it — wait for its write-back.
 */
export function cacheMarkDirty(c: CheckContext, offset: bigint, writes: readonly HostIO[]): void {
  const e = c.session.refblockCache.entries.find((x) => x.offset === offset);
  if (e === undefined) {
    // Not cached: QEMU could not have made the change; the writes never reach the file.
    for (const w of writes) c.session.droppedWrites.add(w);
    return;
  }
  e.dirty = true;
  e.pending.push(...writes);
}

/**
 * The host writes the model's refcount code made in `c.tx.io[from, to)`, as QEMU makes them: those
 * into a refcount block (one the reftable points to) are changes of that block in the cache, got
 * through the cache first; the others (tables, headers) were written directly.
 */
export function cacheTakeWrites(c: CheckContext, from: number, to: number, attach: 'previous' | 'next'): void {
  const cs = BigInt(c.g.clusterSize);
  let blocks: Set<bigint> | undefined;
  for (let k = from; k < to; k++) {
    const op = c.tx.io[k]!;
    if (op.kind !== 'write' || op.target === 'data') continue;
    const block = op.offset & ~(cs - 1n);
    blocks ??= new Set(Array.from(reftableView(c.tx).words, (w) => w & ~RefcountTableEntryMasks.reserved));
    if (!blocks.has(block) || op.offset + BigInt(op.bytes.length) > block + cs) continue;
    if (cacheGet(c, block, attach) !== 0) {
      c.session.droppedWrites.add(op);
      continue;
    }
    cacheMarkDirty(c, block, [op]);
  }
}

/** qcow2_cache_write: every dirty entry written back in entry order; 0 or the (last) errno. */
export function cacheWrite(c: CheckContext, attach: 'previous' | 'next'): number {
  let result = 0;
  for (const e of c.session.refblockCache.entries) {
    const r = entryFlush(c, e, attach);
    if (r !== 0) result = r;
  }
  return result;
}

/** qcow2_cache_empty: written back, then forgotten — unless the write-back failed (then nothing changes). */
export function cacheEmpty(c: CheckContext, attach: 'previous' | 'next'): number {
  const r = cacheWrite(c, attach);
  if (r !== 0) return r;
  const cache = c.session.refblockCache;
  for (const e of cache.entries) {
    e.offset = 0n;
    e.lru = 0;
  }
  cache.counter = 0;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Reading refcounts (qcow2_get_refcount)

export type RefblockRead =
  | { readonly kind: 'none' }
  | { readonly kind: 'error'; readonly errno: number }
  /** The block at `offset` is in the cache: its refcounts read from the working file. */
  | { readonly kind: 'block'; readonly offset: bigint };

/**
 * The refcount block for reftable index `t` as qcow2_get_refcount reaches it: absent (every refcount
 * 0), unreadable (unaligned offset — a corruption event — or the cache failed: EIO), or in the cache.
 */
export function readRefblock(c: CheckContext, t: number, attach: 'previous' | 'next'): RefblockRead {
  if (t >= reftableSize(c)) return { kind: 'none' };
  const offset = reftableWord(c, t) & ~RefcountTableEntryMasks.reserved;
  if (offset === 0n) return { kind: 'none' };
  if ((offset & BigInt(c.g.clusterSize - 1)) !== 0n) {
    signalCorruption(c, `Refblock offset ${hashHex(offset)} unaligned (reftable index: ${hashHex(BigInt(t))})`, attach);
    return { kind: 'error', errno: EIO };
  }
  const r = cacheGet(c, offset, attach);
  return r !== 0 ? { kind: 'error', errno: r } : { kind: 'block', offset };
}

/** Decoder parameters per refcount order. */
const ORDER_PARAMS: ReadonlyArray<{ readonly refcountOrder: number }> = [0, 1, 2, 3, 4, 5, 6].map((refcountOrder) => ({ refcountOrder }));

/**
 * Where refcount `index` of a block lies: the first byte of the smallest whole-byte run holding it,
 * the run's length, and the entry's position among the entries that run decodes to.
 */
function refcountSlot(order: number, index: number): { byte: number; length: number; sub: number } {
  if (order < 3) {
    const perByte = 8 >> order;
    return { byte: Math.floor(index / perByte), length: 1, sub: index % perByte };
  }
  const width = 1 << (order - 3);
  return { byte: index * width, length: width, sub: 0 };
}

/** Refcount `index` of the block at `offset` of the working file, through the generated decoder. */
export function refcountAt(c: CheckContext, offset: bigint, index: number): bigint {
  const order = c.tx.img.header.refcountOrder;
  const slot = refcountSlot(order, index);
  const bytes = viewHost(c.tx.img.file, offset + BigInt(slot.byte), slot.length);
  return refcountValue(decodeRefcountBlockFields(bytes, 0, ORDER_PARAMS[order]!).entries[slot.sub]!);
}

/**
 * The indexes in [from, to) of the block at `offset` whose refcount is not 0, ascending: the block's
 * bytes scanned for non-zero ones (holes and zero runs skipped), each such byte run decoded.
 */
export function nonZeroRefcounts(c: CheckContext, offset: bigint, from: number, to: number): number[] {
  const out: number[] = [];
  if (to <= from) return out;
  const order = c.tx.img.header.refcountOrder;
  const params = ORDER_PARAMS[order]!;
  const first = refcountSlot(order, from).byte;
  const last = refcountSlot(order, to - 1);
  const endByte = last.byte + last.length;
  const unit = order < 3 ? 1 : 1 << (order - 3);
  const start = offset + BigInt(first);
  const file = c.tx.img.file;
  // Page by page without copying: a page absent from the file is a hole of zeros.
  let pos = first;
  while (pos < endByte) {
    const abs = start + BigInt(pos - first);
    const pageIndex = Number(abs / BigInt(PAGE_SIZE));
    const within = Number(abs % BigInt(PAGE_SIZE));
    const n = Math.min(PAGE_SIZE - within, endByte - pos);
    const page = abs < file.length ? hostPage(file, pageIndex) : undefined;
    if (page !== undefined && !isZeroBytes(page, within, n)) {
      for (let i = 0; i < n; i++) {
        if (page[within + i] === 0) continue;
        const rel = pos + i;
        // The whole entry (or byte of entries) this non-zero byte belongs to, once.
        const entryByte = rel - (rel % unit);
        const bytes = viewHost(file, offset + BigInt(entryByte), unit);
        const entries = decodeRefcountBlockFields(bytes, 0, params).entries;
        const base = order < 3 ? entryByte * (8 >> order) : entryByte / unit;
        for (let j = 0; j < entries.length; j++) {
          const idx = base + j;
          if (idx < from || idx >= to || out[out.length - 1] === idx) continue;
          if (refcountValue(entries[j]!) !== 0n) out.push(idx);
        }
      }
    }
    pos += n;
  }
  return out;
}

/** qcow2_get_refcount of cluster `k`: the refcount, or the errno it fails with. */
export function getRefcountChecked(c: CheckContext, k: bigint, attach: 'previous' | 'next'): { ok: true; value: bigint } | { ok: false; errno: number } {
  const bits = BigInt(refblockBits(c));
  const tIndex = k >> bits;
  if (tIndex >= BigInt(reftableSize(c))) return { ok: true, value: 0n };
  const r = readRefblock(c, Number(tIndex), attach);
  if (r.kind === 'none') return { ok: true, value: 0n };
  if (r.kind === 'error') return { ok: false, errno: r.errno };
  return { ok: true, value: refcountAt(c, r.offset, Number(k & ((1n << bits) - 1n))) };
}
