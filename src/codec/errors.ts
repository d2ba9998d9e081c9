/**
 * Typed errors. Everything that can go wrong while decoding or encoding an image is reported as a
 * Qcow2FormatError carrying a stable code, the structure and field being read, and the absolute byte
 * offset in the buffer the decoder was given. Nothing else escapes a decoder (no RangeError, no
 * TypeError): generated code and the byte reader only ever throw this class.
 */

/** Stable error codes. New codes may be added; existing ones never change meaning. */
export type Qcow2ErrorCode =
  /** The structure runs past the end of the bytes available (file or enclosing structure). */
  | 'truncated'
  /** A field violates a `valid:` rule of spec/qcow2.ksy (magic, version, cluster_bits range, …). */
  | 'invalid-value'
  /** A repeat count or size is larger than the bytes that could possibly hold it. */
  | 'too-large'
  /** A value given to an encoder does not fit its field, or disagrees with a field it depends on. */
  | 'inconsistent';

/** What a Qcow2FormatError says about where it happened. */
export interface Qcow2ErrorLocation {
  /** The spec type being decoded or encoded, e.g. `header` or `l2_entry`. */
  readonly structure: string;
  /** The field of that type, e.g. `cluster_bits`. */
  readonly field: string;
  /** Absolute byte offset of the field in the buffer given to the decoder (encoders: in the output). */
  readonly offset: number;
}

/**
 * The only error class a decoder or encoder throws. The message names the structure, the field and
 * the offset in the form `structure.field at 0x…: problem`, so it can be searched for.
 */
export class Qcow2FormatError extends Error implements Qcow2ErrorLocation {
  override readonly name = 'Qcow2FormatError';
  readonly code: Qcow2ErrorCode;
  readonly structure: string;
  readonly field: string;
  readonly offset: number;
  /** The problem alone, without the location prefix. */
  readonly detail: string;

  constructor(code: Qcow2ErrorCode, where: Qcow2ErrorLocation, detail: string) {
    super(`${where.structure}.${where.field} at 0x${where.offset.toString(16)}: ${detail}`);
    this.code = code;
    this.structure = where.structure;
    this.field = where.field;
    this.offset = where.offset;
    this.detail = detail;
  }
}

/** True when `e` is a Qcow2FormatError (also across module copies). */
export function isQcow2FormatError(e: unknown): e is Qcow2FormatError {
  return e instanceof Qcow2FormatError || (e instanceof Error && e.name === 'Qcow2FormatError');
}
