/**
 * 64-bit values. The generated layer keeps every 64-bit quantity as exact 32-bit halves (the `u64`
 * type of spec/qcow2.ksy, or hi/lo bit fields of an entry); this module is the one place that turns
 * halves into bigint and back. Nothing here rounds: values above 2^53 and all-bits-set survive.
 */
import type { U64Fields } from '../../generated/qcow2.ts';
import { Qcow2FormatError } from '../codec/index.ts';

/** The largest 64-bit unsigned value. */
export const U64_MAX = (1n << 64n) - 1n;

/** The exact value of a `u64` (hi/lo halves). */
export function u64ToBigInt(v: U64Fields): bigint {
  return (BigInt(v.hi >>> 0) << 32n) | BigInt(v.lo >>> 0);
}

/** The `u64` halves of `v`; throws `inconsistent` when `v` is negative or wider than 64 bits. */
export function bigIntToU64(v: bigint, where = { structure: 'u64', field: 'value', offset: 0 }): U64Fields {
  if (v < 0n || v > U64_MAX) throw new Qcow2FormatError('inconsistent', where, `value ${v} does not fit 64 unsigned bits`);
  return { hi: Number(v >> 32n), lo: Number(v & 0xffffffffn) };
}

/** An offset stored as bits 32..N of `hi` and bits 9..31 of the low word shifted right by 9 (`lo9`). */
export function offsetFromParts(hi: number, lo9: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | (BigInt(lo9 >>> 0) << 9n);
}

/**
 * The (hi, lo9) parts of a 512-byte aligned offset below 2^(32+hiBits); throws `inconsistent`
 * if `offset` is unaligned or too large for the entry's offset field.
 */
export function offsetToParts(offset: bigint, hiBits: number, where = { structure: 'entry', field: 'offset', offset: 0 }): { hi: number; lo9: number } {
  if (offset < 0n || offset >= 1n << BigInt(32 + hiBits)) {
    throw new Qcow2FormatError('inconsistent', where, `offset 0x${offset.toString(16)} does not fit a ${32 + hiBits}-bit offset field`);
  }
  if ((offset & 0x1ffn) !== 0n) throw new Qcow2FormatError('inconsistent', where, `offset 0x${offset.toString(16)} is not 512-byte aligned`);
  return { hi: Number(offset >> 32n), lo9: Number((offset & 0xffffffffn) >> 9n) };
}

/** `v` as a JSON value: a number when it is at most 2^53, else a decimal string (exact either way). */
export function jsonU64(v: bigint): number | string {
  return v <= 2n ** 53n ? Number(v) : v.toString();
}
