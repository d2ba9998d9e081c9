/**
 * Names of the header's feature bits and header extension types (docs/format/header.md#feature-bits, docs/format/extensions.md), and decoding of a
 * 64-bit feature field into the names this implementation knows plus a mask of the bits it does not.
 */
import { match } from 'ts-pattern';
import type { U64Fields } from '../../generated/qcow2.ts';
import { AutoclearFeatureBit, CompatibleFeatureBit, FeatureType, HeaderExtensionType, IncompatibleFeatureBit } from '../../generated/qcow2.ts';
import { u64ToBigInt } from './u64.ts';

/** The three feature fields of a version-3 header. */
export type FeatureField = 'incompatible' | 'compatible' | 'autoclear';

/** A known feature bit: its number in its field, the name QEMU writes in its feature table, and a short key. */
export interface KnownFeature {
  readonly bit: number;
  /** The name as in QEMU's feature name table (e.g. "dirty bit"). */
  readonly name: string;
  /** A stable identifier for programs (e.g. "dirty"). */
  readonly key: string;
}

/** Incompatible feature bits (unknown set bit ⇒ an image must not be opened). */
export const INCOMPATIBLE_FEATURES: readonly KnownFeature[] = [
  { bit: IncompatibleFeatureBit.DIRTY, name: 'dirty bit', key: 'dirty' },
  { bit: IncompatibleFeatureBit.CORRUPT, name: 'corrupt bit', key: 'corrupt' },
  { bit: IncompatibleFeatureBit.EXTERNAL_DATA_FILE, name: 'external data file', key: 'data-file' },
  { bit: IncompatibleFeatureBit.COMPRESSION_TYPE, name: 'compression type', key: 'compression-type' },
  { bit: IncompatibleFeatureBit.EXTENDED_L2, name: 'extended L2 entries', key: 'extended-l2' },
];

/** Compatible feature bits (unknown ones may be ignored). */
export const COMPATIBLE_FEATURES: readonly KnownFeature[] = [{ bit: CompatibleFeatureBit.LAZY_REFCOUNTS, name: 'lazy refcounts', key: 'lazy-refcounts' }];

/** Autoclear feature bits (a writer that does not know one must clear it). */
export const AUTOCLEAR_FEATURES: readonly KnownFeature[] = [
  { bit: AutoclearFeatureBit.BITMAPS, name: 'bitmaps', key: 'bitmaps' },
  { bit: AutoclearFeatureBit.RAW_EXTERNAL_DATA, name: 'raw external data', key: 'data-file-raw' },
];

/** The known bits of one feature field. */
export function knownFeatures(field: FeatureField): readonly KnownFeature[] {
  return match(field)
    .with('incompatible', () => INCOMPATIBLE_FEATURES)
    .with('compatible', () => COMPATIBLE_FEATURES)
    .with('autoclear', () => AUTOCLEAR_FEATURES)
    .exhaustive();
}

/** The feature field a feature-name-table entry's type byte names (0, 1, 2), or undefined for other values. */
export function featureFieldOfType(featureType: number): FeatureField | undefined {
  return featureType === FeatureType.INCOMPATIBLE ? 'incompatible'
    : featureType === FeatureType.COMPATIBLE ? 'compatible'
      : featureType === FeatureType.AUTOCLEAR ? 'autoclear' : undefined;
}

/** A feature field split into the bits this implementation knows and the rest. */
export interface DecodedFeatures {
  /** The exact field value. */
  readonly value: bigint;
  /** Names of the known bits that are set, in bit order. */
  readonly names: readonly string[];
  /** Keys of the known bits that are set, in bit order. */
  readonly keys: readonly string[];
  /** The set bits that are not known (0n if none). */
  readonly unknownMask: bigint;
}

/**
 * Splits a 64-bit feature field (bigint or u64 halves) into the names of the known set bits and
 * the mask of unknown set bits. Exact for every bit 0..63.
 */
export function decodeFeatureBits(field: FeatureField, value: bigint | U64Fields): DecodedFeatures {
  const v = typeof value === 'bigint' ? value : u64ToBigInt(value);
  const names: string[] = [];
  const keys: string[] = [];
  let unknownMask = v;
  for (const f of knownFeatures(field)) {
    const bit = 1n << BigInt(f.bit);
    if ((v & bit) !== 0n) {
      names.push(f.name);
      keys.push(f.key);
      unknownMask &= ~bit;
    }
  }
  return { value: v, names, keys, unknownMask };
}

/** The header extension types under the names QEMU's documentation gives them. */
const EXTENSION_TYPE_NAMES: Readonly<Record<number, string>> = {
  [HeaderExtensionType.END]: 'end of header extensions',
  [HeaderExtensionType.BACKING_FILE_FORMAT]: 'backing file format name',
  [HeaderExtensionType.FEATURE_NAME_TABLE]: 'feature name table',
  [HeaderExtensionType.BITMAPS]: 'bitmaps extension',
  [HeaderExtensionType.FULL_DISK_ENCRYPTION]: 'full disk encryption header pointer',
  [HeaderExtensionType.EXTERNAL_DATA_FILE]: 'external data file name',
};

/** Name of a header extension type as in QEMU's documentation, or undefined when the type is unknown. */
export function headerExtensionTypeName(type: number): string | undefined {
  return EXTENSION_TYPE_NAMES[type >>> 0];
}

/** A header extension type as `0x` + 8 hex digits (e.g. `0x6803f857`). */
export function headerExtensionTypeHex(type: number): string {
  return `0x${(type >>> 0).toString(16).padStart(8, '0')}`;
}
