/**
 * Corruptions of one L1, L2 or refcount-table entry: pointers into metadata, unaligned offsets, reserved
 * bits, contradictory flags, invalid subcluster bitmaps and pointers past the end of the file.
 */
import { L1EntryMasks, L2EntryMasks, RefcountTableEntryMasks } from '../../generated/qcow2.ts';
import { bigBelow, pick } from './rng.ts';
import { MAX_REFBLOCK_PAST_EOF_BYTES, hex, l1Slots, l2Slots, l2Kind, reftableSlots, metadataTargets, pastEof, bitOf, usersOf, l1Word, l2Descriptor, l2Bitmap, reftableWord, someOr, wordCorruption, anyL2Entry, unalignedOffset, unalignedMapping, l2PointedAt } from './corruption.ts';

export const l2IntoMetadata = wordCorruption(
  'l2-into-metadata', 'pointer',
  'an active L1 entry points its L2 table at a metadata cluster, COPIED set (test 060 "L2 reference into L1", docs/format/iotests.md#test-060-cases)',
  l1Word,
  (l, rng) => someOr(l1Slots(l, rng.int(4) !== 0 ? 'prefer' : false), 'the active L1 table is empty'),
  (l, rng, s) => {
    const targets = metadataTargets(l, (s.word & L1EntryMasks.l2Offset) / l.clusterSize);
    if (targets.length === 0) return 'no other metadata cluster to point at';
    const t = pick(rng, targets);
    return { value: L1EntryMasks.copied | (t.cluster * l.clusterSize), note: ` (the ${t.what})`, affected: usersOf(l, t.cluster * l.clusterSize) };
  },
);

export const dataIntoMetadata = wordCorruption(
  'data-into-metadata', 'pointer',
  'an active L2 entry maps its guest cluster onto a metadata cluster, COPIED set (test 060 "data cluster into refblock", "data into inactive L2", docs/format/iotests.md#test-060-cases)',
  l2Descriptor,
  anyL2Entry,
  (l, rng, s) => {
    const t = pick(rng, metadataTargets(l, -1n));
    return l2PointedAt(l, s, t.cluster * l.clusterSize, ` (the ${t.what})`, usersOf(l, t.cluster * l.clusterSize));
  },
);

export const unalignedL1 = wordCorruption(
  'unaligned-l1-entry', 'alignment',
  'an allocated active L1 entry gets an L2 offset that is 512-aligned but not cluster aligned (test 060 "unaligned L1 entry", docs/format/mapping.md#l1-entries)',
  l1Word,
  (l) => someOr(l1Slots(l, true), 'no allocated L1 entry'),
  (l, rng, s) => unalignedMapping(l, rng, s.word, L1EntryMasks.l2Offset),
);

export const unalignedL2 = wordCorruption(
  'unaligned-l2-entry', 'alignment',
  'a normal or preallocated-zero L2 entry gets a host offset that is 512-aligned but not cluster aligned (test 060 "unaligned L2 entry", "unaligned prealloc zero", docs/format/mapping.md#cluster-types)',
  l2Descriptor,
  (l) => someOr(l2Slots(l, (s) => {
    const k = l2Kind(l, s.word);
    return (k === 'normal' || k === 'zero-alloc') && (s.word & L2EntryMasks.hostOffset) !== 0n;
  }), 'no allocated normal or zero-alloc L2 entry'),
  (l, rng, s) => unalignedMapping(l, rng, s.word, L2EntryMasks.hostOffset),
);

export const unalignedRefblock = wordCorruption(
  'unaligned-refblock-entry', 'alignment',
  'a refcount-table entry gets a block offset that is 512-aligned but not cluster aligned (test 060 "unaligned reftable entry", docs/format/refcounts.md#refcount-table)',
  reftableWord,
  (l) => someOr(reftableSlots(l, false).filter((s) => (s.word & RefcountTableEntryMasks.refblockOffset) !== 0n), 'no refcount block'),
  (l, rng, s) => unalignedOffset(l, rng, s.word, RefcountTableEntryMasks.refblockOffset),
);

