/**
 * The feature tags of a corpus image, read from its bytes with walkImage (the generated decoders):
 * what a reader must handle to read it (version, cluster size, entry kinds, subcluster states,
 * compressed blob placement, snapshots, bitmaps, extensions …). Families add their own tags; these
 * are the ones anybody can check by decoding the image, so they never claim more than the file holds.
 */
import { walkImage } from '../format/index.ts';

/**
 * Sorted, de-duplicated feature tags of the qcow2 file `bytes` (e.g. "version:3", "cluster-size:512",
 * "l2:compressed", "compressed:straddles-host-cluster", "subcluster:unallocated-alloc"). Throws the
 * decoder's error for an undecodable header (valid corpus images always decode).
 */
export function imageFeatures(bytes: Uint8Array): string[] {
  const w = walkImage(bytes);
  const h = w.header;
  const tags = new Set<string>();
  tags.add(`version:${h.version}`);
  tags.add(`cluster-size:${h.clusterSize}`);
  tags.add(`refcount-bits:${h.refcountBits}`);
  if (h.version === 3) tags.add(`header-length:${h.headerLength}`);
  if (h.extendedL2) tags.add('extended-l2');
  if (h.compressionType === 1) tags.add('compression-type:zstd');
  if (h.externalDataFile) tags.add('data-file');
  if (h.rawExternalData) tags.add('data-file-raw');
  if (h.lazyRefcounts) tags.add('lazy-refcounts');
  if (h.dirty) tags.add('dirty-bit');
  if (h.corrupt) tags.add('corrupt-bit');
  if (h.compatibleFeatures.unknownMask !== 0n) tags.add('unknown-compatible-bits');
  if (h.autoclearFeatures.unknownMask !== 0n) tags.add('unknown-autoclear-bits');
  if (h.size === 0n) tags.add('size-zero');
  if (h.size > 0xffffffffn) tags.add('size-above-4g');
  if (w.backingFile !== undefined) tags.add(`backing-format:${w.backingFile.format ?? 'probed'}`);
  for (const e of w.extensions) if (e.type === 'unknown') tags.add('unknown-header-extension');
  if (h.l1Size * 8 > h.clusterSize) tags.add('l1-multi-cluster');
  if (h.refcountTableClusters > 1 || h.refcountTableOffset !== BigInt(h.clusterSize)) tags.add('refcount-table-moved');
  if (w.refcounts.blocks.length > 1) tags.add('refcount-blocks:many');
  if (w.snapshots.count > 0) tags.add('snapshots');
  if (w.bitmaps !== undefined && w.bitmaps.bitmaps.length > 0) tags.add('bitmaps');

  // Entry kinds and subcluster states of every L2 table (active and snapshot).
  const compressedClusters = new Map<bigint, number>();
  for (const t of w.l2Tables) {
    for (const e of t.entries) {
      tags.add(`l2:${e.class.kind}`);
      if (e.subclusters !== undefined) for (const s of new Set(e.subclusters)) tags.add(`subcluster:${s}`);
      if (e.class.kind === 'compressed') {
        const d = e.class;
        const first = d.hostOffset >> BigInt(h.clusterBits);
        const last = (d.hostOffset + BigInt(d.compressedBytes) - 1n) >> BigInt(h.clusterBits);
        if (last > first) tags.add('compressed:straddles-host-cluster');
        compressedClusters.set(first, (compressedClusters.get(first) ?? 0) + 1);
      }
    }
  }
  if ([...compressedClusters.values()].some((n) => n > 1)) tags.add('compressed:shared-host-cluster');
  return [...tags].sort();
}
