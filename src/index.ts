/**
 * The public API of qcow2-ref.
 *
 * - Every structure of spec/qcow2.ksy: `decodeX(bytes, offset, params)` / `encodeX(fields, params)`
 *   and their interfaces (generated; 64-bit values as exact hi/lo halves).
 * - The meaning of the bits: entry kinds, subcluster states, feature names, 64-bit helpers.
 * - `walkImage(bytes)`: every structure of an image, each distinct table decoded once.
 * - Errors: only `Qcow2FormatError` (code, structure, field, offset) escapes a decoder.
 */
export * from '../generated/qcow2.ts';
export * from './format/errors.ts';
export * from './format/u64.ts';
export * from './format/entries.ts';
export * from './format/features.ts';
export * from './format/walk.ts';