export const reservedL1 = wordCorruption(
  'reserved-bits-l1', 'reserved-bits',
  'a reserved bit (L1E_RESERVED_MASK) of an active L1 entry is set (docs/format/mapping.md#l1-entries)',
  l1Word,
  (l, rng) => someOr(l1Slots(l, rng.int(4) !== 0 ? 'prefer' : false).filter((s) => (s.word & L1EntryMasks.reserved) !== L1EntryMasks.reserved), 'the active L1 table is empty'),
  (_l, rng, s) => s.word | bitOf(rng, L1EntryMasks.reserved & ~s.word),
);

export const reservedL2 = wordCorruption(
  'reserved-bits-l2', 'reserved-bits',
  'a reserved bit (L2E_STD_RESERVED_MASK) of a standard (not compressed) active L2 entry is set (docs/format/mapping.md#standard-l2-entries: reads work, check counts it)',
  l2Descriptor,
  (l, rng) => someOr(l2Slots(l, (s) => (s.word & L2EntryMasks.compressed) === 0n, rng.int(4) === 0), 'no standard active L2 entry'),
  (_l, rng, s) => {
    const free = L2EntryMasks.reserved & ~s.word;
    return free === 0n ? 'every reserved bit is already set' : s.word | bitOf(rng, free);
  },
);

export const reservedReftable = wordCorruption(
  'reserved-bits-reftable', 'reserved-bits',
  'a reserved bit (mask 0x1ff) of a refcount-table entry is set (docs/format/refcounts.md#refcount-table)',
  reftableWord,
  (l, rng) => someOr(reftableSlots(l, rng.int(4) === 0).filter((s) => (s.word & RefcountTableEntryMasks.reserved) !== RefcountTableEntryMasks.reserved), 'no refcount-table entry'),
  (_l, rng, s) => s.word | bitOf(rng, RefcountTableEntryMasks.reserved & ~s.word),
);

export const compressedCopied = wordCorruption(
  'compressed-copied', 'flags',
  'COPIED is set on a compressed L2 entry (docs/format/mapping.md#standard-l2-entries: compressed entries are never COPIED)',
  l2Descriptor,
  (l) => someOr(l2Slots(l, (s) => (s.word & L2EntryMasks.compressed) !== 0n && (s.word & L2EntryMasks.copied) === 0n), 'no compressed cluster in the active L2 tables'),
  (_l, _rng, s) => s.word | L2EntryMasks.copied,
);

export const v2ZeroFlag = wordCorruption(
  'v2-zero-flag', 'flags',
  'the zero flag (bit 0) on a standard L2 entry of a version 2 image (docs/format/mapping.md#cluster-types: fatal on access, not flagged by check)',
  l2Descriptor,
  (l, rng) => (l.version !== 2 ? 'version 3 image: the zero flag is legal'
    : someOr(l2Slots(l, (s) => (s.word & L2EntryMasks.compressed) === 0n && (s.word & L2EntryMasks.zero) === 0n, rng.int(3) === 0), 'no standard active L2 entry')),
  (_l, _rng, s) => s.word | L2EntryMasks.zero,
);

export const compressedBitmap = wordCorruption(
  'compressed-nonzero-bitmap', 'subcluster',
  'an extended-L2 compressed entry gets a non-zero subcluster bitmap (docs/format/mapping.md#compressed-clusters: check ERROR compressed cluster ... non-zero subcluster allocation bitmap)',
  l2Bitmap,
  (l) => (!l.extendedL2 ? 'no extended L2 entries' : someOr(l2Slots(l, (s) => (s.word & L2EntryMasks.compressed) !== 0n), 'no compressed cluster in the active L2 tables')),
  (_l, rng) => pick(rng, [1n, 1n << BigInt(rng.int(64)), bigBelow(rng, 1n << 64n) | 1n, (1n << 64n) - 1n]),
);

