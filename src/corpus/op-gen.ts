/**
 * Random guest op sequences for corpus images, drawn from a Prng. Every op is one a guest (qemu-io)
 * can issue; the model decides what it does, and ops it refuses are dropped by buildImage. Payloads
 * are kept small so the recorded scripts (base64 in the manifest) stay small: large writes use a
 * fill pattern, random bytes are used for writes of at most RANDOM_PAYLOAD_MAX bytes.
 */
import type { Op } from '../model/index.ts';
import type { Prng } from './prng.ts';

/** Largest payload written as non-pattern bytes (the script carries it as base64). */
export const RANDOM_PAYLOAD_MAX = 4096;

/** How a payload's bytes are made. */
export type PayloadKind = 'pattern' | 'random' | 'text';

/**
 * `length` bytes of the given kind: 'pattern' = one non-zero byte repeated (a qemu-io `-P` write);
 * 'random' = incompressible stream bytes; 'text' = compressible bytes (a 16-letter alphabet with
 * repeated runs, which deflate and zstd shrink to about half), for compressed clusters of varying size.
 */
export function payload(prng: Prng, length: number, kind: PayloadKind): Uint8Array {
  if (kind === 'pattern') return new Uint8Array(length).fill(prng.int(1, 255));
  if (kind === 'random') return prng.bytes(length);
  const out = new Uint8Array(length);
  const alphabet = prng.bytes(16);
  let i = 0;
  while (i < length) {
    if (i >= 8 && prng.chance(0.4)) {
      // Repeat an earlier run (what makes the data compressible).
      const len = Math.min(prng.int(4, 32), length - i);
      const from = prng.int(0, i - 1);
      for (let k = 0; k < len; k++) out[i + k] = out[from + (k % (i - from))]!;
      i += len;
    } else {
      out[i++] = alphabet[prng.int(0, 15)]!;
    }
  }
  return out;
}

/** Relative weights of the op kinds randomOps draws (0 = never). */
export interface OpWeights {
  readonly write?: number;
  readonly writeUnaligned?: number;
  readonly zero?: number;
  readonly zeroUnmap?: number;
  readonly zeroPartial?: number;
  readonly discard?: number;
  readonly compress?: number;
}

/** Where and how randomOps draws. */
export interface OpSpace {
  /** Virtual size of the disk. */
  readonly size: bigint;
  readonly clusterSize: number;
  /** Granularity of partial zero writes (the subcluster size with extended L2, else 512). */
  readonly zeroGranularity?: number;
  /** Payload kinds for data writes (default pattern and random). */
  readonly payloads?: readonly PayloadKind[];
  /** Most clusters one op covers (default 4). */
  readonly maxClusters?: number;
}

const DEFAULT_WEIGHTS: Required<OpWeights> = { write: 4, writeUnaligned: 2, zero: 1, zeroUnmap: 1, zeroPartial: 1, discard: 1, compress: 0 };

/**
 * `count` ops drawn with `weights` (default: writes, zeroes and discards) inside a disk of
 * `space.size` bytes. Ranges are clipped to the disk; each op's kind, place and payload come from
 * `prng` only, so equal streams give equal ops.
 */
export function randomOps(prng: Prng, space: OpSpace, count: number, weights: OpWeights = {}): Op[] {
  const w: Required<OpWeights> = { ...DEFAULT_WEIGHTS, ...weights };
  const kinds = (Object.keys(w) as (keyof OpWeights)[]).filter((k) => w[k] > 0);
  const total = kinds.reduce((s, k) => s + w[k], 0);
  const cs = space.clusterSize;
  const clusters = Number(space.size / BigInt(cs));
  const maxClusters = space.maxClusters ?? 4;
  const payloads = space.payloads ?? ['pattern', 'random'];
  const ops: Op[] = [];
  if (space.size < 512n) return ops;
  for (let n = 0; n < count; n++) {
    let r = prng.int(0, total - 1);
    let kind = kinds[0]!;
    for (const k of kinds) {
      if (r < w[k]) {
        kind = k;
        break;
      }
      r -= w[k];
    }
    // A cluster-aligned range of whole clusters inside the disk (at least one cluster when it fits).
    const alignedRange = (): { offset: bigint; length: bigint } => {
      if (clusters === 0) return { offset: 0n, length: space.size };
      const first = prng.int(0, clusters - 1);
      const nb = prng.int(1, Math.min(maxClusters, clusters - first));
      return { offset: BigInt(first) * BigInt(cs), length: BigInt(nb) * BigInt(cs) };
    };
    // A range of 1..2 clusters of bytes at any 512-byte (or finer) position, clipped to the disk.
    const unalignedRange = (granularity: number): { offset: bigint; length: bigint } => {
      const units = Number(space.size / BigInt(granularity));
      const start = prng.int(0, Math.max(0, units - 1));
      const maxLen = Math.min(units - start, Math.max(1, Math.floor((2 * cs) / granularity)));
      const len = prng.int(1, Math.max(1, maxLen));
      return { offset: BigInt(start) * BigInt(granularity), length: BigInt(len) * BigInt(granularity) };
    };
    const data = (length: bigint): Uint8Array => {
      const k = length > BigInt(RANDOM_PAYLOAD_MAX) ? 'pattern' : prng.pick(payloads);
      return payload(prng, Number(length), k);
    };
    switch (kind) {
      case 'write': {
        const r2 = alignedRange();
        ops.push({ kind: 'write', offset: r2.offset, data: data(r2.length) });
        break;
      }
      case 'writeUnaligned': {
        const g = prng.pick([1, 512]);
        const r2 = unalignedRange(g);
        const len = r2.length > BigInt(RANDOM_PAYLOAD_MAX) ? BigInt(RANDOM_PAYLOAD_MAX) : r2.length;
        ops.push({ kind: 'write', offset: r2.offset, data: data(len) });
        break;
      }
      case 'zero':
      case 'zeroUnmap': {
        const r2 = alignedRange();
        ops.push({ kind: 'writeZeroes', offset: r2.offset, length: r2.length, unmap: kind === 'zeroUnmap' });
        break;
      }
      case 'zeroPartial': {
        const r2 = unalignedRange(space.zeroGranularity ?? 512);
        ops.push({ kind: 'writeZeroes', offset: r2.offset, length: r2.length, unmap: prng.chance(0.5) });
        break;
      }
      case 'discard': {
        const r2 = alignedRange();
        ops.push({ kind: 'discard', offset: r2.offset, length: r2.length });
        break;
      }
      case 'compress': {
        const r2 = alignedRange();
        const k = r2.length > BigInt(RANDOM_PAYLOAD_MAX) ? 'pattern' : prng.pick(['pattern', 'text', 'text'] as const);
        ops.push({ kind: 'writeCompressed', offset: r2.offset, data: payload(prng, Number(r2.length), k) });
        break;
      }
    }
  }
  return ops;
}
