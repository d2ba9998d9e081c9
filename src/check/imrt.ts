/**
 * The in-memory refcount table ("IMRT") `qemu-img check` builds while it counts references
 * (block/qcow2-refcount.c: realloc_refcount_array, qcow2_inc_refcounts_imrt's array,
 * alloc_clusters_imrt; docs/format/check.md#reference-counting-pass): one refcount per host cluster, kept sparse here (only
 * clusters with a non-zero count are stored) so that its memory follows the number of references,
 * not the length of the file.
 *
 * `size` is QEMU's `nb_clusters`: the number of clusters the array covers. It starts at the file's
 * cluster count and only grows — when a reference reaches the cluster after the last one, when a
 * refcount block outside the image is repaired, or when the rebuild allocates past the end.
 *
 * Counts are exact numbers: a count is at most the number of references, which is bounded by the
 * file's size, far below 2^53; the refcount maximum (2^bits - 1) is a bigint because it reaches 2^64-1.
 */
import { encodeRefcountBlock, type U64Fields } from '../../generated/qcow2.ts';
import { bigIntToU64 } from '../format/index.ts';

export class Imrt {
  private readonly counts = new Map<number, number>();

  constructor(
    /** Clusters covered (QEMU's nb_clusters). */
    public size: number,
    /** log2 of the refcount width (0..6). */
    readonly refcountOrder: number,
  ) {}

  /** The count of cluster `k` (0 when none or past the end). */
  get(k: number): number {
    return this.counts.get(k) ?? 0;
  }

  /** Sets the count of cluster `k` (0 removes it); does not change `size`. */
  set(k: number, v: number): void {
    if (v === 0) this.counts.delete(k);
    else this.counts.set(k, v);
  }

  /** Forgets every count (QEMU's memset after a rebuild); `size` stays. */
  clear(): void {
    this.counts.clear();
  }

  /** The clusters with a non-zero count, ascending. */
  sortedClusters(): number[] {
    return [...this.counts.keys()].sort((a, b) => a - b);
  }

  /** Number of clusters with a non-zero count. */
  get nonZeroCount(): number {
    return this.counts.size;
  }

  /**
   * `alloc_clusters_imrt`: the first run of `count` clusters with count 0 at or after
   * `first.value` (growing `size` when the run reaches past the end), marked 1; returns the first
   * cluster of the run. `first.value` moves to the first free cluster seen (even if that gap was
   * too small), as QEMU's `*first_free_cluster`.
   */
  allocClusters(count: number, first: { value: number }): number {
    let cluster = first.value;
    let firstGap = true;
    let contiguous = 0;
    // Bounded: every iteration moves `cluster` forward and the loop stops at `size`.
    for (; cluster < this.size && contiguous < count; cluster++) {
      if (this.get(cluster) === 0) {
        contiguous++;
        if (firstGap) {
          first.value = cluster;
          firstGap = false;
        }
      } else if (contiguous > 0) {
        contiguous = 0;
      }
    }
    if (contiguous < count) this.size = cluster + count - contiguous;
    cluster -= contiguous;
    for (let i = 0; i < count; i++) this.set(cluster + i, 1);
    return cluster;
  }

  /**
   * The on-disk bytes of the refcount block `index` of `entriesPerBlock` refcounts (`clusterSize`
   * bytes): the slice of this table QEMU writes as it is (counts past `size` are 0). Only the bytes
   * holding a non-zero count are encoded, by the generated refcount-block encoder at this table's
   * refcount width, one byte (or one refcount, when wider) at a time; the rest stays zero. A block
   * of 2 MiB clusters with 2-bit refcounts holds 8 Mi refcounts, of which a handful are not 0.
   */
  refblockBytes(index: number, entriesPerBlock: number, clusterSize: number): Uint8Array {
    const order = this.refcountOrder;
    const start = index * entriesPerBlock;
    const end = start + entriesPerBlock;
    // The clusters of the block with a count: by walking the counts or the block, whichever is shorter.
    const present: number[] = [];
    if (this.counts.size < entriesPerBlock) {
      for (const k of this.counts.keys()) if (k >= start && k < end) present.push(k - start);
      present.sort((a, b) => a - b);
    } else {
      for (let i = 0; i < entriesPerBlock; i++) if (this.counts.has(start + i)) present.push(i);
    }
    const out = new Uint8Array(clusterSize);
    // A unit: the entries one byte holds (widths below 8 bits), or one entry.
    const perUnit = order < 3 ? 8 >> order : 1;
    const unitBytes = order < 3 ? 1 : 1 << (order - 3);
    const params = { refcountOrder: order };
    let lastUnit = -1;
    for (const i of present) {
      const unit = Math.floor(i / perUnit);
      if (unit === lastUnit) continue;
      lastUnit = unit;
      const entries: Array<boolean | number | U64Fields> = [];
      for (let j = 0; j < perUnit; j++) {
        const v = this.get(start + unit * perUnit + j);
        entries.push(order === 0 ? v !== 0 : order === 6 ? bigIntToU64(BigInt(v)) : v);
      }
      out.set(encodeRefcountBlock({ entries }, params), unit * unitBytes);
    }
    return out;
  }
}