export const allocAndZero = wordCorruption(
  'alloc-and-zero-subcluster', 'subcluster',
  'an allocated extended-L2 entry gets one subcluster both allocated and zero (docs/format/mapping.md#subcluster-types: INVALID; check ERROR ... corrupted subcluster allocation bitmap)',
  l2Bitmap,
  (l) => (!l.extendedL2 ? 'no extended L2 entries'
    : someOr(l2Slots(l, (s) => l2Kind(l, s.word) === 'normal' && (s.word & L2EntryMasks.hostOffset) !== 0n), 'no allocated extended-L2 entry')),
  (_l, rng, s) => {
    const n = BigInt(rng.int(32));
    return { value: s.bitmap | (1n << n) | (1n << (32n + n)), note: ` (subcluster ${n} allocated and zero)` };
  },
);

export const allocOnUnallocated = wordCorruption(
  'alloc-bits-on-unallocated', 'subcluster',
  'an extended-L2 entry without host offset gets allocation bits (docs/format/mapping.md#subcluster-types: INVALID; check ERROR: Unallocated cluster has non-zero subcluster allocation map)',
  l2Bitmap,
  (l) => (!l.extendedL2 ? 'no extended L2 entries'
    : someOr(l2Slots(l, (s) => l2Kind(l, s.word) === 'unallocated' && (s.bitmap & L2EntryMasks.allocBitmap) !== L2EntryMasks.allocBitmap, true), 'no unallocated extended-L2 entry')),
  (_l, rng, s) => {
    const v = s.bitmap | pick(rng, [1n << BigInt(rng.int(32)), L2EntryMasks.allocBitmap, bigBelow(rng, L2EntryMasks.allocBitmap) + 1n]);
    return v === s.bitmap ? 'the chosen bits are already set' : v;
  },
);

export const l1PastEof = wordCorruption(
  'l1-entry-past-eof', 'past-eof',
  'an active L1 entry points at an L2 table past the end of the file, COPIED set (docs/format/mapping.md#read-resolution: reads zeros; check: region exceeding the end of the file)',
  l1Word,
  (l, rng) => someOr(l1Slots(l, rng.int(3) !== 0 ? 'prefer' : false), 'the active L1 table is empty'),
  (l, rng) => {
    const o = pastEof(l, rng, L1EntryMasks.l2Offset);
    return o === undefined ? 'the file ends past the largest L2 offset' : { value: L1EntryMasks.copied | o, note: ` (file length ${hex(l.fileLength)})` };
  },
);

export const l2PastEof = wordCorruption(
  'l2-entry-past-eof', 'past-eof',
  'an active L2 entry maps its guest cluster past the end of the file, COPIED set (test 080 0x800000ffffff0000; check: region exceeding the end of the file)',
  l2Descriptor,
  anyL2Entry,
  (l, rng, s) => {
    const o = pastEof(l, rng, L2EntryMasks.hostOffset);
    return o === undefined ? 'the file ends past the largest host offset' : l2PointedAt(l, s, o, ` (file length ${hex(l.fileLength)})`);
  },
);

export const refblockPastEof = wordCorruption(
  'refblock-past-eof', 'past-eof',
  'a refcount-table entry (used or empty) points at a refcount block past the end of the file (test 108; -r all: Repairing refcount block N is outside image)',
  reftableWord,
  (l, rng) => someOr(reftableSlots(l, rng.int(3) === 0), 'no refcount table'),
  (l, rng) => {
    const far = MAX_REFBLOCK_PAST_EOF_BYTES / l.clusterSize;
    const o = pastEof(l, rng, RefcountTableEntryMasks.refblockOffset, far > 1n ? far : 1n);
    return o === undefined ? 'no offset past the end of the file fits' : { value: o, note: ` (file length ${hex(l.fileLength)})` };
  },
);
