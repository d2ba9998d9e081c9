/**
 * Exact decimal printing of doubles, as glibc's printf does it: the double's exact binary value,
 * rounded once, ties to even. Shared by `check` (%0.2f) and `info` (%0.3g).
 */

/** A finite double ≥ 0 as the exact fraction num / den (den a power of two). */
export function exactFraction(x: number): { num: bigint; den: bigint } {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, x);
  const bits = dv.getBigUint64(0);
  const e = Number((bits >> 52n) & 0x7ffn);
  const frac = bits & ((1n << 52n) - 1n);
  // x = mant × 2^exp exactly (subnormals: e = 0, no implicit bit).
  const mant = e === 0 ? frac : frac | (1n << 52n);
  const exp = (e === 0 ? 1 : e) - 1075;
  return exp >= 0 ? { num: mant << BigInt(exp), den: 1n } : { num: mant, den: 1n << BigInt(-exp) };
}

/** num / den (both ≥ 0, den > 0) rounded to an integer, ties to even. */
export function roundHalfEven(num: bigint, den: bigint): bigint {
  const q = num / den;
  const r2 = (num % den) * 2n;
  return r2 > den || (r2 === den && (q & 1n) === 1n) ? q + 1n : q;
}
