/**
 * The write sequence of the OPFS test, shared by the Node test (which computes the raw oracle from
 * it) and the worker (which issues it through the driver): plain data, so both sides make the same
 * bytes from a seed.
 */

/** One guest write: `length` bytes of `patternBytes(seed, length)` at `offset`, then a flush if asked. */
export interface PlannedWrite {
  readonly offset: number;
  readonly length: number;
  readonly seed: number;
  readonly flushAfter: boolean;
}

/** A xorshift32 stream (deterministic, no dependencies). */
export function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** `length` pseudo-random bytes determined by `seed`. */
export function patternBytes(seed: number, length: number): Uint8Array {
  const next = xorshift(seed);
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i += 4) {
    const v = next();
    for (let k = 0; k < 4 && i + k < length; k++) out[i + k] = (v >>> (8 * k)) & 0xff;
  }
  return out;
}

/**
 * Writes over a disk of `size` bytes with clusters of `cluster` bytes: fixed cases (a single byte, a
 * write across a cluster boundary, a multi-cluster write and an overwrite inside it, the last
 * sector, an aligned cluster pair) and `randomCount` random writes of 1 byte to 3 clusters, with a
 * flush after every seventh.
 */
export function planWrites(size: number, cluster: number, seed: number, randomCount: number): PlannedWrite[] {
  const fixed: Array<[number, number]> = [
    [1, 1],
    [cluster - 100, 200],
    [3 * cluster, 5 * cluster + 17],
    [3 * cluster + 512, 1000],
    [size - 512, 512],
    [Math.floor(size / 2 / cluster) * cluster, 2 * cluster],
  ];
  const r = xorshift(seed);
  const random: Array<[number, number]> = [];
  for (let i = 0; i < randomCount; i++) {
    const length = 1 + (r() % (3 * cluster));
    random.push([r() % (size - length + 1), length]);
  }
  return [...fixed, ...random].map(([offset, length], i) => ({ offset, length, seed: seed * 1000 + i, flushAfter: i % 7 === 6 }));
}

/** The raw disk the writes make from a zeroed disk of `size` bytes. */
export function applyWrites(size: number, writes: readonly PlannedWrite[]): Uint8Array {
  const disk = new Uint8Array(size);
  for (const w of writes) disk.set(patternBytes(w.seed, w.length), w.offset);
  return disk;
}
