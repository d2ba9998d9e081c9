/**
 * The corpus generator's source of randomness: a small seeded PRNG, so that the same seed always
 * gives the same corpus (no Math.random, no clock).
 *
 * Algorithm: xoshiro128** (Blackman and Vigna, 2018; public domain reference at
 * https://prng.di.unimi.it/xoshiro128starstar.c), 128 bits of state, 32-bit outputs. Its state is
 * seeded from SHA-256 of a label ("seed/family/index"), so every case has its own independent
 * stream: adding a family or a case never changes the bytes of another one.
 */
import { createHash } from 'node:crypto';

/** A deterministic random stream. Every method consumes the stream in a documented, fixed way. */
export class Prng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** A stream seeded from SHA-256(`label`) (UTF-8); equal labels give equal streams. */
  constructor(label: string) {
    const h = createHash('sha256').update(label, 'utf8').digest();
    this.s0 = h.readUInt32BE(0);
    this.s1 = h.readUInt32BE(4);
    this.s2 = h.readUInt32BE(8);
    this.s3 = h.readUInt32BE(12);
    // xoshiro's state must not be all zeros (SHA-256 makes that practically impossible; be exact anyway).
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** The next 32-bit output, as an unsigned integer in [0, 2^32). */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A uniform integer in [lo, hi] (inclusive; hi - lo < 2^32), by rejection sampling (no modulo bias). */
  int(lo: number, hi: number): number {
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || hi < lo || hi - lo >= 2 ** 32) {
      throw new RangeError(`Prng.int: bad range [${lo}, ${hi}]`);
    }
    const span = hi - lo + 1;
    if (span === 2 ** 32) return lo + this.nextU32();
    const limit = Math.floor(2 ** 32 / span) * span;
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return lo + (x % span);
    }
  }

  /** True with probability `p` (0..1), in steps of 2^-32. */
  chance(p: number): boolean {
    return this.nextU32() < p * 2 ** 32;
  }

  /** One element of a non-empty array, uniformly. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('Prng.pick: empty array');
    return items[this.int(0, items.length - 1)]!;
  }

  /** `k` distinct elements of `items` (k ≤ length), in the order they were drawn. */
  sample<T>(items: readonly T[], k: number): T[] {
    const pool = [...items];
    const out: T[] = [];
    for (let i = 0; i < k && pool.length > 0; i++) out.push(pool.splice(this.int(0, pool.length - 1), 1)[0]!);
    return out;
  }

  /** `n` bytes of the stream (4 bytes per output, big-endian, the last output truncated). */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const x = this.nextU32();
      out[i] = x >>> 24;
      if (i + 1 < n) out[i + 1] = (x >>> 16) & 0xff;
      if (i + 2 < n) out[i + 2] = (x >>> 8) & 0xff;
      if (i + 3 < n) out[i + 3] = x & 0xff;
    }
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
