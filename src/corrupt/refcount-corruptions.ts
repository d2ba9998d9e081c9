/**
 * Corruptions of the refcounts (category 'refcount') and the stale refcounts a crash leaves behind a
 * dirty lazy-refcounts image (category 'dirty').
 */
import { CompatibleFeatureMask, IncompatibleFeatureMask } from '../../generated/qcow2.ts';
import { coveredClusters, readField, refcountSlot, type FileLayout } from './layout.ts';
import { bigBelow, pick } from './rng.ts';
import { type Corruption, INCOMPAT_OFFSET, COMPAT_OFFSET, Poker, applied, notApplicable, referencedRefcounts, refcountChanged, setRefcount } from './corruption.ts';

export const refcountTooLow: Corruption = {
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

export const refcountTooHigh: Corruption = {
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

export const refcountZero: Corruption = {
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

export const dirtyStale: Corruption = {
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

