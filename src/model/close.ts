/**
 * Lazy refcounts, the dirty bit and closing an image (docs/format/features.md#dirty-bit-and-lazy-refcounts, open-validation.md #25; QEMU 7.2
 * block/qcow2.c qcow2_mark_dirty, qcow2_mark_clean, qcow2_inactivate, qcow2_write_caches;
 * block/qcow2-cluster.c qcow2_alloc_cluster_link_l2).
 *
 * With compatible bit 0 ("lazy refcounts", v3 only) QEMU does not order refcount updates before the
 * L2 entries that depend on them. To stay recoverable it first sets incompatible bit 0 ("dirty"):
 * `qcow2_mark_dirty` writes the 8-byte incompatible_features field and flushes, once per session, on
 * the first write that links new clusters into an L2 table (qcow2_alloc_cluster_link_l2 — not on
 * in-place writes, zero writes, discards or compressed writes [7.2, measured with qemu-io `abort`]).
 * From then on a flush writes the L2 cache but not the refcount-block cache
 * (`qcow2_need_accurate_refcounts` is false), so after a crash the on-disk refcounts may be too low.
 * That is safe because the dirty bit makes the next writable open run `qemu-img check -r all`, which
 * rebuilds the refcounts from the L1/L2 tables; a read-only open does not need correct refcounts.
 *
 * A clean close (`qcow2_inactivate` → `qcow2_mark_clean`) flushes both caches and only then clears
 * the bit (qcow2_update_header). An image that was never closed — the state `step` leaves after an
 * allocating write with lazy refcounts — still has the dirty bit set: on disk that is exactly what a
 * crashed QEMU leaves, and QEMU would repair it on the next writable open.
 *
 * The model writes refcounts through at once (it has no caches), so its file mid-session has the
 * refcounts QEMU holds in memory; QEMU's file mid-session may have lower ones on disk. Allocation is
 * decided from the in-memory refcounts in both, so after `closeImage` the files are identical.
 */
import { ENOTSUP, ModelError } from './errors.ts';
import type { HostIO } from './host-io.ts';
import { COMPAT_LAZY_REFCOUNTS, INCOMPAT_DIRTY, type Image } from './image.ts';
import { beginTx, hostFlush, setHeaderFields, setSession, type Tx } from './tx.ts';

/**
 * Whether QEMU uses lazy refcounts for `img`: compatible bit 0 on a version 3 image (the
 * `lazy-refcounts` runtime option defaults to that bit; QEMU refuses it on v2).
 */
export function usesLazyRefcounts(img: Image): boolean {
  return img.header.version === 3 && (img.header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
}

/** Whether the dirty bit (incompatible bit 0) is set in `img`'s header. */
export function isDirty(img: Image): boolean {
  return (img.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
}

/**
 * `qcow2_mark_dirty`: when the image is not dirty yet, writes incompatible_features with bit 0 set
 * (one 8-byte write at header offset 72) and flushes, and records that this session set the bit.
 * Does nothing when the bit is already set.
 */
export function markDirty(tx: Tx): void {
  if (isDirty(tx.img)) return;
  setHeaderFields(tx, { incompatibleFeatures: tx.img.header.incompatibleFeatures | INCOMPAT_DIRTY });
  // bdrv_flush(bs->file->bs): the bit is on disk before any refcount update is allowed to lag.
  hostFlush(tx);
  setSession(tx, { dirtyBySession: true });
}

/**
 * Refuses to change an image whose dirty bit was already set when it was loaded (a QEMU session
 * with lazy refcounts ended without a clean close). QEMU would first repair the refcounts on the
 * writable open (`qemu-img check -r all`, docs/format/open-validation.md#qemus-order #25) — src/open/open.ts openImage with
 * `writable: true` does exactly that; an image loaded with plain loadImage is not repaired, and
 * writing on top of possibly wrong refcounts could hand out clusters that are in use. Throws
 * ModelError 'dirty' (ENOTSUP) naming the dirty bit. A bit this session set is fine.
 */
export function checkNotDirtyOnLoad(tx: Tx, what: string): void {
  if (!isDirty(tx.img) || tx.img.session.dirtyBySession === true) return;
  throw new ModelError('dirty', ENOTSUP,
    `${what}: the image is dirty (incompatible bit 0 was set when it was loaded: lazy refcounts and no clean close); ` +
    `QEMU repairs its refcounts on a writable open (openImage with writable: true, or 'qcow2-ref check -r all' first)`);
}

/**
 * What QEMU does when it closes `image` cleanly (bdrv_close → bdrv_flush → qcow2_close →
 * qcow2_inactivate): caches flushed (a flush barrier: the model has no caches, its writes are
 * already issued), then — if this session set the dirty bit — `qcow2_mark_clean` clears it with a
 * header rewrite followed by a flush. Returns the closed image and that I/O; `image` is unchanged.
 *
 * A dirty bit that was already set when the image was loaded is left set: QEMU would have repaired
 * and cleared it on a writable open (openImage with `writable: true` does; after a plain loadImage
 * checkNotDirtyOnLoad refuses writes), and a read-only QEMU open leaves it too.
 *
 * Not calling closeImage leaves the image as a crash (or `qemu-io … -c abort`) would: the dirty bit
 * set if an allocating write happened with lazy refcounts.
 *
 * QEMU's qcow2_update_header rewrites the whole header cluster; the model writes only the 8 bytes of
 * incompatible_features, which gives the same file whenever the header cluster is laid out as QEMU
 * writes it (images from qemu-img create or createImage). It differs for a header cluster with
 * unknown header extensions, which QEMU writes back in reversed order (docs/format/extensions.md#unknown-extensions).
 */
export function closeImage(image: Image): { image: Image; io: readonly HostIO[] } {
  const tx = beginTx(image);
  // qcow2_flush_caches / qcow2_inactivate: L2 and refcount caches written, then the file flushed.
  hostFlush(tx);
  if (isDirty(tx.img) && tx.img.session.dirtyBySession === true) {
    // qcow2_mark_clean: "Clears the dirty bit and flushes before if necessary" — only after the
    // refcounts are on disk (the flush above) may the bit that promises a repair go away.
    setHeaderFields(tx, { incompatibleFeatures: tx.img.header.incompatibleFeatures & ~INCOMPAT_DIRTY });
    setSession(tx, { dirtyBySession: false });
    hostFlush(tx);
  }
  return { image: tx.img, io: tx.io };
}
