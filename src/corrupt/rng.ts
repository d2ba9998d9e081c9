/**
 * The source of choices for the corruption catalog and the mutation catalog: an `Rng` answers "an
 * integer below n". A seeded one (`seededRng`) makes a corruption reproducible from a number, which
 * is how fast-check properties and the corpus generator drive the catalogs (src/model stays free of
 * randomness; this module is only used by the catalogs, never by the model).
 */

/** Integer choices: `int(n)` is in [0, n) for n ≥ 1. */
export interface Rng {
  int(n: number): number;
}

/**
 * A deterministic Rng from a 32-bit seed (mulberry32): the same seed gives the same sequence of
 * choices on every machine. `int(n)` throws RangeError for n < 1 or n not an integer (a catalog bug).
 */
export function seededRng(seed: number): Rng {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return {
    int(n: number): number {
      if (!Number.isInteger(n) || n < 1) throw new RangeError(`Rng.int: ${n} is not a positive integer`);
      return Math.floor(next() * n);
    },
  };
}

/** One element of a non-empty list, chosen by `rng`. */
export function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.int(items.length)]!;
}

/** An exact bigint in [0, n) for n ≥ 1n (n may exceed 2^53). */
export function bigBelow(rng: Rng, n: bigint): bigint {
  if (n <= 0n) throw new RangeError(`bigBelow: ${n} is not positive`);
  if (n <= BigInt(Number.MAX_SAFE_INTEGER)) return BigInt(Math.floor(rng.int(2 ** 30) * 2 ** 23 + rng.int(2 ** 23))) % n;
  let v = 0n;
  for (let bits = 0n; bits < BigInt(n.toString(2).length) + 16n; bits += 30n) v = (v << 30n) | BigInt(rng.int(2 ** 30));
  return v % n;
}
