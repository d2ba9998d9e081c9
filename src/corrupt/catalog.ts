/**
 * A catalog of named corruptions of a valid qcow2 image — the metadata inconsistencies `qemu-img
 * check` knows about (docs/format/check.md, the test-060 cases of docs/format/iotests.md#test-060-cases, docs/format/mapping.md for entry rules).
 * Each corruption takes an image (its bytes or a model Image) and an Rng, and either returns the
 * corrupted bytes with an exact account of what was poked (structure, field, file offset, old and new
 * value), its category, and the guest ranges whose content the corruption (or a repair of it) can
 * change — or says it is not applicable, when the image lacks what it needs (no compressed cluster,
 * version 3 only, no snapshot, ...).
 *
 * Structures are found through the image itself (src/corrupt/layout.ts over walkImage): no offset is
 * assumed. Pure: the input is never modified; the same image and the same Rng choices give the same
 * result. Used by test/qemu/corruption-injection.test.ts and by the corpus generator's invalid
 * families.
 */
import type { Image } from '../model/index.ts';
import { storeImage } from '../model/index.ts';
import { layoutOf, type FileLayout } from './layout.ts';
import { pick, type Rng } from './rng.ts';
import { type AppliedCorruption, type CorruptionOutcome, type Corruption, type CorruptionName, applied } from './corruption.ts';
import { refcountTooLow, refcountTooHigh, refcountZero, dirtyStale } from './refcount-corruptions.ts';
import { l2IntoMetadata, dataIntoMetadata, unalignedL1, unalignedL2, unalignedRefblock, reservedL1, reservedL2, reservedReftable, compressedCopied, v2ZeroFlag, compressedBitmap, allocAndZero, allocOnUnallocated, l1PastEof, l2PastEof, refblockPastEof } from './entry-corruptions.ts';
import { snapshotL1Unaligned, snapshotL1TooLarge, snapshotL1PastEof, snapshotExtraShort, snapshotExtraTooLarge } from './snapshot-corruptions.ts';

// What a corruption is, for the catalog's users.
export { CORRUPTION_CATEGORIES } from './corruption.ts';
export type { AppliedCorruption, Corruption, CorruptionCategory, CorruptionName, CorruptionOutcome, NotApplicable, Poke } from './corruption.ts';

/** Every corruption of the catalog, in a fixed order. */
export const CORRUPTIONS: readonly Corruption[] = [
  refcountTooLow,
  refcountTooHigh,
  refcountZero,
  l2IntoMetadata,
  dataIntoMetadata,
  unalignedL1,
  unalignedL2,
  unalignedRefblock,
  reservedL1,
  reservedL2,
  reservedReftable,
  compressedCopied,
  v2ZeroFlag,
  compressedBitmap,
  allocAndZero,
  allocOnUnallocated,
  l1PastEof,
  l2PastEof,
  refblockPastEof,
  snapshotL1Unaligned,
  snapshotL1TooLarge,
  snapshotL1PastEof,
  snapshotExtraShort,
  snapshotExtraTooLarge,
  dirtyStale,
];

/** The corruption called `name`; throws RangeError for an unknown name. */
export function corruptionNamed(name: string): Corruption {
  const c = CORRUPTIONS.find((k) => k.name === name);
  if (c === undefined) throw new RangeError(`no corruption named '${name}'`);
  return c;
}

/** The file layout of `source`: bytes as given, a model Image's stored file, or a layout already made. */
function toLayout(source: Uint8Array | Image | FileLayout): FileLayout {
  if (source instanceof Uint8Array) return layoutOf(source);
  if ('metadata' in source) return source;
  return layoutOf(storeImage(source));
}

/**
 * Applies corruption `name` to `source` — a qcow2 file's bytes, a model Image, or a layout from
 * layoutOf (to apply several corruptions to one image without decoding it again) — with choices from
 * `rng`. Returns the corrupted bytes and what was poked, or 'not-applicable' with the reason. Pure:
 * `source` is not modified. Throws the header's Qcow2FormatError when `source` has no decodable
 * header, RangeError for an unknown name.
 */
export function corrupt(source: Uint8Array | Image | FileLayout, name: CorruptionName, rng: Rng): CorruptionOutcome {
  const layout = toLayout(source);
  return corruptionNamed(name).apply(layout, rng);
}

/**
 * The corruptions among `names` (default: the whole catalog) that apply to `source`, each applied
 * with the Rng `rngFor` gives for its name: what a property or a corpus generator can pick from.
 * Same inputs, purity and errors as `corrupt`.
 */
export function applicableCorruptions(source: Uint8Array | Image | FileLayout, rngFor: (name: CorruptionName) => Rng, names: readonly CorruptionName[] = CORRUPTIONS.map((c) => c.name)): AppliedCorruption[] {
  const layout = toLayout(source);
  const out: AppliedCorruption[] = [];
  for (const n of names) {
    const r = corrupt(layout, n, rngFor(n));
    if (r.kind === 'applied') out.push(r);
  }
  return out;
}
